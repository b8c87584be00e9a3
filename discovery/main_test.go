package discovery_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes its routers and stops its servers; goleak checks that
// no watch, warm-up, connection or stream left a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

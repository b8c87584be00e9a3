package grpcpool_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes its pools and stops its servers; goleak checks that no
// connection, stream or context callback left a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

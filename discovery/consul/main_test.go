package consul_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every watch's query loop must end with its last watch, and the
// Resolver's HTTP connections with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

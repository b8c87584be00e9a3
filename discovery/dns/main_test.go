package dns_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every watch's lookup loop must end with its last watch, and every test
// server with its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

package config_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Checking a pool section builds a real pool, which joins the evictor's
// schedule when it has eviction runs: its goroutine must be gone after.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

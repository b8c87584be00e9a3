package config_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Checking a file starts nothing: no pool, no evictor, no connection.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

package discovery_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/kpool-go/kpool/internal/procbackend"
)

// Every test closes its routers and stops its servers; goleak checks that
// no watch, warm-up, connection or stream left a goroutine behind. A test
// binary run as a backend process (procbackend) serves and exits instead.
func TestMain(m *testing.M) {
	procbackend.Main()
	goleak.VerifyTestMain(m)
}

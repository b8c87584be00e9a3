package discovery_test

import (
	"testing"

	"github.com/kpool-go/kpool/discovery"
)

func TestHealthString(t *testing.T) {
	for h, want := range map[discovery.Health]string{
		discovery.HealthUnknown:     "unknown",
		discovery.HealthPassing:     "passing",
		discovery.HealthWarning:     "warning",
		discovery.HealthCritical:    "critical",
		discovery.HealthMaintenance: "maintenance",
		discovery.Health(42):        "Health(42)",
	} {
		if got := h.String(); got != want {
			t.Errorf("Health(%d).String() = %q, want %q", int(h), got, want)
		}
	}
}

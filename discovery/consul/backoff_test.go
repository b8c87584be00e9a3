package consul_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/kpool-go/kpool/discovery/consul"
)

// Every wait lies between half and all of BackoffBase doubled once per
// earlier failure in a row, capped at BackoffMax, for every base and max
// that New accepts, however many failures and whatever the jitter draw: no
// extreme setting wraps round to a negative or tiny wait (a hot retry loop
// against Consul), and no failure count makes the computation run on.
func TestBackoffStaysWithinBounds(t *testing.T) {
	const maxDur = time.Duration(math.MaxInt64)
	tests := []struct {
		base, max time.Duration
		n         int
		full      time.Duration // base doubled n-1 times, capped at max
	}{
		{consul.DefaultBackoffBase, consul.DefaultBackoffMax, 1, consul.DefaultBackoffBase},
		{consul.DefaultBackoffBase, consul.DefaultBackoffMax, 4, 4 * time.Second},
		{consul.DefaultBackoffBase, consul.DefaultBackoffMax, 7, consul.DefaultBackoffMax},
		{consul.DefaultBackoffBase, consul.DefaultBackoffMax, math.MaxInt, consul.DefaultBackoffMax},
		{time.Nanosecond, time.Nanosecond, math.MaxInt, time.Nanosecond},
		{time.Nanosecond, maxDur, 63, 1 << 62},
		{time.Nanosecond, maxDur, 64, maxDur},
		{time.Nanosecond, maxDur, math.MaxInt, maxDur},
		{time.Second, maxDur, 34, time.Second << 33},
		{time.Second, maxDur, 35, maxDur},
		{time.Second, maxDur, math.MaxInt, maxDur},
		{maxDur/2 + 1, maxDur, 2, maxDur},
		{maxDur - 1, maxDur, 2, maxDur},
		{maxDur - 1, maxDur, math.MaxInt, maxDur},
		{maxDur, maxDur, 1, maxDur},
		{maxDur, maxDur, math.MaxInt, maxDur},
	}
	for _, tt := range tests {
		for _, u := range []float64{0, 0.5, math.Nextafter(1, 0)} {
			name := fmt.Sprintf("base=%d/max=%d/n=%d/u=%v", tt.base, tt.max, tt.n, u)
			var hung bool
			t.Run(name, func(t *testing.T) {
				// In a goroutine so that a computation that runs on
				// fails the test instead of hanging it.
				done := make(chan time.Duration, 1)
				go func() { done <- consul.Backoff(tt.base, tt.max, tt.n, u) }()
				var got time.Duration
				select {
				case got = <-done:
				case <-time.After(10 * time.Second):
					hung = true
					t.Fatalf("Backoff(%d, %d, %d, %v) has not returned after 10s", tt.base, tt.max, tt.n, u)
				}
				if got < tt.full/2 || got > tt.full {
					t.Errorf("Backoff(%d, %d, %d, %v) = %d, want in [%d, %d]", tt.base, tt.max, tt.n, u, got, tt.full/2, tt.full)
				}
			})
			if hung {
				t.Fatalf("stopping after %s: its Backoff call still runs", name)
			}
		}
	}
}

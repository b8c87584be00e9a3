package discovery_test

import (
	"errors"
	"testing"
	"time"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// stopped returns n backends, stopped: their ports refuse connections
// until Restart.
func stopped(t *testing.T, n int) []*grpctest.Server {
	var out []*grpctest.Server
	for range n {
		s := grpctest.Start(t, grpctest.Options{})
		s.Stop()
		out = append(out, s)
	}
	return out
}

// An endpoint whose connects fail is not usable from the first failure,
// whatever the make backoff (here none: MakeFailureThreshold 0), and never
// counted usable while its first warm-up runs; it is usable again once a
// warm-up connects after its backend comes up.
func TestUsableCountsRefusingEndpointsAsDown(t *testing.T) {
	backends := stopped(t, 2)
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(backends...)})
	pcfg := shared()
	pcfg.MinIdlePerKey = 1
	r := newRouter(t, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg, WarmInterval: 20 * time.Millisecond})
	if err := r.Watch("svc"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < time.Second {
		if got := stats(r, "svc"); got.Usable != 0 {
			t.Fatalf("stats after %v = %+v, want no usable endpoint: every connect is refused", time.Since(start), got)
		}
		time.Sleep(time.Millisecond)
	}
	if got := stats(r, "svc"); got.Endpoints != 2 {
		t.Fatalf("stats = %+v, want 2 endpoints known", got)
	}
	for _, b := range backends {
		b.Restart()
	}
	grpctest.WaitFor(t, testTimeout, "both endpoints usable once up", func() bool { return stats(r, "svc").Usable == 2 })
}

// Without warm-ups (MinIdlePerKey 0), an endpoint counts as usable until a
// connect to it fails, here a borrow's.
func TestUsableAfterFailedBorrow(t *testing.T) {
	backends := stopped(t, 2)
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(backends...)})
	r := newRouter(t, discovery.RouterConfig[stub]{Resolver: res, Pool: shared()})
	if _, err := r.Borrow(ctx(t), "svc"); err == nil || errors.Is(err, keyedpool.ErrBackoff) {
		t.Fatalf("Borrow() error = %v, want the refused connect", err)
	}
	if got := stats(r, "svc"); got.Endpoints != 2 || got.Usable != 0 {
		t.Errorf("stats after a borrow failed on both = %+v, want 2 endpoints, none usable", got)
	}
}

package discovery_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// A borrow whose endpoint cannot connect moves on to another endpoint, so
// no RPC fails while one endpoint works; once the dead endpoint's make
// backoff is open, it is skipped without being tried.
func TestRouterSkipsEndpointInMakeBackoff(t *testing.T) {
	live := grpctest.Start(t, grpctest.Options{})
	dead := deadAddr(t)
	res := static.New(map[string][]discovery.Endpoint{"svc": {{Address: dead}, ep(live)}})
	pcfg := shared()
	pcfg.MakeFailureThreshold = 1
	pcfg.MakeBackoffBase = testTimeout // stays open for the whole test
	pcfg.MakeBackoffMax = testTimeout
	r := newRouter(t, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg})
	conn := r.Conn("svc")
	for i := range 20 {
		if err := unary(ctx(t), conn); err != nil {
			t.Fatalf("RPC %d: %v, want success on the live endpoint", i, err)
		}
	}
	if got := live.UnaryCalls(); got != 20 {
		t.Errorf("live endpoint UnaryCalls() = %d, want 20", got)
	}
	ks := r.Pool().KeyStats(dead)
	if ks.MakeErrors != 1 || ks.BackoffUntil.IsZero() {
		t.Errorf("dead endpoint MakeErrors = %d, BackoffUntil = %v; want 1 failed make, then backoff", ks.MakeErrors, ks.BackoffUntil)
	}
	if ks.BackoffRejected != 0 {
		t.Errorf("dead endpoint BackoffRejected = %d, want 0: skipped, not tried", ks.BackoffRejected)
	}
	if got := stats(r, "svc"); got.Endpoints != 2 || got.Usable != 1 {
		t.Errorf("Services() = %+v, want 2 endpoints, 1 usable", got)
	}

	// With no healthy endpoint left, the failing ones are still tried, and
	// the error names the service and the cause.
	res.Set("svc", []discovery.Endpoint{{Address: dead}})
	grpctest.WaitFor(t, testTimeout, "router never saw the new list", func() bool { return stats(r, "svc").Endpoints == 1 })
	_, err := r.Borrow(ctx(t), "svc")
	if !errors.Is(err, keyedpool.ErrBackoff) || !strings.Contains(err.Error(), `"svc"`) {
		t.Errorf("Borrow with only a dead endpoint: %v, want an error naming \"svc\" wrapping ErrBackoff", err)
	}
}

// Endpoints whose connections are all in TRANSIENT_FAILURE are skipped
// while others work.
func TestRouterSkipsEndpointInTransientFailure(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})
	// Keep connections whatever their RPCs' errors: the pool must not
	// replace a's connection before the router sees its state.
	f := newFactory(t, grpcfactory.Config[string, stub]{Classifier: func(error, connectivity.State) bool { return false }})
	r := newRouter(t, discovery.RouterConfig[stub]{Resolver: res, Factory: f, Pool: shared()})
	h, err := r.Borrow(ctx(t), "svc")
	if err != nil {
		t.Fatal(err)
	}
	// Round robin starts at a random endpoint: the one borrowed goes down.
	down, up := a, b
	if h.Key() == b.Addr {
		down, up = b, a
	}
	cc := h.Value().ClientConn()
	down.Stop()
	// Make the connection try again and fail.
	for s := cc.GetState(); s != connectivity.TransientFailure; s = cc.GetState() {
		cc.Connect()
		if !cc.WaitForStateChange(ctx(t), s) {
			t.Fatalf("the stopped backend's connection stuck in %v", s)
		}
	}
	if err := r.Release(h, nil); err != nil {
		t.Fatal(err)
	}
	if got := stats(r, "svc"); got.Usable != 1 {
		t.Errorf("Services() = %+v, want 1 usable endpoint", got)
	}
	for i := range 10 {
		if err := unary(ctx(t), r.Conn("svc")); err != nil {
			t.Fatalf("RPC %d: %v, want success on the backend still up", i, err)
		}
	}
	if got := up.UnaryCalls(); got != 10 {
		t.Errorf("the backend still up UnaryCalls() = %d, want all 10", got)
	}
}

// A backend that answers its health check with NOT_SERVING makes way for
// the next endpoint.
func TestRouterSkipsNotServing(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	a.Health.SetServingStatus("", 2) // NOT_SERVING
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})
	f := newFactory(t, grpcfactory.Config[string, stub]{HealthCheck: &grpcfactory.HealthCheck{}})
	r := newRouter(t, discovery.RouterConfig[stub]{Resolver: res, Factory: f, Pool: shared()})
	for i := range 6 {
		if err := unary(ctx(t), r.Conn("svc")); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	if got := b.UnaryCalls(); got != 6 {
		t.Errorf("serving backend UnaryCalls() = %d, want 6; not serving one got %d", got, a.UnaryCalls())
	}
}

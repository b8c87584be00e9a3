package discovery_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
)

// counting is a Resolver that counts the watches running at res.
type counting struct {
	res    discovery.Resolver
	active atomic.Int64
}

func (c *counting) Watch(ctx context.Context, service string, w discovery.Watcher) error {
	c.active.Add(1)
	defer c.active.Add(-1)
	return c.res.Watch(ctx, service, w)
}

// names returns the services the router reports, in order.
func names(r *router) []string {
	var out []string
	for _, s := range r.Services() {
		out = append(out, s.Service)
	}
	return out
}

// A mistyped name in one call is watched, and reported, only until Forget:
// Forget ends its watch and drops it from Services; forgetting a service
// with endpoints retires them (connections closed, keys gone), and the
// next use of the name watches it again.
func TestForgetStopsWatchAndRetiresEndpoints(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	res := &counting{res: static.New(map[string][]discovery.Endpoint{"svc": eps(srv)})}
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	conn := r.Conn("svc")
	if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Borrow(grpctest.Context(t, testTimeout), "scv"); !errors.Is(err, discovery.ErrNoEndpoints) {
		t.Fatalf("Borrow(scv) error = %v, want ErrNoEndpoints", err)
	}
	if got := names(r); !slices.Equal(got, []string{"scv", "svc"}) {
		t.Fatalf("Services() = %v, want [scv svc]", got)
	}

	r.Forget("scv")
	if got := names(r); !slices.Equal(got, []string{"svc"}) {
		t.Errorf("Services() after Forget(scv) = %v, want [svc]", got)
	}
	grpctest.WaitFor(t, testTimeout, "the watch of scv ends", func() bool { return res.active.Load() == 1 })

	r.Forget("svc")
	if got := names(r); len(got) != 0 {
		t.Errorf("Services() after Forget(svc) = %v, want none", got)
	}
	grpctest.WaitFor(t, testTimeout, "the watch of svc ends", func() bool { return res.active.Load() == 0 })
	grpctest.WaitFor(t, testTimeout, "svc's endpoint is retired", func() bool { return srv.Open() == 0 && !clienttest.HasKey(r, srv.Addr) })

	r.Forget("svc") // not watched: nothing to do
	// The Conn made before Forget watches the service again.
	if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
		t.Fatalf("RPC after Forget: %v, want the service watched again", err)
	}
	if got := clienttest.ServiceStats(r, "svc"); got.Endpoints != 1 || got.Updates != 1 {
		t.Errorf("stats after the new watch = %+v, want 1 endpoint from 1 fresh update", got)
	}
}

// A borrower still waiting for the service's first lookup when Forget
// stops the watch fails at once, naming the service.
func TestForgetFailsBorrowerWaitingForFirstLookup(t *testing.T) {
	g := &gate{res: static.New(nil), hold: make(chan struct{}), started: make(chan struct{})}
	defer close(g.hold)
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: g})
	errc := make(chan error, 1)
	go func() {
		_, err := r.Borrow(grpctest.Context(t, testTimeout), "svc")
		errc <- err
	}()
	<-g.started
	r.Forget("svc")
	select {
	case err := <-errc:
		if !errors.Is(err, discovery.ErrNoEndpoints) || !strings.Contains(err.Error(), `"svc"`) {
			t.Errorf("Borrow waiting at Forget: %v, want ErrNoEndpoints naming \"svc\"", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Borrow still waits after Forget")
	}
}

// With IdleTimeout, a service nothing uses is dropped once it has been idle
// that long, and not before; a service in use and one named to Watch stay.
func TestIdleTimeoutDropsUnusedServices(t *testing.T) {
	const idle = 200 * time.Millisecond
	srv := grpctest.Start(t, grpctest.Options{})
	res := &counting{res: static.New(map[string][]discovery.Endpoint{"busy": eps(srv), "kept": eps(srv)})}
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases(), IdleTimeout: idle})
	if err := r.Watch("kept"); err != nil {
		t.Fatal(err)
	}
	load := clienttest.UnaryTraffic(t, testTimeout, r.Conn("busy"), 2)
	used := time.Now()
	if _, err := r.Borrow(grpctest.Context(t, testTimeout), "typo"); !errors.Is(err, discovery.ErrNoEndpoints) {
		t.Fatalf("Borrow(typo) error = %v, want ErrNoEndpoints", err)
	}
	if got := names(r); !slices.Equal(got, []string{"busy", "kept", "typo"}) {
		t.Fatalf("Services() = %v, want [busy kept typo]", got)
	}
	grpctest.WaitFor(t, testTimeout, "typo is dropped", func() bool { return !slices.Contains(names(r), "typo") })
	if d := time.Since(used); d < idle {
		t.Errorf("typo dropped %v after its use, want at least IdleTimeout %v", d, idle)
	}
	grpctest.WaitFor(t, testTimeout, "typo's watch ends", func() bool { return res.active.Load() == 2 })
	time.Sleep(2 * idle) // idle long enough for busy and kept to go, were they idle
	if got := names(r); !slices.Equal(got, []string{"busy", "kept"}) {
		t.Errorf("Services() = %v, want [busy kept]", got)
	}
	for _, s := range r.Services() {
		if want := s.Service == "kept"; s.Kept != want {
			t.Errorf("%s: Kept = %v, want %v", s.Service, s.Kept, want)
		}
	}
	if calls, errs := load.Stop(); len(errs) > 0 || calls == 0 {
		t.Errorf("traffic on busy: %d calls, errors %v; want calls and no error", calls, errs)
	}
}

// A Conn whose service went idle watches it again on its next RPC, and
// that RPC succeeds.
func TestIdleServiceComesBackOnUse(t *testing.T) {
	const idle = 50 * time.Millisecond
	srv := grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(srv)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases(), IdleTimeout: idle})
	conn := r.Conn("svc")
	if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, testTimeout, "svc goes idle", func() bool { return len(r.Services()) == 0 })
	for i := range 20 {
		if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
			t.Fatalf("RPC %d after the service went idle: %v", i, err)
		}
	}
	if got := names(r); !slices.Equal(got, []string{"svc"}) {
		t.Errorf("Services() = %v, want [svc] watched again", got)
	}
}

// Watch starts a watch without a borrow and without waiting; Close drops
// every service, so that nothing is reported of watches that ended.
func TestWatchKeepsServiceUntilClose(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	res := &counting{res: static.New(map[string][]discovery.Endpoint{"svc": eps(srv)})}
	r, err := discovery.NewRouter(discovery.RouterConfig[stub]{Resolver: res, Factory: clienttest.NewFactory(t, config{ConnectTimeout: testTimeout}), Pool: clienttest.SharedLeases()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Watch("svc"); err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	grpctest.WaitFor(t, testTimeout, "svc's first lookup", func() bool { return clienttest.ServiceStats(r, "svc").Endpoints == 1 })
	if got := clienttest.ServiceStats(r, "svc"); !got.Kept || res.active.Load() != 1 {
		t.Errorf("stats = %+v with %d watches, want Kept and 1 watch", got, res.active.Load())
	}
	if err := r.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if got := r.Services(); len(got) != 0 {
		t.Errorf("Services() after Close = %+v, want none", got)
	}
	if n := res.active.Load(); n != 0 {
		t.Errorf("%d watches still run after Close", n)
	}
	if err := r.Watch("svc"); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Watch() after Close = %v, want ErrClosed", err)
	}
}

// A service dropped hundreds of times, by a short IdleTimeout and by
// Forget, while RPCs with pauses between them run through its Conn: no RPC
// fails because the service went idle (a borrow whose service is dropped
// under it watches it again), Forget fails only the borrowers waiting for
// a first lookup it stopped, as documented, and once the churn ends nothing
// of the dropped service is left: no watch, no key.
func TestRouterStressForgetAndIdle(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := &counting{res: static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})}
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 1
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg, IdleTimeout: 4 * time.Millisecond})
	conn := r.Conn("svc")
	var pauses atomic.Int64
	run := func() *grpctest.Traffic {
		return grpctest.StartTraffic(t, 4, testTimeout, func(c context.Context) error {
			// Pauses longer than IdleTimeout now and then, so that the
			// service goes idle between RPCs.
			time.Sleep(time.Duration(pauses.Add(1)%7) * time.Millisecond)
			return unary(c, conn)
		})
	}

	l := run()
	time.Sleep(time.Second)
	calls, errs := l.Stop()
	if len(errs) > 0 || calls == 0 {
		t.Fatalf("%d of %d RPCs failed with an IdleTimeout of 4ms; first: %v", len(errs), calls, errs[0])
	}

	l = run()
	forgets := 0
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); forgets++ {
		r.Forget("svc")
		time.Sleep(3 * time.Millisecond)
	}
	calls, errs = l.Stop()
	for _, err := range errs {
		if !errors.Is(err, discovery.ErrNoEndpoints) || !strings.Contains(err.Error(), "stopped (Forget) before its first lookup ended") {
			t.Fatalf("RPC during Forgets: %v, want success, or a borrower waiting for a first lookup that Forget stopped", err)
		}
	}
	t.Logf("%d RPCs during %d Forgets, %d failed waiting for a first lookup", calls, forgets, len(errs))
	grpctest.WaitFor(t, testTimeout, "the idle service is dropped, its watch ended, its keys gone", func() bool {
		return len(r.Services()) == 0 && res.active.Load() == 0 && !clienttest.HasKey(r, a.Addr) && !clienttest.HasKey(r, b.Addr)
	})
}

package discovery_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

func TestNewRouterNamesMissingFields(t *testing.T) {
	_, err := discovery.NewRouter(discovery.RouterConfig[stub]{})
	if !errors.Is(err, discovery.ErrInvalidConfig) {
		t.Fatalf("NewRouter(zero config) error = %v, want ErrInvalidConfig", err)
	}
	for _, field := range []string{"Resolver", "Factory"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("NewRouter(zero config) error = %q, want it to name %s", err, field)
		}
	}
	_, err = discovery.NewRouter(discovery.RouterConfig[stub]{
		Resolver: static.New(nil),
		Factory:  clienttest.NewFactory(t, config{ConnectTimeout: testTimeout}),
		Pool:     keyedpool.Config{MaxWait: -1},
	})
	if !errors.Is(err, keyedpool.ErrInvalidConfig) {
		t.Errorf("NewRouter(MaxWait -1) error = %v, want keyedpool.ErrInvalidConfig", err)
	}
}

// Round robin by default: every endpoint of the service gets its turn.
func TestRouterRoundRobin(t *testing.T) {
	a, b, c := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"bench": eps(a, b, c)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	conn := r.Conn("bench")
	if got := conn.Service(); got != "bench" {
		t.Errorf("Conn.Service() = %q, want bench", got)
	}
	for i := range 30 {
		if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	for _, s := range []*grpctest.Server{a, b, c} {
		if got := s.UnaryCalls(); got != 10 {
			t.Errorf("server %s UnaryCalls() = %d, want 10 (a third of 30)", s.Addr, got)
		}
	}
}

// A service without endpoints fails at once, naming the service, with
// ErrNoEndpoints and, for RPCs, Unavailable; it recovers as soon as
// endpoints appear.
func TestRouterNoEndpointsFailsFastAndRecovers(t *testing.T) {
	res := static.New(nil)
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	conn := r.Conn("ghost")

	start := time.Now()
	_, err := r.Borrow(grpctest.Context(t, testTimeout), "ghost")
	if !errors.Is(err, discovery.ErrNoEndpoints) || !strings.Contains(err.Error(), `"ghost"`) {
		t.Errorf("Borrow(ghost) error = %v, want ErrNoEndpoints naming \"ghost\"", err)
	}
	err = unary(grpctest.Context(t, testTimeout), conn)
	if status.Code(err) != codes.Unavailable || !errors.Is(err, discovery.ErrNoEndpoints) || !strings.Contains(err.Error(), `"ghost"`) {
		t.Errorf("RPC to ghost error = %v (code %v), want Unavailable wrapping ErrNoEndpoints naming \"ghost\"", err, status.Code(err))
	}
	if d := time.Since(start); d > testTimeout/2 {
		t.Errorf("failing took %v, want at once, not a wait to the deadline", d)
	}

	srv := grpctest.Start(t, grpctest.Options{})
	res.Set("ghost", eps(srv))
	grpctest.WaitFor(t, testTimeout, "router never saw the new endpoint", func() bool {
		return clienttest.ServiceStats(r, "ghost").Endpoints == 1
	})
	if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
		t.Fatalf("RPC after the endpoint appeared: %v, want success", err)
	}
	h, err := r.Borrow(grpctest.Context(t, testTimeout), "ghost")
	if err != nil {
		t.Fatalf("Borrow after the endpoint appeared: %v", err)
	}
	if got := h.Key(); got != srv.Addr {
		t.Errorf("Borrow().Key() = %q, want %q", got, srv.Addr)
	}
	if err := r.Release(h, nil); err != nil {
		t.Errorf("Release() = %v", err)
	}

	res.Set("ghost", nil) // gone again
	grpctest.WaitFor(t, testTimeout, "router never saw the service empty", func() bool {
		return clienttest.ServiceStats(r, "ghost").Endpoints == 0
	})
	if _, err := r.Borrow(grpctest.Context(t, testTimeout), "ghost"); !errors.Is(err, discovery.ErrNoEndpoints) {
		t.Errorf("Borrow after the endpoints left: %v, want ErrNoEndpoints", err)
	}
}

// A lookup error before any endpoint is known fails borrowers at once with
// ErrNoEndpoints and the lookup's error, rather than letting them wait for
// a snapshot that may never come.
func TestRouterFirstLookupErrorFailsFast(t *testing.T) {
	res := static.New(nil)
	blocking := &gate{res: res, hold: make(chan struct{}), started: make(chan struct{})}
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: blocking, Pool: clienttest.SharedLeases()})
	go func() {
		<-blocking.started
		blocking.w.Error(errors.New("registry down"))
	}()
	_, err := r.Borrow(grpctest.Context(t, testTimeout), "svc")
	if !errors.Is(err, discovery.ErrNoEndpoints) || !strings.Contains(err.Error(), "registry down") {
		t.Errorf("Borrow() error = %v, want ErrNoEndpoints with the lookup error", err)
	}
	close(blocking.hold)
}

// gate is a Resolver whose first Watch hands its Watcher to the test and
// delivers nothing of its own until hold is closed, then serves res.
type gate struct {
	res     *static.Resolver
	hold    chan struct{}
	started chan struct{}
	w       discovery.Watcher
}

func (g *gate) Watch(c context.Context, service string, w discovery.Watcher) error {
	g.w = w
	if g.started != nil {
		close(g.started)
	}
	select {
	case <-g.hold:
	case <-c.Done():
		return c.Err()
	}
	return g.res.Watch(c, service, w)
}

// The Router counts snapshots and failed lookups per service, keeps the
// endpoints through errors, and clears LastError on the next snapshot.
func TestRouterServicesCountsUpdatesAndErrors(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"one": eps(a), "two": eps(a, b)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	if err := unary(grpctest.Context(t, testTimeout), r.Conn("two")); err != nil {
		t.Fatal(err)
	}
	if err := unary(grpctest.Context(t, testTimeout), r.Conn("one")); err != nil {
		t.Fatal(err)
	}
	got := r.Services()
	want := []discovery.ServiceStats{
		{Service: "one", Endpoints: 1, Usable: 1, Updates: 1},
		{Service: "two", Endpoints: 2, Usable: 2, Updates: 1},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Services() = %+v, want %+v", got, want)
	}

	res.Fail("two", errors.New("lookup failed"))
	res.Fail("two", errors.New("lookup failed again"))
	grpctest.WaitFor(t, testTimeout, "errors never counted", func() bool { return clienttest.ServiceStats(r, "two").Errors == 2 })
	if got := clienttest.ServiceStats(r, "two"); got.LastError != "lookup failed again" || got.Endpoints != 2 {
		t.Errorf("after two errors: %+v, want LastError \"lookup failed again\" and the 2 endpoints kept", got)
	}
	if err := unary(grpctest.Context(t, testTimeout), r.Conn("two")); err != nil {
		t.Errorf("RPC while lookups fail: %v, want success on the last known endpoints", err)
	}
	res.Set("two", eps(b))
	grpctest.WaitFor(t, testTimeout, "update never counted", func() bool { return clienttest.ServiceStats(r, "two").Updates == 2 })
	if got, want := clienttest.ServiceStats(r, "two"), (discovery.ServiceStats{Service: "two", Endpoints: 1, Usable: 1, Updates: 2, Errors: 2}); got != want {
		t.Errorf("after a new snapshot: %+v, want %+v", got, want)
	}
}

// Close fails borrowers still waiting for a first lookup, and everything
// after it, with ErrClosed.
func TestRouterClose(t *testing.T) {
	g := &gate{res: static.New(nil), hold: make(chan struct{}), started: make(chan struct{})}
	defer close(g.hold)
	r, err := discovery.NewRouter(discovery.RouterConfig[stub]{Resolver: g, Factory: clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := r.Borrow(grpctest.Context(t, testTimeout), "svc")
		errc <- err
	}()
	<-g.started
	if err := r.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := <-errc; !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Borrow waiting at Close: %v, want ErrClosed", err)
	}
	if _, err := r.Borrow(grpctest.Context(t, testTimeout), "svc"); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Borrow after Close: %v, want ErrClosed", err)
	}
	if err := unary(grpctest.Context(t, testTimeout), r.Conn("svc")); status.Code(err) != codes.Unavailable || !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("RPC after Close: %v, want Unavailable wrapping ErrClosed", err)
	}
	if _, err := r.Endpoints(grpctest.Context(t, testTimeout), "svc"); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Endpoints after Close: %v, want ErrClosed", err)
	}
}

// Borrow waits for a new service's first lookup no longer than its context.
func TestRouterBorrowWaitBoundedByContext(t *testing.T) {
	g := &gate{res: static.New(nil), hold: make(chan struct{})}
	defer close(g.hold)
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: g})
	c, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.Borrow(c, "svc"); err != context.DeadlineExceeded {
		t.Errorf("Borrow() error = %v, want context.DeadlineExceeded as is", err)
	}
}

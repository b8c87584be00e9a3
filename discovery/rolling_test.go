package discovery_test

import (
	"context"
	"sync"
	"testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
)

// An endpoint that leaves gets no new RPCs at once and its idle connections
// are closed at once; its key leaves the pool.
func TestRouterLeavingEndpointIdleClosedAtOnce(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 2
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg})
	if _, err := r.Endpoints(grpctest.Context(t, testTimeout), "svc"); err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, testTimeout, "endpoints never warmed to 2 connections each", func() bool {
		return r.Pool().KeyStats(a.Addr).Idle == 2 && r.Pool().KeyStats(b.Addr).Idle == 2 && a.Open() == 2
	})

	res.Set("svc", eps(b))
	// At once: nothing but the list's change closes them (no eviction runs,
	// no traffic).
	grpctest.WaitFor(t, testTimeout, "the leaving endpoint's idle connections were not closed", func() bool {
		return a.Open() == 0
	})
	grpctest.WaitFor(t, testTimeout, "the leaving endpoint's key stayed in the pool with nothing lent", func() bool {
		return !clienttest.HasKey(r, a.Addr)
	})
	before := a.UnaryCalls()
	for i := range 10 {
		if err := unary(grpctest.Context(t, testTimeout), r.Conn("svc")); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	if got := a.UnaryCalls() - before; got != 0 {
		t.Errorf("left endpoint got %d RPCs after it left, want 0", got)
	}
	if got := r.Pool().KeyStats(a.Addr).Created; got != 0 {
		t.Errorf("left endpoint's key Created = %d after it left, want 0 (no new connection)", got)
	}
}

// A leaving endpoint's connections under RPCs in flight are not cut: the
// RPCs finish, even through the backend's graceful stop, and the
// connections close as they come back.
func TestRouterLeavingEndpointDrainsInFlight(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	conn := r.Conn("svc")

	release := a.Hold()
	defer release()
	const held = 5
	errc := make(chan error, held)
	for range held {
		go func() { errc <- unary(grpctest.Context(t, testTimeout), conn) }()
	}
	grpctest.WaitFor(t, testTimeout, "held RPCs never reached the backend", func() bool { return a.InFlight() == held })

	res.Set("svc", eps(b))
	grpctest.WaitFor(t, testTimeout, "router never saw the new list", func() bool { return clienttest.ServiceStats(r, "svc").Updates == 2 })
	for i := range 10 {
		if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
			t.Fatalf("RPC %d after the switch: %v", i, err)
		}
	}
	if got := b.UnaryCalls(); got != 10 {
		t.Errorf("new endpoint UnaryCalls() = %d, want 10", got)
	}
	if got := r.Pool().KeyStats(a.Addr).SharesInUse; got != held {
		t.Errorf("left endpoint SharesInUse = %d while its RPCs run, want %d", got, held)
	}
	if a.Open() != 1 {
		t.Errorf("left endpoint's connection count = %d while RPCs run on it, want 1 (not cut)", a.Open())
	}

	stopped := make(chan struct{})
	go func() {
		a.GracefulStop() // as a leaving backend does: waits for the held RPCs
		close(stopped)
	}()
	release()
	for range held {
		if err := <-errc; err != nil {
			t.Errorf("RPC in flight on the leaving endpoint: %v, want success", err)
		}
	}
	<-stopped
	grpctest.WaitFor(t, testTimeout, "the left endpoint's key never left the pool", func() bool { return !clienttest.HasKey(r, a.Addr) })
	st := r.Pool().Stats()
	if st.Destroyed != 1 || st.Active+st.Idle != 1 {
		t.Errorf("pool Destroyed = %d, Active+Idle = %d; want the left endpoint's connection destroyed (1) and the new one's kept (1)", st.Destroyed, st.Active+st.Idle)
	}
}

// A stream open on a leaving endpoint keeps working; its connection closes
// when the stream ends.
func TestRouterLeavingEndpointKeepsStream(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	foo := newStub(r.Conn("svc"))
	st, err := foo.StreamingCall(grpctest.Context(t, testTimeout))
	if err != nil {
		t.Fatal(err)
	}
	res.Set("svc", eps(b))
	grpctest.WaitFor(t, testTimeout, "router never saw the new list", func() bool { return clienttest.ServiceStats(r, "svc").Updates == 2 })
	for i := range 3 {
		if err := st.Send(req("x")); err != nil {
			t.Fatalf("Send %d on the stream of a left endpoint: %v", i, err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatalf("Recv %d on the stream of a left endpoint: %v", i, err)
		}
	}
	if clienttest.HasKey(r, a.Addr) != true {
		t.Errorf("left endpoint's key gone while its stream runs")
	}
	st.CloseSend()
	if _, err := st.Recv(); err == nil {
		t.Fatal("Recv after CloseSend: nil error, want io.EOF")
	}
	grpctest.WaitFor(t, testTimeout, "the stream's connection was not closed when it ended", func() bool {
		return !clienttest.HasKey(r, a.Addr) && a.Open() == 0
	})
}

// gatedFactory holds makes of one key after the first until release.
type gatedFactory struct {
	factory.KeyedFactory[string, *client]
	key     string
	mu      sync.Mutex
	made    int
	gate    chan struct{}
	waiting chan struct{} // one value per make held at the gate
}

func (g *gatedFactory) Make(c context.Context, key string) (*client, error) {
	if key == g.key {
		g.mu.Lock()
		g.made++
		n := g.made
		g.mu.Unlock()
		if n > 1 {
			g.waiting <- struct{}{}
			select {
			case <-g.gate:
			case <-c.Done():
				return nil, c.Err()
			}
		}
	}
	return g.KeyedFactory.Make(c, key)
}

// An arriving endpoint takes RPCs at once, while it is still being warmed
// to MinIdlePerKey connections, and is warmed to them.
func TestRouterArrivingEndpointServesDuringWarmUp(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	gf := &gatedFactory{KeyedFactory: clienttest.NewFactory(t, config{ConnectTimeout: testTimeout}), key: b.Addr, gate: make(chan struct{}), waiting: make(chan struct{}, 8)}
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 3
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Factory: gf, Pool: pcfg})
	conn := r.Conn("svc")
	if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
		t.Fatal(err)
	}

	res.Set("svc", eps(b)) // b replaces a
	<-gf.waiting           // the warm-up made one connection and waits on the second
	for i := range 5 {
		if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
			t.Fatalf("RPC %d during the warm-up: %v", i, err)
		}
	}
	if got := b.UnaryCalls(); got != 5 {
		t.Errorf("arriving endpoint UnaryCalls() = %d during its warm-up, want 5", got)
	}
	close(gf.gate)
	grpctest.WaitFor(t, testTimeout, "arriving endpoint never warmed to MinIdlePerKey", func() bool {
		ks := r.Pool().KeyStats(b.Addr)
		return ks.Created == 3 && ks.Idle == 3
	})
}

// An address two services list keeps its connections when one of them
// drops it.
func TestRouterAddressSharedByServices(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"x": eps(a), "y": eps(a)})
	// No warm-up, so that the one connection is all there is.
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	for _, s := range []string{"x", "y"} {
		if err := unary(grpctest.Context(t, testTimeout), r.Conn(s)); err != nil {
			t.Fatal(err)
		}
	}
	before := r.Pool().KeyStats(a.Addr)
	res.Set("x", nil)
	grpctest.WaitFor(t, testTimeout, "x never emptied", func() bool { return clienttest.ServiceStats(r, "x").Endpoints == 0 })
	if err := unary(grpctest.Context(t, testTimeout), r.Conn("y")); err != nil {
		t.Fatalf("RPC to y after x dropped the shared address: %v", err)
	}
	after := r.Pool().KeyStats(a.Addr)
	if after.Destroyed != 0 || after.Created != before.Created {
		t.Errorf("shared address Destroyed = %d, Created %d -> %d after x dropped it; want its connections kept for y", after.Destroyed, before.Created, after.Created)
	}
	res.Set("y", nil)
	grpctest.WaitFor(t, testTimeout, "address listed by no service kept its connection", func() bool { return !clienttest.HasKey(r, a.Addr) })
}

// The rolling release of the issue, with static discovery: three backends
// replaced one by one under continuous traffic (the new one is added, the
// old one removed and then stopped gracefully), and no RPC fails.
func TestRollingReleaseStaticZeroFailures(t *testing.T) {
	old := []*grpctest.Server{grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})}
	live := append([]*grpctest.Server(nil), old...)
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(live...)})
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 1
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg})
	conn := r.Conn("svc")
	l := clienttest.UnaryTraffic(t, testTimeout, conn, 8)
	l.More(t, 300)
	for _, o := range old {
		if o.UnaryCalls() == 0 {
			t.Fatalf("backend %s got no traffic before the release", o.Addr)
		}
	}

	var fresh []*grpctest.Server
	for i, o := range old {
		n := grpctest.Start(t, grpctest.Options{})
		fresh = append(fresh, n)
		live = append(live, n)
		res.Set("svc", eps(live...)) // the new one registers
		grpctest.WaitFor(t, testTimeout, "traffic never reached the new backend", func() bool { return n.UnaryCalls() > 0 })
		l.More(t, 200)

		live = append(live[:0:0], live[1:]...) // the old one deregisters
		res.Set("svc", eps(live...))
		// ...and, once its clients have closed their connections (the
		// drain a leaving backend waits for), stops gracefully.
		grpctest.WaitFor(t, testTimeout, "clients never let go of the old backend", func() bool { return o.Open() == 0 })
		o.GracefulStop()
		l.More(t, 200)
		t.Logf("step %d: replaced %s by %s", i+1, o.Addr, n.Addr)
	}
	calls := clienttest.CheckRolledOver(t, r, l, old, fresh)
	st := r.Pool().Stats()
	t.Logf("%d RPCs, none failed; pool: created %d, destroyed %d, keys %d", calls, st.Created, st.Destroyed, st.Keys)
	if st.Keys != 3 {
		t.Errorf("pool Keys = %d at the end, want 3 (the new backends only)", st.Keys)
	}
}

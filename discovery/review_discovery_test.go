package discovery_test

// Review tests: each checks one documented promise of discovery (or of its
// resolvers as seen through a Router). Servers listen on 127.0.0.1 only;
// every wait is bounded.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	mdns "github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/consul"
	"github.com/kpool-go/kpool/discovery/dns"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

const reviewTimeout = 10 * time.Second

// reviewCall makes one UnaryCall through conn, turning a panic in the
// caller's goroutine into an error so that a bug fails the test instead of
// crashing the binary.
func reviewCall(ctx context.Context, conn *discovery.Conn[stub]) (err error, panicked any) {
	defer func() {
		if v := recover(); v != nil {
			panicked = v
		}
	}()
	return unary(ctx, conn), nil
}

// ---------------------------------------------------------------------------
// (1) User callbacks that panic.

// grpcpool.Config.Classifier: "One that panics counts as broken (the
// connection cannot be judged), and the RPC's error (Release's) gets the
// panic as an error wrapping keyedpool.ErrFactoryPanic." A Router's Conn
// "holds it as grpcpool.Conn does". A panicking Classifier must neither
// panic out of the RPC nor keep the RPC's share of the connection.
func TestReviewDiscoveryClassifierPanicThroughConn(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	f := clienttest.NewFactory(t, grpcpool.Config[string, stub]{
		ConnectTimeout: reviewTimeout,
		Classifier:     func(error, connectivity.State) bool { panic("classifier boom") },
	})
	r, err := discovery.NewRouter(discovery.RouterConfig[stub]{Resolver: res, Factory: f, Pool: clienttest.SharedLeases()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := r.Close(c); err != nil {
			t.Errorf("Router.Close() = %v, want nil (a share lost to the Classifier's panic?)", err)
		}
	}()
	conn := r.Conn("svc")
	if err, p := reviewCall(grpctest.Context(t, reviewTimeout), conn); err != nil || p != nil {
		t.Fatalf("first RPC: err %v, panic %v", err, p)
	}
	a.FailNext(1) // an RPC error, so that the Classifier is asked
	err, p := reviewCall(grpctest.Context(t, reviewTimeout), conn)
	if p != nil {
		t.Errorf("RPC whose Classifier panicked panicked out of Invoke: %v (want an error wrapping keyedpool.ErrFactoryPanic)", p)
	} else if !errors.Is(err, keyedpool.ErrFactoryPanic) {
		t.Errorf("RPC whose Classifier panicked: err = %v, want it to wrap keyedpool.ErrFactoryPanic", err)
	}
	if got := r.Pool().KeyStats(a.Addr).SharesInUse; got != 0 {
		t.Errorf("after the RPC ended, SharesInUse = %d, want 0 (the share was never given back)", got)
	}
	if err, p := reviewCall(grpctest.Context(t, reviewTimeout), conn); err != nil || p != nil {
		t.Errorf("RPC after the panic: err %v, panic %v; want success", err, p)
	}
}

// Router.Release: "The client is invalidated (closed once its other leases
// are back) when err means its connection is broken
// (grpcpool.Client.Broken)"; with grpcpool.Config.Classifier: "One that
// panics counts as broken". Release must give the lease back, invalidated,
// rather than panic with the lease still out.
func TestReviewDiscoveryClassifierPanicRelease(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	f := clienttest.NewFactory(t, grpcpool.Config[string, stub]{
		ConnectTimeout: reviewTimeout,
		Classifier:     func(error, connectivity.State) bool { panic("classifier boom") },
	})
	r, err := discovery.NewRouter(discovery.RouterConfig[stub]{Resolver: res, Factory: f})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := r.Close(c); err != nil {
			t.Errorf("Router.Close() = %v, want nil (a lease lost to the Classifier's panic?)", err)
		}
	}()
	h, err := r.Borrow(grpctest.Context(t, reviewTimeout), "svc")
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	var p any
	func() {
		defer func() { p = recover() }()
		rerr = r.Release(h, status.Error(codes.Internal, "rpc failed"))
	}()
	if p != nil {
		t.Errorf("Router.Release with a panicking Classifier panicked: %v (want the lease given back, invalidated)", p)
	}
	t.Logf("Release error: %v", rerr)
	st := r.Pool().Stats()
	if st.Active != 0 {
		t.Errorf("after Release, pool Active = %d, want 0 (lease lost)", st.Active)
	}
	if st.Destroyed != 1 {
		t.Errorf("after Release, pool Destroyed = %d, want 1 (a panicking Classifier counts as broken)", st.Destroyed)
	}
}

// panicBalancer panics while armed.
type panicBalancer struct{ armed *atomic.Bool }

func (b panicBalancer) Pick(c discovery.Candidates) int {
	if b.armed.Load() {
		panic("balancer boom")
	}
	return discovery.RoundRobin{}.Pick(c)
}

// A user Balancer that panics: the panic reaches the borrower's goroutine
// (nothing recovers it), but it must not cost the pool any room: no lease
// out, the Router still routes once the Balancer behaves. "All exported
// methods are safe for concurrent use." (no promise on panics; checks that
// room is not lost).
func TestReviewDiscoveryPanickingBalancerLosesNoRoom(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	var armed atomic.Bool
	pcfg := clienttest.SharedLeases()
	pcfg.MaxTotalPerKey = 1
	r := clienttest.NewRouter(t, reviewTimeout, discovery.RouterConfig[stub]{
		Resolver: res, Pool: pcfg,
		NewBalancer: func() discovery.Balancer { return panicBalancer{&armed} },
	})
	conn := r.Conn("svc")
	if err, p := reviewCall(grpctest.Context(t, reviewTimeout), conn); err != nil || p != nil {
		t.Fatalf("first RPC: err %v, panic %v", err, p)
	}
	armed.Store(true)
	for range 20 {
		_, p := reviewCall(grpctest.Context(t, reviewTimeout), conn)
		if p == nil {
			t.Fatal("armed balancer did not panic")
		}
	}
	armed.Store(false)
	st := r.Pool().Stats()
	if st.Active != 0 || st.SharesInUse != 0 || st.Waiters != 0 {
		t.Errorf("after panicking picks: %+v, want nothing lent or waiting", st)
	}
	for i := range 5 {
		if err, p := reviewCall(grpctest.Context(t, reviewTimeout), conn); err != nil || p != nil {
			t.Fatalf("RPC %d after the balancer recovered: err %v, panic %v", i, err, p)
		}
	}
}

// ---------------------------------------------------------------------------
// (2) Close racing updates and RPCs.

// Router.Close: "Close stops watching services and drops them (Services
// then returns none), fails borrowers waiting for a first lookup with
// ErrClosed, and closes the pool: it waits ... for the watches and
// warm-ups to end and for lent clients to come back". Conn: "After Close
// its RPCs fail with Unavailable, wrapping ErrClosed." Under churn of
// updates, warm-ups and RPCs, Close leaves no goroutine and no connection,
// and every RPC either succeeds or fails with that error.
func TestReviewDiscoveryCloseRacingUpdatesAndRPCs(t *testing.T) {
	servers := []*grpctest.Server{
		grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{}),
		grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{}),
	}
	for round := range 3 {
		func() {
			base := runtime.NumGoroutine()
			res := static.New(map[string][]discovery.Endpoint{"svc": eps(servers[0], servers[1])})
			f := clienttest.NewFactory(t, grpcpool.Config[string, stub]{ConnectTimeout: reviewTimeout})
			pcfg := clienttest.SharedLeases()
			pcfg.MinIdlePerKey = 1
			r, err := discovery.NewRouter(discovery.RouterConfig[stub]{Resolver: res, Factory: f, Pool: pcfg, WarmInterval: 5 * time.Millisecond, IdleTimeout: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			conn := r.Conn("svc")
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var bad atomic.Int64
			var badErr atomic.Value
			var ok, closedErrs, forgotErrs atomic.Int64
			for range 6 {
				wg.Go(func() {
					for i := 0; i < 100000; i++ {
						c, cancel := context.WithTimeout(context.Background(), reviewTimeout)
						err, p := reviewCall(c, conn)
						cancel()
						switch {
						case p != nil:
							bad.Add(1)
							badErr.Store(fmt.Errorf("panic: %v", p))
						case err == nil:
							ok.Add(1)
						case errors.Is(err, discovery.ErrClosed) && status.Code(err) == codes.Unavailable:
							closedErrs.Add(1)
							return
						case errors.Is(err, discovery.ErrNoEndpoints) && strings.Contains(err.Error(), "stopped (Forget) before its first lookup ended"):
							// Documented for Forget: "borrowers still
							// waiting for the first lookup fail with
							// ErrNoEndpoints".
							forgotErrs.Add(1)
						default:
							// Before Close: a leaving endpoint may never
							// fail an RPC either (borrows try others).
							bad.Add(1)
							badErr.Store(err)
							select {
							case <-stop:
								return
							default:
							}
						}
					}
				})
			}
			wg.Go(func() { // churn: endpoints leave and arrive
				sets := [][]*grpctest.Server{{servers[0], servers[1]}, {servers[2]}, {servers[1], servers[3]}, {servers[0], servers[2], servers[3]}}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					res.Set("svc", eps(sets[i%len(sets)]...))
					r.Warm()
					_, _ = r.Endpoints(context.Background(), "other")
					if i%7 == 0 {
						r.Forget("svc")
					}
					time.Sleep(time.Millisecond)
				}
			})
			time.Sleep(300 * time.Millisecond)
			c, cancel := context.WithTimeout(context.Background(), reviewTimeout)
			cerr := r.Close(c)
			cancel()
			close(stop)
			wg.Wait()
			if cerr != nil {
				t.Errorf("round %d: Close() = %v, want nil", round, cerr)
			}
			if n := bad.Load(); n > 0 {
				t.Errorf("round %d: %d RPCs failed with other than Unavailable wrapping ErrClosed; last: %v", round, n, badErr.Load())
			}
			if closedErrs.Load() == 0 || ok.Load() == 0 {
				t.Errorf("round %d: %d RPCs succeeded and %d failed with ErrClosed, want some of both", round, ok.Load(), closedErrs.Load())
			}
			if got := r.Services(); len(got) != 0 {
				t.Errorf("round %d: Services() after Close = %+v, want none", round, got)
			}
			if _, err := r.Borrow(context.Background(), "svc"); !errors.Is(err, discovery.ErrClosed) {
				t.Errorf("round %d: Borrow after Close = %v, want ErrClosed", round, err)
			}
			grpctest.WaitFor(t, reviewTimeout, fmt.Sprintf("round %d: servers kept connections after Close", round), func() bool {
				for _, s := range servers {
					if s.Open() != 0 {
						return false
					}
				}
				return true
			})
			waitGoroutines(t, base, fmt.Sprintf("round %d", round))
			t.Logf("round %d: %d RPCs ok, %d ErrClosed, %d failed waiting for a first lookup Forget stopped", round, ok.Load(), closedErrs.Load(), forgotErrs.Load())
		}()
	}
}

// waitGoroutines waits, bounded, for the goroutine count to come back to
// base, and dumps the stacks if it does not.
func waitGoroutines(t *testing.T, base int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Errorf("%s: %d goroutines after Close, %d before; stacks:\n%s", what, runtime.NumGoroutine(), base, buf[:n])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close with RPCs in flight whose context is shorter than them: Close
// returns ctx's error, the RPCs still end (they were not cut), and once
// they have, nothing is left: "it waits, bounded by ctx, ... for lent
// clients to come back (see keyedpool.Pool.Close; end RPCs and streams
// first). It returns the pool's errors and, if ctx ended first,
// ctx.Err()."
func TestReviewDiscoveryCloseWithRPCsInFlight(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	base := runtime.NumGoroutine()
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	f := clienttest.NewFactory(t, grpcpool.Config[string, stub]{ConnectTimeout: reviewTimeout})
	r, err := discovery.NewRouter(discovery.RouterConfig[stub]{Resolver: res, Factory: f, Pool: clienttest.SharedLeases()})
	if err != nil {
		t.Fatal(err)
	}
	conn := r.Conn("svc")
	release := a.Hold()
	defer release()
	errc := make(chan error, 3)
	for range 3 {
		go func() {
			err, p := reviewCall(grpctest.Context(t, reviewTimeout), conn)
			if p != nil {
				err = fmt.Errorf("panic %v", p)
			}
			errc <- err
		}()
	}
	grpctest.WaitFor(t, reviewTimeout, "RPCs never reached the backend", func() bool { return a.InFlight() == 3 })
	c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	cerr := r.Close(c)
	cancel()
	if !errors.Is(cerr, context.DeadlineExceeded) {
		t.Errorf("Close with RPCs in flight and a 100ms ctx = %v, want DeadlineExceeded", cerr)
	}
	// New RPCs fail at once.
	if err, _ := reviewCall(grpctest.Context(t, reviewTimeout), conn); !errors.Is(err, discovery.ErrClosed) || status.Code(err) != codes.Unavailable {
		t.Errorf("RPC after Close = %v, want Unavailable wrapping ErrClosed", err)
	}
	release()
	for range 3 {
		if err := <-errc; err != nil {
			t.Errorf("RPC in flight at Close: %v, want success (Close does not cut RPCs)", err)
		}
	}
	c2, cancel2 := context.WithTimeout(context.Background(), reviewTimeout)
	defer cancel2()
	if err := r.Close(c2); err != nil {
		t.Errorf("second Close after the RPCs ended = %v, want nil", err)
	}
	grpctest.WaitFor(t, reviewTimeout, "the backend kept its connection after the RPCs ended", func() bool { return a.Open() == 0 })
	waitGoroutines(t, base, "close with RPCs in flight")
}

// ---------------------------------------------------------------------------
// (3) Rolling release.

// README, Rolling releases: "An endpoint that leaves the list ... gets no
// new borrow from that moment and no new connection; its idle connections
// are closed at once; its lent connections are closed when they come back,
// never under an RPC or stream in flight; then its key leaves the pool. An
// endpoint that arrives takes traffic at once". And one that comes back is
// an arriving endpoint again.
func TestReviewDiscoveryRollingReleaseLeaveDrainReturn(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a)})
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 1
	r := clienttest.NewRouter(t, reviewTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg})
	conn := r.Conn("svc")
	updates := func() int64 { return clienttest.ServiceStats(r, "svc").Updates }

	release := a.Hold()
	const held = 4
	errc := make(chan error, held)
	for range held {
		go func() { errc <- unary(grpctest.Context(t, reviewTimeout), conn) }()
	}
	grpctest.WaitFor(t, reviewTimeout, "held RPCs never reached a", func() bool { return a.InFlight() == held })
	openBefore := a.Open()

	u := updates()
	res.Set("svc", eps(b))
	grpctest.WaitFor(t, reviewTimeout, "update never applied", func() bool { return updates() > u })
	createdA := r.Pool().KeyStats(a.Addr).Created
	callsA := a.UnaryCalls()
	for i := range 30 {
		if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
			t.Fatalf("RPC %d after a left: %v", i, err)
		}
	}
	if got := a.UnaryCalls() - callsA; got != 0 {
		t.Errorf("left endpoint got %d new RPCs after the update was applied, want 0", got)
	}
	if got := r.Pool().KeyStats(a.Addr).Created - createdA; got != 0 {
		t.Errorf("left endpoint got %d new connections, want 0", got)
	}
	if got := a.Open(); got == 0 || got > openBefore {
		t.Errorf("left endpoint's open connections = %d with RPCs in flight (before: %d), want its lent connection kept", got, openBefore)
	}
	release()
	for range held {
		if err := <-errc; err != nil {
			t.Errorf("in-flight RPC on the left endpoint: %v, want success", err)
		}
	}
	grpctest.WaitFor(t, reviewTimeout, "left endpoint's connections never closed once idle", func() bool { return a.Open() == 0 })
	grpctest.WaitFor(t, reviewTimeout, "left endpoint's key never left the pool", func() bool { return !clienttest.HasKey(r, a.Addr) })

	// It comes back.
	u = updates()
	res.Set("svc", eps(a, b))
	grpctest.WaitFor(t, reviewTimeout, "update never applied", func() bool { return updates() > u })
	callsA = a.UnaryCalls()
	for i := range 20 {
		if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
			t.Fatalf("RPC %d after a came back: %v", i, err)
		}
	}
	if got := a.UnaryCalls() - callsA; got < 5 {
		t.Errorf("returning endpoint got %d of 20 RPCs round robin over 2, want about 10", got)
	}
	grpctest.WaitFor(t, reviewTimeout, "returning endpoint not warmed to MinIdlePerKey again", func() bool {
		ks := r.Pool().KeyStats(a.Addr)
		return ks.Idle+ks.Active >= 1 && a.Open() >= 1
	})
}

// The same, but the endpoint comes back while its lent connections are
// still out: the RPCs finish, the endpoint takes new RPCs, and when it
// leaves again for good every connection to it closes and its key goes.
func TestReviewDiscoveryRollingReleaseReturnWhileDraining(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})
	r := clienttest.NewRouter(t, reviewTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	conn := r.Conn("svc")
	updates := func() int64 { return clienttest.ServiceStats(r, "svc").Updates }
	for range 4 {
		if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
			t.Fatal(err)
		}
	}
	// Hold RPCs on a only: b answers.
	release := a.Hold()
	errc := make(chan error, 8)
	for range 8 {
		go func() { errc <- unary(grpctest.Context(t, reviewTimeout), conn) }()
	}
	grpctest.WaitFor(t, reviewTimeout, "no RPC held on a", func() bool { return a.InFlight() >= 2 })
	heldA := a.InFlight()

	u := updates()
	res.Set("svc", eps(b))
	grpctest.WaitFor(t, reviewTimeout, "update never applied", func() bool { return updates() > u })
	u = updates()
	res.Set("svc", eps(a, b))
	grpctest.WaitFor(t, reviewTimeout, "update never applied", func() bool { return updates() > u })
	release()
	for range 8 {
		if err := <-errc; err != nil {
			t.Errorf("RPC in flight across leave and return: %v", err)
		}
	}
	callsA := a.UnaryCalls()
	for i := range 20 {
		if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
			t.Fatalf("RPC %d after a came back: %v", i, err)
		}
	}
	if got := a.UnaryCalls() - callsA; got < 5 {
		t.Errorf("returned endpoint got %d of 20 RPCs, want about 10", got)
	}
	t.Logf("held on a: %d", heldA)

	u = updates()
	res.Set("svc", eps(b))
	grpctest.WaitFor(t, reviewTimeout, "update never applied", func() bool { return updates() > u })
	grpctest.WaitFor(t, reviewTimeout, "a's connections never closed after it left for good", func() bool { return a.Open() == 0 })
	grpctest.WaitFor(t, reviewTimeout, "a's key never left the pool", func() bool { return !clienttest.HasKey(r, a.Addr) })
	if st := r.Pool().Stats(); st.Active != 0 {
		t.Errorf("pool Active = %d with no RPC running, want 0", st.Active)
	}
}

// ---------------------------------------------------------------------------
// (4) Resolvers that error or return garbage.

// Watcher.Error: "The endpoints last delivered stay the best known."
// Router.Borrow: "When the picked endpoint cannot give a client ... Borrow
// tries the service's other endpoints, each once". ErrNoEndpoints: "A
// service with no endpoints fails Borrow at once with an error wrapping
// discovery.ErrNoEndpoints that names the service (and the last lookup
// error), and RPCs with Unavailable; it recovers as soon as endpoints
// appear."
func TestReviewDiscoveryGarbageAndErrorsKeepLastGood(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	dead := grpctest.DeadAddr(t)
	host, port, _ := net.SplitHostPort(dead)
	dp, _ := strconv.Atoi(port)
	res := static.New(nil)
	// Duplicates, a dead address, an address without a port (dialled at
	// gRPC's default port): only a and b serve.
	res.Set("svc", []discovery.Endpoint{
		ep(a), ep(a), {Address: host, Port: dp}, ep(b), ep(b), {Address: "127.0.0.1"}, ep(a),
	})
	r := clienttest.NewRouter(t, reviewTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	got, err := r.Endpoints(grpctest.Context(t, reviewTimeout), "svc")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Errorf("Endpoints with duplicates = %v, want 4 distinct", got)
	}
	conn := r.Conn("svc")
	for i := range 30 {
		if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
			t.Fatalf("RPC %d over a list with bad endpoints: %v", i, err)
		}
	}
	if a.UnaryCalls() == 0 || b.UnaryCalls() == 0 {
		t.Errorf("a got %d, b got %d RPCs, want both some", a.UnaryCalls(), b.UnaryCalls())
	}

	res.Set("svc", eps(a, b))
	grpctest.WaitFor(t, reviewTimeout, "clean list never applied", func() bool { return clienttest.ServiceStats(r, "svc").Endpoints == 2 })
	u := clienttest.ServiceStats(r, "svc").Updates
	res.Fail("svc", errors.New("registry down"))
	res.Fail("svc", errors.New("registry still down"))
	grpctest.WaitFor(t, reviewTimeout, "errors never counted", func() bool { return clienttest.ServiceStats(r, "svc").Errors == 2 })
	st := clienttest.ServiceStats(r, "svc")
	if st.Endpoints != 2 || st.LastError != "registry still down" || st.Updates != u {
		t.Errorf("after errors: %+v, want the 2 endpoints kept and LastError %q", st, "registry still down")
	}
	for i := range 10 {
		if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
			t.Fatalf("RPC %d while the resolver fails: %v", i, err)
		}
	}

	res.Set("svc", nil)
	grpctest.WaitFor(t, reviewTimeout, "empty list never applied", func() bool { return clienttest.ServiceStats(r, "svc").Endpoints == 0 })
	_, err = r.Borrow(grpctest.Context(t, reviewTimeout), "svc")
	if !errors.Is(err, discovery.ErrNoEndpoints) || !strings.Contains(err.Error(), `"svc"`) {
		t.Errorf("Borrow with no endpoints = %v, want ErrNoEndpoints naming svc", err)
	}
	if err := unary(grpctest.Context(t, reviewTimeout), conn); status.Code(err) != codes.Unavailable || !errors.Is(err, discovery.ErrNoEndpoints) {
		t.Errorf("RPC with no endpoints = %v, want Unavailable wrapping ErrNoEndpoints", err)
	}
	grpctest.WaitFor(t, reviewTimeout, "endpoints left in the pool with the empty list", func() bool {
		return !clienttest.HasKey(r, a.Addr) && !clienttest.HasKey(r, b.Addr) && a.Open() == 0 && b.Open() == 0
	})

	res.Set("svc", eps(b))
	grpctest.WaitFor(t, reviewTimeout, "recovery never applied", func() bool { return clienttest.ServiceStats(r, "svc").Endpoints == 1 })
	if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
		t.Errorf("RPC after endpoints came back: %v", err)
	}
	if st := clienttest.ServiceStats(r, "svc"); st.LastError != "" {
		t.Errorf("LastError after a good snapshot = %q, want \"\"", st.LastError)
	}
}

// reviewDNS is a DNS server on 127.0.0.1 (UDP) answering A queries for one
// name with 127.0.0.1, or SERVFAIL for everything while failing.
type reviewDNS struct {
	addr    string
	srv     *mdns.Server
	failing atomic.Bool
	answers atomic.Int64 // successful answers
}

func startReviewDNS(t *testing.T, name string) *reviewDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &reviewDNS{addr: pc.LocalAddr().String()}
	started := make(chan struct{})
	d.srv = &mdns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(q)
		if d.failing.Load() {
			m.Rcode = mdns.RcodeServerFailure
		} else {
			if len(q.Question) == 1 && q.Question[0].Qtype == mdns.TypeA && strings.EqualFold(q.Question[0].Name, mdns.Fqdn(name)) {
				rr, _ := mdns.NewRR(mdns.Fqdn(name) + " 0 IN A 127.0.0.1")
				m.Answer = append(m.Answer, rr)
			}
			d.answers.Add(1)
		}
		_ = w.WriteMsg(m)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = d.srv.ActivateAndServe() }()
	select {
	case <-started:
	case <-time.After(reviewTimeout):
		t.Fatal("DNS server never started")
	}
	t.Cleanup(func() { _ = d.srv.Shutdown(); <-done })
	return d
}

// ServiceStats.LastError: `"" when the latest lookup succeeded`. README
// (DNS): "Each failed lookup is reported to the watch (counted in
// Services().Errors, with LastError ...); the endpoints last delivered
// keep serving, and the next lookup comes after the usual interval." Once
// the DNS server answers again with the same records, the latest lookup
// succeeded: LastError must be "" again.
func TestReviewDiscoveryDNSLastErrorClearedWhenLookupsSucceedAgain(t *testing.T) {
	b := grpctest.Start(t, grpctest.Options{})
	_, p, _ := net.SplitHostPort(b.Addr)
	name := "web.review.test:" + p
	d := startReviewDNS(t, "web.review.test")
	res, err := dns.New(dns.Config{Servers: []string{d.addr}, Interval: 20 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := clienttest.NewRouter(t, reviewTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	if err := r.Watch(name); err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, reviewTimeout, "router never saw the A record", func() bool { return clienttest.ServiceStats(r, name).Endpoints == 1 })

	d.failing.Store(true)
	grpctest.WaitFor(t, reviewTimeout, "failed lookups never counted", func() bool { return clienttest.ServiceStats(r, name).Errors >= 2 })
	down := clienttest.ServiceStats(r, name)
	if down.Endpoints != 1 || !strings.Contains(down.LastError, "SERVFAIL") {
		t.Errorf("with DNS failing: %+v, want the endpoint kept and LastError naming SERVFAIL", down)
	}
	if err := unary(grpctest.Context(t, reviewTimeout), r.Conn(name)); err != nil {
		t.Errorf("RPC while DNS fails: %v", err)
	}

	d.failing.Store(false)
	before := d.answers.Load()
	// Each lookup asks A and AAAA: 10 answers are 5 lookups that succeeded.
	grpctest.WaitFor(t, reviewTimeout, "DNS never answered again", func() bool { return d.answers.Load() >= before+10 })
	errs := clienttest.ServiceStats(r, name).Errors
	time.Sleep(100 * time.Millisecond)
	up := clienttest.ServiceStats(r, name)
	if up.Errors != errs {
		t.Fatalf("errors still counted after DNS recovered: %d -> %d", errs, up.Errors)
	}
	if up.LastError != "" {
		t.Errorf("Services() with lookups succeeding again (same records) = %+v, want LastError \"\" (the latest lookup succeeded)", up)
	}
}

// fakeConsul serves /v1/health/service/<name> as a Consul agent does, with
// blocking queries held briefly, or 500 while failing.
type fakeConsul struct {
	srv     *httptest.Server
	failing atomic.Bool
	oks     atomic.Int64
	mu      sync.Mutex
	index   uint64
	entries []*api.ServiceEntry
}

func startFakeConsul(t *testing.T, backends ...*grpctest.Server) *fakeConsul {
	t.Helper()
	f := &fakeConsul{index: 10}
	for i, b := range backends {
		host, port, _ := net.SplitHostPort(b.Addr)
		p, _ := strconv.Atoi(port)
		f.entries = append(f.entries, &api.ServiceEntry{
			Node:    &api.Node{Node: "n1", Address: host},
			Service: &api.AgentService{ID: fmt.Sprintf("web-%d", i), Service: "web", Address: host, Port: p},
			Checks:  api.HealthChecks{{Node: "n1", CheckID: "c", Status: api.HealthPassing}},
		})
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasPrefix(req.URL.Path, "/v1/health/service/") {
			http.NotFound(w, req)
			return
		}
		if f.failing.Load() {
			http.Error(w, "fake consul: boom", http.StatusInternalServerError)
			return
		}
		f.mu.Lock()
		idx := f.index
		body, _ := json.Marshal(f.entries)
		f.mu.Unlock()
		if req.URL.Query().Get("index") == strconv.FormatUint(idx, 10) {
			// A blocking query with the current index: hold it a little.
			select {
			case <-time.After(30 * time.Millisecond):
			case <-req.Context().Done():
				return
			}
		}
		f.oks.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
		w.Header().Set("X-Consul-KnownLeader", "true")
		w.Header().Set("X-Consul-LastContact", "0")
		_, _ = w.Write(body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// README (Consul): "It keeps the last good endpoints while Consul is
// unreachable or answers with errors (each failed query counts in
// Services().Errors) and retries with jittered exponential backoff."
// ServiceStats.LastError: `"" when the latest lookup succeeded`. Once
// Consul answers again, with the same instances, LastError must clear.
func TestReviewDiscoveryConsulLastErrorClearedWhenQueriesSucceedAgain(t *testing.T) {
	b1, b2 := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	fc := startFakeConsul(t, b1, b2)
	res, err := consul.New(consul.Config{
		Address:     strings.TrimPrefix(fc.srv.URL, "http://"),
		WaitTime:    time.Second,
		BackoffBase: 10 * time.Millisecond,
		BackoffMax:  40 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := clienttest.NewRouter(t, reviewTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	if err := r.Watch("web"); err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, reviewTimeout, "router never saw the 2 instances", func() bool { return clienttest.ServiceStats(r, "web").Endpoints == 2 })

	fc.failing.Store(true)
	grpctest.WaitFor(t, reviewTimeout, "failed queries never counted", func() bool { return clienttest.ServiceStats(r, "web").Errors >= 2 })
	down := clienttest.ServiceStats(r, "web")
	if down.Endpoints != 2 || down.LastError == "" {
		t.Errorf("with Consul failing: %+v, want the 2 endpoints kept and the last error", down)
	}
	if err := unary(grpctest.Context(t, reviewTimeout), r.Conn("web")); err != nil {
		t.Errorf("RPC while Consul fails: %v", err)
	}

	fc.failing.Store(false)
	before := fc.oks.Load()
	grpctest.WaitFor(t, reviewTimeout, "Consul never answered again", func() bool { return fc.oks.Load() >= before+3 })
	up := clienttest.ServiceStats(r, "web")
	if up.Endpoints != 2 {
		t.Errorf("after recovery: %+v, want 2 endpoints", up)
	}
	if up.LastError != "" {
		t.Errorf("Services() with queries succeeding again (same instances) = %+v, want LastError \"\" (the latest lookup succeeded)", up)
	}
}

// A Resolver whose Watch returns at once with garbage and then gives up:
// "It returns early only with an error that no retry can cure". The
// Router: the service keeps its last endpoints and says why (an error
// counted, LastError naming the service); after Forget, the next use
// watches it again (a new first lookup) and recovers.
type onceResolver struct {
	calls atomic.Int64
	good  []discovery.Endpoint
}

func (o *onceResolver) Watch(ctx context.Context, service string, w discovery.Watcher) error {
	n := o.calls.Add(1)
	w.Update(o.good)
	if n == 1 {
		return errors.New("resolver gave up")
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestReviewDiscoveryResolverGivesUpKeepsLastAndRecoversAfterForget(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	o := &onceResolver{good: eps(a)}
	r := clienttest.NewRouter(t, reviewTimeout, discovery.RouterConfig[stub]{Resolver: o, Pool: clienttest.SharedLeases()})
	conn := r.Conn("svc")
	grpctest.WaitFor(t, reviewTimeout, "watch end never reported", func() bool { return clienttest.ServiceStats(r, "svc").Errors == 1 })
	st := clienttest.ServiceStats(r, "svc")
	if st.Endpoints != 1 || !strings.Contains(st.LastError, `"svc"`) || !strings.Contains(st.LastError, "resolver gave up") {
		t.Errorf("after the resolver gave up: %+v, want the endpoint kept and LastError naming svc and the cause", st)
	}
	if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
		t.Errorf("RPC after the resolver gave up: %v", err)
	}
	r.Forget("svc")
	if err := unary(grpctest.Context(t, reviewTimeout), conn); err != nil {
		t.Errorf("RPC after Forget (a new watch): %v", err)
	}
	st = clienttest.ServiceStats(r, "svc")
	if o.calls.Load() != 2 || st.Errors != 0 || st.LastError != "" {
		t.Errorf("after re-watch: calls %d, %+v; want a second watch with no error", o.calls.Load(), st)
	}
}

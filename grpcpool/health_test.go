package grpcpool_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// healthBackend is a gRPC backend on 127.0.0.1 whose grpc.health.v1 Check
// always answers SERVING, after delay or, when gate is set, once gate is
// closed; it counts the Checks it receives and how many ran at once.
// UnaryCall echoes at once.
type healthBackend struct {
	healthpb.UnimplementedHealthServer
	testpb.UnimplementedBenchmarkServiceServer
	addr    string
	delay   time.Duration
	gate    chan struct{} // nil: answer after delay
	entered chan struct{} // gets a value, when there is room, as each Check arrives

	checks, inFlight, maxInFlight atomic.Int64
}

// startHealthBackend serves b until the test ends.
func startHealthBackend(t *testing.T, b *healthBackend) *healthBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	b.entered = make(chan struct{}, 1)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, b)
	testpb.RegisterBenchmarkServiceServer(gs, b)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return b
}

func (b *healthBackend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.checks.Add(1)
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	for m := b.maxInFlight.Load(); n > m && !b.maxInFlight.CompareAndSwap(m, n); m = b.maxInFlight.Load() {
	}
	select {
	case b.entered <- struct{}{}:
	default:
	}
	var timer <-chan time.Time // nil, which never fires, when gated
	if b.gate == nil {
		tm := time.NewTimer(b.delay)
		defer tm.Stop()
		timer = tm.C
	}
	select {
	case <-b.gate:
	case <-timer:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (b *healthBackend) UnaryCall(_ context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: in.GetPayload()}, nil
}

// traffic is what callers saw in deadlineTraffic.
type traffic struct {
	ok, ownDeadline int64 // succeeded; failed with DeadlineExceeded once their deadline had passed
	failed          int64 // failed any other way
	firstFailure    error
}

// deadlineTraffic sends UnaryCalls through foo from callers goroutines,
// each call with its own deadline, for dur (and at most 100,000 calls a
// caller), and sorts their outcomes.
func deadlineTraffic(foo stub, callers int, deadline, dur time.Duration) traffic {
	var (
		tr traffic
		mu sync.Mutex // protects tr.firstFailure
		wg sync.WaitGroup
	)
	end := time.Now().Add(dur)
	for range callers {
		wg.Go(func() {
			for i := 0; i < 100_000 && time.Now().Before(end); i++ {
				c, cancel := context.WithTimeout(context.Background(), deadline)
				dl, _ := c.Deadline()
				_, err := foo.UnaryCall(c, req("x"))
				returned := time.Now()
				cancel()
				switch {
				case err == nil:
					atomic.AddInt64(&tr.ok, 1)
				case status.Code(err) == codes.DeadlineExceeded && !returned.Before(dl):
					atomic.AddInt64(&tr.ownDeadline, 1)
				default:
					if atomic.AddInt64(&tr.failed, 1) == 1 {
						mu.Lock()
						tr.firstFailure = fmt.Errorf("after %v of a %v deadline: %w", returned.Sub(dl.Add(-deadline)), deadline, err)
						mu.Unlock()
					}
				}
			}
		})
	}
	wg.Wait()
	return tr
}

// healthPool returns a pool with one shared connection to b, checked with
// hc, and a stub over a Conn for it.
func healthPool(t *testing.T, b *healthBackend, hc grpcpool.HealthCheck, shares int) (*pool, stub) {
	t.Helper()
	p := newPool(t, config{HealthCheck: &hc}, keyedpool.Config{MaxSharesPerObject: shares, MaxTotalPerKey: 1})
	return p, testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, b.addr))
}

// Conn's health Checks of a connection start no more often than
// HealthCheck.Interval and never overlap, however many callers give up
// while one runs.
func TestHealthChecksSpacedByInterval(t *testing.T) {
	const (
		interval = 500 * time.Millisecond
		dur      = 1200 * time.Millisecond
		callers  = 16
	)
	b := startHealthBackend(t, &healthBackend{delay: 150 * time.Millisecond})
	_, foo := healthPool(t, b, grpcpool.HealthCheck{Interval: interval}, callers)
	tr := deadlineTraffic(foo, callers, 50*time.Millisecond, dur)
	t.Logf("checks %d (at most %d in flight); RPCs ok %d, own deadline %d, failed %d",
		b.checks.Load(), b.maxInFlight.Load(), tr.ok, tr.ownDeadline, tr.failed)
	if want := int64(dur/interval) + 1; b.checks.Load() > want {
		t.Errorf("backend got %d health Checks in %v with Interval %v, want at most %d", b.checks.Load(), dur, interval, want)
	}
	if got := b.maxInFlight.Load(); got > 1 {
		t.Errorf("backend had %d health Checks of one connection in flight at once, want at most 1", got)
	}
	if tr.ok == 0 {
		t.Errorf("no RPC succeeded (first failure: %v)", tr.firstFailure)
	}
}

// A caller that gives up on a health Check (its context ends) gets its
// context's error; the Check goes on under HealthCheck.Timeout, and only its
// own answer is kept. A backend that says SERVING fails no RPC but those
// whose deadline passes.
func TestCallerGiveUpNotStoredAsHealth(t *testing.T) {
	t.Run("ConnTraffic", func(t *testing.T) {
		const callers = 16
		b := startHealthBackend(t, &healthBackend{delay: 150 * time.Millisecond})
		_, foo := healthPool(t, b, grpcpool.HealthCheck{Interval: 500 * time.Millisecond}, callers)
		tr := deadlineTraffic(foo, callers, 50*time.Millisecond, 1200*time.Millisecond)
		t.Logf("RPCs ok %d, own deadline %d, failed %d; checks %d", tr.ok, tr.ownDeadline, tr.failed, b.checks.Load())
		if tr.failed != 0 {
			t.Errorf("%d RPCs failed other than by their own deadline with a SERVING backend, want 0; first: %v", tr.failed, tr.firstFailure)
		}
		if tr.ok == 0 {
			t.Error("no RPC succeeded")
		}
	})

	// Borrowers whose deadlines are shorter than the Check still get a
	// validated connection: each one that gives up leaves the Check running,
	// and a later one gets its answer.
	t.Run("TestOnBorrow", func(t *testing.T) {
		b := startHealthBackend(t, &healthBackend{delay: 150 * time.Millisecond})
		p := newPool(t, config{HealthCheck: &grpcpool.HealthCheck{}}, keyedpool.Config{TestOnBorrow: true})
		var ok, gaveUp int
		for i := 0; i < 50 && ok < 3; i++ {
			c, cancel := context.WithTimeout(grpctest.Context(t, testTimeout), 50*time.Millisecond)
			h, err := p.Borrow(c, b.addr)
			switch {
			case err == nil:
				ok++
				p.Return(h)
			case errors.Is(err, context.DeadlineExceeded) && c.Err() != nil:
				gaveUp++
			default:
				t.Errorf("Borrow() of a SERVING backend = %v, want a client or the borrower's own deadline", err)
			}
			cancel()
		}
		t.Logf("borrows ok %d, gave up %d; checks %d", ok, gaveUp, b.checks.Load())
		if ok < 3 {
			t.Errorf("%d of %d Borrows with TestOnBorrow got a client, want 3: no Check outlived its borrower", ok, ok+gaveUp)
		}
	})

	// Each caller below gives up while the Check it waits for is held at
	// the backend; then the backend answers SERVING.
	giveUp := func(t *testing.T, call func(context.Context, *grpcpool.Factory[string, stub], *client) error) {
		b := startHealthBackend(t, &healthBackend{gate: make(chan struct{})})
		release := sync.OnceFunc(func() { close(b.gate) })
		t.Cleanup(release)
		f := clienttest.NewFactory(t, config{HealthCheck: &grpcpool.HealthCheck{Timeout: testTimeout, Interval: time.Hour}})
		c, err := f.Make(grpctest.Context(t, testTimeout), b.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Destroy(grpctest.Context(t, testTimeout), b.addr, c)

		callCtx, cancel := context.WithCancel(grpctest.Context(t, testTimeout))
		done := make(chan error, 1)
		go func() { done <- call(callCtx, f, c) }()
		select {
		case <-b.entered:
		case <-grpctest.Context(t, testTimeout).Done():
			t.Fatal("the Check did not reach the backend")
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error of a caller that gave up = %v, want context.Canceled", err)
			}
		case <-grpctest.Context(t, testTimeout).Done():
			t.Fatal("the caller did not return when its context ended")
		}
		release()
		grpctest.WaitFor(t, testTimeout, "the Check's SERVING answer was not counted", func() bool { return f.HealthStats().Serving == 1 })
		if got := f.HealthStats(); got.Failed != 0 || got.NotServing != 0 || len(got.Unhealthy) != 0 {
			t.Errorf("HealthStats() = %+v, want only the one SERVING answer", got)
		}
		if err := c.Serving(grpctest.Context(t, testTimeout)); err != nil {
			t.Errorf("Serving() after the Check answered SERVING = %v, want nil", err)
		}
		if got := b.checks.Load(); got != 1 {
			t.Errorf("backend got %d Checks, want 1 (Interval is an hour)", got)
		}
	}
	t.Run("Serving", func(t *testing.T) {
		giveUp(t, func(c context.Context, _ *grpcpool.Factory[string, stub], cl *client) error { return cl.Serving(c) })
	})
	t.Run("Validate", func(t *testing.T) {
		giveUp(t, func(c context.Context, f *grpcpool.Factory[string, stub], cl *client) error {
			return f.Validate(c, cl.Target(), cl)
		})
	})
}

// Callers that want a health answer while a Check of the connection is in
// flight share it: Validate waits for it, Serving uses the last answer.
func TestOneHealthCheckInFlightPerConnection(t *testing.T) {
	const callers = 8
	b := startHealthBackend(t, &healthBackend{gate: make(chan struct{})})
	release := sync.OnceFunc(func() { close(b.gate) })
	t.Cleanup(release)
	f := clienttest.NewFactory(t, config{HealthCheck: &grpcpool.HealthCheck{Timeout: testTimeout, Interval: time.Nanosecond}})
	c, err := f.Make(grpctest.Context(t, testTimeout), b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Destroy(grpctest.Context(t, testTimeout), b.addr, c)

	errs := make(chan error, 2*callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() { errs <- f.Validate(grpctest.Context(t, testTimeout), b.addr, c) })
	}
	select {
	case <-b.entered:
	case <-grpctest.Context(t, testTimeout).Done():
		t.Fatal("no Check reached the backend")
	}
	for range callers {
		wg.Go(func() { errs <- c.Serving(grpctest.Context(t, testTimeout)) })
	}
	// Give the callers time to send Checks of their own, were they to.
	time.Sleep(100 * time.Millisecond)
	if got := b.inFlight.Load(); got != 1 {
		t.Errorf("backend has %d Checks of one connection in flight, want 1", got)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Validate() or Serving() of a SERVING backend = %v, want nil", err)
		}
	}
	if got := b.maxInFlight.Load(); got != 1 {
		t.Errorf("backend had at most %d Checks in flight, want 1", got)
	}
}

// A backend whose health service says NOT_SERVING stops being lent also
// with shared leases, where a connection that always carries an RPC (steady
// traffic, or one long stream) is never idle, so never activated or
// validated again: within an Interval of the change RPCs are refused unsent,
// and they succeed again once the backend is SERVING.
func TestNotServingBackendNotLentUnderSharedTraffic(t *testing.T) {
	const service = "grpc.testing.BenchmarkService"
	srv := grpctest.Start(t, grpctest.Options{})
	srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	_, foo := sharedPool(t, srv,
		config{ConnectTimeout: testTimeout, HealthCheck: &grpcpool.HealthCheck{Service: service, Interval: 20 * time.Millisecond}},
		keyedpool.Config{MaxSharesPerObject: 10, TestOnCreate: true, TestOnBorrow: true})

	// Traffic: one long stream keeps a share of the connection.
	sctx, cancel := context.WithCancel(grpctest.Context(t, testTimeout))
	defer cancel()
	s, err := foo.StreamingFromServer(sctx, req("long"))
	if err != nil {
		t.Fatalf("StreamingFromServer() error = %v", err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatalf("Recv() error = %v", err)
	}

	srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)
	// Within an Interval of the backend's change, RPCs are refused unsent.
	grpctest.WaitFor(t, testTimeout, "an RPC refused as NOT_SERVING", func() bool {
		before := srv.UnaryCalls()
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
		if err == nil {
			return false
		}
		if status.Code(err) != codes.Unavailable || !errors.Is(err, grpcpool.ErrNotServing) || srv.UnaryCalls() != before {
			t.Fatalf("UnaryCall() to a NOT_SERVING backend = %v (sent: %v); want Unavailable wrapping ErrNotServing, not sent",
				err, srv.UnaryCalls() != before)
		}
		return true
	})
	srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	grpctest.WaitFor(t, testTimeout, "RPCs to succeed once SERVING again", func() bool {
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("y"))
		return err == nil
	})
	cancel()
}

// HealthStats is all zero without HealthCheck, as documented: a factory that
// runs no health checks tracks no targets, so /stats shows no health for its
// pool.
func TestHealthStatsZeroWithoutHealthCheck(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := clienttest.NewFactory(t, config{})
	c, err := f.Make(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c)
	if got := f.HealthStats(); !equalHealth(got, grpcpool.HealthStats{}) {
		t.Errorf("HealthStats() of a factory without HealthCheck = %+v, want all zero (as documented)", got)
	}
}

// slowHealth is a grpc.health.v1 service whose Checks wait until release is
// closed (or their context ends).
type slowHealth struct {
	healthpb.UnimplementedHealthServer
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (s *slowHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.release:
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// A health Check cut short because the factory closed its client (Destroy
// while Validate's Check is in flight: abandoned-lease removal, Close or
// Clear racing with a check) is no answer of the backend: it does not mark
// the target unhealthy, a mark every live client of the target shares (here
// a second client, whose backend answers SERVING).
func TestCheckCutShortByDestroyLeavesTargetHealthy(t *testing.T) {
	hs := &slowHealth{entered: make(chan struct{}), release: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	releaseOnce := sync.OnceFunc(func() { close(hs.release) })
	t.Cleanup(releaseOnce)
	addr := lis.Addr().String()

	f := clienttest.NewFactory(t, config{HealthCheck: &grpcpool.HealthCheck{Timeout: testTimeout}})
	c1, err := f.Make(grpctest.Context(t, testTimeout), addr)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := f.Make(grpctest.Context(t, testTimeout), addr) // a second live client of the same target
	if err != nil {
		t.Fatal(err)
	}
	defer f.Destroy(grpctest.Context(t, testTimeout), addr, c2)

	checked := make(chan error, 1)
	go func() { checked <- f.Validate(grpctest.Context(t, testTimeout), addr, c1) }()
	select {
	case <-hs.entered:
	case <-grpctest.Context(t, testTimeout).Done():
		t.Fatal("the Check did not reach the backend")
	}
	if err := f.Destroy(grpctest.Context(t, testTimeout), addr, c1); err != nil {
		t.Fatal(err)
	}
	if err := <-checked; err == nil {
		t.Fatal("Validate() of a client destroyed during its Check = nil error")
	}
	releaseOnce() // the backend is and was SERVING

	got := f.HealthStats()
	want := grpcpool.HealthStats{Targets: 1}
	if !equalHealth(got, want) {
		t.Errorf("HealthStats() after a Check cut short by Destroy = %+v, want %+v: no backend answered badly, and %s still has a live client",
			got, want, addr)
	}
}

package grpcpool_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// sharedPool returns a shared-lease pool for srv's address and a stub over
// a Conn for it.
func sharedPool(t *testing.T, srv *grpctest.Server, cfg config, pcfg keyedpool.Config) (*pool, stub) {
	t.Helper()
	if pcfg.MaxSharesPerObject == 0 {
		pcfg.MaxSharesPerObject = 100
	}
	p := newPool(t, cfg, pcfg)
	return p, testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
}

// wantShares checks the key's shares in use and lent connections, and that
// every borrow was matched by a return.
func wantShares(t *testing.T, p *pool, key string, shares, active int) {
	t.Helper()
	s := p.KeyStats(key)
	if s.SharesInUse != shares || s.Active != active {
		t.Errorf("KeyStats() shares in use %d on %d active connections, want %d on %d", s.SharesInUse, s.Active, shares, active)
	}
	if shares == 0 && s.Borrowed != s.Returned {
		t.Errorf("KeyStats() Borrowed %d, Returned %d; want equal (each share given back once)", s.Borrowed, s.Returned)
	}
}

func TestConnUnary(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p, foo := sharedPool(t, srv, config{}, keyedpool.Config{})
	for range 3 {
		resp, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("hello"))
		if err != nil {
			t.Fatalf("UnaryCall() error = %v", err)
		}
		if got := string(resp.GetPayload().GetBody()); got != "hello" {
			t.Errorf("UnaryCall() payload = %q, want %q", got, "hello")
		}
	}
	wantShares(t, p, srv.Addr, 0, 0)
	if got := srv.Accepted(); got != 1 {
		t.Errorf("server accepted %d connections for sequential RPCs, want 1", got)
	}
}

// inFlight starts n UnaryCalls on foo that the server holds, waits until
// the server has them all, and returns a function that waits for their
// results.
func inFlight(t *testing.T, srv *grpctest.Server, foo stub, n int) (wait func() []error) {
	t.Helper()
	before := srv.InFlight()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = foo.UnaryCall(grpctest.Context(t, testTimeout), req("held"))
		})
	}
	grpctest.WaitFor(t, testTimeout, "the held RPCs did not all reach the server", func() bool {
		return srv.InFlight() == before+int64(n)
	})
	return func() []error { wg.Wait(); return errs }
}

// Concurrent RPCs share connections up to MaxSharesPerObject and the pool
// opens another only when every one is full, up to MaxTotalPerKey; beyond
// that RPCs wait for a share.
func TestConnSharesFillBeforeGrowing(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout}, keyedpool.Config{MaxSharesPerObject: 3, MaxTotalPerKey: 3})
	release := srv.Hold()
	defer release()

	wait1 := inFlight(t, srv, foo, 7) // 3 + 3 + 1
	if got := srv.Accepted(); got != 3 {
		t.Errorf("7 RPCs at 3 shares per connection opened %d connections, want 3", got)
	}
	wantShares(t, p, srv.Addr, 7, 3)

	// Two more fill the third connection; the tenth must wait.
	wait2 := inFlight(t, srv, foo, 2)
	done := make(chan error, 1)
	go func() { _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("waits")); done <- err }()
	grpctest.WaitFor(t, testTimeout, "the tenth RPC did not wait for a share", func() bool {
		return p.KeyStats(srv.Addr).Waiters == 1
	})
	if got := srv.InFlight(); got != 9 {
		t.Errorf("server has %d RPCs in flight, want 9 (3 connections x 3 shares)", got)
	}
	release()
	for i, err := range append(wait1(), wait2()...) {
		if err != nil {
			t.Errorf("held RPC %d error = %v", i, err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("waiting RPC error = %v", err)
	}
	if got := srv.Accepted(); got != 3 {
		t.Errorf("server accepted %d connections, want 3 (MaxTotalPerKey)", got)
	}
	wantShares(t, p, srv.Addr, 0, 0)
}

func TestConnStreams(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})

	t.Run("BidiHoldsShareUntilEOF", func(t *testing.T) {
		p, foo := sharedPool(t, srv, config{}, keyedpool.Config{})
		s, err := foo.StreamingCall(grpctest.Context(t, testTimeout))
		if err != nil {
			t.Fatalf("StreamingCall() error = %v", err)
		}
		for _, body := range []string{"a", "b"} {
			if err := s.Send(req(body)); err != nil {
				t.Fatalf("Send() error = %v", err)
			}
			resp, err := s.Recv()
			if err != nil || string(resp.GetPayload().GetBody()) != body {
				t.Fatalf("Recv() = %v, %v; want payload %q", resp, err, body)
			}
			wantShares(t, p, srv.Addr, 1, 1)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatalf("CloseSend() error = %v", err)
		}
		wantShares(t, p, srv.Addr, 1, 1) // half-closed is not ended
		for range 3 {                    // the end is seen more than once; the share goes back once
			if _, err := s.Recv(); err != io.EOF {
				t.Fatalf("Recv() after CloseSend error = %v, want io.EOF", err)
			}
		}
		wantShares(t, p, srv.Addr, 0, 0)
		if got := p.KeyStats(srv.Addr).Returned; got != 1 {
			t.Errorf("Returned = %d, want 1", got)
		}
	})

	t.Run("ServerStreamEOF", func(t *testing.T) {
		p, foo := sharedPool(t, srv, config{}, keyedpool.Config{})
		s, err := foo.StreamingFromServer(grpctest.Context(t, testTimeout), &testpb.SimpleRequest{ResponseSize: 3, Payload: &testpb.Payload{Body: []byte("x")}})
		if err != nil {
			t.Fatalf("StreamingFromServer() error = %v", err)
		}
		n := 0
		for {
			_, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Recv() error = %v", err)
			}
			n++
			wantShares(t, p, srv.Addr, 1, 1)
		}
		if n != 3 {
			t.Errorf("received %d messages, want 3", n)
		}
		wantShares(t, p, srv.Addr, 0, 0)
	})

	t.Run("ClientStreamEndsWithResponse", func(t *testing.T) {
		p, foo := sharedPool(t, srv, config{}, keyedpool.Config{})
		s, err := foo.StreamingFromClient(grpctest.Context(t, testTimeout))
		if err != nil {
			t.Fatalf("StreamingFromClient() error = %v", err)
		}
		for _, body := range []string{"a", "b"} {
			if err := s.Send(req(body)); err != nil {
				t.Fatalf("Send() error = %v", err)
			}
		}
		wantShares(t, p, srv.Addr, 1, 1)
		resp, err := s.CloseAndRecv()
		if err != nil || string(resp.GetPayload().GetBody()) != "b" {
			t.Fatalf("CloseAndRecv() = %v, %v; want payload b", resp, err)
		}
		wantShares(t, p, srv.Addr, 0, 0)
	})

	t.Run("ContextEnds", func(t *testing.T) {
		p, foo := sharedPool(t, srv, config{}, keyedpool.Config{})
		sctx, cancel := context.WithCancel(grpctest.Context(t, testTimeout))
		s, err := foo.StreamingFromServer(sctx, req("forever"))
		if err != nil {
			t.Fatalf("StreamingFromServer() error = %v", err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatalf("Recv() error = %v", err)
		}
		wantShares(t, p, srv.Addr, 1, 1)
		// The caller stops reading and cancels: the share comes back
		// without another call on the stream.
		cancel()
		grpctest.WaitFor(t, testTimeout, "share not given back after the stream's context ended", func() bool {
			return p.KeyStats(srv.Addr).SharesInUse == 0
		})
		wantShares(t, p, srv.Addr, 0, 0)
		// Reading after the cancel sees Canceled and gives nothing back twice.
		for {
			if _, err := s.Recv(); err != nil {
				if status.Code(err) != codes.Canceled {
					t.Errorf("Recv() after cancel error = %v, want Canceled", err)
				}
				break
			}
		}
		if got := p.KeyStats(srv.Addr).Returned; got != 1 {
			t.Errorf("Returned = %d, want 1", got)
		}
	})

	t.Run("NewStreamFails", func(t *testing.T) {
		// A lazy client to a dead address: the stream cannot start, and the
		// broken connection is invalidated, not kept.
		dead := grpctest.DeadAddr(t)
		p := newPool(t, config{}, keyedpool.Config{MaxSharesPerObject: 10})
		foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, dead))
		_, err := foo.StreamingCall(grpctest.Context(t, testTimeout))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("StreamingCall() to a dead address = %v, want Unavailable", err)
		}
		// Stats, not KeyStats: the key's sub-pool is gone with its last
		// connection. Every connection made is invalidated, none kept:
		// usually one, but a connection gRPC already reports down when
		// its share is lent (Borrow) is invalidated and another tried.
		s := p.Stats()
		if s.SharesInUse != 0 || s.Idle != 0 || s.DestroyedByInvalidate < 1 || s.DestroyedByInvalidate != s.Created {
			t.Errorf("Stats() = %+v, want no share in use, nothing idle, and every connection made invalidated", s)
		}
	})
}

// Errors a handler returns leave the connection in the pool, Unavailable
// included: the connection itself is fine.
func TestConnApplicationErrorsKeepConnection(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p, foo := sharedPool(t, srv, config{}, keyedpool.Config{})
	for _, code := range []codes.Code{codes.Unavailable, codes.Internal, codes.NotFound} {
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), failing(int32(code), "app says no"))
		if status.Code(err) != code {
			t.Errorf("UnaryCall() = %v, want code %v", err, code)
		}
	}
	s := p.KeyStats(srv.Addr)
	if s.Created != 1 || s.DestroyedByInvalidate != 0 || s.Idle != 1 {
		t.Errorf("KeyStats() = %+v, want the one connection kept idle", s)
	}
}

// An RPC cut by the backend going away invalidates its connection when the
// Classifier sees the connection out of READY, or when the connection is
// down (Client.Down) as the share goes back; the next RPC gets a new one.
//
// gRPC fails the RPCs of a broken transport before its balancer has moved the
// ClientConn out of READY (that move runs in a goroutine of its own), so
// under load the classifier can still see READY, as DefaultClassifier's
// "just after the RPC failed" allows, and so can the release just after;
// the connection is then kept, and Activate reconnects it for the next RPC.
// The test checks that the pool does what the classifier decided, and that
// either way the next RPC works.
func TestConnBrokenConnectionInvalidated(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	var (
		mu     sync.Mutex
		states []connectivity.State // what the classifier saw, for each Unavailable
		broken int                  // how many of those DefaultClassifier called broken
	)
	classify := func(err error, state connectivity.State) bool {
		b := grpcpool.DefaultClassifier(err, state)
		if status.Code(err) == codes.Unavailable {
			mu.Lock()
			states = append(states, state)
			if b {
				broken++
			}
			mu.Unlock()
		}
		return b
	}
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout, Classifier: classify}, keyedpool.Config{})
	srv.Hold()
	wait := inFlight(t, srv, foo, 2)
	srv.Restart()
	for i, err := range wait() {
		if status.Code(err) != codes.Unavailable {
			t.Errorf("held RPC %d cut by a restart = %v, want Unavailable", i, err)
		}
	}
	mu.Lock()
	seen, nBroken := slices.Clone(states), broken
	mu.Unlock()
	t.Logf("classifier saw %v for the cut RPCs", seen)
	if len(seen) != 2 {
		t.Fatalf("classifier saw %d Unavailable RPCs (states %v), want the 2 cut ones", len(seen), seen)
	}
	// Both RPCs shared the one connection: invalidated once if either was
	// called broken; if neither was, once if it was down as a share went
	// back, or kept.
	s := p.Stats()
	wantInvalidated := s.DestroyedByInvalidate
	if nBroken > 0 || wantInvalidated > 1 {
		wantInvalidated = 1
	}
	wantCreated := 1 + wantInvalidated
	if s.DestroyedByInvalidate != wantInvalidated || s.SharesInUse != 0 {
		t.Errorf("KeyStats() = %+v, want the connection invalidated %d times (classifier saw %v), no share in use", s, wantInvalidated, seen)
	}
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
		t.Errorf("UnaryCall() after restart = %v", err)
	}
	if got := p.Stats().Created; got != wantCreated {
		t.Errorf("Created = %d, want %d (classifier saw %v)", got, wantCreated, seen)
	}
}

func TestConnClassifier(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	var sawState connectivity.State
	p, foo := sharedPool(t, srv, config{Classifier: func(err error, state connectivity.State) bool {
		sawState = state
		return status.Code(err) == codes.DataLoss
	}}, keyedpool.Config{})
	foo.UnaryCall(grpctest.Context(t, testTimeout), failing(int32(codes.Internal), "kept"))
	if got := p.KeyStats(srv.Addr).DestroyedByInvalidate; got != 0 {
		t.Errorf("DestroyedByInvalidate after Internal = %d, want 0", got)
	}
	foo.UnaryCall(grpctest.Context(t, testTimeout), failing(int32(codes.DataLoss), "dropped"))
	if got := p.Stats().DestroyedByInvalidate; got != 1 {
		t.Errorf("DestroyedByInvalidate after DataLoss = %d, want 1", got)
	}
	if sawState != connectivity.Ready {
		t.Errorf("classifier saw state %v, want READY", sawState)
	}
}

func TestDefaultClassifier(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "x")
	for _, tt := range []struct {
		err   error
		state connectivity.State
		want  bool
	}{
		{unavailable, connectivity.Ready, false},
		{unavailable, connectivity.Idle, true},
		{unavailable, connectivity.Connecting, true},
		{unavailable, connectivity.TransientFailure, true},
		{unavailable, connectivity.Shutdown, true},
		{status.Error(codes.Internal, "x"), connectivity.TransientFailure, false},
		{status.Error(codes.DeadlineExceeded, "x"), connectivity.Idle, false},
		{context.Canceled, connectivity.Idle, false},
	} {
		if got := grpcpool.DefaultClassifier(tt.err, tt.state); got != tt.want {
			t.Errorf("DefaultClassifier(%v, %v) = %v, want %v", tt.err, tt.state, got, tt.want)
		}
	}
}

// A failed Borrow fails the RPC with a status code saying why, and wraps
// the pool's error.
func TestConnBorrowErrors(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})

	t.Run("Exhausted", func(t *testing.T) {
		p, foo := sharedPool(t, srv, config{}, keyedpool.Config{MaxSharesPerObject: 1, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
		release := srv.Hold()
		wait := inFlight(t, srv, foo, 1)
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
		if status.Code(err) != codes.ResourceExhausted || !errors.Is(err, keyedpool.ErrExhausted) {
			t.Errorf("UnaryCall() on an exhausted pool = %v, want ResourceExhausted wrapping ErrExhausted", err)
		}
		release()
		wait()
		wantShares(t, p, srv.Addr, 0, 0)
	})

	t.Run("Deadline", func(t *testing.T) {
		_, foo := sharedPool(t, srv, config{}, keyedpool.Config{MaxSharesPerObject: 1, MaxTotalPerKey: 1})
		release := srv.Hold()
		wait := inFlight(t, srv, foo, 1)
		short, cancel := context.WithTimeout(grpctest.Context(t, testTimeout), 50*time.Millisecond)
		defer cancel()
		_, err := foo.UnaryCall(short, req("x"))
		if status.Code(err) != codes.DeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("UnaryCall() waiting past its deadline = %v, want DeadlineExceeded", err)
		}
		release()
		wait()
	})

	t.Run("Closed", func(t *testing.T) {
		p, foo := sharedPool(t, srv, config{}, keyedpool.Config{})
		p.Close(grpctest.Context(t, testTimeout))
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
		if status.Code(err) != codes.Canceled || !errors.Is(err, keyedpool.ErrClosed) {
			t.Errorf("UnaryCall() on a closed pool = %v, want Canceled wrapping ErrClosed", err)
		}
	})

	t.Run("ConnectFails", func(t *testing.T) {
		dead := grpctest.DeadAddr(t)
		p := newPool(t, config{ConnectTimeout: testTimeout}, keyedpool.Config{MaxSharesPerObject: 10})
		foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, dead))
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
		if status.Code(err) != codes.Unavailable || !errors.Is(err, grpcpool.ErrConnect) {
			t.Errorf("UnaryCall() to a dead backend = %v, want Unavailable wrapping ErrConnect", err)
		}
	})
}

// countingLender lends from one key of a pool and counts its calls, as a
// router would pick a key per RPC.
type countingLender struct {
	p                 *pool
	key               string
	borrows, releases atomic.Int64
	lastErr           atomic.Value
}

func (l *countingLender) Borrow(c context.Context) (*handle, error) {
	l.borrows.Add(1)
	return l.p.Borrow(c, l.key)
}

func (l *countingLender) Release(h *handle, err error) error {
	l.releases.Add(1)
	if err != nil {
		l.lastErr.Store(err)
	}
	if rerr := grpcpool.Release(l.p, h, err); errors.Is(rerr, keyedpool.ErrFactoryPanic) {
		return rerr
	}
	return nil
}

// A Conn over a Lender borrows and releases each RPC's and stream's client
// through it, once each, with the RPC's error.
func TestLenderConn(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p := newPool(t, config{}, keyedpool.Config{MaxSharesPerObject: 100})
	l := &countingLender{p: p, key: srv.Addr}
	conn := grpcpool.NewLenderConn[string, stub](l)
	if got := conn.Key(); got != "" {
		t.Errorf("Key() = %q, want the zero key", got)
	}
	foo := testpb.NewBenchmarkServiceClient(conn)
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), failing(int32(codes.NotFound), "nope")); status.Code(err) != codes.NotFound {
		t.Fatalf("UnaryCall() = %v, want NotFound", err)
	}
	if e, _ := l.lastErr.Load().(error); status.Code(e) != codes.NotFound {
		t.Errorf("lender released with %v, want the RPC's NotFound", e)
	}
	st, err := foo.StreamingCall(grpctest.Context(t, testTimeout))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(req("s")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := l.releases.Load(); got != 2 {
		t.Errorf("releases with a stream open = %d, want 2", got)
	}
	st.CloseSend()
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("Recv() = %v, want io.EOF", err)
	}
	if b, r := l.borrows.Load(), l.releases.Load(); b != 3 || r != 3 {
		t.Errorf("lender borrows = %d, releases = %d; want 3 and 3", b, r)
	}
	wantShares(t, p, srv.Addr, 0, 0)

	// A failed lender Borrow fails the RPC with a status that wraps it.
	errLend := errors.New("no endpoint for you")
	bad := grpcpool.NewLenderConn[string, stub](failLender{errLend})
	_, err = testpb.NewBenchmarkServiceClient(bad).UnaryCall(grpctest.Context(t, testTimeout), req("x"))
	if status.Code(err) != codes.Unavailable || !errors.Is(err, errLend) {
		t.Errorf("UnaryCall over a failing lender = %v, want Unavailable wrapping its error", err)
	}
}

type failLender struct{ err error }

func (f failLender) Borrow(context.Context) (*handle, error) { return nil, f.err }
func (f failLender) Release(*handle, error) error            { panic("Release without Borrow") }

// Serving reports the health answer Conn uses.
func TestClientServing(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p := newPool(t, config{HealthCheck: &grpcpool.HealthCheck{Interval: time.Nanosecond}}, keyedpool.Config{})
	h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Return(h)
	if err := h.Value().Serving(grpctest.Context(t, testTimeout)); err != nil {
		t.Errorf("Serving() = %v, want nil for SERVING", err)
	}
	srv.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if err := h.Value().Serving(grpctest.Context(t, testTimeout)); !errors.Is(err, grpcpool.ErrNotServing) {
		t.Errorf("Serving() = %v, want ErrNotServing", err)
	}
}

// Closing the pool waits for a stream's share (a Conn user has no ClientConn
// to close), bounded by Close's ctx, and closes every connection once the
// stream has ended, as Conn's doc says.
func TestCloseWaitsForStreams(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout}, keyedpool.Config{})
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := foo.StreamingFromServer(sctx, req("watch"))
	if err != nil {
		t.Fatalf("StreamingFromServer() error = %v", err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatalf("Recv() error = %v", err)
	}
	// As documented on Conn: Close waits for the stream's share...
	cctx, ccancel := context.WithTimeout(grpctest.Context(t, testTimeout), 100*time.Millisecond)
	defer ccancel()
	if err := p.Close(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("pool Close() with a stream open = %v, want DeadlineExceeded (it waits for the stream)", err)
	}
	// ...and closes everything once the stream is ended.
	cancel()
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Errorf("pool Close() after the stream ended = %v, want nil", err)
	}
	grpctest.WaitFor(t, testTimeout, "the server to see the connection closed", func() bool { return srv.Open() == 0 })
}

// With abandoned-lease tracking on, a stream in active use past
// Abandoned.Timeout keeps its share and its connection when another Borrow
// looks for leaked leases: Conn marks its leases used, which a Conn user,
// who has no handle, cannot do.
func TestActiveStreamNotTakenBackAsAbandoned(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout}, keyedpool.Config{
		MaxSharesPerObject: 1,
		MaxTotalPerKey:     1,
		Abandoned:          &keyedpool.AbandonedConfig{RemoveOnBorrow: true, Timeout: 100 * time.Millisecond},
	})
	sctx, cancel := context.WithCancel(grpctest.Context(t, testTimeout))
	defer cancel()
	s, err := foo.StreamingCall(sctx)
	if err != nil {
		t.Fatalf("StreamingCall() error = %v", err)
	}
	ping := func() error {
		if err := s.Send(req("ping")); err != nil {
			return err
		}
		_, err := s.Recv()
		return err
	}
	// The stream is busy: a message every 20 ms for 200 ms.
	for range 10 {
		if err := ping(); err != nil {
			t.Fatalf("stream in use: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Another caller waits (briefly) for the one connection.
	short, cancelShort := context.WithTimeout(grpctest.Context(t, testTimeout), 200*time.Millisecond)
	defer cancelShort()
	foo.UnaryCall(short, req("x"))

	if err := ping(); err != nil {
		t.Errorf("stream in active use after another Borrow: %v (pool %+v); want it untouched, its share not taken back as abandoned",
			err, p.Stats())
	}
	s.CloseSend()
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
}

// A connection that lost its transport while lent is lent no more, though
// the pool itself would lend more shares of it: Borrow (and so Conn)
// invalidates the share and lends another connection, or fails as the make
// of one does, so that no RPC is sent on it; Release closes it once its
// last share is back.
func TestBorrowLendsNoShareOfConnectionDown(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p := newPool(t, config{ConnectTimeout: testTimeout}, keyedpool.Config{MaxSharesPerObject: 100})
	held, err := grpcpool.Borrow(grpctest.Context(t, testTimeout), p, srv.Addr) // an RPC's share, in flight
	if err != nil {
		t.Fatalf("Borrow() error = %v", err)
	}
	down := held.Value()
	srv.Stop()
	waitLeftReady(t, down)

	// Sent on the down connection, the RPC would fail as gRPC's reconnect
	// does; it fails at the borrow, as the make of a new connection does.
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); !errors.Is(err, grpcpool.ErrConnect) || status.Code(err) != codes.Unavailable {
		t.Errorf("UnaryCall() with the backend down = %v, want Unavailable wrapping ErrConnect: not sent", err)
	}
	srv.Restart()
	h, err := grpcpool.Borrow(grpctest.Context(t, testTimeout), p, srv.Addr)
	if err != nil {
		t.Fatalf("Borrow() after the backend came back: %v", err)
	}
	if got := h.Value(); got == down || got.Down() {
		t.Errorf("Borrow() lent the connection that went down (%v), want a new one", got.ClientConn().GetState())
	}
	if _, err := testpb.NewBenchmarkServiceClient(h.Value().ClientConn()).UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
		t.Errorf("UnaryCall() on the new connection = %v", err)
	}
	if err := grpcpool.Release(p, h, nil); err != nil {
		t.Errorf("Release(new) = %v", err)
	}
	if err := grpcpool.Release(p, held, nil); err != nil {
		t.Errorf("Release(down) = %v", err)
	}
	if got := down.ClientConn().GetState(); got != connectivity.Shutdown {
		t.Errorf("the connection that went down is %v after its last share came back, want SHUTDOWN", got)
	}
	if s := p.Stats(); s.DestroyedByInvalidate != 1 || s.Idle != 1 {
		t.Errorf("Stats() = %+v, want the down connection invalidated, the new one idle", s)
	}
}

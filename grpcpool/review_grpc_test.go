package grpcpool_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// ---------------------------------------------------------------------------
// helpers

// reviewPool makes a pool the test closes itself (no Cleanup Close).
func reviewPool(t *testing.T, f *grpcpool.Factory[string, stub], pcfg keyedpool.Config) *pool {
	t.Helper()
	p, err := keyedpool.New(f, pcfg)
	if err != nil {
		t.Fatalf("keyedpool.New() = %v", err)
	}
	return p
}

// settingsProxy is a TCP proxy on 127.0.0.1 in front of a gRPC backend
// that forwards the server's HTTP/2 frames whole, so that a test can slip a
// SETTINGS frame with a new MAX_CONCURRENT_STREAMS between them: a server
// that changes its stream limit on a live connection.
type settingsProxy struct {
	Addr    string
	lis     net.Listener
	backend string

	mu    sync.Mutex
	conns []*proxyConn
	wg    sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
	wmu            sync.Mutex // whole frames to client
}

func startSettingsProxy(t *testing.T, backend string) *settingsProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sp := &settingsProxy{Addr: lis.Addr().String(), lis: lis, backend: backend}
	sp.wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			pc := &proxyConn{client: c, server: s}
			sp.mu.Lock()
			sp.conns = append(sp.conns, pc)
			sp.mu.Unlock()
			sp.wg.Go(func() { // client -> server, raw
				io.Copy(s, c)
				s.Close()
				c.Close()
			})
			sp.wg.Go(func() { // server -> client, frame by frame
				defer c.Close()
				defer s.Close()
				var hdr [9]byte
				for {
					if _, err := io.ReadFull(s, hdr[:]); err != nil {
						return
					}
					n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
					buf := make([]byte, 9+n)
					copy(buf, hdr[:])
					if _, err := io.ReadFull(s, buf[9:]); err != nil {
						return
					}
					pc.wmu.Lock()
					_, err := c.Write(buf)
					pc.wmu.Unlock()
					if err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		lis.Close()
		sp.mu.Lock()
		for _, pc := range sp.conns {
			pc.client.Close()
			pc.server.Close()
		}
		sp.mu.Unlock()
		sp.wg.Wait()
	})
	return sp
}

// setLimit sends every proxied connection a SETTINGS frame with
// MAX_CONCURRENT_STREAMS n, at a frame boundary.
func (sp *settingsProxy) setLimit(n uint32) int {
	frame := make([]byte, 9+6)
	frame[2] = 6                              // length
	frame[3] = 0x4                            // SETTINGS
	binary.BigEndian.PutUint16(frame[9:], 3)  // MAX_CONCURRENT_STREAMS
	binary.BigEndian.PutUint32(frame[11:], n) // value
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, pc := range sp.conns {
		pc.wmu.Lock()
		pc.client.Write(frame)
		pc.wmu.Unlock()
	}
	return len(sp.conns)
}

// settle waits for the goroutine count to fall to at most want.
func settleGoroutines(want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// 1. Faults

// A NewStub that panics inside Make: keyedpool turns the panic into an
// error wrapping ErrFactoryPanic ("A panic in a factory method ... becomes
// an error ...: the object is dropped, its room freed"), and the gRPC
// connection Make opened for it must not outlive it: nothing of the
// failed make may stay connected to the backend.
func TestReviewGRPCNewStubPanicLeavesNoConnection(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	var calls atomic.Int32
	var leaked []grpc.ClientConnInterface
	var lmu sync.Mutex
	t.Cleanup(func() { // so that goleak does not blame other tests
		lmu.Lock()
		defer lmu.Unlock()
		for _, cc := range leaked {
			if c, ok := cc.(*grpc.ClientConn); ok {
				c.Close()
			}
		}
	})
	f := clienttest.NewFactory(t, config{
		ConnectTimeout: testTimeout,
		NewStub: func(cc grpc.ClientConnInterface) stub {
			if calls.Add(1) == 1 {
				lmu.Lock()
				leaked = append(leaked, cc)
				lmu.Unlock()
				panic("review: NewStub panics")
			}
			return testpb.NewBenchmarkServiceClient(cc)
		},
	})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 1})
	_, err := grpcpool.Borrow(grpctest.Context(t, testTimeout), p, srv.Addr)
	if !errors.Is(err, keyedpool.ErrFactoryPanic) {
		t.Fatalf("Borrow() = %v, want ErrFactoryPanic", err)
	}
	// Room not lost: the next borrow makes a working connection.
	h, err := grpcpool.Borrow(grpctest.Context(t, testTimeout), p, srv.Addr)
	if err != nil {
		t.Fatalf("second Borrow() = %v", err)
	}
	if _, err := h.Value().Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
		t.Fatalf("UnaryCall() = %v", err)
	}
	grpcpool.Release(p, h, nil)
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for srv.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.Open(); n != 0 {
		t.Errorf("after the pool closed, the server still has %d open connection(s), want 0: "+
			"the connection Make dialed before NewStub panicked was never closed", n)
	}
}

// A backend that accepts TCP but never speaks HTTP/2: with ConnectTimeout,
// Make gives up within it ("Make ... waits up to this long for the
// connection to be READY"), the RPC fails with Unavailable wrapping
// ErrConnect ("Unavailable when no connection could be made"), and the pool
// keeps no room for it.
func TestReviewGRPCHangingDialBoundedByConnectTimeout(t *testing.T) {
	lis := silentListener(t, "127.0.0.1:0")
	t.Cleanup(func() { lis.Close() })
	addr := lis.Addr().String()
	const ct = 300 * time.Millisecond
	f := clienttest.NewFactory(t, config{ConnectTimeout: ct})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 2})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, addr))
	for i := range 3 {
		start := time.Now()
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
		took := time.Since(start)
		if status.Code(err) != codes.Unavailable || !errors.Is(err, grpcpool.ErrConnect) {
			t.Errorf("call %d: UnaryCall() = %v, want Unavailable wrapping ErrConnect", i, err)
		}
		if took < ct-50*time.Millisecond || took > ct+2*time.Second {
			t.Errorf("call %d: failed after %v, want about ConnectTimeout %v", i, took, ct)
		}
	}
	s := p.KeyStats(addr)
	if s.Active != 0 || s.Idle != 0 || s.Making != 0 || s.SharesInUse != 0 {
		t.Errorf("KeyStats after failed makes = %+v, want nothing held", s.Gauges)
	}
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Errorf("Close() = %v", err)
	}
}

// A server that crashes under shared RPCs: every RPC in flight ends with
// Unavailable, the connection is invalidated (not lent again), the pool
// holds nothing afterwards, and once the backend is back the next RPC
// works on a new connection.
func TestReviewGRPCCrashMidRPCInvalidates(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 16})
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 2})
	defer p.Close(grpctest.Context(t, testTimeout))
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("warm")); err != nil {
		t.Fatal(err)
	}
	srv.Hold()
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
			errs <- err
		}()
	}
	grpctest.WaitFor(t, testTimeout, "10 RPCs in flight", func() bool { return srv.InFlight() == n })
	srv.Stop()
	for range n {
		select {
		case err := <-errs:
			if status.Code(err) != codes.Unavailable {
				t.Errorf("RPC in flight when the server crashed: %v, want Unavailable", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("an RPC in flight did not end within 5s of the crash")
		}
	}
	grpctest.WaitFor(t, testTimeout, "nothing lent after the crash", func() bool {
		s := p.KeyStats(srv.Addr)
		return s.SharesInUse == 0 && s.Active == 0
	})
	if s := p.KeyStats(srv.Addr); s.Idle != 0 {
		t.Errorf("KeyStats().Idle = %d after the crash, want 0 (broken connection invalidated); stats %+v", s.Idle, s)
	}
	accepted := srv.Accepted()
	srv.Restart()
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("again")); err != nil {
		t.Fatalf("UnaryCall() after restart = %v", err)
	}
	if srv.Accepted() <= accepted {
		t.Errorf("RPC after restart made no new connection")
	}
}

// A handler that hangs: the RPC ends with its own deadline, the healthy
// connection stays in the pool ("every other code ... leaves it in the
// pool") and its share comes back.
func TestReviewGRPCHangingHandlerKeepsConnection(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 1})
	defer p.Close(grpctest.Context(t, testTimeout))
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	release := srv.Hold()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := foo.UnaryCall(ctx, req("x"))
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("UnaryCall() on hanging handler = %v, want DeadlineExceeded", err)
	}
	release()
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
		t.Fatal(err)
	}
	s := p.KeyStats(srv.Addr)
	if s.SharesInUse != 0 || s.Destroyed != 0 || srv.Accepted() != 1 {
		t.Errorf("after a deadline: shares %d, destroyed %d, accepted %d; want 0, 0, 1", s.SharesInUse, s.Destroyed, srv.Accepted())
	}
}

// ---------------------------------------------------------------------------
// 2. Close racing RPCs, streams, Borrow and health checks

func TestReviewGRPCCloseRacingTraffic(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 8, Delay: 2 * time.Millisecond})
	base := runtime.NumGoroutine()
	f := clienttest.NewFactory(t, config{
		ConnectTimeout: testTimeout,
		HealthCheck:    &grpcpool.HealthCheck{Interval: 5 * time.Millisecond},
	})
	p := reviewPool(t, f, keyedpool.Config{
		MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 4, MaxIdlePerKey: 4,
		TestOnBorrow: true, TestOnReturn: true,
	})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))

	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []error
	var sent, closedErrs atomic.Int64
	record := func(err error) bool { // true: stop
		if err == nil {
			return false
		}
		if status.Code(err) == codes.Canceled && errors.Is(err, keyedpool.ErrClosed) {
			closedErrs.Add(1)
			return true
		}
		mu.Lock()
		bad = append(bad, err)
		mu.Unlock()
		return true
	}
	for range 16 { // unary
		wg.Go(func() {
			for range 5000 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := foo.UnaryCall(ctx, req("x"))
				cancel()
				sent.Add(1)
				if record(err) {
					return
				}
			}
		})
	}
	for range 4 { // bidi streams, each ended properly
		wg.Go(func() {
			for range 2000 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				s, err := foo.StreamingCall(ctx)
				if record(err) {
					cancel()
					return
				}
				err = s.Send(req("s"))
				if err == nil {
					_, err = s.Recv()
				}
				if err == nil {
					err = s.CloseSend()
				}
				if err == nil {
					_, err = s.Recv()
					if err == io.EOF {
						err = nil
					}
				}
				cancel()
				if record(err) {
					return
				}
			}
		})
	}
	for range 4 { // exclusive Borrow / Release
		wg.Go(func() {
			for range 5000 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				h, err := grpcpool.Borrow(ctx, p, srv.Addr)
				if err != nil {
					cancel()
					if errors.Is(err, keyedpool.ErrClosed) {
						closedErrs.Add(1)
						return
					}
					record(err)
					return
				}
				_, err = h.Value().Stub().UnaryCall(ctx, req("e"))
				cancel()
				grpcpool.Release(p, h, err)
				if err != nil {
					record(err)
					return
				}
			}
		})
	}
	grpctest.WaitFor(t, testTimeout, "traffic under way", func() bool { return sent.Load() > 200 })
	closeDone := make(chan error, 1)
	go func() { closeDone <- p.Close(grpctest.Context(t, testTimeout)) }()
	select {
	case err := <-closeDone:
		if err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	case <-time.After(testTimeout + 2*time.Second):
		t.Fatal("Close() did not return")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("callers did not end after Close")
	}
	for i, err := range bad {
		if i < 5 {
			t.Errorf("unexpected error racing Close: %v (code %v)", err, status.Code(err))
		}
	}
	if closedErrs.Load() != 24 {
		t.Errorf("%d callers ended with ErrClosed, want 24", closedErrs.Load())
	}
	s := p.Stats()
	if s.Active != 0 || s.Idle != 0 || s.SharesInUse != 0 || s.Making != 0 {
		t.Errorf("Stats after Close = %+v, want all zero", s.Gauges)
	}
	grpctest.WaitFor(t, 5*time.Second, "server sees no open connection after Close", func() bool { return srv.Open() == 0 })
	if hs := f.HealthStats(); hs.Targets != 0 || len(hs.Unhealthy) != 0 {
		t.Errorf("HealthStats after Close = %+v, want no targets", hs)
	}
	if n := settleGoroutines(base+2, 5*time.Second); n > base+2 {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines after Close: %d, want <= %d\n%s", n, base+2, buf[:runtime.Stack(buf, true)])
	}
}

// Close with a stream still open waits for it, bounded by its ctx; once the
// stream's context is cancelled, its share comes back and Close finishes.
func TestReviewGRPCCloseWaitsForCancelledStream(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	s, err := foo.StreamingFromServer(sctx, &testpb.SimpleRequest{}) // never ends by itself
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err = p.Close(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close() with a stream open = %v, want DeadlineExceeded", err)
	}
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); status.Code(err) != codes.Canceled || !errors.Is(err, keyedpool.ErrClosed) {
		t.Errorf("UnaryCall() after Close = %v, want Canceled wrapping ErrClosed", err)
	}
	scancel()
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv() on the cancelled stream = %v, want Canceled", err)
	}
	grpctest.WaitFor(t, 5*time.Second, "server connection closed", func() bool { return srv.Open() == 0 })
}

// ---------------------------------------------------------------------------
// 3. Stream-cap learning

// The server lowers and raises MAX_CONCURRENT_STREAMS on a live connection:
// "It shows as KeyStats.ShareCap"; "A cap that rises lets waiting borrowers
// take the new room at once; one that falls lets the shares already lent run
// to their end and lends no more until they are under it."
func TestReviewGRPCCapFollowsServerDownAndUp(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 4})
	px := startSettingsProxy(t, srv.Addr)
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 1, MaxIdlePerKey: 1})
	defer p.Close(grpctest.Context(t, testTimeout))
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, px.Addr))
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("warm")); err != nil {
		t.Fatal(err)
	}
	if got := p.KeyStats(px.Addr).ShareCap; got != 4 {
		t.Fatalf("ShareCap = %d, want 4", got)
	}
	if n := px.setLimit(2); n != 1 {
		t.Fatalf("proxied connections = %d, want 1", n)
	}
	grpctest.WaitFor(t, 5*time.Second, "ShareCap follows the server down to 2", func() bool { return p.KeyStats(px.Addr).ShareCap == 2 })

	release := srv.Hold()
	defer release()
	wait := unaryBurst(t, foo, 4)
	grpctest.WaitFor(t, 5*time.Second, "2 RPCs on the server, 2 borrowers waiting", func() bool {
		s := p.KeyStats(px.Addr)
		return srv.InFlight() == 2 && s.Waiters == 2 && s.SharesInUse == 2
	})
	time.Sleep(100 * time.Millisecond)
	if s := p.KeyStats(px.Addr); s.SharesInUse != 2 || srv.InFlight() != 2 {
		t.Errorf("cap 2: %d shares in use, %d on the server, want 2, 2", s.SharesInUse, srv.InFlight())
	}
	px.setLimit(3)
	grpctest.WaitFor(t, 5*time.Second, "cap up to 3: one waiter served", func() bool {
		s := p.KeyStats(px.Addr)
		return srv.InFlight() == 3 && s.Waiters == 1 && s.SharesInUse == 3 && s.ShareCap == 3
	})
	px.setLimit(10)
	grpctest.WaitFor(t, 5*time.Second, "cap up to 10: every waiter served", func() bool {
		s := p.KeyStats(px.Addr)
		return srv.InFlight() == 4 && s.Waiters == 0 && s.SharesInUse == 4 && s.ShareCap == 10
	})
	// Fall below the shares lent: they run to their end, none more lent.
	px.setLimit(1)
	grpctest.WaitFor(t, 5*time.Second, "cap down to 1", func() bool { return p.KeyStats(px.Addr).ShareCap == 1 })
	wait2 := unaryBurst(t, foo, 2)
	grpctest.WaitFor(t, 5*time.Second, "2 new borrowers waiting", func() bool { return p.KeyStats(px.Addr).Waiters == 2 })
	if s := p.KeyStats(px.Addr); s.SharesInUse != 4 {
		t.Errorf("after cap fell to 1: shares in use %d, want the 4 already lent", s.SharesInUse)
	}
	release()
	wait()
	wait2()
	s := p.KeyStats(px.Addr)
	if s.SharesInUse != 0 || s.Waiters != 0 || s.Active != 0 || s.Idle != 1 || s.Borrowed != s.Returned {
		t.Errorf("after the load: %+v, want 0 shares, 0 waiters, 0 active, 1 idle, borrowed == returned", s)
	}
}

// A server whose limit is 1 per connection: RPCs never exceed it on one
// connection, and the pool opens one connection per RPC up to
// MaxTotalPerKey, the rest wait and are served as streams free.
func TestReviewGRPCCapOneServesWaiters(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 1})
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 3, MaxIdlePerKey: 3})
	defer p.Close(grpctest.Context(t, testTimeout))
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	release := srv.Hold()
	wait := unaryBurst(t, foo, 7)
	grpctest.WaitFor(t, 5*time.Second, "3 RPCs on 3 connections, 4 waiting", func() bool {
		s := p.KeyStats(srv.Addr)
		return srv.InFlight() == 3 && s.Active == 3 && s.SharesInUse == 3 && s.Waiters == 4
	})
	if srv.Accepted() != 3 {
		t.Errorf("connections = %d, want 3", srv.Accepted())
	}
	release()
	wait()
	s := p.KeyStats(srv.Addr)
	if s.SharesInUse != 0 || s.Active != 0 || s.Idle != 3 || s.Borrowed != 7 || s.Returned != 7 {
		t.Errorf("after the load: %+v", s)
	}
}

// ---------------------------------------------------------------------------
// 4. Counts and metrics

// "ObserveRPC is called exactly once per RPC when it ends ... for a stream
// when the caller reads its end or an error": a client-streaming RPC ends
// when CloseAndRecv reads its one response.
func TestReviewGRPCObserverSeesClientStreamingRPC(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	obs := &observed{}
	p := newPool(t, config{Observer: obs}, keyedpool.Config{MaxSharesPerObject: 10})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout) // still live when we look
	defer cancel()
	s, err := foo.StreamingFromClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(req("a")); err != nil {
		t.Fatal(err)
	}
	resp, err := s.CloseAndRecv()
	if err != nil || string(resp.GetPayload().GetBody()) != "a" {
		t.Fatalf("CloseAndRecv() = %v, %v", resp, err)
	}
	if ks := p.KeyStats(srv.Addr); ks.SharesInUse != 0 {
		t.Errorf("shares in use after CloseAndRecv = %d, want 0", ks.SharesInUse)
	}
	deadline := time.Now().Add(2 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		if got, _ = obs.snapshot(); len(got) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	want := srv.Addr + " /grpc.testing.BenchmarkService/StreamingFromClient OK"
	if len(got) != 1 || got[0] != want {
		t.Errorf("observed within 2s of the RPC's end: %q, want [%q]", got, want)
		// What the Observer is told once the (long finished) RPC's context ends.
		cancel()
		time.Sleep(200 * time.Millisecond)
		got, _ = obs.snapshot()
		t.Logf("observed after the finished RPC's context was cancelled: %q", got)
	}
}

// Exact counts after concurrent load: every unary RPC and stream observed
// once, pool counters balanced, HealthStats Targets back to 0 after Close.
func TestReviewGRPCObserverAndStatsExactAfterLoad(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 5})
	obs := &observed{}
	f := clienttest.NewFactory(t, config{Observer: obs, ConnectTimeout: testTimeout, HealthCheck: &grpcpool.HealthCheck{}})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 3, MaxIdlePerKey: 3})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	const workers, per = 12, 20
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				var err error
				switch (w + i) % 3 {
				case 0:
					_, err = foo.UnaryCall(ctx, req("u"))
				case 1:
					_, err = foo.UnaryCall(ctx, failing(int32(codes.NotFound), "nf"))
					if status.Code(err) == codes.NotFound {
						err = nil
					}
				case 2:
					r := req("s")
					r.ResponseSize = 2
					var s grpc.ServerStreamingClient[testpb.SimpleResponse]
					s, err = foo.StreamingFromServer(ctx, r)
					for err == nil {
						_, err = s.Recv()
					}
					if err == io.EOF {
						err = nil
					}
				}
				cancel()
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d RPCs failed", failed.Load())
	}
	grpctest.WaitFor(t, 5*time.Second, "every RPC observed", func() bool {
		got, _ := obs.snapshot()
		return len(got) >= workers*per
	})
	time.Sleep(50 * time.Millisecond)
	got, _ := obs.snapshot()
	counts := map[string]int{}
	for _, g := range got {
		counts[g]++
	}
	if len(got) != workers*per {
		t.Errorf("observed %d RPCs, want %d: %v", len(got), workers*per, counts)
	}
	s := p.KeyStats(srv.Addr)
	if s.SharesInUse != 0 || s.Active != 0 || s.Borrowed != s.Returned || s.Borrowed != workers*per {
		t.Errorf("KeyStats after the load: %+v, want no shares, borrowed == returned == %d", s, workers*per)
	}
	hs := f.HealthStats()
	if hs.Targets != 1 || len(hs.Unhealthy) != 0 || hs.Failed != 0 || hs.NotServing != 0 {
		t.Errorf("HealthStats during life = %+v, want 1 target, nothing unhealthy", hs)
	}
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Fatal(err)
	}
	if hs := f.HealthStats(); hs.Targets != 0 {
		t.Errorf("HealthStats after Close = %+v, want 0 targets", hs)
	}
}

// ---------------------------------------------------------------------------
// more faults and edges

// A Target func that panics: contained by the pool as a factory panic, room
// freed, the next make works.
func TestReviewGRPCTargetPanicContained(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	var calls atomic.Int32
	f := clienttest.NewFactory(t, config{
		ConnectTimeout: testTimeout,
		Target: func(k string) (string, error) {
			if calls.Add(1) == 1 {
				panic("review: Target panics")
			}
			return k, nil
		},
	})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 1})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
	if !errors.Is(err, keyedpool.ErrFactoryPanic) || status.Code(err) != codes.Unavailable {
		t.Errorf("UnaryCall() with panicking Target = %v, want Unavailable wrapping ErrFactoryPanic", err)
	}
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
		t.Errorf("second UnaryCall() = %v", err)
	}
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Errorf("Close() = %v", err)
	}
	grpctest.WaitFor(t, 5*time.Second, "server connection closed", func() bool { return srv.Open() == 0 })
}

// A Classifier that panics (a user callback Conn calls after each failed
// RPC): the RPC's share must still come back ("each unary RPC holds one
// share of the busiest connection ... while it runs"), or the pool loses
// room for good and Close never finishes.
func TestReviewGRPCPanickingClassifierKeepsRoom(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	var ccs []*grpc.ClientConn
	var mu sync.Mutex
	t.Cleanup(func() { // the lost lease's connection, so that goleak blames nobody else
		mu.Lock()
		defer mu.Unlock()
		for _, cc := range ccs {
			cc.Close()
		}
	})
	f := clienttest.NewFactory(t, config{
		ConnectTimeout: testTimeout,
		Classifier:     func(error, connectivity.State) bool { panic("review: Classifier panics") },
		NewStub: func(cc grpc.ClientConnInterface) stub {
			mu.Lock()
			ccs = append(ccs, cc.(*grpc.ClientConn))
			mu.Unlock()
			return testpb.NewBenchmarkServiceClient(cc)
		},
	})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: 1, MaxTotalPerKey: 1})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
	func() {
		defer func() { recover() }()
		foo.UnaryCall(grpctest.Context(t, testTimeout), failing(int32(codes.NotFound), "nf"))
	}()
	s := p.KeyStats(srv.Addr)
	if s.SharesInUse != 0 {
		t.Errorf("after the Classifier panicked: %d shares still in use, want 0 (room lost)", s.SharesInUse)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
}

// reviewSlowHealth is a health service whose Check answers SERVING after delay.
type reviewSlowHealth struct {
	healthpb.UnimplementedHealthServer
	delay time.Duration
}

func (s reviewSlowHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// reviewCountingBench answers UnaryCall at once and counts those in flight.
type reviewCountingBench struct {
	testpb.UnimplementedBenchmarkServiceServer
	calls atomic.Int64
}

func (b *reviewCountingBench) UnaryCall(ctx context.Context, r *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	b.calls.Add(1)
	return &testpb.SimpleResponse{Payload: r.GetPayload()}, nil
}

// A server allowing 1 stream per connection, whose health Check is slow.
// An RPC starts a Check and gives up before its answer: the Check goes on
// (documented) and holds the connection's one stream; the pool must not
// lend that connection's share to another RPC meanwhile, since "the pool
// lends the connection no more RPCs than that, so RPCs do not queue for a
// stream" (README) / "none queues inside gRPC for a stream" (Conn doc).
func TestReviewGRPCAbandonedHealthCheckDoesNotQueueNextRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxConcurrentStreams(1))
	bench := &reviewCountingBench{}
	testpb.RegisterBenchmarkServiceServer(gs, bench)
	healthpb.RegisterHealthServer(gs, reviewSlowHealth{delay: 800 * time.Millisecond})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	addr := lis.Addr().String()

	f := clienttest.NewFactory(t, config{
		ConnectTimeout: testTimeout,
		HealthCheck:    &grpcpool.HealthCheck{Timeout: 3 * time.Second, Interval: time.Millisecond},
	})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 1})
	defer p.Close(grpctest.Context(t, testTimeout))
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, addr))

	// A: starts the Check and gives up after 100 ms.
	actx, acancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = foo.UnaryCall(actx, req("a"))
	acancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("RPC A = %v, want DeadlineExceeded while waiting for the Check", err)
	}
	if got := p.KeyStats(addr).ShareCap; got != 1 {
		t.Fatalf("ShareCap = %d, want 1", got)
	}
	// The Check A started still holds the server's one stream: the share
	// A was lent stands for it until the Check ends, so that no RPC is
	// lent it meanwhile, to queue inside gRPC for the stream.
	if got := p.KeyStats(addr).SharesInUse; got != 1 {
		t.Fatalf("SharesInUse while A's abandoned Check runs = %d, want 1", got)
	}
	grpctest.WaitFor(t, 5*time.Second, "the share back when the Check ends", func() bool {
		return p.KeyStats(addr).SharesInUse == 0
	})
	// B gets the share then, and its RPC goes through.
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("b")); err != nil {
		t.Fatalf("RPC B = %v", err)
	}
}

// "A server that announces 0 counts as 1": a live connection whose server
// sets MAX_CONCURRENT_STREAMS to 0 has a cap of 1, and takes its old cap
// again when the server raises it.
func TestReviewGRPCZeroLimitCountsAsOne(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 5})
	px := startSettingsProxy(t, srv.Addr)
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 1})
	defer p.Close(grpctest.Context(t, testTimeout))
	h, err := grpcpool.Borrow(grpctest.Context(t, testTimeout), p, px.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Value().ShareCap().Load(); got != 5 {
		t.Errorf("ShareCap = %d, want 5", got)
	}
	px.setLimit(0)
	grpctest.WaitFor(t, 5*time.Second, "cap 0 counts as 1", func() bool {
		return h.Value().ShareCap().Load() == 1 && p.KeyStats(px.Addr).ShareCap == 1
	})
	// The one share is lent: another borrower waits (MaxTotalPerKey 1).
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = p.Borrow(ctx, px.Addr)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Borrow() beyond cap 1 = %v, want DeadlineExceeded", err)
	}
	px.setLimit(2)
	grpctest.WaitFor(t, 5*time.Second, "cap back to 2", func() bool { return p.KeyStats(px.Addr).ShareCap == 2 })
	h2, err := p.Borrow(grpctest.Context(t, testTimeout), px.Addr)
	if err != nil {
		t.Fatalf("Borrow() under cap 2 = %v", err)
	}
	grpcpool.Release(p, h2, nil)
	grpcpool.Release(p, h, nil)
}

// Close while a make hangs on a backend that never answers: "makes in
// flight are cancelled", so the borrower fails at once with a clear error
// and Close returns well before ConnectTimeout.
func TestReviewGRPCCloseCancelsHangingMake(t *testing.T) {
	lis := silentListener(t, "127.0.0.1:0")
	t.Cleanup(func() { lis.Close() })
	addr := lis.Addr().String()
	base := runtime.NumGoroutine()
	f := clienttest.NewFactory(t, config{ConnectTimeout: 8 * time.Second})
	p := reviewPool(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares})
	foo := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, addr))
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
			errs <- err
		}()
	}
	grpctest.WaitFor(t, 5*time.Second, "a make in flight", func() bool { return p.KeyStats(addr).Making > 0 })
	start := time.Now()
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close() took %v with a make hanging, want it cancelled", took)
	}
	for range 3 {
		select {
		case err := <-errs:
			if c := status.Code(err); c != codes.Canceled && c != codes.Unavailable {
				t.Errorf("RPC racing Close = %v, want Canceled (closed) or Unavailable (make cancelled)", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("an RPC waiting on a hanging make did not end after Close")
		}
	}
	if n := settleGoroutines(base+1, 5*time.Second); n > base+1 {
		t.Errorf("goroutines after Close: %d, want <= %d", n, base+1)
	}
}

package grpcfactory_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// Regression tests from an independent review of the gRPC layer: each
// failed on the code as first written.

// Issue 4: "A backend whose health service says NOT_SERVING stops being
// lent". With shared leases, a connection that always carries at least one
// RPC (any steady traffic, or one long stream) is never idle, so it is never
// activated or validated again: RPCs keep going to the NOT_SERVING backend.
func TestRegressNotServingStillLentUnderSharedTraffic(t *testing.T) {
	const service = "grpc.testing.BenchmarkService"
	srv := grpctest.Start(t, grpctest.Options{})
	srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	_, foo := sharedPool(t, srv,
		config{ConnectTimeout: testTimeout, HealthCheck: &grpcfactory.HealthCheck{Service: service, Interval: 20 * time.Millisecond}},
		keyedpool.Config{MaxSharesPerObject: 10, TestOnCreate: true, TestOnBorrow: true})

	// Traffic: one long stream keeps a share of the connection.
	sctx, cancel := context.WithCancel(ctx(t))
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
		_, err := foo.UnaryCall(ctx(t), req("x"))
		if err == nil {
			return false
		}
		if status.Code(err) != codes.Unavailable || !errors.Is(err, grpcfactory.ErrNotServing) || srv.UnaryCalls() != before {
			t.Fatalf("UnaryCall() to a NOT_SERVING backend = %v (sent: %v); want Unavailable wrapping ErrNotServing, not sent",
				err, srv.UnaryCalls() != before)
		}
		return true
	})
	srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	grpctest.WaitFor(t, testTimeout, "RPCs to succeed once SERVING again", func() bool {
		_, err := foo.UnaryCall(ctx(t), req("y"))
		return err == nil
	})
	cancel()
}

// Issue 4: "ConnectTimeout (... so the pool never lends a connection that
// has not connected)". Activate waits only for an IDLE connection; one left
// CONNECTING (here by a borrower that gave up during Activate's wait) is
// lent at once by the next Borrow, unconnected.
func TestRegressActivateLendsConnectingConnection(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p := newPool(t, config{ConnectTimeout: 300 * time.Millisecond}, keyedpool.Config{})
	h, err := p.Borrow(ctx(t), srv.Addr)
	if err != nil {
		t.Fatalf("Borrow() error = %v", err)
	}
	c := h.Value()
	if err := p.Return(h); err != nil {
		t.Fatalf("Return() error = %v", err)
	}
	// The backend goes away; its port now accepts and never answers.
	srv.Stop()
	lis := silentListener(t, srv.Addr)
	defer lis.Close()
	waitState(t, c, connectivity.Idle)

	// A borrower with a short deadline gives up while Activate waits for
	// the reconnect; the connection goes back to the pool, CONNECTING.
	short, cancelShort := context.WithTimeout(ctx(t), 50*time.Millisecond)
	defer cancelShort()
	if h, err := p.Borrow(short, srv.Addr); err == nil {
		p.Return(h)
		t.Fatal("Borrow() with a silent backend succeeded")
	}
	if got := c.ClientConn().GetState(); got != connectivity.Connecting {
		t.Skipf("idle connection is %v, not CONNECTING; scenario not reached", got)
	}

	h, err = p.Borrow(ctx(t), srv.Addr)
	if err == nil {
		state := h.Value().ClientConn().GetState()
		p.Return(h)
		if state != connectivity.Ready {
			t.Errorf("Borrow() with ConnectTimeout lent a connection in state %v; want READY, or ErrConnect after ConnectTimeout", state)
		}
	}
}

// Issue 4: bad config is refused "with an error naming the field". A NaN or
// infinite Retry.BackoffMultiplier passes the < 0 check and fails later in
// json.Marshal: the error neither wraps ErrInvalidConfig nor names the field.
func TestRegressRetryMultiplierNaNNotNamed(t *testing.T) {
	for _, m := range []float64{math.NaN(), math.Inf(1)} {
		_, err := grpcfactory.New(config{
			NewStub:  testpb.NewBenchmarkServiceClient,
			Insecure: true,
			Retry:    grpcfactory.RetryPolicy{MaxAttempts: 3, BackoffMultiplier: m},
		})
		if !errors.Is(err, grpcfactory.ErrInvalidConfig) || !strings.Contains(err.Error(), "Retry.BackoffMultiplier") {
			t.Errorf("New() with Retry.BackoffMultiplier %v = %v; want ErrInvalidConfig naming Retry.BackoffMultiplier", m, err)
		}
	}
}

// fakeH2Server accepts connections and answers each with an HTTP/2
// SETTINGS frame followed by a GOAWAY, then closes it: a backend that
// completes the handshake and drops the connection at once (overloaded,
// shutting down, a proxy at its connection limit).
func fakeH2Server(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { lis.Close(); wg.Wait() })
	settings := []byte{0, 0, 0, 4, 0, 0, 0, 0, 0}
	// GOAWAY: length 8, type 7, stream 0, last stream 0, error NO_ERROR.
	goaway := []byte{0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(testTimeout))
				buf := make([]byte, 24) // the client preface
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				c.Write(append(settings, goaway...))
				time.Sleep(10 * time.Millisecond)
			})
		}
	})
	return lis.Addr().String()
}

// Issue 4 / Make's doc: "it fails at once with ErrConnect when the first
// attempt fails". When the first attempt's transport closes right after the
// handshake gRPC moves CONNECTING -> IDLE, and connect waits for a state
// change that never comes (nobody reconnects an IDLE pick_first) until
// ConnectTimeout.
func TestRegressConnectWaitsFullTimeoutAfterDroppedHandshake(t *testing.T) {
	addr := fakeH2Server(t)
	const timeout = time.Second
	f := newFactory(t, config{ConnectTimeout: timeout})
	var worst time.Duration
	var lastErr error
	for range 5 {
		if worst >= timeout {
			break
		}
		start := time.Now()
		c, err := f.Make(ctx(t), addr)
		d := time.Since(start)
		if err == nil {
			f.Destroy(ctx(t), addr, c)
		} else {
			lastErr = err
		}
		worst = max(worst, d)
	}
	if worst >= timeout {
		t.Errorf("Make() to a backend that drops the connection after the handshake took %v (ConnectTimeout %v), error %v; want it to fail (or retry) at once, not wait out ConnectTimeout in IDLE",
			worst, timeout, lastErr)
	}
}

// Make's doc: "A failed first attempt (refused, TLS handshake) fails Make
// at once with gRPC's reason". whyFailed learns the reason with an RPC that
// inherits the DialOptions' default call options; with the common
// WaitForReady(true) default it blocks until ConnectTimeout and the reason
// is lost.
func TestRegressWhyFailedBlocksWithWaitForReadyDefault(t *testing.T) {
	addr := deadAddr(t)
	const timeout = 2 * time.Second
	f := newFactory(t, config{
		ConnectTimeout: timeout,
		DialOptions:    []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.WaitForReady(true))},
	})
	start := time.Now()
	c, err := f.Make(ctx(t), addr)
	d := time.Since(start)
	if err == nil {
		f.Destroy(ctx(t), addr, c)
		t.Fatal("Make() to a dead address succeeded")
	}
	if d >= timeout {
		t.Errorf("Make() to a refusing address took %v (ConnectTimeout %v), error %v; want it at once (first attempt refused)", d, timeout, err)
	}
}

// Conn's doc used to say that closing the pool closes its connections; it
// does not while a stream holds one (the user has no ClientConn to close).
// The doc now says Close waits for the stream; this holds it to that.
func TestRegressPoolCloseWaitsForStreams(t *testing.T) {
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
	cctx, ccancel := context.WithTimeout(ctx(t), 100*time.Millisecond)
	defer ccancel()
	if err := p.Close(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("pool Close() with a stream open = %v, want DeadlineExceeded (it waits for the stream)", err)
	}
	// ...and closes everything once the stream is ended.
	cancel()
	if err := p.Close(ctx(t)); err != nil {
		t.Errorf("pool Close() after the stream ended = %v, want nil", err)
	}
	grpctest.WaitFor(t, testTimeout, "the server to see the connection closed", func() bool { return srv.Open() == 0 })
}

// Conn never marks its leases used (Pooled.MarkUsed), and a Conn user has
// no handle to do it: with the pool's abandoned-object tracking on, a stream
// in active use past Abandoned.Timeout counts as leaked, its share is taken
// back and its connection destroyed under it.
func TestRegressActiveStreamTakenBackAsAbandoned(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout}, keyedpool.Config{
		MaxSharesPerObject: 1,
		MaxTotalPerKey:     1,
		Abandoned:          &keyedpool.AbandonedConfig{RemoveOnBorrow: true, Timeout: 100 * time.Millisecond},
	})
	sctx, cancel := context.WithCancel(ctx(t))
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
	short, cancelShort := context.WithTimeout(ctx(t), 200*time.Millisecond)
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

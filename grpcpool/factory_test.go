package grpcpool_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// waitState waits, bounded, until c's connection reaches want.
func waitState(t *testing.T, c *client, want connectivity.State) {
	t.Helper()
	cc := c.ClientConn()
	for s := cc.GetState(); s != want; s = cc.GetState() {
		if !cc.WaitForStateChange(grpctest.Context(t, testTimeout), s) {
			t.Fatalf("connection state = %v, want %v", cc.GetState(), want)
		}
	}
}

func TestMakeConnectsEagerly(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	c, err := f.Make(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	defer f.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c)
	if got := c.ClientConn().GetState(); got != connectivity.Ready {
		t.Errorf("state after Make() = %v, want READY", got)
	}
	if got := srv.Accepted(); got != 1 {
		t.Errorf("server accepted %d connections, want 1", got)
	}
	if got := c.Key(); got != srv.Addr {
		t.Errorf("Key() = %v, want %v", got, srv.Addr)
	}
}

func TestMakeLazy(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := clienttest.NewFactory(t, config{})
	c, err := f.Make(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	defer f.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c)
	if got := c.ClientConn().GetState(); got != connectivity.Idle {
		t.Errorf("state after lazy Make() = %v, want IDLE", got)
	}
	if got := srv.Accepted(); got != 0 {
		t.Errorf("server accepted %d connections before any RPC, want 0", got)
	}
	// Validate accepts an IDLE connection: it connects on its first RPC.
	if err := f.Validate(grpctest.Context(t, testTimeout), srv.Addr, c); err != nil {
		t.Errorf("Validate(IDLE) = %v, want nil", err)
	}
}

// A refused connection fails Make at once with the reason, not after
// ConnectTimeout.
func TestMakeFailsFastWithReason(t *testing.T) {
	addr := grpctest.DeadAddr(t)
	f := clienttest.NewFactory(t, config{ConnectTimeout: time.Minute})
	start := time.Now()
	c, err := f.Make(grpctest.Context(t, testTimeout), addr)
	if err == nil {
		f.Destroy(grpctest.Context(t, testTimeout), addr, c)
		t.Fatal("Make() to a dead address succeeded")
	}
	if !errors.Is(err, grpcpool.ErrConnect) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), addr) {
		t.Errorf("Make() error = %v, want ErrConnect naming %s and saying connection refused", err, addr)
	}
	if d := time.Since(start); d > testTimeout/2 {
		t.Errorf("Make() took %v, want it to fail at the first attempt", d)
	}
}

func TestMakeConnectTimeout(t *testing.T) {
	// A listener that never speaks HTTP/2: the connection stays CONNECTING
	// until the timeout.
	srv := grpctest.Start(t, grpctest.Options{})
	srv.Stop()
	lis := silentListener(t, srv.Addr)
	defer lis.Close()
	f := clienttest.NewFactory(t, config{ConnectTimeout: 200 * time.Millisecond})
	c, err := f.Make(grpctest.Context(t, testTimeout), srv.Addr)
	if err == nil {
		f.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c)
		t.Fatal("Make() to a silent listener succeeded")
	}
	if !errors.Is(err, grpcpool.ErrConnect) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Make() error = %v, want ErrConnect wrapping DeadlineExceeded", err)
	}
}

func TestValidateStates(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	c, err := f.Make(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	if err := f.Validate(grpctest.Context(t, testTimeout), srv.Addr, c); err != nil {
		t.Errorf("Validate(READY) = %v, want nil", err)
	}
	if err := f.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c); err != nil {
		t.Errorf("Destroy() = %v", err)
	}
	if err := f.Validate(grpctest.Context(t, testTimeout), srv.Addr, c); !errors.Is(err, grpcpool.ErrUnusable) || !strings.Contains(err.Error(), "SHUTDOWN") {
		t.Errorf("Validate(SHUTDOWN) = %v, want ErrUnusable naming SHUTDOWN", err)
	}

	// A lazy client to a dead address goes to TRANSIENT_FAILURE once it
	// tries.
	dead := grpctest.DeadAddr(t)
	lazy := clienttest.NewFactory(t, config{})
	c, err = lazy.Make(grpctest.Context(t, testTimeout), dead)
	if err != nil {
		t.Fatalf("lazy Make() error = %v", err)
	}
	defer lazy.Destroy(grpctest.Context(t, testTimeout), dead, c)
	c.ClientConn().Connect()
	waitState(t, c, connectivity.TransientFailure)
	if err := lazy.Validate(grpctest.Context(t, testTimeout), dead, c); !errors.Is(err, grpcpool.ErrUnusable) || !strings.Contains(err.Error(), "TRANSIENT_FAILURE") {
		t.Errorf("Validate(TRANSIENT_FAILURE) = %v, want ErrUnusable naming TRANSIENT_FAILURE", err)
	}
	if err := lazy.Activate(grpctest.Context(t, testTimeout), dead, c); !errors.Is(err, grpcpool.ErrUnusable) {
		t.Errorf("Activate(TRANSIENT_FAILURE) = %v, want ErrUnusable", err)
	}
}

// A connection that lost its transport sits IDLE; Activate reconnects it
// before the pool lends it.
func TestActivateReconnectsIdle(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout})
	c, err := f.Make(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	defer f.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c)
	srv.Restart()
	waitState(t, c, connectivity.Idle)
	if err := f.Activate(grpctest.Context(t, testTimeout), srv.Addr, c); err != nil {
		t.Fatalf("Activate(IDLE) = %v, want nil", err)
	}
	if got := c.ClientConn().GetState(); got != connectivity.Ready {
		t.Errorf("state after Activate() = %v, want READY", got)
	}
	if got := srv.Accepted(); got != 2 {
		t.Errorf("server accepted %d connections, want 2 (the first and the reconnect)", got)
	}

	// Without ConnectTimeout Activate only starts the reconnect.
	lazy := clienttest.NewFactory(t, config{})
	c2, err := lazy.Make(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatalf("lazy Make() error = %v", err)
	}
	defer lazy.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c2)
	if err := lazy.Activate(grpctest.Context(t, testTimeout), srv.Addr, c2); err != nil {
		t.Fatalf("lazy Activate(IDLE) = %v, want nil", err)
	}
	waitState(t, c2, connectivity.Ready)
}

// Each pooled client is its own HTTP/2 connection: n clients borrowed at
// once are n connections at the server.
func TestEachClientOwnConnection(t *testing.T) {
	const n = 4
	srv := grpctest.Start(t, grpctest.Options{})
	p := newPool(t, config{ConnectTimeout: testTimeout}, keyedpool.Config{})
	hs := make([]*handle, n)
	for i := range hs {
		h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
		if err != nil {
			t.Fatalf("Borrow() error = %v", err)
		}
		hs[i] = h
	}
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() {
			_, err := h.Value().Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x"))
			if err != nil {
				t.Errorf("UnaryCall() error = %v", err)
			}
			grpcpool.Release(p, h, err)
		})
	}
	wg.Wait()
	if got := srv.Accepted(); got != n {
		t.Errorf("server accepted %d connections for %d pooled clients, want %d", got, n, n)
	}
	if got := srv.Open(); got != n {
		t.Errorf("server holds %d connections open, want %d", got, n)
	}
	// Borrowing again reuses them.
	h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatalf("Borrow() error = %v", err)
	}
	_, err = h.Value().Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x"))
	grpcpool.Release(p, h, err)
	if got := srv.Accepted(); got != n {
		t.Errorf("server accepted %d connections after reuse, want %d", got, n)
	}
}

// With ConnectTimeout the pool never lends a connection that has not
// connected: an idle connection left CONNECTING (here by borrowers that gave
// up during Activate's wait) is waited for by the next Borrow, not lent at
// once.
func TestBorrowNeverLendsConnectingConnection(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	p := newPool(t, config{ConnectTimeout: 300 * time.Millisecond}, keyedpool.Config{})
	h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
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
	// the reconnect; the connection goes back to the pool, CONNECTING, and
	// stays so (the silent backend never answers the handshake). On a busy
	// machine the deadline can pass before Activate starts, leaving the
	// connection IDLE: then the next borrower waits twice as long.
	for wait := 50 * time.Millisecond; c.ClientConn().GetState() != connectivity.Connecting; wait *= 2 {
		if wait > 2*time.Second {
			t.Fatalf("idle connection is %v after borrowers gave up during Activate, want CONNECTING", c.ClientConn().GetState())
		}
		short, cancelShort := context.WithTimeout(grpctest.Context(t, testTimeout), wait)
		h, err := p.Borrow(short, srv.Addr)
		cancelShort()
		if err == nil {
			p.Return(h)
			t.Fatal("Borrow() with a silent backend succeeded")
		}
	}

	h, err = p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
	if err == nil {
		state := h.Value().ClientConn().GetState()
		p.Return(h)
		if state != connectivity.Ready {
			t.Errorf("Borrow() with ConnectTimeout lent a connection in state %v; want READY, or ErrConnect after ConnectTimeout", state)
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

// Make does not wait out ConnectTimeout when the first attempt's transport
// closes right after the handshake (a backend overloaded, shutting down, or
// a proxy at its connection limit): gRPC then goes CONNECTING -> IDLE and
// does not try again by itself, so Make fails (or tries again) at once
// instead of waiting for a state change that never comes.
func TestMakeFailsAtOnceWhenHandshakeDropped(t *testing.T) {
	addr := fakeH2Server(t)
	const timeout = time.Second
	f := clienttest.NewFactory(t, config{ConnectTimeout: timeout})
	var worst time.Duration
	var lastErr error
	for range 5 {
		if worst >= timeout {
			break
		}
		start := time.Now()
		c, err := f.Make(grpctest.Context(t, testTimeout), addr)
		d := time.Since(start)
		if err == nil {
			f.Destroy(grpctest.Context(t, testTimeout), addr, c)
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

// A failed first attempt (here refused) fails Make at once with gRPC's
// reason, also when the DialOptions make WaitForReady(true) the default:
// learning the reason does not wait for the connection.
func TestMakeFailsAtOnceWithWaitForReadyDefault(t *testing.T) {
	addr := grpctest.DeadAddr(t)
	const timeout = 2 * time.Second
	f := clienttest.NewFactory(t, config{
		ConnectTimeout: timeout,
		DialOptions:    []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.WaitForReady(true))},
	})
	start := time.Now()
	c, err := f.Make(grpctest.Context(t, testTimeout), addr)
	d := time.Since(start)
	if err == nil {
		f.Destroy(grpctest.Context(t, testTimeout), addr, c)
		t.Fatal("Make() to a dead address succeeded")
	}
	if d >= timeout {
		t.Errorf("Make() to a refusing address took %v (ConnectTimeout %v), error %v; want it at once (first attempt refused)", d, timeout, err)
	}
}

// waitLeftReady waits, bounded, until c's connection is in another state
// than READY.
func waitLeftReady(t *testing.T, c *client) {
	t.Helper()
	cc := c.ClientConn()
	for s := cc.GetState(); s == connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(grpctest.Context(t, testTimeout), s) {
			t.Fatal("connection stayed READY")
		}
	}
}

// Down says what gRPC reports: not while a new connection connects, but
// from the moment it leaves READY (its transport lost), until Activate
// gives it a fresh start.
func TestClientDownOnceItLeftReady(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := clienttest.NewFactory(t, config{})
	c, err := f.Make(grpctest.Context(t, testTimeout), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	if c.Down() {
		t.Errorf("Down() of a new lazy connection (%v) = true, want false", c.ClientConn().GetState())
	}
	c.ClientConn().Connect()
	waitState(t, c, connectivity.Ready)
	if c.Down() {
		t.Error("Down() of a READY connection = true, want false")
	}
	srv.Stop()
	waitLeftReady(t, c)
	if !c.Down() {
		t.Errorf("Down() after the backend went away (%v) = false, want true", c.ClientConn().GetState())
	}
	srv.Restart()
	if err := f.Activate(grpctest.Context(t, testTimeout), srv.Addr, c); err != nil {
		t.Fatalf("Activate() = %v", err)
	}
	if c.Down() {
		t.Errorf("Down() after Activate reconnected it (%v) = true, want false", c.ClientConn().GetState())
	}
	waitState(t, c, connectivity.Ready)
	if err := f.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c); err != nil {
		t.Fatalf("Destroy() = %v", err)
	}
	if !c.Down() {
		t.Error("Down() after Destroy (SHUTDOWN) = false, want true")
	}
}

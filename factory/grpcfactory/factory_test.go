package grpcfactory_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// waitState waits, bounded, until c's connection reaches want.
func waitState(t *testing.T, c *client, want connectivity.State) {
	t.Helper()
	cc := c.ClientConn()
	for s := cc.GetState(); s != want; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx(t), s) {
			t.Fatalf("connection state = %v, want %v", cc.GetState(), want)
		}
	}
}

func TestMakeConnectsEagerly(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := newFactory(t, config{ConnectTimeout: testTimeout})
	c, err := f.Make(ctx(t), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	defer f.Destroy(ctx(t), srv.Addr, c)
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
	f := newFactory(t, config{})
	c, err := f.Make(ctx(t), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	defer f.Destroy(ctx(t), srv.Addr, c)
	if got := c.ClientConn().GetState(); got != connectivity.Idle {
		t.Errorf("state after lazy Make() = %v, want IDLE", got)
	}
	if got := srv.Accepted(); got != 0 {
		t.Errorf("server accepted %d connections before any RPC, want 0", got)
	}
	// Validate accepts an IDLE connection: it connects on its first RPC.
	if err := f.Validate(ctx(t), srv.Addr, c); err != nil {
		t.Errorf("Validate(IDLE) = %v, want nil", err)
	}
}

// A refused connection fails Make at once with the reason, not after
// ConnectTimeout.
func TestMakeFailsFastWithReason(t *testing.T) {
	addr := deadAddr(t)
	f := newFactory(t, config{ConnectTimeout: time.Minute})
	start := time.Now()
	c, err := f.Make(ctx(t), addr)
	if err == nil {
		f.Destroy(ctx(t), addr, c)
		t.Fatal("Make() to a dead address succeeded")
	}
	if !errors.Is(err, grpcfactory.ErrConnect) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), addr) {
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
	f := newFactory(t, config{ConnectTimeout: 200 * time.Millisecond})
	c, err := f.Make(ctx(t), srv.Addr)
	if err == nil {
		f.Destroy(ctx(t), srv.Addr, c)
		t.Fatal("Make() to a silent listener succeeded")
	}
	if !errors.Is(err, grpcfactory.ErrConnect) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Make() error = %v, want ErrConnect wrapping DeadlineExceeded", err)
	}
}

func TestValidateStates(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := newFactory(t, config{ConnectTimeout: testTimeout})
	c, err := f.Make(ctx(t), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	if err := f.Validate(ctx(t), srv.Addr, c); err != nil {
		t.Errorf("Validate(READY) = %v, want nil", err)
	}
	if err := f.Destroy(ctx(t), srv.Addr, c); err != nil {
		t.Errorf("Destroy() = %v", err)
	}
	if err := f.Validate(ctx(t), srv.Addr, c); !errors.Is(err, grpcfactory.ErrUnusable) || !strings.Contains(err.Error(), "SHUTDOWN") {
		t.Errorf("Validate(SHUTDOWN) = %v, want ErrUnusable naming SHUTDOWN", err)
	}

	// A lazy client to a dead address goes to TRANSIENT_FAILURE once it
	// tries.
	dead := deadAddr(t)
	lazy := newFactory(t, config{})
	c, err = lazy.Make(ctx(t), dead)
	if err != nil {
		t.Fatalf("lazy Make() error = %v", err)
	}
	defer lazy.Destroy(ctx(t), dead, c)
	c.ClientConn().Connect()
	waitState(t, c, connectivity.TransientFailure)
	if err := lazy.Validate(ctx(t), dead, c); !errors.Is(err, grpcfactory.ErrUnusable) || !strings.Contains(err.Error(), "TRANSIENT_FAILURE") {
		t.Errorf("Validate(TRANSIENT_FAILURE) = %v, want ErrUnusable naming TRANSIENT_FAILURE", err)
	}
	if err := lazy.Activate(ctx(t), dead, c); !errors.Is(err, grpcfactory.ErrUnusable) {
		t.Errorf("Activate(TRANSIENT_FAILURE) = %v, want ErrUnusable", err)
	}
}

// A connection that lost its transport sits IDLE; Activate reconnects it
// before the pool lends it.
func TestActivateReconnectsIdle(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f := newFactory(t, config{ConnectTimeout: testTimeout})
	c, err := f.Make(ctx(t), srv.Addr)
	if err != nil {
		t.Fatalf("Make() error = %v", err)
	}
	defer f.Destroy(ctx(t), srv.Addr, c)
	srv.Restart()
	waitState(t, c, connectivity.Idle)
	if err := f.Activate(ctx(t), srv.Addr, c); err != nil {
		t.Fatalf("Activate(IDLE) = %v, want nil", err)
	}
	if got := c.ClientConn().GetState(); got != connectivity.Ready {
		t.Errorf("state after Activate() = %v, want READY", got)
	}
	if got := srv.Accepted(); got != 2 {
		t.Errorf("server accepted %d connections, want 2 (the first and the reconnect)", got)
	}

	// Without ConnectTimeout Activate only starts the reconnect.
	lazy := newFactory(t, config{})
	c2, err := lazy.Make(ctx(t), srv.Addr)
	if err != nil {
		t.Fatalf("lazy Make() error = %v", err)
	}
	defer lazy.Destroy(ctx(t), srv.Addr, c2)
	if err := lazy.Activate(ctx(t), srv.Addr, c2); err != nil {
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
		h, err := p.Borrow(ctx(t), srv.Addr)
		if err != nil {
			t.Fatalf("Borrow() error = %v", err)
		}
		hs[i] = h
	}
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() {
			_, err := h.Value().Stub().UnaryCall(ctx(t), req("x"))
			if err != nil {
				t.Errorf("UnaryCall() error = %v", err)
			}
			grpcfactory.Release(p, h, err)
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
	h, err := p.Borrow(ctx(t), srv.Addr)
	if err != nil {
		t.Fatalf("Borrow() error = %v", err)
	}
	_, err = h.Value().Stub().UnaryCall(ctx(t), req("x"))
	grpcfactory.Release(p, h, err)
	if got := srv.Accepted(); got != n {
		t.Errorf("server accepted %d connections after reuse, want %d", got, n)
	}
}

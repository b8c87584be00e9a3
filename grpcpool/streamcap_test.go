package grpcpool_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// Each connection learns the stream limit its server sets, over plaintext
// and TLS, before it is lent; a server without one leaves it not known.
func TestClientLearnsStreamCap(t *testing.T) {
	ca := grpctest.NewCA(t, "kpool test CA")
	serverTLS := &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "backend")}}
	for _, tc := range []struct {
		name      string
		limit     uint32
		serverTLS *tls.Config
		want      int
	}{
		{"Limit10", 10, nil, 10},
		{"Limit1000", 1000, nil, 1000},
		{"NoLimit", 0, nil, 0},
		{"TLSLimit7", 7, serverTLS, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: tc.limit, TLS: tc.serverTLS})
			cfg := config{ConnectTimeout: testTimeout}
			if tc.serverTLS != nil {
				cfg.TLS = &tls.Config{RootCAs: ca.Pool}
			}
			p := newPool(t, cfg, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares})
			h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer grpcpool.Release(p, h, nil)
			if got := h.Value().ShareCap().Load(); got != tc.want {
				t.Errorf("ShareCap() = %d, want %d", got, tc.want)
			}
			if got := p.KeyStats(srv.Addr).ShareCap; got != tc.want {
				t.Errorf("KeyStats().ShareCap = %d, want %d", got, tc.want)
			}
		})
	}
}

// With no share limit of its own (MaxShares), a pool over a server that
// allows 10 streams per connection opens a connection for each 10 RPCs,
// so that 35 RPCs at once all run on the server, none queued inside gRPC
// for a stream.
func TestConnOpensConnectionsAtTheServersStreamCap(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 10})
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout},
		keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 8})
	release := srv.Hold()
	const callers = 35
	wait := unaryBurst(t, foo, callers)
	grpctest.WaitFor(t, testTimeout, "35 RPCs running on the server at once", func() bool { return srv.InFlight() == callers })
	if s := p.KeyStats(srv.Addr); s.Active != 4 || s.SharesInUse != callers {
		t.Errorf("KeyStats() = %d shares on %d connections, want %d on 4", s.SharesInUse, s.Active, callers)
	}
	for _, o := range p.ListObjects(srv.Addr) {
		if o.Shares > 10 {
			t.Errorf("a connection carries %d RPCs, over its server's 10 streams", o.Shares)
		}
	}
	release()
	wait()
}

// When load falls, the connections it no longer needs go idle, as shares
// pack onto the busiest, and eviction retires them: a burst of 1000 RPCs
// over a server's 100 streams per connection opens 10 connections; 20
// callers after it keep one busy, and two eviction runs MinEvictableIdle
// apart (two periods of an evictor with that period) retire the other 9;
// later runs keep the one.
func TestConnectionsShrinkWhenLoadFalls(t *testing.T) {
	const idle = 200 * time.Millisecond
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 100})
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout}, keyedpool.Config{
		MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 16, MinEvictableIdle: idle,
		NumTestsPerEvictionRun: -1, // every idle connection each run, not 3
	})
	release := srv.Hold()
	wait := unaryBurst(t, foo, 1000)
	grpctest.WaitFor(t, testTimeout, "the burst on 10 connections", func() bool { return srv.InFlight() == 1000 })
	if s := p.KeyStats(srv.Addr); s.Active != 10 {
		t.Errorf("burst of 1000 over 100 streams per connection: %d connections, want 10", s.Active)
	}
	release()
	wait()

	traffic := grpctest.StartTraffic(t, 20, testTimeout, func(ctx context.Context) error {
		_, err := foo.UnaryCall(ctx, req("x"))
		return err
	})
	// Each run comes MinEvictableIdle after the last, as an evictor's would
	// with that period. The connections the 20 callers' first borrows
	// touched went idle a moment later than the rest: two runs.
	for range 2 {
		traffic.More(t, 1000)
		time.Sleep(idle)
		if err := p.RunEviction(grpctest.Context(t, testTimeout)); err != nil {
			t.Fatal(err)
		}
	}
	if s := p.KeyStats(srv.Addr); s.Active+s.Idle != 1 || s.Destroyed != 9 {
		t.Errorf("two eviction runs after the load fell to 20 callers: %d connections, %d destroyed; want 1 kept, 9 destroyed", s.Active+s.Idle, s.Destroyed)
	}
	traffic.More(t, 1000)
	time.Sleep(idle)
	if err := p.RunEviction(grpctest.Context(t, testTimeout)); err != nil {
		t.Fatal(err)
	}
	if s := p.KeyStats(srv.Addr); s.Active+s.Idle != 1 {
		t.Errorf("a later run: %d connections, want the busy one kept", s.Active+s.Idle)
	}
	if _, errs := traffic.Stop(); len(errs) > 0 {
		t.Errorf("RPCs under low load failed: %v", errs)
	}
}

package grpcpool_test

import (
	"context"
	"crypto/tls"
	"sync"
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
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
			errs <- err
		})
	}
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
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("UnaryCall() = %v", err)
		}
	}
}

// When load falls, the connections it no longer needs go idle, as shares
// pack onto the busiest, and the evictor retires them: a burst of 60 RPCs
// over a server's 10 streams opens 6 connections; 3 callers after it keep
// one busy, and the other 5 are gone within a few eviction periods.
func TestConnectionsShrinkWhenLoadFalls(t *testing.T) {
	const period = 100 * time.Millisecond
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 10})
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout}, keyedpool.Config{
		MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 8,
		TimeBetweenEvictionRuns: period, MinEvictableIdle: period,
	})
	release := srv.Hold()
	var burst sync.WaitGroup
	for range 60 {
		burst.Go(func() {
			if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
				t.Errorf("UnaryCall() = %v", err)
			}
		})
	}
	grpctest.WaitFor(t, testTimeout, "the burst on 6 connections", func() bool { return srv.InFlight() == 60 })
	release()
	burst.Wait()
	if s := p.KeyStats(srv.Addr); s.Active+s.Idle != 6 {
		t.Fatalf("after the burst: %d connections, want 6", s.Active+s.Idle)
	}

	traffic := grpctest.StartTraffic(t, 3, testTimeout, func(ctx context.Context) error {
		_, err := foo.UnaryCall(ctx, req("x"))
		return err
	})
	start := time.Now()
	grpctest.WaitFor(t, testTimeout, "one connection left under 3 callers", func() bool {
		s := p.KeyStats(srv.Addr)
		return s.Active+s.Idle == 1
	})
	t.Logf("5 surplus connections retired %v after the load fell (eviction period %v)", time.Since(start).Round(time.Millisecond), period)
	if _, errs := traffic.Stop(); len(errs) > 0 {
		t.Errorf("RPCs under low load failed: %v", errs)
	}
}

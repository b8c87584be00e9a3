package grpcpool_test

import (
	"crypto/tls"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/backend"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// rvListenAt starts a backend on addr (retrying while the port is still
// busy from a server just stopped) and stops it when the test ends.
func rvListenAt(t *testing.T, opts backend.Options) *backend.Server {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := backend.Listen(opts)
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen on %s: %v", opts.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rvPoll is WaitFor that reports instead of failing at once.
func rvPoll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// After the backend is replaced by one with a lower stream cap on the same
// address, the connections the pool makes learn the new cap, over
// plaintext and TLS, and no connection carries more RPCs than it.
func TestReplacedServerWithLowerCap(t *testing.T) {
	ca := grpctest.NewCA(t, "kpool test CA")
	serverTLS := &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "backend")}}
	for _, tc := range []struct {
		name string
		tls  *tls.Config
	}{{"Plaintext", nil}, {"TLS", serverTLS}} {
		t.Run(tc.name, func(t *testing.T) {
			old := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 10, TLS: tc.tls})
			cfg := config{ConnectTimeout: testTimeout}
			if tc.tls != nil {
				cfg.TLS = &tls.Config{RootCAs: ca.Pool}
			}
			p, foo := sharedPool(t, old, cfg, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 8})
			h, err := grpcpool.Borrow(grpctest.Context(t, testTimeout), p, old.Addr)
			if err != nil {
				t.Fatal(err)
			}
			c := h.Value()
			grpcpool.Release(p, h, nil)
			if got := p.KeyStats(old.Addr).ShareCap; got != 10 {
				t.Fatalf("ShareCap = %d, want 10", got)
			}
			old.Stop()
			grpctest.WaitFor(t, testTimeout, "the old connection noticed down", func() bool {
				return c.ClientConn().GetState() != connectivity.Ready
			})
			srv := rvListenAt(t, backend.Options{Addr: old.Addr, MaxConcurrentStreams: 2, TLS: tc.tls})
			release := srv.Hold()
			const callers = 6
			wait := unaryBurst(t, foo, callers)
			ok := rvPoll(testTimeout, func() bool { return srv.InFlight() == callers })
			if !ok {
				t.Errorf("only %d of %d RPCs reached the new server (cap 2)", srv.InFlight(), callers)
			}
			for _, o := range p.ListObjects(old.Addr) {
				if o.State == keyedpool.ObjectLent && o.ShareCap != 2 {
					t.Errorf("a lent connection has ShareCap %d, want 2 (the new server's)", o.ShareCap)
				}
				if o.ShareCap > 0 && o.Shares > o.ShareCap {
					t.Errorf("a connection carries %d RPCs over its cap %d", o.Shares, o.ShareCap)
				}
			}
			if got := p.KeyStats(old.Addr).ShareCap; got != 2 {
				t.Errorf("KeyStats.ShareCap = %d, want 2", got)
			}
			release()
			wait()
		})
	}
}

// An idle connection whose backend was replaced reconnects on Activate and
// learns the new server's cap from its first SETTINGS: a lower one, then
// none at all; the key's ShareCap follows.
func TestIdleClientReconnectLearnsNewCap(t *testing.T) {
	old := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 10})
	p := newPool(t, config{ConnectTimeout: testTimeout}, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 4})
	h, err := p.Borrow(grpctest.Context(t, testTimeout), old.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c := h.Value()
	if got := c.ShareCap().Load(); got != 10 {
		t.Fatalf("ShareCap = %d, want 10", got)
	}
	p.Return(h)
	addr := old.Addr
	for i, limit := range []uint32{3, 0} {
		if i == 0 {
			old.Stop()
		}
		grpctest.WaitFor(t, testTimeout, "the idle connection notices its backend went", func() bool {
			return c.ClientConn().GetState() != connectivity.Ready
		})
		srv := rvListenAt(t, backend.Options{Addr: addr, MaxConcurrentStreams: limit})
		h, err := p.Borrow(grpctest.Context(t, testTimeout), addr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Value() != c {
			t.Fatalf("step %d: Borrow lent another client, want the idle one reconnected", i)
		}
		want := int(limit)
		if got := c.ShareCap().Load(); got != want {
			t.Errorf("server cap %d: client ShareCap = %d, want %d", limit, got, want)
		}
		if got := p.KeyStats(addr).ShareCap; got != want {
			t.Errorf("server cap %d: KeyStats.ShareCap = %d, want %d (the key's only connection's)", limit, got, want)
		}
		p.Return(h)
		srv.Stop()
	}
}

// A Client made with credentials in DialOptions (which replace grpcpool's)
// learns no cap, as documented, and still works.
func TestCapNotLearnedWithDialOptionCreds(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 4})
	p := newPool(t, config{ConnectTimeout: testTimeout,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}},
		keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares})
	h, err := grpcpool.Borrow(grpctest.Context(t, testTimeout), p, srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer grpcpool.Release(p, h, nil)
	if got := h.Value().ShareCap().Load(); got != 0 {
		t.Errorf("ShareCap = %d, want 0 (not learned with DialOptions credentials)", got)
	}
	if _, err := h.Value().Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
		t.Errorf("UnaryCall = %v", err)
	}
}

// A server without a stream limit lets one connection carry every RPC
// (README), also when the key's earlier server had a limit: after a
// backend with a cap of 3 is replaced by one with none, and a connection
// has heard the new one, 6 RPCs at once run on one connection, not on two
// capped at the old server's 3.
func TestUncappedServerAfterCappedOne(t *testing.T) {
	old := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 3})
	p, foo := sharedPool(t, old, config{ConnectTimeout: testTimeout}, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 8})
	h, err := grpcpool.Borrow(grpctest.Context(t, testTimeout), p, old.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c := h.Value()
	grpcpool.Release(p, h, nil)
	old.Stop()
	grpctest.WaitFor(t, testTimeout, "the old connection noticed down", func() bool {
		return c.ClientConn().GetState() != connectivity.Ready
	})
	srv := rvListenAt(t, backend.Options{Addr: old.Addr}) // no MAX_CONCURRENT_STREAMS
	// One RPC first: the connection it makes hears the new server, and the
	// key forgets the old cap. (A burst before that is sized by the cap the
	// key knew, 3, and may dial one connection too many.)
	if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
		t.Fatal(err)
	}
	if got := p.KeyStats(old.Addr).ShareCap; got != 0 {
		t.Errorf("KeyStats.ShareCap after the uncapped server answered = %d, want 0", got)
	}
	release := srv.Hold()
	const callers = 6
	wait := unaryBurst(t, foo, callers)
	if !rvPoll(testTimeout, func() bool { return srv.InFlight() == callers }) {
		t.Errorf("%d of %d RPCs reached the uncapped server", srv.InFlight(), callers)
	}
	lent := 0
	for _, o := range p.ListObjects(old.Addr) {
		if o.State == keyedpool.ObjectLent {
			lent++
			t.Logf("lent connection: %d shares, own cap %d", o.Shares, o.ShareCap)
		}
	}
	if lent != 1 {
		t.Errorf("6 RPCs on a server with no stream limit took %d connections, want 1 (KeyStats.ShareCap %d)", lent, p.KeyStats(old.Addr).ShareCap)
	}
	release()
	wait()
}

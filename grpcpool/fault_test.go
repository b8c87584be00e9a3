package grpcpool_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// The backend stops and comes back on the same port while callers keep
// sending: broken connections are invalidated, new ones made, traffic
// recovers, no RPC outlives its deadline, and no connection leaks. While it
// is down its port either refuses connections or, worse, accepts them and
// never answers, so that connects hang past the RPCs' deadlines.
func TestRestartDuringTraffic(t *testing.T) {
	t.Run("Refused", func(t *testing.T) {
		testRestartDuringTraffic(t, func(*grpctest.Server) (up func()) { return func() {} })
	})
	t.Run("Hangs", func(t *testing.T) {
		testRestartDuringTraffic(t, func(srv *grpctest.Server) (up func()) {
			lis := silentListener(t, srv.Addr)
			return func() { lis.Close() }
		})
	})
}

// testRestartDuringTraffic runs the traffic; down is called just after the
// backend stopped, and the up it returns just before it restarts.
func testRestartDuringTraffic(t *testing.T, down func(*grpctest.Server) (up func())) {
	const (
		workers    = 16
		maxConns   = 4
		rpcTimeout = 300 * time.Millisecond
		// overrun is how far past its deadline an RPC may return: time for
		// the scheduler, on 2 cores under -race. An RPC that waited on a
		// connect or a share past its deadline would overrun by far more.
		overrun     = 150 * time.Millisecond
		maxRPCs     = 200_000 // per worker; the phases below end long before
		phaseOK     = 100     // successes that make a phase
		phaseFailed = 32      // failures that show the backend is down
	)
	// A little work per RPC, so that the stop cuts RPCs in flight.
	srv := grpctest.Start(t, grpctest.Options{Delay: time.Millisecond})
	// ConnectTimeout is longer than the RPCs' deadline: a borrower must
	// not wait for a hanging connect beyond its own deadline.
	p, foo := sharedPool(t, srv, config{ConnectTimeout: time.Second},
		keyedpool.Config{MaxSharesPerObject: 8, MaxTotalPerKey: maxConns})

	var (
		ok, failed, okAfter atomic.Int64
		restarted           atomic.Bool
		worst               atomic.Int64 // longest RPC, in ns
		stop                = make(chan struct{})
		wg                  sync.WaitGroup
	)
	var seen sync.Map // status code -> an error with it
	for range workers {
		wg.Go(func() {
			for range maxRPCs {
				select {
				case <-stop:
					return
				default:
				}
				c, cancel := context.WithTimeout(context.Background(), rpcTimeout)
				start := time.Now()
				_, err := foo.UnaryCall(c, req("x"))
				d := time.Since(start)
				cancel()
				for w := worst.Load(); int64(d) > w && !worst.CompareAndSwap(w, int64(d)); w = worst.Load() {
				}
				if err != nil {
					failed.Add(1)
					seen.Store(status.Code(err), err.Error())
					continue
				}
				ok.Add(1)
				if restarted.Load() {
					okAfter.Add(1)
				}
			}
		})
	}
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt() // on a failed phase too

	grpctest.WaitFor(t, testTimeout, "no traffic before the stop", func() bool { return ok.Load() >= phaseOK })
	srv.Stop()
	up := down(srv)
	grpctest.WaitFor(t, testTimeout, "RPCs did not fail while the backend was down", func() bool { return failed.Load() >= phaseFailed })
	up()
	srv.Restart()
	restarted.Store(true)
	grpctest.WaitFor(t, testTimeout, "traffic did not recover after the restart", func() bool { return okAfter.Load() >= phaseOK })
	halt()

	seen.Range(func(k, v any) bool {
		t.Logf("while down: %v, e.g. %v", k, v)
		return true
	})
	if w := time.Duration(worst.Load()); w > rpcTimeout+overrun {
		t.Errorf("longest RPC took %v, want at most its deadline %v (+%v)", w, rpcTimeout, overrun)
	}
	s := p.Stats()
	t.Logf("ok %d, failed %d, longest RPC %v; pool %+v", ok.Load(), failed.Load(), time.Duration(worst.Load()), s)
	if s.DestroyedByInvalidate+s.DestroyedByBorrowValidation == 0 {
		t.Errorf("no connection invalidated or refused after the backend stopped: %+v", s)
	}
	if s.SharesInUse != 0 {
		t.Errorf("SharesInUse = %d after the traffic ended, want 0", s.SharesInUse)
	}
	if live := s.Created - s.Destroyed; live > maxConns {
		t.Errorf("pool holds %d connections, want at most %d", live, maxConns)
	}
	grpctest.WaitFor(t, testTimeout, "server holds more connections than the pool", func() bool {
		return srv.Open() <= s.Created-s.Destroyed
	})
	if err := p.Close(grpctest.Context(t, testTimeout)); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if s := p.Stats(); s.Created != s.Destroyed {
		t.Errorf("after Close: Created %d, Destroyed %d; want equal", s.Created, s.Destroyed)
	}
	grpctest.WaitFor(t, testTimeout, "server connections still open after the pool closed", func() bool { return srv.Open() == 0 })
}

// A backend whose health service says NOT_SERVING is not lent, with
// TestOnCreate and TestOnBorrow; it is lent again once SERVING.
func TestHealthNotServing(t *testing.T) {
	const service = "grpc.testing.BenchmarkService"
	cfg := config{ConnectTimeout: testTimeout, HealthCheck: &grpcpool.HealthCheck{Service: service}}
	pcfg := keyedpool.Config{TestOnCreate: true, TestOnBorrow: true}

	wantNotServing := func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, grpcpool.ErrNotServing) || !errors.Is(err, keyedpool.ErrValidation) || !strings.Contains(err.Error(), "NOT_SERVING") {
			t.Errorf("error = %v, want ErrValidation wrapping ErrNotServing", err)
		}
	}

	t.Run("Exclusive", func(t *testing.T) {
		srv := grpctest.Start(t, grpctest.Options{})
		srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
		p := newPool(t, cfg, pcfg)
		borrow := func() error {
			h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
			if err != nil {
				return err
			}
			_, err = h.Value().Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x"))
			grpcpool.Release(p, h, err)
			return err
		}
		if err := borrow(); err != nil {
			t.Fatalf("Borrow() while SERVING = %v", err)
		}
		srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)
		wantNotServing(t, borrow())
		// The idle connection failed TestOnBorrow; the new one TestOnCreate.
		if s := p.Stats(); s.DestroyedByBorrowValidation != 2 || s.Idle != 0 {
			t.Errorf("Stats() = %+v, want 2 connections destroyed by validation, none idle", s)
		}
		srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
		if err := borrow(); err != nil {
			t.Errorf("Borrow() when SERVING again = %v", err)
		}
	})

	t.Run("Shared", func(t *testing.T) {
		srv := grpctest.Start(t, grpctest.Options{})
		srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
		pcfg := pcfg
		pcfg.MaxSharesPerObject = 10
		_, foo := sharedPool(t, srv, cfg, pcfg)
		if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
			t.Fatalf("UnaryCall() while SERVING = %v", err)
		}
		srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)
		_, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x"))
		if status.Code(err) != codes.Unavailable {
			t.Errorf("UnaryCall() while NOT_SERVING = %v, want Unavailable", err)
		}
		wantNotServing(t, err)
		srv.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
		if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
			t.Errorf("UnaryCall() when SERVING again = %v", err)
		}
	})

	t.Run("UnknownService", func(t *testing.T) {
		srv := grpctest.Start(t, grpctest.Options{})
		f := clienttest.NewFactory(t, config{ConnectTimeout: testTimeout, HealthCheck: &grpcpool.HealthCheck{Service: "nobody"}})
		c, err := f.Make(grpctest.Context(t, testTimeout), srv.Addr)
		if err != nil {
			t.Fatalf("Make() = %v", err)
		}
		defer f.Destroy(grpctest.Context(t, testTimeout), srv.Addr, c)
		if err := f.Validate(grpctest.Context(t, testTimeout), srv.Addr, c); status.Code(err) != codes.NotFound {
			t.Errorf("Validate() for an unknown service = %v, want NotFound", err)
		}
	})
}

func TestTLS(t *testing.T) {
	ca := grpctest.NewCA(t, "kpool test CA")
	serverCert := ca.Leaf(t, "backend")
	clientCert := ca.Leaf(t, "client")

	call := func(t *testing.T, srv *grpctest.Server, clientTLS *tls.Config) error {
		t.Helper()
		p := newPool(t, config{TLS: clientTLS, ConnectTimeout: testTimeout}, keyedpool.Config{})
		h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
		if err != nil {
			return err
		}
		_, err = h.Value().Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x"))
		grpcpool.Release(p, h, err)
		return err
	}

	t.Run("TLS", func(t *testing.T) {
		srv := grpctest.Start(t, grpctest.Options{TLS: &tls.Config{Certificates: []tls.Certificate{serverCert}}})
		if err := call(t, srv, &tls.Config{RootCAs: ca.Pool}); err != nil {
			t.Errorf("RPC over TLS = %v", err)
		}
	})

	t.Run("WrongCA", func(t *testing.T) {
		srv := grpctest.Start(t, grpctest.Options{TLS: &tls.Config{Certificates: []tls.Certificate{serverCert}}})
		other := grpctest.NewCA(t, "some other CA")
		err := call(t, srv, &tls.Config{RootCAs: other.Pool})
		if !errors.Is(err, grpcpool.ErrConnect) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("Borrow() trusting the wrong CA = %v, want ErrConnect saying certificate signed by unknown authority", err)
		}
		t.Logf("Borrow() trusting the wrong CA: %v", err)
	})

	mtls := &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool,
	}
	t.Run("MutualTLS", func(t *testing.T) {
		srv := grpctest.Start(t, grpctest.Options{TLS: mtls})
		if err := call(t, srv, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{clientCert}}); err != nil {
			t.Errorf("RPC over mTLS = %v", err)
		}
	})

	t.Run("MutualTLSNoClientCert", func(t *testing.T) {
		srv := grpctest.Start(t, grpctest.Options{TLS: mtls})
		// With TLS 1.3 the client learns that its missing certificate was
		// refused only from the server's alert, which races with the
		// client's first write: the reason is "certificate required" or,
		// sometimes, a broken pipe. Either way Borrow fails.
		err := call(t, srv, &tls.Config{RootCAs: ca.Pool})
		if !errors.Is(err, grpcpool.ErrConnect) {
			t.Errorf("Borrow() without a client certificate = %v, want ErrConnect", err)
		}
		t.Logf("Borrow() without a client certificate: %v", err)
	})

	t.Run("NoTLS", func(t *testing.T) {
		// Plaintext against a TLS backend fails at Borrow too.
		srv := grpctest.Start(t, grpctest.Options{TLS: &tls.Config{Certificates: []tls.Certificate{serverCert}}})
		p := newPool(t, config{ConnectTimeout: time.Second}, keyedpool.Config{})
		if h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr); err == nil {
			p.Return(h)
			t.Error("Borrow() in plaintext from a TLS backend succeeded")
		}
	})
}

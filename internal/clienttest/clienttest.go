// Package clienttest is the client side of kpool's gRPC tests, written once
// for grpcpool, discovery and the resolvers' packages: a grpcpool factory of
// BenchmarkService stubs, a Router closed (and checked for leases still
// out) when the test ends, continuous unary traffic over a connection, and
// look-ups of a Router's services and keys. The servers those clients call
// are internal/grpctest's.
//
// Imports go one way: clienttest imports grpcpool, discovery and grpctest,
// so only external test packages (package x_test) of those may import it.
package clienttest

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// Stub is the client of the BenchmarkService that grpctest's servers serve.
type Stub = testpb.BenchmarkServiceClient

// NewFactory returns a factory of Stubs with cfg's settings, filling in the
// BenchmarkService stub if cfg.NewStub is nil, and plaintext unless cfg
// sets TLS or TransportCredentials. A zero ConnectTimeout stays zero:
// clients connect lazily unless the test asks otherwise.
func NewFactory(tb testing.TB, cfg grpcpool.Config[string, Stub]) *grpcpool.Factory[string, Stub] {
	tb.Helper()
	if cfg.NewStub == nil {
		cfg.NewStub = testpb.NewBenchmarkServiceClient
	}
	if cfg.TLS == nil && cfg.TransportCredentials == nil {
		cfg.Insecure = true
	}
	f, err := grpcpool.New(cfg)
	if err != nil {
		tb.Fatalf("grpcpool.New() error = %v", err)
	}
	return f
}

// SharedLeases is a pool config with shared leases, as Conn users set it:
// up to 100 leases on each of up to 4 connections per backend.
func SharedLeases() keyedpool.Config {
	return keyedpool.Config{MaxSharesPerObject: 100, MaxTotalPerKey: 4}
}

// NewRouter makes a Router with cfg and closes it when the test ends,
// failing the test if a lease is still out by then or Close takes longer
// than timeout. A nil cfg.Factory is NewFactory's, with clients that
// connect at once (ConnectTimeout timeout).
func NewRouter(tb testing.TB, timeout time.Duration, cfg discovery.RouterConfig[Stub]) *discovery.Router[Stub] {
	tb.Helper()
	if cfg.Factory == nil {
		cfg.Factory = NewFactory(tb, grpcpool.Config[string, Stub]{ConnectTimeout: timeout})
	}
	r, err := discovery.NewRouter(cfg)
	if err != nil {
		tb.Fatalf("NewRouter() error = %v", err)
	}
	tb.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := r.Close(c); err != nil {
			tb.Errorf("Router.Close() = %v, want nil (a lease not given back?)", err)
		}
	})
	return r
}

// ServiceStats returns r's stats of service, or the zero value if r does
// not know it.
func ServiceStats[S any](r *discovery.Router[S], service string) discovery.ServiceStats {
	for _, s := range r.Services() {
		if s.Service == service {
			return s
		}
	}
	return discovery.ServiceStats{}
}

// HasKey reports whether r's pool has a sub-pool for addr.
func HasKey[S any](r *discovery.Router[S], addr string) bool {
	return slices.Contains(r.Pool().Keys(), addr)
}

// UnaryTraffic starts n goroutines sending empty UnaryCalls through conn,
// each bounded by timeout, until Stop or the test's end.
func UnaryTraffic(tb testing.TB, timeout time.Duration, conn grpc.ClientConnInterface, n int) *grpctest.Traffic {
	tb.Helper()
	stub := testpb.NewBenchmarkServiceClient(conn)
	return grpctest.StartTraffic(tb, n, timeout, func(c context.Context) error {
		_, err := stub.UnaryCall(c, &testpb.SimpleRequest{})
		return err
	})
}

// CheckRolledOver ends a rolling-release test, where each backend of old
// was replaced by one of fresh under l's traffic: it stops l and fails the
// test if any RPC failed, if r's pool still has a key for an old backend,
// or if a fresh backend got no RPC. It returns the calls made.
func CheckRolledOver[S any](tb testing.TB, r *discovery.Router[S], l *grpctest.Traffic, old, fresh []*grpctest.Server) int64 {
	tb.Helper()
	calls, errs := l.Stop()
	if len(errs) > 0 {
		tb.Errorf("%d of %d RPCs failed during the rolling release, want 0; first: %v", len(errs), calls, errs[0])
	}
	for _, o := range old {
		if HasKey(r, o.Addr) {
			tb.Errorf("pool still has a key for old backend %s", o.Addr)
		}
	}
	for _, n := range fresh {
		if n.UnaryCalls() == 0 {
			tb.Errorf("new backend %s got no RPC", n.Addr)
		}
	}
	return calls
}

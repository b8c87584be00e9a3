package discovery_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

type (
	stub   = testpb.BenchmarkServiceClient
	client = grpcpool.Client[stub]
	router = discovery.Router[stub]
)

// testTimeout bounds every wait of these tests: a bug shows up as a failure
// naming what did not happen, never as a hang.
const testTimeout = 10 * time.Second

// ctx returns a context that ends with the test, bounded by testTimeout.
func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return c
}

// newFactory returns a plaintext factory of BenchmarkService clients that
// connect at once (ConnectTimeout), with cfg's other settings.
func newFactory(t *testing.T, cfg grpcpool.Config[string, stub]) *grpcpool.Factory[string, stub] {
	t.Helper()
	cfg.NewStub = testpb.NewBenchmarkServiceClient
	cfg.Insecure = true
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = testTimeout
	}
	f, err := grpcpool.New(cfg)
	if err != nil {
		t.Fatalf("grpcpool.New() error = %v", err)
	}
	return f
}

// newRouter makes a Router over res and closes it when the test ends,
// failing the test if a lease is still out by then. A nil Factory is
// newFactory's default.
func newRouter(t *testing.T, cfg discovery.RouterConfig[stub]) *router {
	t.Helper()
	if cfg.Factory == nil {
		cfg.Factory = newFactory(t, grpcpool.Config[string, stub]{})
	}
	r, err := discovery.NewRouter(cfg)
	if err != nil {
		t.Fatalf("NewRouter() error = %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := r.Close(c); err != nil {
			t.Errorf("Router.Close() = %v, want nil (a lease not given back?)", err)
		}
	})
	return r
}

// shared is a pool config with shared leases, as Conn users set it.
func shared() keyedpool.Config {
	return keyedpool.Config{MaxSharesPerObject: 100, MaxTotalPerKey: 4}
}

// ep is the endpoint of a test server.
func ep(s *grpctest.Server) discovery.Endpoint {
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		panic(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		panic(err)
	}
	return discovery.Endpoint{Address: host, Port: p}
}

func eps(servers ...*grpctest.Server) []discovery.Endpoint {
	out := make([]discovery.Endpoint, len(servers))
	for i, s := range servers {
		out[i] = ep(s)
	}
	return out
}

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// stats returns the router's stats of service, or the zero value.
func stats(r *router, service string) discovery.ServiceStats {
	for _, s := range r.Services() {
		if s.Service == service {
			return s
		}
	}
	return discovery.ServiceStats{}
}

// hasKey reports whether the router's pool has a sub-pool for addr.
func hasKey(r *router, addr string) bool {
	for _, k := range r.Pool().Keys() {
		if k == addr {
			return true
		}
	}
	return false
}

// unary makes one UnaryCall through c.
func unary(c context.Context, conn *discovery.Conn[stub]) error {
	_, err := testpb.NewBenchmarkServiceClient(conn).UnaryCall(c, &testpb.SimpleRequest{})
	return err
}

// traffic starts n goroutines sending UnaryCalls through conn until Stop;
// the test's end stops them too.
func traffic(t *testing.T, conn *discovery.Conn[stub], n int) *grpctest.Traffic {
	t.Helper()
	return grpctest.StartTraffic(t, n, testTimeout, func(c context.Context) error { return unary(c, conn) })
}

type config = grpcpool.Config[string, stub]

// newStub returns a BenchmarkService stub over conn.
func newStub(conn *discovery.Conn[stub]) stub { return testpb.NewBenchmarkServiceClient(conn) }

// req is a request whose payload is body.
func req(body string) *testpb.SimpleRequest {
	return &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(body)}}
}

package benchmarks_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

const (
	// e2eCallers is how many goroutines send RPCs at once.
	e2eCallers = 1000
	// e2eConns is the connection budget of the multi-connection modes.
	e2eConns = 16
	// e2eWarmup RPCs (at most b.N) run before the clock starts, so that
	// connections are made and HTTP/2 windows have grown.
	e2eWarmup = 2000
	// e2eTimeout bounds a whole run: a bug fails it instead of hanging.
	e2eTimeout = 5 * time.Minute
)

// e2eScenario is a backend.
type e2eScenario struct {
	name string
	opts grpctest.Options
}

var e2eScenarios = []e2eScenario{
	// A backend that caps streams per connection, as most servers and
	// proxies do, and does 5 ms of work per RPC: a connection carries at
	// most 100 RPCs at once, 20k rps.
	{"capped", grpctest.Options{MaxConcurrentStreams: 100, Delay: 5 * time.Millisecond}},
	// No cap, no work: the client's CPU is the limit, and a pool can only
	// cost.
	{"cpu", grpctest.Options{}},
}

// e2eMode is a way of sending RPCs to one backend. setup returns the call
// one RPC makes.
type e2eMode struct {
	name  string
	setup func(b *testing.B, addr string) (call func(context.Context) error)
}

var e2eModes = []e2eMode{
	{"single", setupSingle},
	{"roundrobin16", setupRoundRobin(e2eConns)},
	// A control: as many plain connections as shared mode settles on
	// (1000 callers / 100 shares), so that the pool's own cost shows apart
	// from the cost of using more connections.
	{"roundrobin10", setupRoundRobin(10)},
	{"exclusive16", setupExclusive},
	{"shared", setupShared},
}

var e2eRequest = &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}}

// BenchmarkE2E sends unary RPCs from 1000 concurrent callers to a real
// grpc.Server on loopback: one ClientConn, 16 (and, as a control, 10)
// ClientConns picked round-robin, kpool with exclusive borrowing of up to 16
// connections, and kpool with shared leases (100 per connection, up to 16
// connections). b.N is the
// number of RPCs of a run, spread over the callers; each sub-benchmark
// reports RPCs per second, median and 99th percentile latency, and the
// connections the server held at the end.
//
//	go test -run '^$' -bench E2E -benchtime 2s ./benchmarks/
//
// Give every mode the same time rather than the same count: on a small
// shared machine a run of under a second is at the mercy of whatever else
// runs, and a fixed count makes the fast modes' runs the shortest.
func BenchmarkE2E(b *testing.B) {
	for _, sc := range e2eScenarios {
		b.Run("scenario="+sc.name, func(b *testing.B) {
			for _, m := range e2eModes {
				b.Run("mode="+m.name, func(b *testing.B) {
					srv := grpctest.Start(b, sc.opts)
					call := m.setup(b, srv.Addr)
					runE2E(b, srv, call)
				})
			}
		})
	}
}

// runE2E makes b.N RPCs with call from e2eCallers goroutines and reports
// the figures.
func runE2E(b *testing.B, srv *grpctest.Server, call func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	if err := drive(ctx, min(b.N, e2eWarmup), call, nil); err != nil {
		b.Fatalf("warm-up RPC: %v", err)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	err := drive(ctx, b.N, call, lat)
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatalf("RPC: %v", err)
	}
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rps")
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(float64(srv.Open()), "conns")
}

// drive makes n RPCs with call from e2eCallers goroutines, released at
// once, and records the latency of RPC i in lat[i] if lat is not nil. It
// returns the first error, after all RPCs ran.
func drive(ctx context.Context, n int, call func(context.Context) error, lat []time.Duration) error {
	var (
		next     atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
		ready    sync.WaitGroup
		start    = make(chan struct{})
	)
	for range e2eCallers {
		ready.Add(1)
		wg.Go(func() {
			ready.Done()
			<-start
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t0 := time.Now()
				err := call(ctx)
				if lat != nil {
					lat[i] = time.Since(t0)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

func dial(b *testing.B, addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return cc
}

// setupSingle: one ClientConn, as most services use gRPC.
func setupSingle(b *testing.B, addr string) func(context.Context) error {
	stub := testpb.NewBenchmarkServiceClient(dial(b, addr))
	return func(ctx context.Context) error {
		_, err := stub.UnaryCall(ctx, e2eRequest)
		return err
	}
}

// setupRoundRobin: n ClientConns picked in turn, no pool: the hand-made
// way past a stream cap, with every connection open all the time.
func setupRoundRobin(n int) func(b *testing.B, addr string) func(context.Context) error {
	return func(b *testing.B, addr string) func(context.Context) error {
		stubs := make([]testpb.BenchmarkServiceClient, n)
		for i := range stubs {
			stubs[i] = testpb.NewBenchmarkServiceClient(dial(b, addr))
		}
		var next atomic.Uint64
		return func(ctx context.Context) error {
			_, err := stubs[next.Add(1)%uint64(n)].UnaryCall(ctx, e2eRequest)
			return err
		}
	}
}

func newE2EPool(b *testing.B, shares int) *keyedpool.Pool[string, *grpcfactory.Client[testpb.BenchmarkServiceClient]] {
	f, err := grpcfactory.New(grpcfactory.Config[string, testpb.BenchmarkServiceClient]{
		NewStub:        testpb.NewBenchmarkServiceClient,
		Insecure:       true,
		ConnectTimeout: 10 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	p, err := keyedpool.New(f, keyedpool.Config{
		MaxTotalPerKey:     e2eConns,
		MaxIdlePerKey:      e2eConns,
		MaxSharesPerObject: shares,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			b.Errorf("pool Close() = %v", err)
		}
	})
	return p
}

// setupExclusive: kpool as commons-pool2 users know it, one RPC per
// borrowed connection at a time.
func setupExclusive(b *testing.B, addr string) func(context.Context) error {
	p := newE2EPool(b, 1)
	return func(ctx context.Context) error {
		h, err := p.Borrow(ctx, addr)
		if err != nil {
			return err
		}
		_, err = h.Value().Stub().UnaryCall(ctx, e2eRequest)
		grpcfactory.Release(p, h, err)
		return err
	}
}

// setupShared: kpool with shared leases behind a grpcfactory.Conn, up to
// 100 RPCs per connection, the server's cap.
func setupShared(b *testing.B, addr string) func(context.Context) error {
	p := newE2EPool(b, 100)
	stub := testpb.NewBenchmarkServiceClient(grpcfactory.NewConn(p, addr))
	return func(ctx context.Context) error {
		_, err := stub.UnaryCall(ctx, e2eRequest)
		return err
	}
}

package benchmarks_test

import (
	"context"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/e2e"
	"github.com/kpool-go/kpool/internal/grpctest"
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

// e2eModes are the ways of sending RPCs to one backend, from package e2e,
// which the kpool bench command runs too.
var e2eModes = []e2e.Mode{
	{Name: "single", Kind: e2e.Single},
	{Name: "roundrobin16", Kind: e2e.RoundRobin, Conns: e2eConns},
	// A control: as many plain connections as shared mode settles on
	// (1000 callers / 100 shares), so that the pool's own cost shows apart
	// from the cost of using more connections.
	{Name: "roundrobin10", Kind: e2e.RoundRobin, Conns: 10},
	{Name: "exclusive16", Kind: e2e.Exclusive, Conns: e2eConns},
	{Name: "shared", Kind: e2e.Shared, Conns: e2eConns, Shares: 100},
	// Told nothing of the server: each connection learns its stream cap,
	// and the pool opens what 1000 callers need under it.
	{Name: "shared-auto", Kind: e2e.SharedAuto, Conns: e2eCallers},
}

// BenchmarkE2E sends unary RPCs from 1000 concurrent callers to a real
// grpc.Server on loopback: one ClientConn, 16 (and, as a control, 10)
// ClientConns picked round-robin, kpool with exclusive borrowing of up to 16
// connections, kpool with shared leases (100 per connection, up to 16
// connections), and kpool with shared leases told nothing (shared-auto:
// each connection learns its server's stream cap). b.N is the
// number of RPCs of a run, spread over the callers; each sub-benchmark
// reports RPCs per second, median and 99th percentile latency, and the
// connections the server held at the end.
//
//	cd benchmarks && go test -run '^$' -bench E2E -benchtime 2s .
//
// Give every mode the same time rather than the same count: on a small
// shared machine a run of under a second is at the mercy of whatever else
// runs, and a fixed count makes the fast modes' runs the shortest.
//
// The same modes, driver and latency histogram run as `kpool bench`.
func BenchmarkE2E(b *testing.B) {
	for _, sc := range e2eScenarios {
		b.Run("scenario="+sc.name, func(b *testing.B) {
			for _, m := range e2eModes {
				b.Run("mode="+m.Name, func(b *testing.B) {
					srv := grpctest.Start(b, sc.opts)
					c, err := e2e.NewClient(srv.Addr, m)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() {
						ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
						defer cancel()
						if err := c.Close(ctx); err != nil {
							b.Errorf("client Close() = %v", err)
						}
					})
					runE2E(b, srv, c.Call)
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
	warm := e2e.Drive(ctx, e2e.Load{Callers: e2eCallers, Requests: int64(min(b.N, e2eWarmup))}, call)
	if warm.FirstErr != nil {
		b.Fatalf("warm-up RPC: %v", warm.FirstErr)
	}
	b.ResetTimer()
	r := e2e.Drive(ctx, e2e.Load{Callers: e2eCallers, Requests: int64(b.N)}, call)
	b.StopTimer()
	if r.FirstErr != nil {
		b.Fatalf("RPC: %v", r.FirstErr)
	}
	ms := func(q float64) float64 { return float64(r.Latency.Quantile(q)) / float64(time.Millisecond) }
	b.ReportMetric(r.RPS(), "rps")
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(float64(srv.Open()), "conns")
}

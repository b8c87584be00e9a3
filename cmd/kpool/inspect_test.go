package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// serveInstance serves the endpoints of a pool with keys a (1 idle) and b
// (1 lent) on a real loopback port, as a running kpool would; it returns the
// address and the pool.
func serveInstance(t *testing.T) (string, *keyedpool.Pool[string, *testfactory.Obj]) {
	t.Helper()
	m, reg := newMetrics(t)
	p, err := keyedpool.New(&testfactory.Factory{}, keyedpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ended, stop := context.WithCancel(context.Background())
		stop() // b is still lent: do not wait for it
		p.Close(ended)
	})
	ctx := context.Background()
	if err := p.AddObject(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Borrow(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := metrics.AddPool(m, "backends", p, nil); err != nil {
		t.Fatal(err)
	}
	return serveMetrics(t, m, reg), p
}

// newMetrics returns a Metrics on a new pedantic registry, and the registry.
func newMetrics(t *testing.T) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg, metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// serveMetrics serves m's endpoints on a real loopback port until the test
// ends, stopping before the cleanups registered earlier (a pool's Close)
// run, and returns the address.
func serveMetrics(t *testing.T, m *metrics.Metrics, reg *prometheus.Registry) string {
	t.Helper()
	lis, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- metrics.Serve(ctx, lis, m.Handler(reg)) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return lis.Addr().String()
}

func TestStatsCommand(t *testing.T) {
	addr, _ := serveInstance(t)
	ctx := context.Background()

	code, out, errOut := runKpool(ctx, "stats", "--addr", addr)
	if code != 0 {
		t.Fatalf("stats = %d, stderr %s", code, errOut)
	}
	for _, want := range []string{"backends", "(2 keys)", "\n", " a ", " b "} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}
	// Exclusive leases: no connection learns a share cap.
	if got, ok := tableCell(out, " a ", "stream cap"); !ok || got != "-" {
		t.Errorf("stats: stream cap of key a = %q (found %v), want \"-\":\n%s", got, ok, out)
	}

	code, out, _ = runKpool(ctx, "stats", "--addr", addr, "--key", "b", "--json")
	var rep metrics.StatsReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Pools) != 1 ||
		len(rep.Pools[0].PerKey) != 1 || rep.Pools[0].PerKey[0].Key != "b" || rep.Pools[0].PerKey[0].Active != 1 {
		t.Errorf("stats --key b --json = %d %s, want the JSON of key b alone, 1 active", code, out)
	}

	code, _, errOut = runKpool(ctx, "stats", "--addr", addr, "--key", "nope")
	if code != 1 || !strings.Contains(errOut, `unknown key \"nope\"`) && !strings.Contains(errOut, `unknown key "nope"`) {
		t.Errorf("stats --key nope = %d, stderr %q; want 1 naming the key", code, errOut)
	}
}

func TestHealthCommand(t *testing.T) {
	addr, p := serveInstance(t)
	ctx := context.Background()
	code, out, errOut := runKpool(ctx, "health", "--addr", addr)
	if code != 0 || !strings.Contains(out, "status: ok") || !strings.Contains(out, "pool backends: open") {
		t.Errorf("health = %d %q (stderr %q), want 0 and ok", code, out, errOut)
	}

	ended, stop := context.WithCancel(ctx)
	stop()
	p.Close(ended)
	code, out, _ = runKpool(ctx, "health", "--addr", addr)
	if code != 1 || !strings.Contains(out, "status: unhealthy") || !strings.Contains(out, `pool "backends" is closed`) {
		t.Errorf("health of a closed pool = %d %q, want 1 with the reason", code, out)
	}
}

func TestInspectCannotConnect(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	for _, cmd := range []string{"stats", "health"} {
		code, _, errOut := runKpool(context.Background(), cmd, "--addr", dead)
		if code != 1 || !strings.Contains(errOut, "cannot reach a kpool instance at "+dead) {
			t.Errorf("%s --addr %s = %d, stderr %q; want 1 and a clear error", cmd, dead, code, errOut)
		}
	}
}

// The stats table has a stream cap column: per key, the streams its server
// allows per connection as the pool's connections learned it from the
// server's SETTINGS, "-" for a key whose connections learned none (a server
// with no limit, or a pool without shared leases), blank on a pool's row.
func TestStatsCommandShowsStreamCap(t *testing.T) {
	capped := grpctest.Start(t, grpctest.Options{MaxConcurrentStreams: 10})
	free := grpctest.Start(t, grpctest.Options{})
	f, err := grpcpool.New(grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		NewStub: testpb.NewBenchmarkServiceClient, Insecure: true, ConnectTimeout: waitTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyedpool.New(f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	for _, addr := range []string{capped.Addr, free.Addr} {
		h, err := p.Borrow(grpctest.Context(t, waitTimeout), addr)
		if err != nil {
			t.Fatalf("Borrow(%s) = %v", addr, err)
		}
		if err := grpcpool.Release(p, h, nil); err != nil {
			t.Fatal(err)
		}
	}
	m, reg := newMetrics(t)
	if err := metrics.AddPool(m, "grpc", p, nil); err != nil {
		t.Fatal(err)
	}
	addr := serveMetrics(t, m, reg)

	code, out, errOut := runKpool(context.Background(), "stats", "--addr", addr)
	if code != 0 {
		t.Fatalf("stats = %d, stderr %s", code, errOut)
	}
	for _, tc := range []struct{ row, want string }{
		{capped.Addr, "10"},
		{free.Addr, "-"},
		{"(2 keys)", ""},
	} {
		if got, ok := tableCell(out, tc.row, "stream cap"); !ok || got != tc.want {
			t.Errorf("stats: stream cap of the row of %s = %q (found %v), want %q:\n%s", tc.row, got, ok, tc.want, out)
		}
	}
}

// tableCell returns the cell of column in the first row of the right-aligned
// table in out that contains row: the word that ends where the column's
// header ends, "" when nothing does. ok is false when out has no such row
// or column.
func tableCell(out, row, column string) (cell string, ok bool) {
	lines := strings.Split(out, "\n")
	end := strings.Index(lines[0], column)
	if end < 0 {
		return "", false
	}
	end += len(column)
	for _, l := range lines[1:] {
		if !strings.Contains(l, row) {
			continue
		}
		if len(l) < end {
			return "", true
		}
		head := l[:end]
		if strings.HasSuffix(head, " ") {
			return "", true
		}
		return head[strings.LastIndex(head, " ")+1:], true
	}
	return "", false
}

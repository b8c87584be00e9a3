package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// TestGRPCTrafficAndHealth drives real RPCs through a pool of real
// connections to a real backend and reads the result from /metrics and
// /stats over HTTP.
func TestGRPCTrafficAndHealth(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{Namespace: "app"})
	srv := grpctest.Start(t, grpctest.Options{})
	f, err := grpcfactory.New(grpcfactory.Config[string, testpb.BenchmarkServiceClient]{
		NewStub:     testpb.NewBenchmarkServiceClient,
		Insecure:    true,
		HealthCheck: &grpcfactory.HealthCheck{},
		Observer:    m.Observer(),
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyedpool.New(f, keyedpool.Config{MaxSharesPerObject: 10, TestOnCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	if err := metrics.AddPool(m, "backends", p, f); err != nil {
		t.Fatal(err)
	}
	base := serve(t, m, reg)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := testpb.NewBenchmarkServiceClient(grpcfactory.NewConn(p, srv.Addr))
	for range 5 {
		if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("UnaryCall() = %v", err)
		}
	}
	_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound)}})
	if err == nil {
		t.Fatalf("UnaryCall(NotFound) = nil error")
	}

	want := `
# HELP app_grpc_requests_total RPCs sent on pooled connections, by method and status code (and key, with PerKey).
# TYPE app_grpc_requests_total counter
app_grpc_requests_total{code="NotFound",method="/grpc.testing.BenchmarkService/UnaryCall"} 1
app_grpc_requests_total{code="OK",method="/grpc.testing.BenchmarkService/UnaryCall"} 5
`
	// The stats handler reports an RPC's end just after the caller has its
	// answer: wait for the sixth. The pool's own health Check is not
	// traffic: it is counted apart, in grpc_health_checks_total.
	grpctest.WaitFor(t, 10*time.Second, "6 RPCs counted", func() bool {
		n, _ := testutil.GatherAndCount(reg, "app_grpc_requests_total")
		return n == 2 && testutil.GatherAndCompare(reg, strings.NewReader(want), "app_grpc_requests_total") == nil
	})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "app_grpc_requests_total"); err != nil {
		t.Error(err)
	}

	code, body := get(t, base+"/metrics")
	for _, want := range []string{
		`app_grpc_request_duration_seconds_count{method="/grpc.testing.BenchmarkService/UnaryCall"} 6`,
		`app_grpc_health_checks_total{pool="backends",result="serving"} 1`, // TestOnCreate: one connection, one Check
		`app_grpc_unhealthy_nodes{pool="backends"} 0`,
		`app_grpc_pool_size{pool="backends"} 1`,
		`app_grpc_pool_borrows_total{pool="backends"} 6`,
	} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET /metrics = %d, want a line %q; body:\n%s", code, want, body)
		}
	}

	// The backend stops serving: the next Check says so, and the node shows
	// as unhealthy in /metrics and /stats.
	srv.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	h, err := p.Borrow(ctx, srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(ctx, srv.Addr, h.Value()); err == nil {
		t.Fatalf("Validate() of a NOT_SERVING backend = nil")
	}
	if err := p.Return(h); err != nil {
		t.Fatal(err)
	}
	_, body = get(t, base+"/metrics")
	if want := `app_grpc_unhealthy_nodes{pool="backends"} 1`; !strings.Contains(body, want) {
		t.Errorf("GET /metrics after NOT_SERVING: no line %q", want)
	}
	var rep metrics.StatsReport
	getJSON(t, base+"/stats", http.StatusOK, &rep)
	if hr := rep.Pools[0].Health; hr == nil || hr.NotServing != 1 || fmt.Sprint(hr.Unhealthy) != fmt.Sprint([]string{srv.Addr}) {
		t.Errorf("/stats health = %+v, want 1 not-serving check and %s unhealthy", hr, srv.Addr)
	}
}

package grpcmetrics_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/metricstest"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
	"github.com/kpool-go/kpool/metrics/grpcmetrics"
)

// testTimeout bounds every wait of these tests: a bug shows up as a
// failure naming what did not happen, never as a hang.
const testTimeout = 10 * time.Second

// newObserver returns the Observer over m.
func newObserver(t *testing.T, m *metrics.Metrics) *grpcmetrics.Observer {
	t.Helper()
	obs, err := grpcmetrics.NewObserver(m)
	if err != nil {
		t.Fatalf("NewObserver() = %v", err)
	}
	return obs
}

// TestGRPCTrafficAndHealth drives real RPCs through a pool of real
// connections to a real backend and reads the result from /metrics and
// /stats over HTTP.
func TestGRPCTrafficAndHealth(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{Namespace: "app"})
	srv := grpctest.Start(t, grpctest.Options{})
	f, err := grpcpool.New(grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		NewStub:     testpb.NewBenchmarkServiceClient,
		Insecure:    true,
		HealthCheck: &grpcpool.HealthCheck{},
		Observer:    newObserver(t, m),
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
	if err := metrics.AddPool(m, "backends", p, grpcmetrics.FactoryHealth(f)); err != nil {
		t.Fatal(err)
	}
	base := metricstest.Serve(t, m, reg)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, srv.Addr))
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

	code, body := metricstest.Get(t, base+"/metrics")
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
	_, body = metricstest.Get(t, base+"/metrics")
	if want := `app_grpc_unhealthy_nodes{pool="backends"} 1`; !strings.Contains(body, want) {
		t.Errorf("GET /metrics after NOT_SERVING: no line %q", want)
	}
	var rep metrics.StatsReport
	metricstest.GetJSON(t, base+"/stats", http.StatusOK, &rep)
	if hr := rep.Pools[0].Health; hr == nil || hr.NotServing != 1 || fmt.Sprint(hr.Unhealthy) != fmt.Sprint([]string{srv.Addr}) {
		t.Errorf("/stats health = %+v, want 1 not-serving check and %s unhealthy", hr, srv.Addr)
	}
}

func TestRPCKeyCardinalityCap(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true, MaxKeySeries: 3})
	obs := newObserver(t, m)
	for i := range 10 {
		obs.ObserveRPC(fmt.Sprintf("10.0.0.%d:443", i), "/svc/M", 0, 0)
	}
	obs.ObserveRPC("10.0.0.0:443", "/svc/M", 0, 0) // an early target keeps its series
	if n, err := testutil.GatherAndCount(reg, "grpc_requests_total"); err != nil || n != 4 {
		t.Errorf("grpc_requests_total has %d series (%v), want 4: 3 targets and %s", n, err, metrics.OtherKey)
	}
	want := `
# HELP grpc_requests_total RPCs sent on pooled connections, by method and status code (and key, with PerKey).
# TYPE grpc_requests_total counter
grpc_requests_total{code="OK",key="10.0.0.0:443",method="/svc/M"} 2
grpc_requests_total{code="OK",key="10.0.0.1:443",method="/svc/M"} 1
grpc_requests_total{code="OK",key="10.0.0.2:443",method="/svc/M"} 1
grpc_requests_total{code="OK",key="__other__",method="/svc/M"} 7
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_requests_total"); err != nil {
		t.Errorf("GatherAndCompare: %v", err)
	}
}

// grpcPool makes a pool of real gRPC clients whose factory has cfg
// (NewStub and Insecure filled in) and closes it when the test ends.
func grpcPool(t *testing.T, cfg grpcpool.Config[string, testpb.BenchmarkServiceClient], pcfg keyedpool.Config) (*grpcpool.Factory[string, testpb.BenchmarkServiceClient], *keyedpool.Pool[string, *grpcpool.Client[testpb.BenchmarkServiceClient]]) {
	t.Helper()
	cfg.NewStub = testpb.NewBenchmarkServiceClient
	cfg.Insecure = true
	f, err := grpcpool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyedpool.New(f, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return f, p
}

// An RPC counts once in grpc_requests_total and grpc_request_duration_seconds,
// however many attempts its retries took: gRPC calls a stats handler once
// per attempt, but the caller made one RPC. Here one RPC that succeeded on
// its third attempt is one OK RPC with one duration.
func TestRetriedRPCCountedOnce(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	srv := grpctest.Start(t, grpctest.Options{})
	_, p := grpcPool(t, grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		Retry:    grpcpool.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond},
		Observer: newObserver(t, m),
	}, keyedpool.Config{})
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h, err := p.Borrow(ctx, srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	srv.FailNext(2)
	_, err = h.Value().Stub().UnaryCall(ctx, &testpb.SimpleRequest{})
	grpcpool.Release(p, h, err)
	if err != nil {
		t.Fatalf("UnaryCall() with 3 attempts and 2 failures = %v, want success", err)
	}
	if got := srv.UnaryCalls(); got != 3 {
		t.Fatalf("server saw %d attempts, want 3 (the retry policy did not apply)", got)
	}
	// The OK attempt ends last; once it is observed all attempts are.
	grpctest.WaitFor(t, testTimeout, "the RPC observed", func() bool {
		return strings.Contains(gatherText(t, reg), `code="OK"`)
	})
	want := `
# HELP grpc_requests_total RPCs sent on pooled connections, by method and status code (and key, with PerKey).
# TYPE grpc_requests_total counter
grpc_requests_total{code="OK",method="/grpc.testing.BenchmarkService/UnaryCall"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_requests_total"); err != nil {
		t.Errorf("one RPC that succeeded after 2 retried attempts:\n%v", err)
	}
	if got := gatherText(t, reg); !strings.Contains(got, `grpc_request_duration_seconds_count{method="/grpc.testing.BenchmarkService/UnaryCall"} 1`) {
		t.Errorf("grpc_request_duration_seconds count is not 1 for one RPC:\n%s", grep(got, "grpc_request_duration_seconds_count"))
	}
}

// An RPC that gRPC fails before its first attempt is observed with its code,
// as every RPC is: here its deadline had passed when it was made on a pooled
// connection (as when a Borrow wait used it up). Bad outgoing metadata and a
// closing ClientConn fail the same way; these are the failures operators
// look for.
func TestRPCFailingBeforeFirstAttemptIsObserved(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	srv := grpctest.Start(t, grpctest.Options{})
	_, p := grpcPool(t, grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		ConnectTimeout: testTimeout,
		Observer:       newObserver(t, m),
	}, keyedpool.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h, err := p.Borrow(ctx, srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	expired, cancelExpired := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancelExpired()
	_, err = h.Value().Stub().UnaryCall(expired, &testpb.SimpleRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("UnaryCall(expired ctx) = %v, want DeadlineExceeded", err)
	}
	// A second RPC, observed after the first has long ended, as a barrier.
	_, err = h.Value().Stub().UnaryCall(ctx, &testpb.SimpleRequest{})
	grpcpool.Release(p, h, err)
	if err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, testTimeout, "the second RPC observed", func() bool {
		return strings.Contains(gatherText(t, reg), `code="OK"`)
	})
	want := `
# HELP grpc_requests_total RPCs sent on pooled connections, by method and status code (and key, with PerKey).
# TYPE grpc_requests_total counter
grpc_requests_total{code="DeadlineExceeded",method="/grpc.testing.BenchmarkService/UnaryCall"} 1
grpc_requests_total{code="OK",method="/grpc.testing.BenchmarkService/UnaryCall"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_requests_total"); err != nil {
		t.Errorf("two RPCs, one failed with DeadlineExceeded:\n%v", err)
	}
}

// gatherText returns reg's exposition as text.
func gatherText(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			lv := "{" + strings.Join(labels, ",") + "}"
			switch {
			case s.GetHistogram() != nil:
				fmt.Fprintf(&b, "%s_count%s %d\n", mf.GetName(), lv, s.GetHistogram().GetSampleCount())
			case s.GetCounter() != nil:
				fmt.Fprintf(&b, "%s%s %v\n", mf.GetName(), lv, s.GetCounter().GetValue())
			case s.GetGauge() != nil:
				fmt.Fprintf(&b, "%s%s %v\n", mf.GetName(), lv, s.GetGauge().GetValue())
			}
		}
	}
	return b.String()
}

// grep returns the lines of text that contain sub.
func grep(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

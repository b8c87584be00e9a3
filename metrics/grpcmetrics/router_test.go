package grpcmetrics_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/metricstest"
	"github.com/kpool-go/kpool/metrics"
	"github.com/kpool-go/kpool/metrics/grpcmetrics"
)

// watchedServices returns the services /health lists, as "name=watch".
func watchedServices(h metrics.HealthReport) string {
	var out []string
	for _, s := range h.Services {
		out = append(out, s.Service+"="+s.Watch)
	}
	return strings.Join(out, ",")
}

// TestHealthJudgesWatchedServicesOnly runs /health over a real Router and
// backend: a configured service is judged and marked kept; a mistyped name
// used once turns /health red, marked used, until Forget drops it, or
// until the Router's IdleTimeout does, without a restart.
func TestHealthJudgesWatchedServicesOnly(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	f, err := grpcpool.New(grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		NewStub: testpb.NewBenchmarkServiceClient, Insecure: true, ConnectTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := discovery.NewRouter(discovery.RouterConfig[testpb.BenchmarkServiceClient]{
		Resolver:    static.New(map[string][]discovery.Endpoint{"backend": {{Address: srv.Addr}}}),
		Factory:     f,
		IdleTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("Router.Close() = %v", err)
		}
	})
	if err := r.Watch("backend"); err != nil {
		t.Fatal(err)
	}
	m, reg := metricstest.New(t, metrics.Options{})
	if err := metrics.AddPool(m, "kpool", r.Pool(), grpcmetrics.FactoryHealth(f)); err != nil {
		t.Fatal(err)
	}
	m.AddServices(grpcmetrics.RouterServices(r))
	base := metricstest.Serve(t, m, reg)

	var h metrics.HealthReport
	grpctest.WaitFor(t, 10*time.Second, "/health is ok for the configured service", func() bool {
		code, _ := metricstest.Get(t, base+"/health")
		return code == http.StatusOK
	})
	metricstest.GetJSON(t, base+"/health", http.StatusOK, &h)
	if got := watchedServices(h); got != "backend=kept" {
		t.Errorf("/health services = %s, want backend=kept", got)
	}

	borrowTypo := func(name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := r.Borrow(ctx, name); !errors.Is(err, discovery.ErrNoEndpoints) {
			t.Fatalf("Borrow(%s) = %v, want ErrNoEndpoints", name, err)
		}
	}
	borrowTypo("backnd")
	metricstest.GetJSON(t, base+"/health", http.StatusServiceUnavailable, &h)
	if len(h.Reasons) != 1 || !strings.Contains(h.Reasons[0], `service "backnd"`) || watchedServices(h) != "backend=kept,backnd=used" {
		t.Errorf("/health after a mistyped Borrow = %+v, want unhealthy naming backnd, services backend=kept,backnd=used", h)
	}
	r.Forget("backnd")
	metricstest.GetJSON(t, base+"/health", http.StatusOK, &h)
	if got := watchedServices(h); got != "backend=kept" {
		t.Errorf("/health services after Forget = %s, want backend=kept", got)
	}

	borrowTypo("bakcend")
	metricstest.GetJSON(t, base+"/health", http.StatusServiceUnavailable, &h)
	grpctest.WaitFor(t, 10*time.Second, "/health is ok once the mistyped service is idle", func() bool {
		code, _ := metricstest.Get(t, base+"/health")
		return code == http.StatusOK
	})
	metricstest.GetJSON(t, base+"/health", http.StatusOK, &h)
	if got := watchedServices(h); got != "backend=kept" {
		t.Errorf("/health services after the idle timeout = %s, want backend=kept", got)
	}
}

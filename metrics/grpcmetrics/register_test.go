package grpcmetrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kpool-go/kpool/internal/metricstest"
	"github.com/kpool-go/kpool/metrics"
	"github.com/kpool-go/kpool/metrics/grpcmetrics"
)

// The RPC families are m's: a second Observer over m is refused (its
// families are registered), and m.Unregister takes them off with the pool
// families, so that a new Metrics and Observer with the same Namespace can
// take their place, as kpool start's reload does.
func TestObserverFamiliesAreTheMetricsOwn(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{Namespace: "app"})
	obs := newObserver(t, m)
	if _, err := grpcmetrics.NewObserver(m); err == nil {
		t.Error("a second NewObserver() over one Metrics = nil error, want the registration error")
	}
	obs.ObserveRPC("10.0.0.1:443", "/svc/M", 0, time.Millisecond)
	if n, err := testutil.GatherAndCount(reg, "app_grpc_requests_total", "app_grpc_request_duration_seconds"); err != nil || n != 2 {
		t.Fatalf("RPC series before Unregister = %d, %v; want 2", n, err)
	}
	if !m.Unregister() {
		t.Error("Unregister() = false, want true")
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Errorf("series after Unregister = %d, %v; want 0", n, err)
	}
	m2, err := metrics.New(reg, metrics.Options{Namespace: "app"})
	if err != nil {
		t.Fatalf("New() with the same Namespace after Unregister = %v", err)
	}
	if _, err := grpcmetrics.NewObserver(m2); err != nil {
		t.Errorf("NewObserver() over the new Metrics = %v, want nil", err)
	}
}

// A NewObserver that fails to register (here grpc_request_duration_seconds,
// the second of its families, is taken) leaves neither family on the
// registry, and a retry once the conflict is gone succeeds.
func TestFailedNewObserverLeavesNothingRegistered(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	theirs := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "grpc_request_duration_seconds",
		Help: "Duration of RPCs sent on pooled connections, from start to end, by method (and key, with PerKey).",
	}, []string{"method"})
	if err := reg.Register(theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := grpcmetrics.NewObserver(m); err == nil {
		t.Fatal("NewObserver() while grpc_request_duration_seconds is registered = nil error, want a registration error")
	}
	if !reg.Unregister(theirs) {
		t.Fatal("Unregister() = false")
	}
	if _, err := grpcmetrics.NewObserver(m); err != nil {
		t.Errorf("NewObserver() once the conflict is gone = %v, want nil: the failed one left part of itself registered", err)
	}
}

// A nil factory has no health families, as a nil HealthSource.
func TestFactoryHealthOfNilIsNil(t *testing.T) {
	if h := grpcmetrics.FactoryHealth(nil); h != nil {
		t.Errorf("FactoryHealth(nil) = %v, want nil", h)
	}
}

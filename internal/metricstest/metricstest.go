// Package metricstest holds the test helpers of metrics and
// metrics/grpcmetrics: a Metrics on a pedantic registry, its endpoints
// served on a real loopback port, and a real HTTP client to read them.
package metricstest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kpool-go/kpool/metrics"
)

// New returns a Metrics with opts on a new pedantic registry, which checks
// every scrape for inconsistent families, and the registry.
func New(t *testing.T, opts metrics.Options) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg, opts)
	if err != nil {
		t.Fatalf("metrics.New() = %v", err)
	}
	return m, reg
}

// Serve serves m's endpoints on a real loopback port until the test ends
// and returns the base URL.
func Serve(t *testing.T, m *metrics.Metrics, g prometheus.Gatherer) string {
	t.Helper()
	lis, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- metrics.Serve(ctx, lis, m.Handler(g)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() after its context ended = %v, want nil", err)
		}
	})
	return "http://" + lis.Addr().String()
}

// Get fetches url with a real client and returns the status and body.
func Get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// GetJSON fetches url, fails the test unless the status is wantCode, and
// decodes the JSON body into v.
func GetJSON(t *testing.T, url string, wantCode int, v any) {
	t.Helper()
	code, body := Get(t, url)
	if code != wantCode {
		t.Fatalf("GET %s = %d, want %d; body %s", url, code, wantCode, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: body is not JSON: %v\n%s", url, err, body)
	}
}

package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// serve serves m's endpoints on a real loopback port until the test ends
// and returns the base URL.
func serve(t *testing.T, m *metrics.Metrics, g prometheus.Gatherer) string {
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

// get fetches url with a real client and returns the status and body.
func get(t *testing.T, url string) (int, string) {
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

func getJSON(t *testing.T, url string, wantCode int, v any) {
	t.Helper()
	code, body := get(t, url)
	if code != wantCode {
		t.Fatalf("GET %s = %d, want %d; body %s", url, code, wantCode, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: body is not JSON: %v\n%s", url, err, body)
	}
}

// mutableServices is a ServiceSource a test changes.
type mutableServices struct {
	mu sync.Mutex
	s  []discovery.ServiceStats
}

func (m *mutableServices) Services() []discovery.ServiceStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]discovery.ServiceStats(nil), m.s...)
}

func (m *mutableServices) set(s ...discovery.ServiceStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = s
}

func TestEndpoints(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{})
	p := knownState(t)
	if err := metrics.AddPool(m, "orders", p, nil); err != nil {
		t.Fatal(err)
	}
	svcs := &mutableServices{}
	svcs.set(discovery.ServiceStats{Service: "users", Endpoints: 2, Usable: 2, Updates: 3})
	m.AddServices(svcs)
	base := serve(t, m, reg)

	t.Run("metrics", func(t *testing.T) {
		code, body := get(t, base+"/metrics")
		for _, want := range []string{`grpc_pool_size{pool="orders"} 2`, `grpc_service_discovery_nodes{service="users"} 2`} {
			if code != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("GET /metrics = %d, want 200 with %q; body:\n%s", code, want, body)
			}
		}
	})

	t.Run("stats", func(t *testing.T) {
		var rep metrics.StatsReport
		getJSON(t, base+"/stats", http.StatusOK, &rep)
		if len(rep.Pools) != 1 || len(rep.Services) != 1 {
			t.Fatalf("/stats = %+v, want 1 pool and 1 service", rep)
		}
		pr := rep.Pools[0]
		if pr.Name != "orders" || pr.Active != 1 || pr.Idle != 1 || pr.Keys != 2 || pr.MaxTotal != 10 ||
			pr.Counters.Created != 4 || pr.Counters.DestroyedBy["returned-surplus"] != 1 || pr.Counters.MakeErrors != 1 {
			t.Errorf("/stats pool = %+v, want orders: 1 active, 1 idle, 2 keys, max 10, 4 created, 1 surplus, 1 make error", pr)
		}
		if len(pr.PerKey) != 2 || pr.PerKey[0].Key != "a" || pr.PerKey[0].Idle != 1 || pr.PerKey[1].Key != "b" || pr.PerKey[1].Active != 1 {
			t.Errorf("/stats per key = %+v, want a (1 idle) then b (1 active)", pr.PerKey)
		}

		getJSON(t, base+"/stats?key=b", http.StatusOK, &rep)
		if len(rep.Pools) != 1 || len(rep.Pools[0].PerKey) != 1 || rep.Pools[0].PerKey[0].Key != "b" {
			t.Errorf("/stats?key=b = %+v, want only key b", rep.Pools)
		}
		getJSON(t, base+"/stats?limit=1", http.StatusOK, &rep)
		if got := rep.Pools[0]; len(got.PerKey) != 1 || got.KeysOmitted != 1 {
			t.Errorf("/stats?limit=1 = %d keys, %d omitted; want 1 and 1", len(got.PerKey), got.KeysOmitted)
		}
		getJSON(t, base+"/stats?service=users", http.StatusOK, &rep)
		if len(rep.Services) != 1 || rep.Services[0].Service != "users" || rep.Services[0].Updates != 3 {
			t.Errorf("/stats?service=users services = %+v", rep.Services)
		}

		for _, tc := range []struct {
			query string
			code  int
			want  string
		}{
			{"?key=zzz", http.StatusNotFound, `unknown key \"zzz\"`},
			{"?service=nope", http.StatusNotFound, `unknown service \"nope\"`},
			{"?limit=x", http.StatusBadRequest, `limit \"x\"`},
		} {
			code, body := get(t, base+"/stats"+tc.query)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("GET /stats%s = %d %s, want %d naming %s", tc.query, code, body, tc.code, tc.want)
			}
		}
	})

	t.Run("health", func(t *testing.T) {
		var h metrics.HealthReport
		getJSON(t, base+"/health", http.StatusOK, &h)
		if h.Status != "ok" || len(h.Reasons) != 0 || len(h.Pools) != 1 || !h.Pools[0].Open {
			t.Errorf("/health = %+v, want ok with the open pool", h)
		}

		svcs.set(
			discovery.ServiceStats{Service: "users", Endpoints: 2, Usable: 2},
			discovery.ServiceStats{Service: "billing", Endpoints: 1, Usable: 0, LastError: "connection refused"},
		)
		getJSON(t, base+"/health", http.StatusServiceUnavailable, &h)
		if h.Status != "unhealthy" || len(h.Reasons) != 1 || !strings.Contains(h.Reasons[0], `service "billing" has no usable endpoint`) {
			t.Errorf("/health = %+v, want unhealthy naming billing", h)
		}
		getJSON(t, base+"/health?service=users", http.StatusOK, &h)
		if h.Status != "ok" || len(h.Services) != 1 {
			t.Errorf("/health?service=users = %+v, want ok for users alone", h)
		}
		if code, body := get(t, base+"/health?service=nope"); code != http.StatusNotFound || !strings.Contains(body, "unknown service") {
			t.Errorf("GET /health?service=nope = %d %s, want 404 naming the service", code, body)
		}

		svcs.set(discovery.ServiceStats{Service: "users", Endpoints: 2, Usable: 2})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p.Close(ctx) // b's object is out: do not wait for it
		getJSON(t, base+"/health", http.StatusServiceUnavailable, &h)
		if h.Status != "unhealthy" || len(h.Reasons) != 1 || h.Reasons[0] != `pool "orders" is closed` || h.Pools[0].Open {
			t.Errorf("/health after Close = %+v, want unhealthy: pool closed", h)
		}
	})
}

func TestListenAndServeReportsPortInUse(t *testing.T) {
	lis, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	err = metrics.ListenAndServe(context.Background(), lis.Addr().String(), http.NotFoundHandler())
	if err == nil || !strings.Contains(err.Error(), lis.Addr().String()) {
		t.Errorf("ListenAndServe on a port in use = %v, want an error naming the address", err)
	}
}

func TestStatsOfManyKeysIsBounded(t *testing.T) {
	m, reg := newMetrics(t, metrics.Options{})
	p := newPool(t, &testfactory.Factory{}, keyedpool.Config{MaxTotal: 5000})
	for i := range 5000 {
		if err := p.AddObject(context.Background(), fmt.Sprintf("k%05d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := metrics.AddPool(m, "big", p, nil); err != nil {
		t.Fatal(err)
	}
	var rep metrics.StatsReport
	getJSON(t, serve(t, m, reg)+"/stats", http.StatusOK, &rep)
	if got := rep.Pools[0]; len(got.PerKey) != metrics.DefaultStatsLimit || got.KeysOmitted != 5000-metrics.DefaultStatsLimit {
		t.Errorf("/stats of 5000 keys lists %d and omits %d, want %d and %d",
			len(got.PerKey), got.KeysOmitted, metrics.DefaultStatsLimit, 5000-metrics.DefaultStatsLimit)
	}
}

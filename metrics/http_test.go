package metrics_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kpool-go/kpool/internal/metricstest"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// mutableServices is a ServiceSource a test changes.
type mutableServices struct {
	mu sync.Mutex
	s  []metrics.ServiceStats
}

func (m *mutableServices) Services() []metrics.ServiceStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]metrics.ServiceStats(nil), m.s...)
}

func (m *mutableServices) set(s ...metrics.ServiceStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = s
}

func TestEndpoints(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	p := knownState(t)
	if err := metrics.AddPool(m, "orders", p, nil); err != nil {
		t.Fatal(err)
	}
	svcs := &mutableServices{}
	svcs.set(metrics.ServiceStats{Service: "users", Endpoints: 2, Usable: 2, Updates: 3})
	m.AddServices(svcs)
	base := metricstest.Serve(t, m, reg)

	t.Run("metrics", func(t *testing.T) {
		code, body := metricstest.Get(t, base+"/metrics")
		for _, want := range []string{`grpc_pool_size{pool="orders"} 2`, `grpc_service_discovery_nodes{service="users"} 2`} {
			if code != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("GET /metrics = %d, want 200 with %q; body:\n%s", code, want, body)
			}
		}
	})

	t.Run("stats", func(t *testing.T) {
		var rep metrics.StatsReport
		metricstest.GetJSON(t, base+"/stats", http.StatusOK, &rep)
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

		metricstest.GetJSON(t, base+"/stats?key=b", http.StatusOK, &rep)
		if len(rep.Pools) != 1 || len(rep.Pools[0].PerKey) != 1 || rep.Pools[0].PerKey[0].Key != "b" {
			t.Errorf("/stats?key=b = %+v, want only key b", rep.Pools)
		}
		metricstest.GetJSON(t, base+"/stats?limit=1", http.StatusOK, &rep)
		if got := rep.Pools[0]; len(got.PerKey) != 1 || got.KeysOmitted != 1 {
			t.Errorf("/stats?limit=1 = %d keys, %d omitted; want 1 and 1", len(got.PerKey), got.KeysOmitted)
		}
		metricstest.GetJSON(t, base+"/stats?service=users", http.StatusOK, &rep)
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
			code, body := metricstest.Get(t, base+"/stats"+tc.query)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("GET /stats%s = %d %s, want %d naming %s", tc.query, code, body, tc.code, tc.want)
			}
		}
	})

	t.Run("health", func(t *testing.T) {
		var h metrics.HealthReport
		metricstest.GetJSON(t, base+"/health", http.StatusOK, &h)
		if h.Status != "ok" || len(h.Reasons) != 0 || len(h.Pools) != 1 || !h.Pools[0].Open {
			t.Errorf("/health = %+v, want ok with the open pool", h)
		}

		svcs.set(
			metrics.ServiceStats{Service: "users", Endpoints: 2, Usable: 2},
			metrics.ServiceStats{Service: "billing", Endpoints: 1, Usable: 0, LastError: "connection refused"},
		)
		metricstest.GetJSON(t, base+"/health", http.StatusServiceUnavailable, &h)
		if h.Status != "unhealthy" || len(h.Reasons) != 1 || !strings.Contains(h.Reasons[0], `service "billing" has no usable endpoint`) {
			t.Errorf("/health = %+v, want unhealthy naming billing", h)
		}
		metricstest.GetJSON(t, base+"/health?service=users", http.StatusOK, &h)
		if h.Status != "ok" || len(h.Services) != 1 {
			t.Errorf("/health?service=users = %+v, want ok for users alone", h)
		}
		if code, body := metricstest.Get(t, base+"/health?service=nope"); code != http.StatusNotFound || !strings.Contains(body, "unknown service") {
			t.Errorf("GET /health?service=nope = %d %s, want 404 naming the service", code, body)
		}

		svcs.set(metrics.ServiceStats{Service: "users", Endpoints: 2, Usable: 2})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p.Close(ctx) // b's object is out: do not wait for it
		metricstest.GetJSON(t, base+"/health", http.StatusServiceUnavailable, &h)
		if h.Status != "unhealthy" || len(h.Reasons) != 1 || h.Reasons[0] != `pool "orders" is closed` || h.Pools[0].Open {
			t.Errorf("/health after Close = %+v, want unhealthy: pool closed", h)
		}
	})
}

// /stats gives each key the share cap its connections learned, as
// share_cap, present (0) for a key whose connections learned none, and a
// cap that changed as it is now.
func TestStatsReportsKeyShareCap(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	p := cappedPool(t, map[string]int{"a": 10})
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	objs := useKeys(t, p, "a", "b")
	base := metricstest.Serve(t, m, reg)

	// Decoded into a map, so that a share_cap the JSON lacks is told from 0.
	caps := func() map[string]any {
		t.Helper()
		var rep struct {
			Pools []struct {
				PerKey []map[string]any `json:"per_key"`
			} `json:"pools"`
		}
		metricstest.GetJSON(t, base+"/stats", http.StatusOK, &rep)
		if len(rep.Pools) != 1 {
			t.Fatalf("/stats lists %d pools, want 1", len(rep.Pools))
		}
		got := make(map[string]any)
		for _, k := range rep.Pools[0].PerKey {
			got[fmt.Sprint(k["key"])] = k["share_cap"]
		}
		return got
	}
	if got, want := caps(), map[string]any{"a": 10.0, "b": 0.0}; !maps.Equal(got, want) {
		t.Errorf("/stats share_cap by key = %v, want %v", got, want)
	}
	objs["a"].cap.Set(4)
	if got, want := caps(), map[string]any{"a": 4.0, "b": 0.0}; !maps.Equal(got, want) {
		t.Errorf("/stats share_cap by key after a's cap fell to 4 = %v, want %v", got, want)
	}

	var rep metrics.StatsReport
	metricstest.GetJSON(t, base+"/stats?key=a", http.StatusOK, &rep)
	if len(rep.Pools) != 1 || len(rep.Pools[0].PerKey) != 1 || rep.Pools[0].PerKey[0].ShareCap != 4 {
		t.Errorf("/stats?key=a = %+v, want key a with ShareCap 4", rep.Pools)
	}
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
	m, reg := metricstest.New(t, metrics.Options{})
	p := testfactory.NewPool(t, &testfactory.Factory{}, keyedpool.Config{MaxTotal: 5000})
	for i := range 5000 {
		if err := p.AddObject(context.Background(), fmt.Sprintf("k%05d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := metrics.AddPool(m, "big", p, nil); err != nil {
		t.Fatal(err)
	}
	var rep metrics.StatsReport
	metricstest.GetJSON(t, metricstest.Serve(t, m, reg)+"/stats", http.StatusOK, &rep)
	if got := rep.Pools[0]; len(got.PerKey) != metrics.DefaultStatsLimit || got.KeysOmitted != 5000-metrics.DefaultStatsLimit {
		t.Errorf("/stats of 5000 keys lists %d and omits %d, want %d and %d",
			len(got.PerKey), got.KeysOmitted, metrics.DefaultStatsLimit, 5000-metrics.DefaultStatsLimit)
	}
}

// Every error answer of Handler is a JSON object {"error": "..."}, as its
// doc says, those of the mux included (a method other than GET or HEAD, an
// unknown path), so that a client can decode every error body.
func TestHandlerErrorsAreJSON(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	base := metricstest.Serve(t, m, reg)
	c := &http.Client{Timeout: testTimeout}
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/stats", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/health", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nope", http.StatusNotFound},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ct := resp.Header.Get("Content-Type")
		if resp.StatusCode != tc.code || ct != "application/json" || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s %s = %d %q %q, want %d application/json {\"error\": ...}", tc.method, tc.path, resp.StatusCode, ct, body, tc.code)
		}
	}
}

// /health?service=NAME judges that service only, as a per-service readiness
// probe or load-balancer check needs: a closed pool (one for another
// backend, being retired) does not fail it.
func TestHealthServiceFilterJudgesThatServiceOnly(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	p := testfactory.NewPool(t, &testfactory.Factory{}, keyedpool.Config{})
	if err := metrics.AddPool(m, "retired", p, nil); err != nil {
		t.Fatal(err)
	}
	m.AddServices(services{{Service: "users", Endpoints: 2, Usable: 2}})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, body := metricstest.Get(t, metricstest.Serve(t, m, reg)+"/health?service=users")
	if code != http.StatusOK {
		t.Errorf("GET /health?service=users with users fully usable = %d, want 200; body:\n%s", code, body)
	}
}

// blockingGatherer blocks every Gather until release is closed.
type blockingGatherer struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (g *blockingGatherer) Gather() ([]*dto.MetricFamily, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.release
	return nil, nil
}

// When ctx ends, Serve gives requests in flight 5 seconds, then closes their
// connections before it returns: a request stuck (here in a slow collector)
// does not outlive Serve. (This test takes the 5 seconds of Serve's own
// grace period.)
func TestServeClosesRequestsAfterGracePeriod(t *testing.T) {
	m, _ := metricstest.New(t, metrics.Options{})
	g := &blockingGatherer{entered: make(chan struct{}), release: make(chan struct{})}
	lis, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(func() { close(g.release) })
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- metrics.Serve(ctx, lis, m.Handler(g)) }()

	got := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: 3 * testTimeout}
		resp, err := c.Get("http://" + lis.Addr().String() + "/metrics")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		got <- err
	}()
	select {
	case <-g.entered:
	case <-time.After(testTimeout):
		t.Fatal("the scrape did not reach the gatherer")
	}
	cancel()
	select {
	case err := <-served:
		if err == nil {
			t.Errorf("Serve() with a request stuck past the grace period = nil, want the shutdown error")
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve() did not return after its 5 s grace period")
	}
	// Serve has returned: the stuck request's connection must be closed.
	ended := false
	select {
	case <-got:
		ended = true
	case <-time.After(time.Second):
		t.Errorf("1 s after Serve() returned, the request in flight still has its connection open: the server was not closed")
	}
	release() // let the handler, the connection and the client end
	if !ended {
		<-got
	}
}

package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/internal/metricstest"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

type pool = keyedpool.Pool[string, *testfactory.Obj]

func borrow(t *testing.T, p *pool, key string) *keyedpool.Pooled[string, *testfactory.Obj] {
	t.Helper()
	h, err := p.Borrow(context.Background(), key)
	if err != nil {
		t.Fatalf("Borrow(%q) = %v", key, err)
	}
	return h
}

// knownState drives a pool into a state worked out by hand: key a made 3
// objects, returned one (idle), returned one over MaxIdlePerKey (destroyed
// as surplus) and invalidated one; key b failed one make and then lent one
// object, still out.
func knownState(t *testing.T) *pool {
	t.Helper()
	failB := true
	f := &testfactory.Factory{MakeHook: func(_ context.Context, key string) error {
		if key == "b" && failB {
			failB = false
			return errors.New("refused")
		}
		return nil
	}}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotal: 10, MaxTotalPerKey: 3, MaxIdlePerKey: 1})
	a1, a2, a3 := borrow(t, p, "a"), borrow(t, p, "a"), borrow(t, p, "a")
	for _, err := range []error{p.Return(a1), p.Return(a2), p.Invalidate(a3)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Borrow(context.Background(), "b"); err == nil {
		t.Fatal("Borrow(b) with a failing make = nil error")
	}
	borrow(t, p, "b")
	return p
}

// healthStub stands in for a factory's health counters.
type healthStub metrics.HealthStats

func (h healthStub) HealthStats() metrics.HealthStats { return metrics.HealthStats(h) }

func TestPoolCollectorExact(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{Namespace: "kp"})
	p := knownState(t)
	health := healthStub{Serving: 5, NotServing: 1, Failed: 2, Targets: 2, Unhealthy: []string{"b"}}
	if err := metrics.AddPool(m, "orders", p, health); err != nil {
		t.Fatalf("AddPool() = %v", err)
	}
	want := `
# HELP kp_grpc_connections_created_total Connections made.
# TYPE kp_grpc_connections_created_total counter
kp_grpc_connections_created_total{pool="orders"} 4
# HELP kp_grpc_connections_destroyed_total Connections destroyed, by reason.
# TYPE kp_grpc_connections_destroyed_total counter
kp_grpc_connections_destroyed_total{pool="orders",reason="abandoned"} 0
kp_grpc_connections_destroyed_total{pool="orders",reason="cleared"} 0
kp_grpc_connections_destroyed_total{pool="orders",reason="closed"} 0
kp_grpc_connections_destroyed_total{pool="orders",reason="evicted"} 0
kp_grpc_connections_destroyed_total{pool="orders",reason="invalidated"} 1
kp_grpc_connections_destroyed_total{pool="orders",reason="lifetime"} 0
kp_grpc_connections_destroyed_total{pool="orders",reason="returned-surplus"} 1
kp_grpc_connections_destroyed_total{pool="orders",reason="validation"} 0
# HELP kp_grpc_health_checks_total gRPC health Checks of pooled connections, by result: serving, not_serving or failed.
# TYPE kp_grpc_health_checks_total counter
kp_grpc_health_checks_total{pool="orders",result="failed"} 2
kp_grpc_health_checks_total{pool="orders",result="not_serving"} 1
kp_grpc_health_checks_total{pool="orders",result="serving"} 5
# HELP kp_grpc_pool_active_connections Connections lent out, or being returned or destroyed.
# TYPE kp_grpc_pool_active_connections gauge
kp_grpc_pool_active_connections{pool="orders"} 1
# HELP kp_grpc_pool_borrow_wait_max_seconds The longest a single Borrow has waited.
# TYPE kp_grpc_pool_borrow_wait_max_seconds gauge
kp_grpc_pool_borrow_wait_max_seconds{pool="orders"} 0
# HELP kp_grpc_pool_borrow_wait_seconds Time Borrows spent waiting, over the Borrows that had to wait.
# TYPE kp_grpc_pool_borrow_wait_seconds summary
kp_grpc_pool_borrow_wait_seconds_sum{pool="orders"} 0
kp_grpc_pool_borrow_wait_seconds_count{pool="orders"} 0
# HELP kp_grpc_pool_borrows_total Successful Borrows.
# TYPE kp_grpc_pool_borrows_total counter
kp_grpc_pool_borrows_total{pool="orders"} 4
# HELP kp_grpc_pool_idle_connections Idle connections, including those an eviction run is testing.
# TYPE kp_grpc_pool_idle_connections gauge
kp_grpc_pool_idle_connections{pool="orders"} 1
# HELP kp_grpc_pool_keys Keys with a sub-pool.
# TYPE kp_grpc_pool_keys gauge
kp_grpc_pool_keys{pool="orders"} 2
# HELP kp_grpc_pool_make_errors_total Failed connection makes.
# TYPE kp_grpc_pool_make_errors_total counter
kp_grpc_pool_make_errors_total{pool="orders"} 1
# HELP kp_grpc_pool_max_connections The pool's MaxTotal: connections it may hold over all keys; +Inf without a limit.
# TYPE kp_grpc_pool_max_connections gauge
kp_grpc_pool_max_connections{pool="orders"} 10
# HELP kp_grpc_pool_returns_total Leases given back, by Return or Invalidate.
# TYPE kp_grpc_pool_returns_total counter
kp_grpc_pool_returns_total{pool="orders"} 3
# HELP kp_grpc_pool_shares_in_use Leases out: lent connections, times their concurrent borrowers under shared leases.
# TYPE kp_grpc_pool_shares_in_use gauge
kp_grpc_pool_shares_in_use{pool="orders"} 1
# HELP kp_grpc_pool_size Connections the pool holds: active plus idle.
# TYPE kp_grpc_pool_size gauge
kp_grpc_pool_size{pool="orders"} 2
# HELP kp_grpc_pool_up 1 while the pool is open, 0 once it is closed.
# TYPE kp_grpc_pool_up gauge
kp_grpc_pool_up{pool="orders"} 1
# HELP kp_grpc_pool_waiters Borrowers blocked waiting for a connection.
# TYPE kp_grpc_pool_waiters gauge
kp_grpc_pool_waiters{pool="orders"} 0
# HELP kp_grpc_unhealthy_nodes Targets with live connections whose latest health Check was not SERVING.
# TYPE kp_grpc_unhealthy_nodes gauge
kp_grpc_unhealthy_nodes{pool="orders"} 1
`
	names := []string{
		"kp_grpc_connections_created_total", "kp_grpc_connections_destroyed_total",
		"kp_grpc_health_checks_total", "kp_grpc_pool_active_connections",
		"kp_grpc_pool_borrow_wait_max_seconds", "kp_grpc_pool_borrow_wait_seconds",
		"kp_grpc_pool_borrows_total", "kp_grpc_pool_idle_connections", "kp_grpc_pool_keys",
		"kp_grpc_pool_make_errors_total", "kp_grpc_pool_max_connections",
		"kp_grpc_pool_returns_total", "kp_grpc_pool_shares_in_use", "kp_grpc_pool_size",
		"kp_grpc_pool_up", "kp_grpc_pool_waiters", "kp_grpc_unhealthy_nodes",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Errorf("GatherAndCompare: %v", err)
	}

	// Four more pool families carry one series each (making, keys in
	// backoff, backoff rejections, eviction tests); without PerKey there is
	// no per-key family, and no RPC has been observed;
	// and background errors one per operation (6).
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 36 {
		t.Errorf("GatherAndCount() = %d, %v; want 36 series: 26 above, 4 more and 6 of background errors", n, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // b's object is still out: do not wait for it
	p.Close(ctx)
	want = `
# HELP kp_grpc_pool_up 1 while the pool is open, 0 once it is closed.
# TYPE kp_grpc_pool_up gauge
kp_grpc_pool_up{pool="orders"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kp_grpc_pool_up"); err != nil {
		t.Errorf("after Close: %v", err)
	}
}

func TestPerKeySeries(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true, MaxKeySeries: 1})
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: 4})
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	a := borrow(t, p, "a")
	// The first scrape gives "a", the only key, the one series allowed.
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	borrow(t, p, "b")
	borrow(t, p, "c")
	if err := p.Return(a); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP grpc_pool_key_active_connections Active connections of one key.
# TYPE grpc_pool_key_active_connections gauge
grpc_pool_key_active_connections{key="__other__",pool="p"} 2
grpc_pool_key_active_connections{key="a",pool="p"} 0
# HELP grpc_pool_key_connections_created_total Connections made for one key since its sub-pool was made.
# TYPE grpc_pool_key_connections_created_total counter
grpc_pool_key_connections_created_total{key="__other__",pool="p"} 2
grpc_pool_key_connections_created_total{key="a",pool="p"} 1
# HELP grpc_pool_key_idle_connections Idle connections of one key.
# TYPE grpc_pool_key_idle_connections gauge
grpc_pool_key_idle_connections{key="__other__",pool="p"} 0
grpc_pool_key_idle_connections{key="a",pool="p"} 1
# HELP grpc_pool_keys_aggregated Keys summed under the __other__ series because of the MaxKeySeries cap.
# TYPE grpc_pool_keys_aggregated gauge
grpc_pool_keys_aggregated{pool="p"} 2
`
	names := []string{"grpc_pool_key_active_connections", "grpc_pool_key_connections_created_total",
		"grpc_pool_key_idle_connections", "grpc_pool_keys_aggregated"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Errorf("GatherAndCompare: %v", err)
	}
}

func TestPerKeyCardinalityCap(t *testing.T) {
	const keys, maxSeries = 10000, 50
	m, reg := metricstest.New(t, metrics.Options{PerKey: true, MaxKeySeries: maxSeries})
	p := testfactory.NewPool(t, &testfactory.Factory{}, keyedpool.Config{MaxTotal: keys})
	if err := metrics.AddPool(m, "big", p, nil); err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if err := p.AddObject(context.Background(), fmt.Sprintf("k%05d", i)); err != nil {
			t.Fatalf("AddObject() = %v", err)
		}
	}
	for range 2 { // the second scrape must keep the same split
		if n, err := testutil.GatherAndCount(reg, "grpc_pool_key_idle_connections"); err != nil || n != maxSeries+1 {
			t.Errorf("grpc_pool_key_idle_connections has %d series (%v), want %d: %d keys and %s", n, err, maxSeries+1, maxSeries, metrics.OtherKey)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("Gather() = %v", err)
		}
		var total, other float64
		for _, mf := range mfs {
			if mf.GetName() != "grpc_pool_key_idle_connections" {
				continue
			}
			for _, s := range mf.GetMetric() {
				total += s.GetGauge().GetValue()
				for _, l := range s.GetLabel() {
					if l.GetName() == "key" && l.GetValue() == metrics.OtherKey {
						other = s.GetGauge().GetValue()
					}
				}
			}
		}
		if total != keys || other != keys-maxSeries {
			t.Errorf("idle over all series = %v (other %v), want %d (other %d): nothing lost in the cap", total, other, keys, keys-maxSeries)
		}
	}
}

func TestNewRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		reg  prometheus.Registerer
		opts metrics.Options
		want string
	}{
		{"nil registerer", nil, metrics.Options{}, "Registerer is nil"},
		{"bad namespace", prometheus.NewRegistry(), metrics.Options{Namespace: "my-app"}, "Options.Namespace"},
		{"negative cap", prometheus.NewRegistry(), metrics.Options{MaxKeySeries: -1}, "Options.MaxKeySeries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := metrics.New(tc.reg, tc.opts)
			if !errors.Is(err, metrics.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() = %v, want ErrInvalid naming %q", err, tc.want)
			}
		})
	}

	reg := prometheus.NewRegistry()
	if _, err := metrics.New(reg, metrics.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg, metrics.Options{}); err == nil {
		t.Errorf("a second New on the same registry = nil error, want a registration error")
	}

	m, _ := metricstest.New(t, metrics.Options{})
	p := testfactory.NewPool(t, &testfactory.Factory{}, keyedpool.Config{})
	if err := metrics.AddPool(m, "", p, nil); !errors.Is(err, metrics.ErrInvalid) {
		t.Errorf("AddPool(empty name) = %v, want ErrInvalid", err)
	}
	if err := metrics.AddPool[string, *testfactory.Obj](m, "x", nil, nil); !errors.Is(err, metrics.ErrInvalid) {
		t.Errorf("AddPool(nil pool) = %v, want ErrInvalid", err)
	}
	if err := metrics.AddPool(m, "x", p, nil); err != nil {
		t.Fatal(err)
	}
	if err := metrics.AddPool(m, "x", p, nil); !errors.Is(err, metrics.ErrInvalid) || !strings.Contains(err.Error(), `"x" is already added`) {
		t.Errorf("AddPool(same name) = %v, want ErrInvalid naming the pool", err)
	}
	if !m.RemovePool("x") || m.RemovePool("x") {
		t.Errorf("RemovePool(x) twice: want true then false")
	}
}

// TestUnregister takes a Metrics off its registry and registers another
// with the same Namespace in its place, as a reload would.
// Options reports what New was given, MaxKeySeries resolved: what the
// families kept apart (grpcmetrics') follow.
func TestOptionsResolveMaxKeySeries(t *testing.T) {
	for _, tc := range []struct{ given, want int }{{0, metrics.DefaultMaxKeySeries}, {7, 7}} {
		m, _ := metricstest.New(t, metrics.Options{Namespace: "app", PerKey: true, MaxKeySeries: tc.given})
		want := metrics.Options{Namespace: "app", PerKey: true, MaxKeySeries: tc.want}
		if got := m.Options(); got != want {
			t.Errorf("Options() of New(MaxKeySeries %d) = %+v, want %+v", tc.given, got, want)
		}
	}
}

func TestUnregister(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{Namespace: "app"})
	if err := metrics.AddPool(m, "p", testfactory.NewPool(t, &testfactory.Factory{}, keyedpool.Config{}), nil); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "app_grpc_pool_size"); err != nil || n != 1 {
		t.Fatalf("app_grpc_pool_size series before Unregister = %d, %v; want 1", n, err)
	}
	// A family that joined m through Register leaves with m's own.
	joined := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "app", Name: "joined", Help: "A family registered through Register."})
	if err := m.Register(joined); err != nil {
		t.Fatalf("Register() = %v", err)
	}
	if err := m.Register(joined); err == nil {
		t.Error("Register() of a collector already registered = nil error, want the registry's")
	}
	if n, err := testutil.GatherAndCount(reg, "app_joined"); err != nil || n != 1 {
		t.Fatalf("app_joined series before Unregister = %d, %v; want 1", n, err)
	}
	if !m.Unregister() {
		t.Error("Unregister() = false, want true the first time")
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Errorf("series after Unregister = %d, %v; want 0", n, err)
	}
	if m.Unregister() {
		t.Error("Unregister() a second time = true, want false")
	}
	if _, err := metrics.New(reg, metrics.Options{Namespace: "app"}); err != nil {
		t.Errorf("New() with the same Namespace after Unregister = %v, want nil", err)
	}
	rec := httptest.NewRecorder()
	m.Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stats", nil))
	var rep metrics.StatsReport
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil || rec.Code != http.StatusOK || len(rep.Pools) != 1 || rep.Pools[0].Name != "p" {
		t.Errorf("/stats after Unregister = %d %s (%v), want 200 with pool p", rec.Code, rec.Body, err)
	}
}

// services is a fixed ServiceSource.
type services []metrics.ServiceStats

func (s services) Services() []metrics.ServiceStats { return s }

func TestDiscoveryFamilies(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	m.AddServices(services{
		{Service: "users", Endpoints: 3, Usable: 2, Updates: 7, Errors: 1},
		{Service: "orders", Endpoints: 0, Usable: 0, Updates: 1, Errors: 4, LastError: "consul: 500"},
	})
	want := `
# HELP grpc_service_discovery_errors_total Failed discovery lookups for the service.
# TYPE grpc_service_discovery_errors_total counter
grpc_service_discovery_errors_total{service="orders"} 4
grpc_service_discovery_errors_total{service="users"} 1
# HELP grpc_service_discovery_nodes Endpoints in the service's latest discovery snapshot.
# TYPE grpc_service_discovery_nodes gauge
grpc_service_discovery_nodes{service="orders"} 0
grpc_service_discovery_nodes{service="users"} 3
# HELP grpc_service_discovery_updates_total Discovery snapshots received for the service.
# TYPE grpc_service_discovery_updates_total counter
grpc_service_discovery_updates_total{service="orders"} 1
grpc_service_discovery_updates_total{service="users"} 7
# HELP grpc_service_discovery_usable_nodes Endpoints of the service that can lend a connection as far as the router knows.
# TYPE grpc_service_discovery_usable_nodes gauge
grpc_service_discovery_usable_nodes{service="orders"} 0
grpc_service_discovery_usable_nodes{service="users"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Errorf("GatherAndCompare: %v", err)
	}
}

// Errors of background work are exported by operation: a Destroy that
// fails in an eviction run shows under op="destroy".
func TestBackgroundErrorsExported(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	f := &testfactory.Factory{DestroyHook: func(context.Context, *testfactory.Obj) error { return errors.New("close failed") }}
	p := testfactory.NewPool(t, f, keyedpool.Config{
		EvictionPolicy: evictor.PolicyFunc(func(evictor.Settings, evictor.Candidate) bool { return true }),
	})
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	h, err := p.Borrow(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Return(h); err != nil {
		t.Fatal(err)
	}
	_ = p.RunEviction(context.Background()) // evicts the object; its Destroy fails
	want := `
# HELP grpc_pool_background_errors_total Errors of pool work no caller waited for (eviction runs, upkeep, clean-up), by the factory operation that failed.
# TYPE grpc_pool_background_errors_total counter
grpc_pool_background_errors_total{op="activate",pool="p"} 0
grpc_pool_background_errors_total{op="destroy",pool="p"} 1
grpc_pool_background_errors_total{op="eviction_policy",pool="p"} 0
grpc_pool_background_errors_total{op="make",pool="p"} 0
grpc_pool_background_errors_total{op="passivate",pool="p"} 0
grpc_pool_background_errors_total{op="validate",pool="p"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_pool_background_errors_total"); err != nil {
		t.Errorf("GatherAndCompare: %v", err)
	}
}

// testTimeout bounds every wait of these tests: a bug shows up as a
// failure naming what did not happen, never as a hang.
const testTimeout = 10 * time.Second

// capturingRegisterer registers on a real registry and keeps the
// collectors, so that a test can call one's Collect in its own goroutine.
type capturingRegisterer struct {
	prometheus.Registerer
	cs []prometheus.Collector
}

func (c *capturingRegisterer) Register(col prometheus.Collector) error {
	c.cs = append(c.cs, col)
	return c.Registerer.Register(col)
}

// With PerKey, a pool key that is not valid UTF-8 (a binary shard id, a
// tenant name from a request) does not make Collect panic: the registry runs
// Collect in a goroutine of its own, so a panic would crash the process at
// the next scrape. (Collect runs here in the test's goroutine, so that a
// panic fails the test instead of crashing it.)
func TestKeyNotValidUTF8DoesNotBreakScrape(t *testing.T) {
	reg := &capturingRegisterer{Registerer: prometheus.NewPedanticRegistry()}
	m, err := metrics.New(reg, metrics.Options{PerKey: true})
	if err != nil {
		t.Fatal(err)
	}
	p := testfactory.NewPool(t, &testfactory.Factory{}, keyedpool.Config{})
	borrow(t, p, "shard-\xff\xfe")
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	ch := make(chan prometheus.Metric)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ch {
		}
	}()
	var panicked any
	func() {
		defer func() { panicked = recover() }()
		reg.cs[0].Collect(ch)
	}()
	close(ch)
	<-done
	if panicked != nil {
		t.Errorf("Collect() with a key that is not UTF-8 panicked: %v; a scrape would crash the process", panicked)
	}
}

// A user key equal to metrics.OtherKey ("__other__") does not collide with
// the aggregate series: once it has a series of its own and another key is
// aggregated, Gather and /metrics still succeed (two series with the same
// labels would fail the whole scrape).
func TestKeyNamedOtherKeepsScrapeValid(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true, MaxKeySeries: 1})
	p := testfactory.NewPool(t, &testfactory.Factory{}, keyedpool.Config{})
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	borrow(t, p, metrics.OtherKey)
	if _, err := reg.Gather(); err != nil { // "__other__" takes the one series
		t.Fatalf("Gather() = %v", err)
	}
	borrow(t, p, "a") // aggregated under "__other__"
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather() with a user key named %q and one aggregated key = %v, want nil", metrics.OtherKey, err)
	}
	if code, body := metricstest.Get(t, metricstest.Serve(t, m, reg)+"/metrics"); code != http.StatusOK {
		t.Errorf("GET /metrics = %d, want 200; body:\n%.300s", code, body)
	}
}

// pairKey is a realistic comparable key that is not a string.
type pairKey struct{ Region, Host string }

// Keys that are not strings and print alike (here {"eu west", "a"} and
// {"eu", "west a"}, both "{eu west a}") stay two keys: /stats lists both,
// and the per-key families count both keys' connections.
func TestNonStringKeysStayDistinct(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true})
	f := factory.Funcs[pairKey, int]{MakeFunc: func(context.Context, pairKey) (int, error) { return 1, nil }}
	p, err := keyedpool.New(f, keyedpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p.Close(ctx)
	})
	for _, k := range []pairKey{{"eu west", "a"}, {"eu", "west a"}} {
		if _, err := p.Borrow(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	var rep metrics.StatsReport
	metricstest.GetJSON(t, metricstest.Serve(t, m, reg)+"/stats", http.StatusOK, &rep)
	pr := rep.Pools[0]
	active := 0
	for _, k := range pr.PerKey {
		active += k.Active
	}
	if pr.Keys != 2 || len(pr.PerKey) != pr.Keys || active != pr.Active {
		t.Errorf("/stats: pool has %d keys and %d active, per_key lists %d keys with %d active (%+v); want every key listed",
			pr.Keys, pr.Active, len(pr.PerKey), active, pr.PerKey)
	}
	if got := testutil.ToFloat64(sumOf(t, reg, "grpc_pool_key_active_connections")); got != 2 {
		t.Errorf("sum of grpc_pool_key_active_connections = %v, want 2 (one per key)", got)
	}
}

// sumOf returns a gauge whose value is the sum of the gauge family name.
func sumOf(t *testing.T, g prometheus.Gatherer, name string) prometheus.Collector {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, s := range mf.GetMetric() {
				sum += s.GetGauge().GetValue()
			}
		}
	}
	c := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sum", Help: "sum"})
	c.Set(sum)
	return c
}

// A New that fails to register (here grpc_service_discovery_errors_total,
// the last of its families, is taken for a while, as by a component being
// replaced in a reload) leaves none of its families on the registry: the
// caller holds no handle to remove them, and a retry once the conflict is
// gone succeeds.
func TestFailedNewLeavesNothingRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	theirs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_service_discovery_errors_total",
		Help: "Failed discovery lookups for the service.",
	}, []string{"service"})
	if err := reg.Register(theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg, metrics.Options{}); err == nil {
		t.Fatal("New() while grpc_service_discovery_errors_total is registered = nil error, want a registration error")
	}
	if !reg.Unregister(theirs) {
		t.Fatal("Unregister() = false")
	}
	if _, err := metrics.New(reg, metrics.Options{}); err != nil {
		t.Errorf("New() once the conflict is gone = %v, want nil: the failed New left part of itself registered", err)
	}
}

// capped is a pooled value that learns its own share cap, as a gRPC
// connection learns its server's stream limit.
type capped struct{ cap keyedpool.ShareCap }

func (c *capped) ShareCap() *keyedpool.ShareCap { return &c.cap }

// cappedPool returns a pool with no share limit of its own whose objects
// start with the cap caps gives their key (0, not known, for a key it
// lacks), and closes it when the test ends.
func cappedPool(t *testing.T, caps map[string]int) *keyedpool.Pool[string, *capped] {
	t.Helper()
	f := factory.Funcs[string, *capped]{MakeFunc: func(_ context.Context, key string) (*capped, error) {
		c := &capped{}
		c.cap.Set(caps[key])
		return c, nil
	}}
	p, err := keyedpool.New(f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares})
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
	return p
}

// useKeys borrows and returns an object of each key, so that each holds an
// idle one with the cap it learned, and returns the objects by key.
func useKeys(t *testing.T, p *keyedpool.Pool[string, *capped], keys ...string) map[string]*capped {
	t.Helper()
	objs := make(map[string]*capped)
	for _, k := range keys {
		h, err := p.Borrow(context.Background(), k)
		if err != nil {
			t.Fatalf("Borrow(%q) = %v", k, err)
		}
		objs[k] = h.Value()
		if err := p.Return(h); err != nil {
			t.Fatal(err)
		}
	}
	return objs
}

// grpc_pool_key_stream_cap is the cap each key's connections learned, 0
// for a key whose connections learned none, and follows a cap that changes
// by the next scrape; the __other__ series has the smallest nonzero cap of
// the keys it sums, the one that bounds a connection of any of them.
func TestKeyStreamCapExported(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true, MaxKeySeries: 2})
	p := cappedPool(t, map[string]int{"a": 10, "c": 50, "d": 20})
	if err := metrics.AddPool(m, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	objs := useKeys(t, p, "a", "b")
	// The first scrape gives a and b the two series allowed.
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	useKeys(t, p, "c", "d", "e")

	const help = `# HELP grpc_pool_key_stream_cap Streams the server of one key allows per connection, as its connections last learned (SETTINGS_MAX_CONCURRENT_STREAMS); 0: no limit or not known. For the __other__ series, the smallest nonzero cap of the keys it sums.
# TYPE grpc_pool_key_stream_cap gauge
`
	want := help + `grpc_pool_key_stream_cap{key="__other__",pool="p"} 20
grpc_pool_key_stream_cap{key="a",pool="p"} 10
grpc_pool_key_stream_cap{key="b",pool="p"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_pool_key_stream_cap"); err != nil {
		t.Errorf("GatherAndCompare: %v", err)
	}

	objs["a"].cap.Set(4) // the server lowered its limit
	want = help + `grpc_pool_key_stream_cap{key="__other__",pool="p"} 20
grpc_pool_key_stream_cap{key="a",pool="p"} 4
grpc_pool_key_stream_cap{key="b",pool="p"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_pool_key_stream_cap"); err != nil {
		t.Errorf("after a's cap fell to 4: %v", err)
	}

	// Without PerKey the family is neither described nor collected.
	m2, reg2 := metricstest.New(t, metrics.Options{})
	if err := metrics.AddPool(m2, "p", p, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg2, "grpc_pool_key_stream_cap"); err != nil || n != 0 {
		t.Errorf("grpc_pool_key_stream_cap without PerKey has %d series (%v), want 0", n, err)
	}
}

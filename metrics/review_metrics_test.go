package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kpool-go/kpool/internal/metricstest"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

// ---- helpers ---------------------------------------------------------------

// rvSeries gathers reg into "name{l1="v1",l2="v2"}" -> value, labels sorted
// by name; summaries give name_count and name_sum, histograms name_count.
func rvSeries(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			out2 := rvSeriesOf(mf.GetName(), s)
			for k, v := range out2 {
				if _, dup := out[k]; dup {
					t.Errorf("series %s appears twice", k)
				}
				out[k] = v
			}
		}
	}
	return out
}

func rvLabels(s *dto.Metric) string {
	var ls []string
	for _, l := range s.GetLabel() {
		ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	sort.Strings(ls)
	return "{" + strings.Join(ls, ",") + "}"
}

func rvSeriesOf(name string, s *dto.Metric) map[string]float64 {
	lv := rvLabels(s)
	switch {
	case s.GetSummary() != nil:
		return map[string]float64{
			name + "_count" + lv: float64(s.GetSummary().GetSampleCount()),
			name + "_sum" + lv:   s.GetSummary().GetSampleSum(),
		}
	case s.GetHistogram() != nil:
		return map[string]float64{name + "_count" + lv: float64(s.GetHistogram().GetSampleCount())}
	case s.GetCounter() != nil:
		return map[string]float64{name + lv: s.GetCounter().GetValue()}
	case s.GetGauge() != nil:
		return map[string]float64{name + lv: s.GetGauge().GetValue()}
	}
	return map[string]float64{name + lv: 0}
}

// rvExpect checks every series of want against got.
func rvExpect(t *testing.T, step string, got map[string]float64, want map[string]float64) {
	t.Helper()
	var bad []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("  %s missing, want %v", k, w))
		case g != w:
			bad = append(bad, fmt.Sprintf("  %s = %v, want %v", k, g, w))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		t.Errorf("%s:\n%s", step, strings.Join(bad, "\n"))
	}
}

// rvPool returns the expected pool-wide series for pool name, all zero but
// for what is set in vals (short names, without grpc_ and pool label:
// "pool_size", "connections_destroyed_total:invalidated", ...).
func rvPool(name string, vals map[string]float64) map[string]float64 {
	lbl := fmt.Sprintf("{pool=%q}", name)
	out := map[string]float64{}
	for _, f := range []string{
		"pool_size", "pool_active_connections", "pool_idle_connections", "pool_making_connections",
		"pool_waiters", "pool_shares_in_use", "pool_keys", "pool_keys_in_backoff",
		"pool_borrows_total", "pool_returns_total", "connections_created_total",
		"pool_make_errors_total", "pool_backoff_rejections_total", "pool_eviction_tests_total",
		"pool_borrow_wait_seconds_count",
	} {
		out["grpc_"+f+lbl] = vals[f]
	}
	for _, r := range []string{"returned-surplus", "validation", "evicted", "lifetime", "abandoned", "invalidated", "cleared", "closed"} {
		out[fmt.Sprintf("grpc_connections_destroyed_total{pool=%q,reason=%q}", name, r)] = vals["destroyed:"+r]
	}
	for _, op := range []string{"make", "destroy", "activate", "validate", "passivate", "eviction_policy"} {
		out[fmt.Sprintf("grpc_pool_background_errors_total{op=%q,pool=%q}", op, name)] = vals["background:"+op]
	}
	return out
}

func rvBorrow(t *testing.T, p *pool, key string) *keyedpool.Pooled[string, *testfactory.Obj] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h, err := p.Borrow(ctx, key)
	if err != nil {
		t.Fatalf("Borrow(%q) = %v", key, err)
	}
	return h
}

func rvNoErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s = %v", what, err)
	}
}

func rvWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// ---- 1. the families README lists ----------------------------------------

// readmeFamily is one family of README's metrics reference.
type readmeFamily struct {
	typ    string   // gauge, counter, summary, histogram
	labels []string // sorted; "key" included where the row says "(key with PerKey)"
}

// readmeFamilies parses README's "### Metrics reference" table.
func readmeFamilies(t *testing.T, perKey bool) map[string]readmeFamily {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "### Metrics reference")
	if i < 0 {
		t.Fatal("README has no metrics reference")
	}
	text = text[i:]
	code := regexp.MustCompile("`([a-z_]+)`")
	out := map[string]readmeFamily{}
	inTable := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "| Name |") {
			inTable = true
			continue
		}
		if !inTable {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		if strings.HasPrefix(line, "|---") {
			continue
		}
		cols := strings.Split(line, "|")
		// "", name, type, labels, meaning...
		names := code.FindAllStringSubmatch(cols[1], -1)
		typ := strings.Fields(strings.TrimSpace(cols[2]))[0]
		labelCol := strings.TrimSpace(cols[3])
		var labels []string
		if j := strings.Index(labelCol, "("); j >= 0 {
			if perKey && strings.Contains(labelCol[j:], "key with") {
				labels = append(labels, "key")
			}
			labelCol = labelCol[:j]
		}
		for _, l := range strings.Split(labelCol, ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		sort.Strings(labels)
		var first string
		for k, n := range names {
			name := n[1]
			if k == 0 {
				first = name
			} else if strings.HasPrefix(name, "_") {
				// `grpc_pool_key_active_connections`, `_idle_connections`:
				// the first name's stem (grpc_pool_key) and the suffix.
				stem := "grpc_pool_key"
				if !strings.HasPrefix(first, stem) {
					t.Fatalf("cannot expand %s after %s", name, first)
				}
				name = stem + name
			}
			out[name] = readmeFamily{typ: typ, labels: labels}
		}
	}
	if len(out) < 30 {
		t.Fatalf("parsed only %d families from README: %v", len(out), out)
	}
	return out
}

// richPool makes a pool in which every pool family has series: PerKey with
// an __other__ series, health and services.
func richPool(t *testing.T, opts metrics.Options) (*metrics.Metrics, *prometheus.Registry, *pool) {
	t.Helper()
	m, reg := metricstest.New(t, opts)
	p := knownState(t)
	if err := metrics.AddPool(m, "orders", p, healthStub{Serving: 1, Unhealthy: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	m.AddServices(services{{Service: "users", Endpoints: 1, Usable: 1}})
	return m, reg, p
}

// README: "Every pool family has the label `pool`" and the reference table
// gives each family's name, type and labels. Every family the metrics
// package exports is in the table, with its type and labels, and every
// table row this package owns (not the RPC families of grpcmetrics, not
// kpool start's config_reloads_total) is exported.
func TestReviewMetricsFamiliesMatchREADME(t *testing.T) {
	for _, perKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("PerKey=%v", perKey), func(t *testing.T) {
			doc := readmeFamilies(t, perKey)
			_, reg, _ := richPool(t, metrics.Options{PerKey: perKey, MaxKeySeries: 1})
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, mf := range mfs {
				name := mf.GetName()
				seen[name] = true
				d, ok := doc[name]
				if !ok {
					t.Errorf("family %s is exported but README's reference does not list it", name)
					continue
				}
				if got := strings.ToLower(mf.GetType().String()); got != d.typ {
					t.Errorf("%s has type %s, README says %s", name, got, d.typ)
				}
				if mf.GetHelp() == "" {
					t.Errorf("%s has no HELP", name)
				}
				for _, s := range mf.GetMetric() {
					var ls []string
					for _, l := range s.GetLabel() {
						ls = append(ls, l.GetName())
					}
					sort.Strings(ls)
					if !slices.Equal(ls, d.labels) {
						t.Errorf("%s series has labels %v, README says %v", name, ls, d.labels)
					}
				}
			}
			for name := range doc {
				switch {
				case name == "grpc_requests_total", name == "grpc_request_duration_seconds", name == "config_reloads_total":
					continue // grpcmetrics' and kpool start's
				case !perKey && (strings.HasPrefix(name, "grpc_pool_key_") || name == "grpc_pool_keys_aggregated"):
					continue
				}
				if !seen[name] {
					t.Errorf("README lists %s but it is not exported (PerKey=%v)", name, perKey)
				}
			}
		})
	}
}

// ---- 1. exact values after known sequences --------------------------------

// README: grpc_pool_returns_total "leases given back (`Return`,
// `Invalidate`)"; "The pool families are read from one `Stats()` snapshot
// per pool per scrape". In exclusive mode with nobody waiting and room in
// the pool, Returns go on keyedpool's per-key lanes: they must still be
// counted at the next scrape, and every gauge and counter is exact after a
// sequence worked by hand.
func TestReviewMetricsExactSequenceExclusiveLanes(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	var failB atomic.Bool
	failB.Store(true)
	f := &testfactory.Factory{MakeHook: func(_ context.Context, key string) error {
		if key == "b" && failB.Load() {
			return errors.New("refused")
		}
		return nil
	}}
	p := testfactory.NewPool(t, f, keyedpool.Config{
		MaxTotalPerKey: 2, MaxIdlePerKey: 1, TestWhileIdle: true,
		MakeFailureThreshold: 1, MakeBackoffBase: time.Hour, MakeBackoffMax: time.Hour,
	})
	rvNoErr(t, "AddPool", metrics.AddPool(m, "p", p, nil))

	// 1. borrow a (made), Return: the object goes on a's lane.
	h := rvBorrow(t, p, "a")
	rvNoErr(t, "Return", p.Return(h))
	rvExpect(t, "after Borrow+Return of a", rvSeries(t, reg), rvPool("p", map[string]float64{
		"pool_size": 1, "pool_idle_connections": 1, "pool_keys": 1,
		"pool_borrows_total": 1, "pool_returns_total": 1, "connections_created_total": 1,
	}))

	// 2. Several lane round trips of a without a scrape between them.
	for range 5 {
		h = rvBorrow(t, p, "a")
		rvNoErr(t, "Return", p.Return(h))
	}
	rvExpect(t, "after 5 more Borrow+Return of a", rvSeries(t, reg), rvPool("p", map[string]float64{
		"pool_size": 1, "pool_idle_connections": 1, "pool_keys": 1,
		"pool_borrows_total": 6, "pool_returns_total": 6, "connections_created_total": 1,
	}))

	// 3. Two out; the second Return is over MaxIdlePerKey: surplus.
	h1, h2 := rvBorrow(t, p, "a"), rvBorrow(t, p, "a")
	rvExpect(t, "two of a out", rvSeries(t, reg), rvPool("p", map[string]float64{
		"pool_size": 2, "pool_active_connections": 2, "pool_shares_in_use": 2, "pool_keys": 1,
		"pool_borrows_total": 8, "pool_returns_total": 6, "connections_created_total": 2,
	}))
	rvNoErr(t, "Return", p.Return(h1))
	rvNoErr(t, "Return", p.Return(h2))
	// 4. Invalidate the one left: a holds nothing and leaves.
	h = rvBorrow(t, p, "a")
	rvNoErr(t, "Invalidate", p.Invalidate(h))
	rvExpect(t, "after surplus and Invalidate", rvSeries(t, reg), rvPool("p", map[string]float64{
		"pool_borrows_total": 9, "pool_returns_total": 9, "connections_created_total": 2,
		"destroyed:returned-surplus": 1, "destroyed:invalidated": 1,
	}))

	// 5. b fails its make (threshold 1: backoff), then is refused at once.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := p.Borrow(ctx, "b"); err == nil {
		t.Fatal("Borrow(b) with a failing make = nil error")
	}
	if _, err := p.Borrow(ctx, "b"); !errors.Is(err, keyedpool.ErrBackoff) {
		t.Fatalf("second Borrow(b) = %v, want ErrBackoff", err)
	}
	rvExpect(t, "after b's failed make and backoff rejection", rvSeries(t, reg), rvPool("p", map[string]float64{
		"pool_keys": 1, "pool_keys_in_backoff": 1,
		"pool_borrows_total": 9, "pool_returns_total": 9, "connections_created_total": 2,
		"destroyed:returned-surplus": 1, "destroyed:invalidated": 1,
		"pool_make_errors_total": 1, "pool_backoff_rejections_total": 1,
	}))

	// 6. c: two out (MaxTotalPerKey 2), a third Borrow waits, a Return
	// hands over to it.
	c1, c2 := rvBorrow(t, p, "c"), rvBorrow(t, p, "c")
	got := make(chan *keyedpool.Pooled[string, *testfactory.Obj], 1)
	go func() {
		h, err := p.Borrow(ctx, "c")
		if err != nil {
			t.Errorf("waiting Borrow(c) = %v", err)
		}
		got <- h
	}()
	rvWaitFor(t, "a waiter", func() bool { return p.Stats().Waiters == 1 })
	s := rvSeries(t, reg)
	if s[`grpc_pool_waiters{pool="p"}`] != 1 {
		t.Errorf("grpc_pool_waiters = %v with one Borrow blocked, want 1", s[`grpc_pool_waiters{pool="p"}`])
	}
	time.Sleep(30 * time.Millisecond)
	rvNoErr(t, "Return", p.Return(c1))
	c3 := <-got
	if c3 == nil {
		t.FailNow()
	}
	rvNoErr(t, "Return", p.Return(c2))
	rvNoErr(t, "Return", p.Return(c3)) // over MaxIdlePerKey: surplus
	s = rvSeries(t, reg)
	rvExpect(t, "after c's wait", s, rvPool("p", map[string]float64{
		"pool_size": 1, "pool_idle_connections": 1, "pool_keys": 2, "pool_keys_in_backoff": 1,
		"pool_borrows_total": 12, "pool_returns_total": 12, "connections_created_total": 4,
		"destroyed:returned-surplus": 2, "destroyed:invalidated": 1,
		"pool_make_errors_total": 1, "pool_backoff_rejections_total": 1,
		"pool_borrow_wait_seconds_count": 1,
	}))
	if w := s[`grpc_pool_borrow_wait_seconds_sum{pool="p"}`]; w < 0.025 || w > 5 {
		t.Errorf("grpc_pool_borrow_wait_seconds_sum = %v after one wait of ~30ms", w)
	}
	if w := s[`grpc_pool_borrow_wait_max_seconds{pool="p"}`]; w < 0.025 || w > 5 {
		t.Errorf("grpc_pool_borrow_wait_max_seconds = %v after one wait of ~30ms", w)
	}

	// 7. An eviction run tests c's idle object (TestWhileIdle), which is
	// dead: destroyed as evicted, a background validate error.
	c4 := rvBorrow(t, p, "c")
	c4.Value().Dead.Store(true)
	rvNoErr(t, "Return", p.Return(c4)) // on the lane again
	_ = p.RunEviction(ctx)
	rvExpect(t, "after an eviction run", rvSeries(t, reg), rvPool("p", map[string]float64{
		"pool_keys": 1, "pool_keys_in_backoff": 1,
		"pool_borrows_total": 13, "pool_returns_total": 13, "connections_created_total": 4,
		"destroyed:returned-surplus": 2, "destroyed:invalidated": 1, "destroyed:evicted": 1,
		"pool_make_errors_total": 1, "pool_backoff_rejections_total": 1,
		"pool_borrow_wait_seconds_count": 1, "pool_eviction_tests_total": 1,
		"background:validate": 1,
	}))

	// 8. ClearAll an idle object of d; Close with one idle of e.
	rvNoErr(t, "Return", p.Return(rvBorrow(t, p, "d")))
	rvNoErr(t, "ClearAll", p.ClearAll(ctx))
	rvNoErr(t, "Return", p.Return(rvBorrow(t, p, "e")))
	rvNoErr(t, "Close", p.Close(ctx))
	s = rvSeries(t, reg)
	rvExpect(t, "after ClearAll and Close", s, rvPool("p", map[string]float64{
		"pool_keys": s[`grpc_pool_keys{pool="p"}`], "pool_keys_in_backoff": s[`grpc_pool_keys_in_backoff{pool="p"}`],
		"pool_borrows_total": 15, "pool_returns_total": 15, "connections_created_total": 6,
		"destroyed:returned-surplus": 2, "destroyed:invalidated": 1, "destroyed:evicted": 1,
		"destroyed:cleared": 1, "destroyed:closed": 1,
		"pool_make_errors_total": 1, "pool_backoff_rejections_total": 1,
		"pool_borrow_wait_seconds_count": 1, "pool_eviction_tests_total": 1,
		"background:validate": 1,
	}))
	if s[`grpc_pool_up{pool="p"}`] != 0 {
		t.Errorf("grpc_pool_up = %v after Close, want 0", s[`grpc_pool_up{pool="p"}`])
	}
}

// README: grpc_pool_shares_in_use "leases out (with shared leases, up to
// `MaxSharesPerObject` per connection)"; grpc_pool_active_connections
// "connections lent out"; grpc_pool_returns_total counts every lease given
// back. Shared mode: three leases of one connection.
func TestReviewMetricsExactSequenceShared(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true})
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 3})
	rvNoErr(t, "AddPool", metrics.AddPool(m, "s", p, nil))
	hs := []*keyedpool.Pooled[string, *testfactory.Obj]{rvBorrow(t, p, "a"), rvBorrow(t, p, "a"), rvBorrow(t, p, "a")}
	s := rvSeries(t, reg)
	rvExpect(t, "three shares of one connection", s, rvPool("s", map[string]float64{
		"pool_size": 1, "pool_active_connections": 1, "pool_shares_in_use": 3, "pool_keys": 1,
		"pool_borrows_total": 3, "connections_created_total": 1,
	}))
	rvExpect(t, "per key, three shares", s, map[string]float64{
		`grpc_pool_key_active_connections{key="a",pool="s"}`:        1,
		`grpc_pool_key_shares_in_use{key="a",pool="s"}`:             3,
		`grpc_pool_key_connections_created_total{key="a",pool="s"}`: 1,
	})
	// A fourth share needs a second connection.
	hs = append(hs, rvBorrow(t, p, "a"))
	rvExpect(t, "four shares", rvSeries(t, reg), rvPool("s", map[string]float64{
		"pool_size": 2, "pool_active_connections": 2, "pool_shares_in_use": 4, "pool_keys": 1,
		"pool_borrows_total": 4, "connections_created_total": 2,
	}))
	rvNoErr(t, "Return", p.Return(hs[0]))
	rvNoErr(t, "Invalidate", p.Invalidate(hs[3]))
	rvExpect(t, "one returned, one invalidated", rvSeries(t, reg), rvPool("s", map[string]float64{
		"pool_size": 1, "pool_active_connections": 1, "pool_shares_in_use": 2, "pool_keys": 1,
		"pool_borrows_total": 4, "pool_returns_total": 2, "connections_created_total": 2,
		"destroyed:invalidated": 1,
	}))
	rvNoErr(t, "Return", p.Return(hs[1]))
	rvNoErr(t, "Return", p.Return(hs[2]))
	rvExpect(t, "all back", rvSeries(t, reg), rvPool("s", map[string]float64{
		"pool_size": 1, "pool_idle_connections": 1, "pool_keys": 1,
		"pool_borrows_total": 4, "pool_returns_total": 4, "connections_created_total": 2,
		"destroyed:invalidated": 1,
	}))
}

// Per-key families with lanes on: a key's counters include Borrows and
// Returns that went over its lane, and the per-key sums match the pool's.
// README: grpc_pool_key_* "as above, per key".
func TestReviewMetricsPerKeyLanesExact(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true})
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxIdlePerKey: 2})
	rvNoErr(t, "AddPool", metrics.AddPool(m, "p", p, nil))
	for _, k := range []string{"a", "b", "a", "a", "b"} {
		rvNoErr(t, "Return", p.Return(rvBorrow(t, p, k)))
	}
	out := rvBorrow(t, p, "b")
	s := rvSeries(t, reg)
	rvExpect(t, "per key", s, map[string]float64{
		`grpc_pool_key_idle_connections{key="a",pool="p"}`:            1,
		`grpc_pool_key_active_connections{key="a",pool="p"}`:          0,
		`grpc_pool_key_idle_connections{key="b",pool="p"}`:            0,
		`grpc_pool_key_active_connections{key="b",pool="p"}`:          1,
		`grpc_pool_key_shares_in_use{key="b",pool="p"}`:               1,
		`grpc_pool_key_connections_created_total{key="a",pool="p"}`:   1,
		`grpc_pool_key_connections_created_total{key="b",pool="p"}`:   1,
		`grpc_pool_key_connections_destroyed_total{key="a",pool="p"}`: 0,
		`grpc_pool_keys_aggregated{pool="p"}`:                         0,
		`grpc_pool_borrows_total{pool="p"}`:                           6,
		`grpc_pool_returns_total{pool="p"}`:                           5,
	})
	rvNoErr(t, "Return", p.Return(out))
}

// ---- 2. per-key series -----------------------------------------------------

// README: "A pool key keeps its series while the pool holds the key; a
// forgotten key frees its place." and "With 10,000 keys and
// `MaxKeySeries: 50`, each per-key family has 51 series". Keys that leave
// leave their series (no stale series), a key waiting under __other__
// takes the freed place, and series stay bounded as keys churn.
func TestReviewMetricsPerKeySeriesChurn(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true, MaxKeySeries: 3})
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: -1, MaxIdlePerKey: -1})
	rvNoErr(t, "AddPool", metrics.AddPool(m, "p", p, nil))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	held := map[string]*keyedpool.Pooled[string, *testfactory.Obj]{}
	for i := range 3 {
		k := fmt.Sprintf("k%d", i)
		held[k] = rvBorrow(t, p, k)
	}
	rvSeries(t, reg) // k0..k2 take the 3 series
	for i := 3; i < 6; i++ {
		k := fmt.Sprintf("k%d", i)
		held[k] = rvBorrow(t, p, k)
	}
	s := rvSeries(t, reg)
	rvExpect(t, "3 own, 3 aggregated", s, map[string]float64{
		`grpc_pool_key_active_connections{key="k0",pool="p"}`:        1,
		`grpc_pool_key_active_connections{key="k1",pool="p"}`:        1,
		`grpc_pool_key_active_connections{key="k2",pool="p"}`:        1,
		`grpc_pool_key_active_connections{key="__other__",pool="p"}`: 3,
		`grpc_pool_keys_aggregated{pool="p"}`:                        3,
	})
	// k0 leaves the pool (invalidated: it holds nothing, nobody waits).
	rvNoErr(t, "Invalidate", p.Invalidate(held["k0"]))
	delete(held, "k0")
	s = rvSeries(t, reg)
	for k := range s {
		if strings.Contains(k, `key="k0"`) {
			t.Errorf("stale series after k0 left the pool: %s", k)
		}
	}
	if n := s[`grpc_pool_keys_aggregated{pool="p"}`]; n != 2 {
		t.Errorf("grpc_pool_keys_aggregated = %v after k0 left, want 2 (one aggregated key takes its place)", n)
	}
	// Churn: 200 one-off keys come and go; series stay bounded.
	for i := range 200 {
		k := fmt.Sprintf("tmp%d", i)
		h := rvBorrow(t, p, k)
		if i%10 == 0 {
			rvSeries(t, reg)
		}
		rvNoErr(t, "Invalidate", p.Invalidate(h))
	}
	s = rvSeries(t, reg)
	n := 0
	for k := range s {
		if strings.HasPrefix(k, "grpc_pool_key_active_connections{") {
			n++
		}
		if strings.Contains(k, `key="tmp`) {
			t.Errorf("stale series of a one-off key: %s", k)
		}
	}
	if n > 4 {
		t.Errorf("grpc_pool_key_active_connections has %d series, want at most 4 (3 + __other__)", n)
	}
	// All keys go: no per-key series, no __other__.
	for _, h := range held {
		rvNoErr(t, "Invalidate", p.Invalidate(h))
	}
	_ = ctx
	s = rvSeries(t, reg)
	for k := range s {
		if strings.Contains(k, `key="`) {
			t.Errorf("series left after every key left: %s", k)
		}
	}
	rvExpect(t, "no key aggregated", s, map[string]float64{`grpc_pool_keys_aggregated{pool="p"}`: 0})
}

// README: "Keys are shown as text: a string key as is ... invalid UTF-8 is
// replaced." Odd string keys (empty, non-ASCII, very long, invalid UTF-8)
// get series of their own with their text, and scrapes stay valid.
func TestReviewMetricsOddKeyLabels(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{PerKey: true})
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{})
	rvNoErr(t, "AddPool", metrics.AddPool(m, "p", p, nil))
	long := strings.Repeat("x", 10000)
	keys := []string{"", "日本語-ключ-🙂", long, "a\"b\\c\nd", "bad\xffutf8"}
	var hs []*keyedpool.Pooled[string, *testfactory.Obj]
	for _, k := range keys {
		hs = append(hs, rvBorrow(t, p, k))
	}
	s := rvSeries(t, reg)
	for _, k := range keys {
		want := strings.ToValidUTF8(k, "\uFFFD")
		name := fmt.Sprintf("grpc_pool_key_active_connections{key=%q,pool=\"p\"}", want)
		if s[name] != 1 {
			t.Errorf("key %.40q: %s = %v, want 1", k, name[:min(len(name), 80)], s[name])
		}
	}
	for _, h := range hs {
		rvNoErr(t, "Return", p.Return(h))
	}
}

// ---- 3. concurrency ---------------------------------------------------------

// README: the pool families are read "from one Stats() snapshot per pool
// per scrape", counters are Prometheus counters (never go down). Scrapes
// while borrowers run over many keys (lanes on and off, shared and
// exclusive), and while the pool closes, never fail or panic, never see a
// counter go down, and finish promptly.
func TestReviewMetricsScrapeUnderLoadAndClose(t *testing.T) {
	for _, shares := range []int{1, 4} {
		t.Run(fmt.Sprintf("shares=%d", shares), func(t *testing.T) {
			m, reg := metricstest.New(t, metrics.Options{PerKey: true, MaxKeySeries: 5})
			f := &testfactory.Factory{}
			p, err := keyedpool.New[string, *testfactory.Obj](f, keyedpool.Config{
				MaxTotal: 12, MaxTotalPerKey: 3, MaxIdlePerKey: 2, MaxSharesPerObject: shares,
				MaxWait: 200 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			rvNoErr(t, "AddPool", metrics.AddPool(m, "p", p, nil))
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()

			var stop atomic.Bool
			var wg sync.WaitGroup
			for w := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; !stop.Load(); i++ {
						k := fmt.Sprintf("k%d", (w+i)%9)
						h, err := p.Borrow(ctx, k)
						if err != nil {
							if errors.Is(err, keyedpool.ErrClosed) {
								return
							}
							continue
						}
						if i%7 == 0 {
							_ = p.Invalidate(h)
						} else {
							_ = p.Return(h)
						}
					}
				}()
			}
			prev := map[string]float64{}
			counterNames := func(k string) bool {
				return strings.Contains(k, "_total{") || strings.Contains(k, "_count{") || strings.Contains(k, "_sum{")
			}
			var maxScrape time.Duration
			check := func(step string) {
				start := time.Now()
				s := rvSeries(t, reg)
				maxScrape = max(maxScrape, time.Since(start))
				for k, v := range s {
					if !counterNames(k) || strings.Contains(k, "grpc_pool_key_") {
						continue // per-key counters may reset (documented)
					}
					if v < prev[k] {
						t.Errorf("%s: counter %s went down: %v -> %v", step, k, prev[k], v)
					}
					prev[k] = v
				}
			}
			for i := range 60 {
				check(fmt.Sprintf("scrape %d", i))
				time.Sleep(2 * time.Millisecond)
			}
			closed := make(chan error, 1)
			go func() {
				cctx, ccancel := context.WithTimeout(context.Background(), testTimeout)
				defer ccancel()
				closed <- p.Close(cctx)
			}()
			stop.Store(true)
			for i := range 20 {
				check(fmt.Sprintf("scrape while closing %d", i))
			}
			wg.Wait()
			if err := <-closed; err != nil {
				t.Errorf("Close() = %v", err)
			}
			check("after close")
			if maxScrape > 2*time.Second {
				t.Errorf("a scrape took %v", maxScrape)
			}
			s := rvSeries(t, reg)
			if s[`grpc_pool_up{pool="p"}`] != 0 || s[`grpc_pool_size{pool="p"}`] != 0 {
				t.Errorf("after Close: up=%v size=%v, want 0 and 0", s[`grpc_pool_up{pool="p"}`], s[`grpc_pool_size{pool="p"}`])
			}
			// Every return is of a counted borrow; a borrow a scrape saw
			// before it was taken back stays counted (README), so
			// borrows may exceed returns by those.
			if b, r := s[`grpc_pool_borrows_total{pool="p"}`], s[`grpc_pool_returns_total{pool="p"}`]; b < r {
				t.Errorf("after every lease came back and Close: borrows %v < returns %v", b, r)
			}
		})
	}
}

// README: grpc_pool_borrows_total is a "counter" of "successful borrows".
// A Borrow whose Activate is still running is not (yet) successful; if it
// fails, the counter a scrape read meanwhile must not go down: Prometheus
// reads any decrease of a counter as a reset (rate() jumps by the whole
// value).
func TestReviewMetricsBorrowsTotalNeverDecreasesOnFailedActivate(t *testing.T) {
	m, reg := metricstest.New(t, metrics.Options{})
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var failNext, failMake atomic.Bool
	f := &testfactory.Factory{MakeHook: func(context.Context, string) error {
		if failMake.Load() {
			return errors.New("make refused")
		}
		return nil
	}, ActivateHook: func(context.Context, *testfactory.Obj) error {
		if failNext.Load() {
			entered <- struct{}{}
			<-release
			return errors.New("activate failed")
		}
		return nil
	}}
	p := testfactory.NewPool(t, f, keyedpool.Config{})
	rvNoErr(t, "AddPool", metrics.AddPool(m, "p", p, nil))
	rvNoErr(t, "Return", p.Return(rvBorrow(t, p, "a"))) // one idle object of a
	s0 := rvSeries(t, reg)[`grpc_pool_borrows_total{pool="p"}`]

	failNext.Store(true)
	failMake.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		// The idle object fails activation; the Borrow then tries a
		// make, which fails: the Borrow fails.
		h, err := p.Borrow(ctx, "a")
		if err == nil {
			t.Errorf("Borrow(a) = nil error, want the make's")
			_ = p.Return(h)
		}
	}()
	<-entered
	failNext.Store(false)
	s1 := rvSeries(t, reg)[`grpc_pool_borrows_total{pool="p"}`]
	close(release)
	<-done
	s2 := rvSeries(t, reg)[`grpc_pool_borrows_total{pool="p"}`]
	t.Logf("borrows_total: before %v, during Activate %v, after %v", s0, s1, s2)
	if s2 < s1 {
		t.Errorf("grpc_pool_borrows_total went down: %v during a Borrow's Activate, %v after it failed (a counter must never decrease; Prometheus reads it as a reset)", s1, s2)
	}
}

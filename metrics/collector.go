package metrics

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kpool-go/kpool/keyedpool"
)

// poolView is a pool seen without its type parameters.
type poolView struct {
	name     string
	stats    func() keyedpool.Stats
	config   func() keyedpool.Config
	keyStats func() map[string]keyedpool.KeyStats
	health   HealthSource

	mu     sync.Mutex          // protects series
	series map[string]struct{} // keys with series of their own (Options.PerKey)

	borrows atomic.Int64 // the most borrows_total has shown: see shownBorrows
}

// shownBorrows returns what borrows_total shows for n, the pool's Borrowed
// now: never less than it showed before. The pool counts a Borrow when it
// hands over the object and takes it back off if the object then fails
// activation or validation or its borrower gives up, so a scrape in
// between would otherwise see the counter go down, which Prometheus reads
// as a reset. Such a Borrow stays counted until later ones make up for it.
func (v *poolView) shownBorrows(n int64) int64 {
	for {
		shown := v.borrows.Load()
		if n <= shown {
			return shown
		}
		if v.borrows.CompareAndSwap(shown, n) {
			return n
		}
	}
}

// split returns the keys of all that keep or get a series of their own, at
// most max, and the sum of the others (as addKeyStats sums). A key gets a
// series when there is room and keeps it while the pool holds it; forgotten
// keys make room.
func (v *poolView) split(all map[string]keyedpool.KeyStats, limit int) (own []string, other keyedpool.KeyStats, others, otherBackoff int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k := range v.series {
		if _, ok := all[k]; !ok {
			delete(v.series, k)
		}
	}
	for k, ks := range all {
		if _, ok := v.series[k]; !ok {
			// A key whose text is OtherKey has no series of its own: it
			// would collide with the sum.
			if len(v.series) >= limit || k == OtherKey {
				addKeyStats(&other, ks)
				others++
				if !ks.BackoffUntil.IsZero() {
					otherBackoff++
				}
				continue
			}
			v.series[k] = struct{}{}
		}
		own = append(own, k)
	}
	return own, other, others, otherBackoff
}

// addKeyStats adds ks's gauges and counters to sum; sum's ShareCap is the
// smallest nonzero ShareCap of the two.
func addKeyStats(sum *keyedpool.KeyStats, ks keyedpool.KeyStats) {
	sum.Active += ks.Active
	sum.Idle += ks.Idle
	sum.Making += ks.Making
	sum.Waiters += ks.Waiters
	sum.SharesInUse += ks.SharesInUse
	sum.Created += ks.Created
	sum.Destroyed += ks.Destroyed
	sum.MakeErrors += ks.MakeErrors
	// Caps do not add up. The smallest one learned is the tightest server
	// among the keys summed: the one that bounds what a connection of any
	// of them can carry. A key with none learned leaves the sum as it is.
	if ks.ShareCap > 0 && (sum.ShareCap == 0 || ks.ShareCap < sum.ShareCap) {
		sum.ShareCap = ks.ShareCap
	}
}

// descs are the descriptions of every family the collector exports.
type descs struct {
	size, active, idle, making, waiters, shares, maxConns *prometheus.Desc
	keys, keysInBackoff, up, waitMax                      *prometheus.Desc
	borrows, returns, created, destroyed, makeErrors      *prometheus.Desc
	backoffRejections, evictionTests, wait                *prometheus.Desc
	backgroundErrors                                      *prometheus.Desc

	keyActive, keyIdle, keyWaiters, keyShares, keyStreamCap            *prometheus.Desc
	keyCreated, keyDestroyed, keyMakeErrors, keyInBackoff              *prometheus.Desc
	keysAggregated                                                     *prometheus.Desc
	healthChecks, unhealthy                                            *prometheus.Desc
	discoveryNodes, discoveryUsable, discoveryUpdates, discoveryErrors *prometheus.Desc
}

func newDescs(o Options) *descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(o.Namespace, "", name), help, labels, nil)
	}
	pool, key := "pool", "key"
	return &descs{
		size:          d("grpc_pool_size", "Connections the pool holds: active plus idle.", pool),
		active:        d("grpc_pool_active_connections", "Connections lent out, or being returned or destroyed.", pool),
		idle:          d("grpc_pool_idle_connections", "Idle connections, including those an eviction run is testing.", pool),
		making:        d("grpc_pool_making_connections", "Connections being made.", pool),
		waiters:       d("grpc_pool_waiters", "Borrowers blocked waiting for a connection.", pool),
		shares:        d("grpc_pool_shares_in_use", "Leases out: lent connections, times their concurrent borrowers under shared leases.", pool),
		maxConns:      d("grpc_pool_max_connections", "The pool's MaxTotal: connections it may hold over all keys; +Inf without a limit.", pool),
		keys:          d("grpc_pool_keys", "Keys with a sub-pool.", pool),
		keysInBackoff: d("grpc_pool_keys_in_backoff", "Keys whose connection attempts are failing and in backoff.", pool),
		up:            d("grpc_pool_up", "1 while the pool is open, 0 once it is closed.", pool),
		waitMax:       d("grpc_pool_borrow_wait_max_seconds", "The longest a single Borrow has waited.", pool),

		borrows:           d("grpc_pool_borrows_total", "Successful Borrows.", pool),
		returns:           d("grpc_pool_returns_total", "Leases given back, by Return or Invalidate.", pool),
		created:           d("grpc_connections_created_total", "Connections made.", pool),
		destroyed:         d("grpc_connections_destroyed_total", "Connections destroyed, by reason.", pool, "reason"),
		makeErrors:        d("grpc_pool_make_errors_total", "Failed connection makes.", pool),
		backoffRejections: d("grpc_pool_backoff_rejections_total", "Borrows refused at once because the key is in make backoff.", pool),
		evictionTests:     d("grpc_pool_eviction_tests_total", "Idle connections the evictor looked at.", pool),
		backgroundErrors:  d("grpc_pool_background_errors_total", "Errors of pool work no caller waited for (eviction runs, upkeep, clean-up), by the factory operation that failed.", pool, "op"),
		wait:              d("grpc_pool_borrow_wait_seconds", "Time Borrows spent waiting, over the Borrows that had to wait.", pool),

		keyActive:      d("grpc_pool_key_active_connections", "Active connections of one key.", pool, key),
		keyIdle:        d("grpc_pool_key_idle_connections", "Idle connections of one key.", pool, key),
		keyWaiters:     d("grpc_pool_key_waiters", "Borrowers of one key blocked waiting.", pool, key),
		keyShares:      d("grpc_pool_key_shares_in_use", "Leases out on one key's connections.", pool, key),
		keyStreamCap:   d("grpc_pool_key_stream_cap", "Streams the server of one key allows per connection, as its connections last learned (SETTINGS_MAX_CONCURRENT_STREAMS); 0: no limit or not known. For the "+OtherKey+" series, the smallest nonzero cap of the keys it sums.", pool, key),
		keyCreated:     d("grpc_pool_key_connections_created_total", "Connections made for one key since its sub-pool was made.", pool, key),
		keyDestroyed:   d("grpc_pool_key_connections_destroyed_total", "Connections of one key destroyed since its sub-pool was made.", pool, key),
		keyMakeErrors:  d("grpc_pool_key_make_errors_total", "Failed makes of one key since its sub-pool was made.", pool, key),
		keyInBackoff:   d("grpc_pool_key_in_backoff", "Keys in make backoff: 1 or 0 for a key, a count for the "+OtherKey+" series.", pool, key),
		keysAggregated: d("grpc_pool_keys_aggregated", "Keys summed under the "+OtherKey+" series because of the MaxKeySeries cap.", pool),

		healthChecks: d("grpc_health_checks_total", "gRPC health Checks of pooled connections, by result: serving, not_serving or failed.", pool, "result"),
		unhealthy:    d("grpc_unhealthy_nodes", "Targets with live connections whose latest health Check was not SERVING.", pool),

		discoveryNodes:   d("grpc_service_discovery_nodes", "Endpoints in the service's latest discovery snapshot.", "service"),
		discoveryUsable:  d("grpc_service_discovery_usable_nodes", "Endpoints of the service that can lend a connection as far as the router knows.", "service"),
		discoveryUpdates: d("grpc_service_discovery_updates_total", "Discovery snapshots received for the service.", "service"),
		discoveryErrors:  d("grpc_service_discovery_errors_total", "Failed discovery lookups for the service.", "service"),
	}
}

// collector is Metrics seen as a prometheus.Collector.
type collector Metrics

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	d := c.descs
	for _, x := range []*prometheus.Desc{
		d.size, d.active, d.idle, d.making, d.waiters, d.shares, d.maxConns,
		d.keys, d.keysInBackoff, d.up, d.waitMax,
		d.borrows, d.returns, d.created, d.destroyed, d.makeErrors,
		d.backoffRejections, d.evictionTests, d.wait, d.backgroundErrors,
		d.healthChecks, d.unhealthy,
		d.discoveryNodes, d.discoveryUsable, d.discoveryUpdates, d.discoveryErrors,
	} {
		ch <- x
	}
	if c.opts.PerKey {
		for _, x := range []*prometheus.Desc{
			d.keyActive, d.keyIdle, d.keyWaiters, d.keyShares, d.keyStreamCap,
			d.keyCreated, d.keyDestroyed, d.keyMakeErrors, d.keyInBackoff, d.keysAggregated,
		} {
			ch <- x
		}
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	pools, services := (*Metrics)(c).snapshot()
	for _, v := range pools {
		c.collectPool(ch, v)
	}
	d := c.descs
	for _, s := range serviceStats(services) {
		ch <- gauge(d.discoveryNodes, float64(s.Endpoints), s.Service)
		ch <- gauge(d.discoveryUsable, float64(s.Usable), s.Service)
		ch <- counter(d.discoveryUpdates, float64(s.Updates), s.Service)
		ch <- counter(d.discoveryErrors, float64(s.Errors), s.Service)
	}
}

func (c *collector) collectPool(ch chan<- prometheus.Metric, v *poolView) {
	d, n := c.descs, v.name
	s := v.stats()
	ch <- gauge(d.size, float64(s.Active+s.Idle), n)
	ch <- gauge(d.active, float64(s.Active), n)
	ch <- gauge(d.idle, float64(s.Idle), n)
	ch <- gauge(d.making, float64(s.Making), n)
	ch <- gauge(d.waiters, float64(s.Waiters), n)
	ch <- gauge(d.shares, float64(s.SharesInUse), n)
	ch <- gauge(d.maxConns, maxTotal(v.config()), n)
	ch <- gauge(d.keys, float64(s.Keys), n)
	ch <- gauge(d.keysInBackoff, float64(s.KeysInBackoff), n)
	up := 1.0
	if s.Closed {
		up = 0
	}
	ch <- gauge(d.up, up, n)
	ch <- gauge(d.waitMax, s.MaxWaitTime.Seconds(), n)

	ch <- counter(d.borrows, float64(v.shownBorrows(s.Borrowed)), n)
	ch <- counter(d.returns, float64(s.Returned), n)
	ch <- counter(d.created, float64(s.Created), n)
	for _, r := range destroyReasons(s.Counters) {
		ch <- counter(d.destroyed, float64(r.n), n, r.reason)
	}
	ch <- counter(d.makeErrors, float64(s.MakeErrors), n)
	ch <- counter(d.backoffRejections, float64(s.BackoffRejected), n)
	ch <- counter(d.evictionTests, float64(s.EvictionTests), n)
	for _, op := range backgroundOps {
		ch <- counter(d.backgroundErrors, float64(s.BackgroundErrors.Of(op)), n, op.String())
	}
	ch <- prometheus.MustNewConstSummary(d.wait, uint64(s.Waited), s.WaitTime.Seconds(), nil, n)

	if v.health != nil {
		h := v.health.HealthStats()
		ch <- counter(d.healthChecks, float64(h.Serving), n, "serving")
		ch <- counter(d.healthChecks, float64(h.NotServing), n, "not_serving")
		ch <- counter(d.healthChecks, float64(h.Failed), n, "failed")
		ch <- gauge(d.unhealthy, float64(len(h.Unhealthy)), n)
	}

	if !c.opts.PerKey {
		return
	}
	all := v.keyStats()
	own, other, others, otherBackoff := v.split(all, c.others)
	key := func(k string, ks keyedpool.KeyStats, inBackoff float64) {
		ch <- gauge(d.keyActive, float64(ks.Active), n, k)
		ch <- gauge(d.keyIdle, float64(ks.Idle), n, k)
		ch <- gauge(d.keyWaiters, float64(ks.Waiters), n, k)
		ch <- gauge(d.keyShares, float64(ks.SharesInUse), n, k)
		ch <- gauge(d.keyStreamCap, float64(ks.ShareCap), n, k)
		ch <- counter(d.keyCreated, float64(ks.Created), n, k)
		ch <- counter(d.keyDestroyed, float64(ks.Destroyed), n, k)
		ch <- counter(d.keyMakeErrors, float64(ks.MakeErrors), n, k)
		ch <- gauge(d.keyInBackoff, inBackoff, n, k)
	}
	for _, k := range own {
		ks := all[k]
		b := 0.0
		if !ks.BackoffUntil.IsZero() {
			b = 1
		}
		key(k, ks, b)
	}
	if others > 0 {
		key(OtherKey, other, float64(otherBackoff))
	}
	ch <- gauge(d.keysAggregated, float64(others), n)
}

// maxTotal is the pool's MaxTotal, +Inf when it has no limit, so that
// size / max is 0 rather than a division by zero.
func maxTotal(c keyedpool.Config) float64 {
	if c.MaxTotal <= 0 {
		return math.Inf(1)
	}
	return float64(c.MaxTotal)
}

type reasonCount struct {
	reason string
	n      int64
}

// backgroundOps are the values of the op label of background errors.
var backgroundOps = []keyedpool.Op{
	keyedpool.OpMake, keyedpool.OpDestroy, keyedpool.OpActivate,
	keyedpool.OpValidate, keyedpool.OpPassivate, keyedpool.OpEvictionPolicy,
}

// destroyReasons splits the destroyed counter into the reason label's
// values, which add up to Counters.Destroyed.
func destroyReasons(c keyedpool.Counters) []reasonCount {
	return []reasonCount{
		{"returned-surplus", c.DestroyedSurplus},
		{"validation", c.DestroyedByBorrowValidation + c.DestroyedByReturnValidation},
		{"evicted", c.DestroyedByEvictor},
		{"lifetime", c.DestroyedByLifetime},
		{"abandoned", c.DestroyedByAbandoned},
		{"invalidated", c.DestroyedByInvalidate},
		{"cleared", c.DestroyedByClear},
		{"closed", c.DestroyedByClose},
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

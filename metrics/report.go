package metrics

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/kpool-go/kpool/keyedpool"
)

// StatsReport is the JSON body of /stats.
type StatsReport struct {
	Pools    []PoolReport    `json:"pools"`
	Services []ServiceReport `json:"services,omitempty"`
}

// PoolReport is one pool in a StatsReport.
type PoolReport struct {
	Name          string `json:"name"`
	Closed        bool   `json:"closed"`
	Keys          int    `json:"keys"`
	KeysInBackoff int    `json:"keys_in_backoff"`
	MaxTotal      int    `json:"max_total"` // 0: no limit
	GaugesReport
	Counters CountersReport `json:"counters"`
	// PerKey lists the pool's keys, sorted, at most the request's limit.
	PerKey []KeyReport `json:"per_key,omitempty"`
	// KeysOmitted is how many keys the limit left out of PerKey.
	KeysOmitted int `json:"keys_omitted,omitempty"`
	// Health is the pool's factory health checks, when it has them.
	Health *HealthChecksReport `json:"health,omitempty"`
}

// KeyReport is one key of a pool in a StatsReport.
type KeyReport struct {
	Key          string `json:"key"`
	MakeFailures int    `json:"make_failures,omitempty"`
	// BackoffUntil is when the key's make backoff ends, RFC 3339; empty
	// when it is not in backoff.
	BackoffUntil string `json:"backoff_until,omitempty"`
	// ShareCap is keyedpool.KeyStats.ShareCap: the leases one connection
	// of the key may carry, as its connections last learned it (for a
	// gRPC connection, the SETTINGS_MAX_CONCURRENT_STREAMS of its
	// server); 0 when none has learned one (the server sets no limit, the
	// pool lends no shared leases, or no connection has been made).
	ShareCap int `json:"share_cap"`
	GaugesReport
	Counters CountersReport `json:"counters"`
}

// GaugesReport is keyedpool.Gauges in JSON.
type GaugesReport struct {
	Active      int `json:"active"`
	Idle        int `json:"idle"`
	Making      int `json:"making"`
	Waiters     int `json:"waiters"`
	SharesInUse int `json:"shares_in_use"`
}

// CountersReport is keyedpool.Counters in JSON, durations in seconds.
type CountersReport struct {
	Borrowed        int64            `json:"borrowed"`
	Returned        int64            `json:"returned"`
	Created         int64            `json:"created"`
	Destroyed       int64            `json:"destroyed"`
	DestroyedBy     map[string]int64 `json:"destroyed_by"`
	MakeErrors      int64            `json:"make_errors"`
	BackoffRejected int64            `json:"backoff_rejected"`
	EvictionTests   int64            `json:"eviction_tests"`
	Waited          int64            `json:"waited"`
	WaitSeconds     float64          `json:"wait_seconds"`
	MaxWaitSeconds  float64          `json:"max_wait_seconds"`
}

// HealthChecksReport is HealthStats in JSON.
type HealthChecksReport struct {
	Serving    int64    `json:"serving"`
	NotServing int64    `json:"not_serving"`
	Failed     int64    `json:"failed"`
	Targets    int      `json:"targets"`
	Unhealthy  []string `json:"unhealthy,omitempty"`
}

// ServiceReport is ServiceStats in JSON.
type ServiceReport struct {
	Service string `json:"service"`
	// Watch says why the service is watched, and so judged by /health:
	// "kept" for a service named to Router.Watch (one a program is
	// configured with), watched until Router.Forget; "used" for one
	// watched since a Borrow, Conn or Endpoints call, whose watch ends
	// after the Router's IdleTimeout without a use.
	Watch     string `json:"watch"`
	Endpoints int    `json:"endpoints"`
	Usable    int    `json:"usable"`
	Updates   int64  `json:"updates"`
	Errors    int64  `json:"errors"`
	LastError string `json:"last_error,omitempty"`
}

// HealthReport is the JSON body of /health.
type HealthReport struct {
	// Status is "ok" (HTTP 200) when every pool is open and every service
	// has a usable endpoint, "unhealthy" (HTTP 503) otherwise.
	Status string `json:"status"`
	// Reasons says what is unhealthy, one line each.
	Reasons []string     `json:"reasons,omitempty"`
	Pools   []PoolHealth `json:"pools"`
	// Services are the services judged: those the routers watch now,
	// each saying why (ServiceReport.Watch). A service forgotten, or
	// dropped after its router's IdleTimeout, is neither listed nor
	// judged.
	Services []ServiceReport `json:"services,omitempty"`
}

// PoolHealth is one pool in a HealthReport.
type PoolHealth struct {
	Name string `json:"name"`
	Open bool   `json:"open"`
	// Unhealthy lists the targets whose latest health Check failed.
	Unhealthy []string `json:"unhealthy,omitempty"`
}

func gaugesReport(g keyedpool.Gauges) GaugesReport {
	return GaugesReport{Active: g.Active, Idle: g.Idle, Making: g.Making, Waiters: g.Waiters, SharesInUse: g.SharesInUse}
}

func countersReport(c keyedpool.Counters) CountersReport {
	by := make(map[string]int64)
	for _, r := range destroyReasons(c) {
		by[r.reason] = r.n
	}
	return CountersReport{
		Borrowed: c.Borrowed, Returned: c.Returned, Created: c.Created,
		Destroyed: c.Destroyed, DestroyedBy: by, MakeErrors: c.MakeErrors,
		BackoffRejected: c.BackoffRejected, EvictionTests: c.EvictionTests,
		Waited: c.Waited, WaitSeconds: c.WaitTime.Seconds(), MaxWaitSeconds: c.MaxWaitTime.Seconds(),
	}
}

func serviceReport(s ServiceStats) ServiceReport {
	watch := "used"
	if s.Kept {
		watch = "kept"
	}
	return ServiceReport{Service: s.Service, Watch: watch, Endpoints: s.Endpoints, Usable: s.Usable, Updates: s.Updates, Errors: s.Errors, LastError: s.LastError}
}

// poolReport reports v; with key set, only that key (ok is false when v does
// not hold it), else up to limit keys.
func poolReport(v *poolView, key string, limit int) (r PoolReport, ok bool) {
	s := v.stats()
	r = PoolReport{
		Name: v.name, Closed: s.Closed, Keys: s.Keys, KeysInBackoff: s.KeysInBackoff,
		MaxTotal: v.config().MaxTotal, GaugesReport: gaugesReport(s.Gauges), Counters: countersReport(s.Counters),
	}
	if v.health != nil {
		h := v.health.HealthStats()
		r.Health = &HealthChecksReport{Serving: h.Serving, NotServing: h.NotServing, Failed: h.Failed, Targets: h.Targets, Unhealthy: h.Unhealthy}
	}
	all := v.keyStats()
	keys := make([]string, 0, len(all))
	for k := range all {
		if key == "" || k == key {
			keys = append(keys, k)
		}
	}
	if key != "" && len(keys) == 0 {
		return r, false
	}
	slices.SortFunc(keys, cmp.Compare)
	if len(keys) > limit {
		r.KeysOmitted = len(keys) - limit
		keys = keys[:limit]
	}
	for _, k := range keys {
		ks := all[k]
		kr := KeyReport{Key: k, MakeFailures: ks.MakeFailures, ShareCap: ks.ShareCap, GaugesReport: gaugesReport(ks.Gauges), Counters: countersReport(ks.Counters)}
		if !ks.BackoffUntil.IsZero() {
			kr.BackoffUntil = ks.BackoffUntil.UTC().Format("2006-01-02T15:04:05.000Z07:00")
		}
		r.PerKey = append(r.PerKey, kr)
	}
	return r, true
}

// healthReport judges the services, and the pools when judgePools is set.
func healthReport(pools []*poolView, services []ServiceStats, judgePools bool) HealthReport {
	h := HealthReport{Status: "ok", Pools: []PoolHealth{}}
	for _, v := range pools {
		ph := PoolHealth{Name: v.name, Open: !v.stats().Closed}
		if v.health != nil {
			ph.Unhealthy = v.health.HealthStats().Unhealthy
		}
		if !ph.Open && judgePools {
			h.Reasons = append(h.Reasons, fmt.Sprintf("pool %q is closed", v.name))
		}
		h.Pools = append(h.Pools, ph)
	}
	for _, s := range services {
		if s.Usable == 0 {
			why := fmt.Sprintf("service %q has no usable endpoint (%d known)", s.Service, s.Endpoints)
			if s.LastError != "" {
				why += ": " + s.LastError
			}
			h.Reasons = append(h.Reasons, why)
		}
		h.Services = append(h.Services, serviceReport(s))
	}
	if len(h.Reasons) > 0 {
		h.Status = "unhealthy"
	}
	return h
}

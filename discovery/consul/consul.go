package consul

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/internal/broadcast"
)

// Resolver finds services in Consul. Make one with New. Its methods are
// safe for concurrent use.
type Resolver struct {
	cfg    Config
	health *api.Health
	idle   func() // closes the idle connections of the Resolver's own HTTP client; nil with Config.HTTPClient
	q      api.QueryOptions

	loops broadcast.Loops[[]discovery.Endpoint] // one blocking query per service, shared by its watches
}

var _ discovery.Resolver = (*Resolver)(nil)

// New returns a Resolver for cfg. It refuses an invalid cfg with the error
// of cfg.Validate, which names every invalid field. It does not contact
// Consul: watches do.
func New(cfg Config) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Tags = slices.Clone(cfg.Tags)

	ac := api.DefaultConfig()
	if cfg.Address != "" {
		ac.Address = cfg.Address
	}
	if cfg.Token != "" {
		ac.Token = cfg.Token
	}
	if cfg.TLS != nil {
		ac.Scheme = "https"
		ac.TLSConfig = *cfg.TLS
	}
	r := &Resolver{cfg: cfg}
	if cfg.HTTPClient != nil {
		ac.HttpClient = cfg.HTTPClient
	} else {
		tr := ac.Transport
		r.idle = tr.CloseIdleConnections
	}
	c, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	r.health = c.Health()
	r.q = api.QueryOptions{Datacenter: cfg.Datacenter, AllowStale: cfg.AllowStale, WaitTime: cfg.WaitTime}
	return r, nil
}

// Watch delivers the endpoints of service to w: at once if another watch of
// the service already knows them, else after the first query; then every
// change, and every failed query as an error, until ctx ends. It returns
// ctx.Err() then, once the service's query has stopped if this was its last
// watch.
func (r *Resolver) Watch(ctx context.Context, service string, w discovery.Watcher) error {
	if service == "" {
		return fmt.Errorf("consul: empty service name")
	}
	run := func(ctx context.Context, hub *broadcast.Hub[[]discovery.Endpoint]) { r.run(ctx, service, hub) }
	last, err := r.loops.Serve(ctx, service, run, w.Update, w.Error)
	if last && r.idle != nil {
		r.idle()
	}
	return err
}

// run queries service until ctx ends, publishing each new list of endpoints
// and each failure to hub. The query after a failed one, and after an
// answer whose index went backwards, carries no index: Consul answers it at
// once.
func (r *Resolver) run(ctx context.Context, service string, hub *broadcast.Hub[[]discovery.Endpoint]) {
	var (
		index     uint64
		published bool
		last      []discovery.Endpoint
		fails     int
	)
	for ctx.Err() == nil {
		q := r.q // a copy per query
		q.WaitIndex = index
		entries, meta, err := r.health.ServiceMultipleTags(service, r.cfg.Tags, false, q.WithContext(ctx))
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			hub.Fail(fmt.Errorf("consul: service %q: %w", service, err))
			fails++
			// Start over, as Consul's own watch package does: the agent
			// that answers next may be a restarted one whose index is
			// below ours, and it would hold a query with ours for all of
			// WaitTime before answering.
			index = 0
			if !sleep(ctx, backoff(r.cfg.BackoffBase, r.cfg.BackoffMax, fails, rand.Float64())) {
				return
			}
			continue
		}
		recovered := fails > 0
		fails = 0
		index = nextIndex(index, meta.LastIndex)
		eps := endpoints(entries, r.cfg.FallbackToAll)
		// After failures, the same list again too: it is what says the
		// queries succeed again (LastError clears).
		if !published || recovered || !equal(eps, last) {
			hub.Publish(eps)
			published, last = true, eps
		}
	}
}

// nextIndex is the WaitIndex of the query after one that was sent with prev
// and answered with got. Consul's documentation asks clients to start over
// (index 0, an answer at once) when the index goes backwards, and to send
// 1 rather than 0 when Consul answers 0, which would otherwise make every
// query return at once.
func nextIndex(prev, got uint64) uint64 {
	switch {
	case got == 0:
		return 1
	case got < prev:
		return 0
	}
	return got
}

// backoff returns the wait before retry number n (1 for the first) after
// failed queries: base doubled n-1 times, capped at limit, scaled by
// 0.5+0.5*u for u in [0, 1). For 0 <= base <= limit it lies between
// base/2 and limit whatever n and u are, in constant time.
func backoff(base, limit time.Duration, n int, u float64) time.Duration {
	// Doubling d until it passes limit overflows when limit is near
	// MaxInt64 (and never ends for n = MaxInt), so compare base with limit
	// shifted right instead: base<<s cannot overflow when base <= limit>>s.
	d := limit
	if s := uint(max(n, 1) - 1); base <= limit>>s {
		d = base << s
	}
	h := d / 2
	// h <= 2^62, so the product converts without overflow; the clamp keeps
	// float rounding (and a u outside [0, 1)) from leaving [h, d].
	return h + min(max(time.Duration(u*float64(h)), 0), d-h)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

package metrics

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kpool-go/kpool/keyedpool"
)

// ErrInvalid is wrapped by the errors of New and AddPool for bad input; the
// message names the field or argument.
var ErrInvalid = errors.New("metrics: invalid argument")

// OtherKey is the key label value under which keys beyond
// Options.MaxKeySeries are summed.
const OtherKey = "__other__"

// DefaultMaxKeySeries is Options.MaxKeySeries when it is zero.
const DefaultMaxKeySeries = 100

// Options configure a Metrics. The zero value is valid: no name prefix, no
// per-key series.
type Options struct {
	// Namespace prefixes every metric name, joined with "_": "myapp" makes
	// myapp_grpc_pool_size. Empty: no prefix. It must be a valid
	// Prometheus name.
	Namespace string

	// PerKey adds per-key series: the grpc_pool_key_* families for every
	// pool, and a key label on grpc_requests_total and
	// grpc_request_duration_seconds (the families of grpcmetrics.Observer).
	// False, the default: pools are exported as wholes and RPCs by method
	// and code only, whatever the number of keys.
	PerKey bool

	// MaxKeySeries caps, per pool and for the gRPC traffic, how many keys
	// get series of their own when PerKey is set. Keys get a series first
	// come, first served and keep it while their pool holds them; the rest
	// are summed under the key OtherKey, so that a pool with 100,000 keys
	// exports MaxKeySeries+1 series per family. Zero: 100. Negative is
	// invalid.
	MaxKeySeries int
}

var validName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// Metrics is the set of pools and service sources one process exports, with
// the Prometheus collectors over them and the HTTP endpoints that read
// them. It is safe for concurrent use.
type Metrics struct {
	opts   Options
	reg    prometheus.Registerer
	descs  *descs
	others int // the resolved MaxKeySeries

	mu       sync.Mutex             // protects the fields below
	cs       []prometheus.Collector // registered on reg by New and Register
	pools    []*poolView
	services []ServiceSource
}

// New returns a Metrics and registers its collectors on reg, which is
// required: pass prometheus.DefaultRegisterer to use the global registry.
// It refuses invalid opts, or a nil reg, with an error wrapping ErrInvalid,
// and returns reg's error if registration fails (for example a second
// Metrics with the same Namespace on the same registry).
func New(reg prometheus.Registerer, opts Options) (*Metrics, error) {
	switch {
	case reg == nil:
		return nil, fmt.Errorf("%w: the Registerer is nil, want a registry (prometheus.NewRegistry())", ErrInvalid)
	case opts.Namespace != "" && !validName.MatchString(opts.Namespace):
		return nil, fmt.Errorf("%w: Options.Namespace %q is not a valid Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)", ErrInvalid, opts.Namespace)
	case opts.MaxKeySeries < 0:
		return nil, fmt.Errorf("%w: Options.MaxKeySeries is %d, want 0 (default %d) or more", ErrInvalid, opts.MaxKeySeries, DefaultMaxKeySeries)
	}
	m := &Metrics{opts: opts, descs: newDescs(opts), others: opts.MaxKeySeries}
	if m.others == 0 {
		m.others = DefaultMaxKeySeries
	}
	// One collector: a registration that fails leaves nothing of it on reg.
	c := (*collector)(m)
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("metrics: register: %w", err)
	}
	m.reg, m.cs = reg, []prometheus.Collector{c}
	return m, nil
}

// Options returns the options m was made with, MaxKeySeries resolved
// (DefaultMaxKeySeries for zero): what families kept apart from m's own,
// such as grpcmetrics.Observer's, follow.
func (m *Metrics) Options() Options {
	o := m.opts
	o.MaxKeySeries = m.others
	return o
}

// Register registers c on the registry m's collectors are on, as one of
// them: Unregister takes it off with the rest. It is how families kept
// apart from the pool collectors, such as grpcmetrics.Observer's, join m.
// It returns the registry's error (for example, c's families are already
// registered), and then c is not one of m's collectors.
func (m *Metrics) Register(c prometheus.Collector) error {
	if err := m.reg.Register(c); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cs = append(m.cs, c)
	return nil
}

// Unregister takes m's collectors (those of New and of Register) off the
// registry New registered them on, so that their series leave /metrics and
// a new Metrics with the same Namespace can be registered in their place.
// m's pools, services and the Observer made over it keep working, and
// /health and /stats still read them. It reports whether all of m's
// collectors were registered: false the second time.
func (m *Metrics) Unregister() bool {
	m.mu.Lock()
	cs := slices.Clone(m.cs)
	m.mu.Unlock()
	ok := true
	for _, c := range cs {
		ok = m.reg.Unregister(c) && ok
	}
	return ok
}

// AddPool adds p to m under name, the value of the pool label; health, if
// not nil, adds the health-check counters of p's factory
// (grpcmetrics.FactoryHealth for a *grpcpool.Factory; give a factory
// shared by several pools to one of them only, or its checks are counted
// once per pool). Keys appear in labels and /stats as text: a string key
// as is, a fmt.Stringer's String, anything else in Go syntax (%#v). It
// refuses an empty name, a name already added, or a nil pool, with an
// error wrapping ErrInvalid. A closed pool stays exported (grpc_pool_up 0,
// and /health reports it) until RemovePool.
func AddPool[K comparable, V any](m *Metrics, name string, p *keyedpool.Pool[K, V], health HealthSource) error {
	if p == nil {
		return fmt.Errorf("%w: pool %q is nil", ErrInvalid, name)
	}
	return m.add(&poolView{
		name:   name,
		stats:  p.Stats,
		config: p.Config,
		keyStats: func() map[string]keyedpool.KeyStats {
			all := p.AllKeyStats()
			out := make(map[string]keyedpool.KeyStats, len(all))
			for k, ks := range all {
				s := keyString(k)
				if prev, ok := out[s]; ok {
					ks = mergeKeyStats(prev, ks) // two keys with one text: report their sum
				}
				out[s] = ks
			}
			return out
		},
		health: health,
		series: map[string]struct{}{},
	})
}

func (m *Metrics) add(v *poolView) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v.name == "" {
		return fmt.Errorf("%w: pool name is empty", ErrInvalid)
	}
	if slices.ContainsFunc(m.pools, func(o *poolView) bool { return o.name == v.name }) {
		return fmt.Errorf("%w: pool %q is already added", ErrInvalid, v.name)
	}
	m.pools = append(m.pools, v)
	slices.SortFunc(m.pools, func(a, b *poolView) int { return cmp.Compare(a.name, b.name) })
	return nil
}

// RemovePool stops exporting the pool added under name, and reports whether
// there was one.
func (m *Metrics) RemovePool(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.pools)
	m.pools = slices.DeleteFunc(m.pools, func(v *poolView) bool { return v.name == name })
	return len(m.pools) < n
}

// AddServices adds a source of services (grpcmetrics.RouterServices for a
// *discovery.Router): its services are exported by the
// grpc_service_discovery_* families and /health requires each to have a
// usable endpoint.
func (m *Metrics) AddServices(src ServiceSource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.services = append(m.services, src)
}

// snapshot returns the pools and sources, copied under the lock so that
// reading them (which takes each pool's lock) happens outside it.
func (m *Metrics) snapshot() ([]*poolView, []ServiceSource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.pools), slices.Clone(m.services)
}

// serviceStats returns every source's services, sorted by name.
func serviceStats(srcs []ServiceSource) []ServiceStats {
	var all []ServiceStats
	for _, s := range srcs {
		all = append(all, s.Services()...)
	}
	slices.SortStableFunc(all, func(a, b ServiceStats) int { return cmp.Compare(a.Service, b.Service) })
	return all
}

// keyString is the text of a key in labels and /stats: a string key itself,
// a fmt.Stringer's String, otherwise Go syntax (%#v), which tells apart keys
// that fmt.Sprint would print alike. Invalid UTF-8 is replaced, as label
// values must be UTF-8.
func keyString(k any) string {
	var s string
	switch k := k.(type) {
	case string:
		s = k
	case fmt.Stringer:
		s = k.String()
	default:
		s = fmt.Sprintf("%#v", k)
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// mergeKeyStats adds b to a, for keys whose texts are the same.
func mergeKeyStats(a, b keyedpool.KeyStats) keyedpool.KeyStats {
	addKeyStats(&a, b)
	a.MakeFailures = max(a.MakeFailures, b.MakeFailures)
	if b.BackoffUntil.After(a.BackoffUntil) {
		a.BackoffUntil = b.BackoffUntil
	}
	return a
}

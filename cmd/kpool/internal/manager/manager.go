// Package manager wires a configuration file to a discovery.Router, for
// the kpool start command: one keyedpool of gRPC connections
// (grpcpool), keyed by endpoint address, behind one Router whose
// discovery.Mux finds each service through the static list, the Consul
// settings or the DNS name its file section gives (one resolver per
// distinct Consul or DNS setting), and a reload of the file applied in
// place. Watching, warming and draining endpoints are the Router's.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/consul"
	"github.com/kpool-go/kpool/discovery/dns"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

// Client is a pooled connection. Its stub is the connection itself: make
// any generated stub from it, pb.NewFooClient(c.Stub()), or route RPCs by
// service with Router().Conn(service).
type Client = grpcpool.Client[grpc.ClientConnInterface]

// Pool is the manager's pool, keyed by endpoint address.
type Pool = keyedpool.Pool[string, *Client]

// Router is the manager's router.
type Router = discovery.Router[grpc.ClientConnInterface]

// Factory is the manager's connection factory.
type Factory = grpcpool.Factory[string, grpc.ClientConnInterface]

// DefaultWarmInterval is Options.WarmInterval's default.
const DefaultWarmInterval = 5 * time.Second

// Options configure a Manager. The zero value is valid.
type Options struct {
	// Logger receives the manager's records and the Router's (endpoints
	// added and removed, warm-ups that fail and recover). Nil:
	// slog.Default().
	Logger *slog.Logger
	// WarmInterval is the Router's discovery.RouterConfig.WarmInterval:
	// how often it tops every endpoint up to MinIdlePerKey again (one that
	// was down when it arrived, or lost connections). Zero or negative:
	// DefaultWarmInterval.
	WarmInterval time.Duration
	// Observer, if set, is the factory's grpcpool.Config.Observer:
	// a grpcmetrics.Observer counts the RPCs of the pool's connections.
	Observer grpcpool.Observer
}

// Manager owns the Router for a configuration. Its methods are safe for
// concurrent use.
type Manager struct {
	router  *Router
	factory *Factory
	static  *static.Resolver // the static services' lists, which Apply changes
	mux     *discovery.Mux
	log     *slog.Logger

	applyMu sync.Mutex // serializes Apply

	mu  sync.Mutex // protects cfg
	cfg *config.File
}

// New builds the Router that cfg describes and starts watching every
// service of the file: the Router warms each endpoint as it arrives, and
// again every WarmInterval. Close it when done.
func New(cfg *config.File, opts Options) (*Manager, error) {
	fc := config.FactoryConfig(cfg, identity)
	fc.Observer = opts.Observer
	f, err := grpcpool.New(fc)
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	m := &Manager{factory: f, static: &static.Resolver{}, mux: &discovery.Mux{}, log: opts.Logger, cfg: cfg}
	if m.log == nil {
		m.log = slog.Default()
	}
	warm := opts.WarmInterval
	if warm <= 0 {
		warm = DefaultWarmInterval
	}
	for i, s := range cfg.Services {
		if err := m.route(cfg, i, s); err != nil {
			return nil, err
		}
	}
	m.router, err = discovery.NewRouter(discovery.RouterConfig[grpc.ClientConnInterface]{
		Resolver:     m.mux,
		Factory:      f,
		Pool:         cfg.KeyedPool(),
		NewBalancer:  cfg.Balancer.New,
		WarmInterval: warm,
		Logger:       m.log,
	})
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	for _, s := range cfg.Services {
		_ = m.router.Watch(s.Name) // open: just made
	}
	return m, nil
}

// route routes the service s, the file's i-th, to its resolver.
func (m *Manager) route(cfg *config.File, i int, s config.Service) error {
	d := s.Discovery
	switch {
	case d.Static != nil:
		m.static.Set(s.Name, staticEndpoints(d.Static.Addresses))
		m.mux.Route(s.Name, m.static, s.Name)
	case d.Consul != nil:
		if _, err := discovery.RouteConfig(m.mux, s.Name, d.Consul.Service, cfg.ConsulConfig(d.Consul), consul.New); err != nil {
			return cfg.ErrorAt(fmt.Sprintf("services[%d].discovery.consul", i), "%v", err)
		}
	case d.DNS != nil:
		if _, err := discovery.RouteConfig(m.mux, s.Name, d.DNS.Name, cfg.DNSConfig(d.DNS), dns.New); err != nil {
			return cfg.ErrorAt(fmt.Sprintf("services[%d].discovery.dns", i), "%v", err)
		}
	}
	return nil
}

func identity(cc grpc.ClientConnInterface) grpc.ClientConnInterface { return cc }

func staticEndpoints(addrs []string) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = discovery.Endpoint{Address: a}
	}
	return eps
}

// Router returns the router, for routed traffic (Conn, Borrow) and its
// services' statistics. It stays the same for the Manager's life.
func (m *Manager) Router() *Router { return m.router }

// Pool returns the router's pool, keyed by endpoint address.
func (m *Manager) Pool() *Pool { return m.router.Pool() }

// Factory returns the connection factory, for its health-check counts.
func (m *Manager) Factory() *Factory { return m.factory }

// Config returns the configuration file last applied. Its pool section
// and static addresses are in effect; its other sections are those of the
// file given to New until a restart.
func (m *Manager) Config() *config.File {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// Addresses returns the endpoints the Router knows of every service, each
// once: the services of the file first, in its order, then the others the
// Router still watches (a reload removed them), by name. It does not wait
// for first lookups.
func (m *Manager) Addresses() []string {
	var names []string
	for _, s := range m.Config().Services {
		names = append(names, s.Name)
	}
	for _, s := range m.router.Services() { // sorted by name
		if !slices.Contains(names, s.Service) {
			names = append(names, s.Service)
		}
	}
	now, cancel := context.WithCancel(context.Background())
	cancel() // a snapshot, not a wait: every service here is watched already
	var all []string
	for _, name := range names {
		eps, _ := m.router.Endpoints(now, name)
		for _, e := range eps {
			if a := e.Addr(); !slices.Contains(all, a) {
				all = append(all, a)
			}
		}
	}
	return all
}

// Ready waits, bounded by ctx, for the first lookup of every service of
// the file. It returns, joined, the errors of the services that have no
// endpoints then, each naming its service.
func (m *Manager) Ready(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, s := range m.Config().Services {
		wg.Go(func() {
			eps, err := m.router.Endpoints(ctx, s.Name)
			if err == nil && len(eps) == 0 {
				err = fmt.Errorf("%w: service %q", discovery.ErrNoEndpoints, s.Name)
			} else if err != nil && !errors.Is(err, discovery.ErrNoEndpoints) {
				err = fmt.Errorf("service %q: %w", s.Name, err)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Apply puts a reloaded configuration into effect without dropping
// traffic: the pool's limits and evictor settings through SetConfig
// (lowered limits never touch lent connections, and the Router tops
// endpoints up to a raised min_idle_per_key at once), and the addresses
// of static services, through the static resolver (the Router warms
// arriving endpoints and drains leaving ones); a static service new in the
// file is watched at once. It refuses, changing nothing, a change of
// pool.max_shares_per_object (fixed when the pool is made) or a pool
// section SetConfig refuses. Changes it cannot make in place are logged as
// needing a restart and the running ones kept: the grpc, http, metrics,
// name and balancer sections, a service's Consul or DNS settings or kind
// of discovery, a new Consul or DNS service, a service removed from the
// file.
func (m *Manager) Apply(cfg *config.File) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	pool := m.Pool()
	pc := cfg.KeyedPool()
	if running, want := pool.Config().MaxSharesPerObject, max(pc.MaxSharesPerObject, 1); running != want {
		return cfg.ErrorAt("pool.max_shares_per_object", "cannot change while kpool runs (running %d, file %d); restart to change it",
			running, want)
	}
	if err := pool.SetConfig(pc); err != nil {
		return cfg.ErrorAt("pool", "%v", err)
	}

	m.mu.Lock()
	old := m.cfg
	m.mu.Unlock()
	// What runs from now on: cfg, but with the sections that need a
	// restart as they were, so that the next reload is compared with what
	// runs, not with what a file asked for in vain.
	eff := *cfg
	eff.GRPC, eff.HTTP, eff.Metrics, eff.Name, eff.Balancer = old.GRPC, old.HTTP, old.Metrics, old.Name, old.Balancer
	eff.Services = nil

	var restart []string
	if !reflect.DeepEqual(old.GRPC, cfg.GRPC) {
		restart = append(restart, "grpc")
	}
	if old.HTTP != cfg.HTTP {
		restart = append(restart, "http")
	}
	if old.Metrics != cfg.Metrics {
		restart = append(restart, "metrics")
	}
	if old.Name != cfg.Name {
		restart = append(restart, "name")
	}
	if old.Balancer != cfg.Balancer {
		restart = append(restart, "balancer")
	}
	running := map[string]config.Service{}
	for _, s := range old.Services {
		running[s.Name] = s
	}
	var added []string
	for _, s := range cfg.Services {
		o, had := running[s.Name]
		delete(running, s.Name)
		switch {
		case s.Discovery.Static != nil && (!had || o.Discovery.Static != nil):
			if !had {
				m.mux.Route(s.Name, m.static, s.Name)
				added = append(added, s.Name)
			}
			if !had || !slices.Equal(o.Discovery.Static.Addresses, s.Discovery.Static.Addresses) {
				m.static.Set(s.Name, staticEndpoints(s.Discovery.Static.Addresses))
			}
			eff.Services = append(eff.Services, s)
		case had && reflect.DeepEqual(o.Discovery, s.Discovery):
			eff.Services = append(eff.Services, s)
		case had:
			restart = append(restart, fmt.Sprintf("services[%s].discovery", s.Name))
			eff.Services = append(eff.Services, o)
		default:
			restart = append(restart, fmt.Sprintf("services[%s] (new, %s)", s.Name, kind(s.Discovery)))
		}
	}
	for _, name := range sortedKeys(running) {
		restart = append(restart, fmt.Sprintf("services[%s] (removed)", name))
		eff.Services = append(eff.Services, running[name])
	}
	m.mu.Lock()
	m.cfg = &eff
	m.mu.Unlock()
	if len(restart) > 0 {
		m.log.Warn("changed sections apply after a restart; running with the old ones", "sections", restart)
	}
	for _, name := range added {
		m.log.Info("service added", "service", name)
		_ = m.router.Watch(name) // ErrClosed: shutting down, nothing to watch
	}
	m.router.Warm() // a raised min_idle_per_key, at once
	return nil
}

// kind names a service's kind of discovery as its file section does.
func kind(d config.Discovery) string {
	switch {
	case d.Consul != nil:
		return "consul"
	case d.DNS != nil:
		return "dns"
	}
	return "static"
}

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Services returns the names of the services the Router watches.
func (m *Manager) Services() []string {
	var names []string
	for _, s := range m.router.Services() {
		names = append(names, s.Service)
	}
	return names
}

// Close closes the Router: no more borrows, the watches stopped, idle
// connections closed, and a wait, bounded by ctx, for lent ones to come
// back. See discovery.Router.Close.
func (m *Manager) Close(ctx context.Context) error { return m.router.Close(ctx) }

// Package manager runs the services of the kpool start command: one
// discovery.Router over one keyedpool of gRPC connections (grpcfactory),
// keyed by endpoint address, built from a configuration file, its services
// found through static lists or Consul, its endpoints kept warm, and
// changed in place when the file is reloaded.
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

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/consul"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/config"
	"github.com/kpool-go/kpool/keyedpool"
)

// Client is a pooled connection. Its stub is the connection itself: make
// any generated stub from it, pb.NewFooClient(c.Stub()), or route RPCs by
// service with Router().Conn(service).
type Client = grpcfactory.Client[grpc.ClientConnInterface]

// Pool is the manager's pool, keyed by endpoint address.
type Pool = keyedpool.Pool[string, *Client]

// Router is the manager's router.
type Router = discovery.Router[grpc.ClientConnInterface]

// Factory is the manager's connection factory.
type Factory = grpcfactory.Factory[string, grpc.ClientConnInterface]

// DefaultWarmInterval is how often, by default, the manager tops every
// endpoint up to MinIdlePerKey idle connections.
const DefaultWarmInterval = 5 * time.Second

// Options configure a Manager. The zero value is valid.
type Options struct {
	// Logger receives the manager's records. Nil: slog.Default().
	Logger *slog.Logger
	// WarmInterval is how often Run tops every endpoint up to
	// MinIdlePerKey idle connections. The Router warms an endpoint when it
	// arrives; this warms again one that was down then, lost connections,
	// or is short after a reload raised pool.min_idle_per_key. Zero or
	// negative: DefaultWarmInterval.
	WarmInterval time.Duration
	// Observer, if set, is the factory's grpcfactory.Config.Observer:
	// metrics.Metrics.Observer() counts the RPCs of the pool's
	// connections.
	Observer grpcfactory.Observer
}

// Manager owns the Router for a configuration. Its methods are safe for
// concurrent use.
type Manager struct {
	router    *Router
	factory   *Factory
	static    *static.Resolver
	res       *Resolver
	log       *slog.Logger
	warmEvery time.Duration
	wake      chan struct{} // 1-buffered: the pool config changed, warm now

	applyMu sync.Mutex // serializes Apply

	mu    sync.Mutex // protects the fields below; held for no I/O
	cfg   *config.File
	eps   map[string][]string  // service -> the addresses its resolver last delivered
	since map[string]time.Time // address -> when some service first listed it
	down  map[string]bool      // addresses whose last warm-up failed, so a failure is logged once
}

// New builds the Router that cfg describes: a static resolver for the
// services with static discovery, a consul.Resolver per distinct Consul
// setting for the others. It does not connect: Run does.
func New(cfg *config.File, opts Options) (*Manager, error) {
	fc := config.FactoryConfig(cfg, identity)
	fc.Observer = opts.Observer
	f, err := grpcfactory.New(fc)
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	m := &Manager{
		factory:   f,
		static:    &static.Resolver{},
		log:       opts.Logger,
		warmEvery: opts.WarmInterval,
		wake:      make(chan struct{}, 1),
		cfg:       cfg,
		eps:       map[string][]string{},
		since:     map[string]time.Time{},
		down:      map[string]bool{},
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.warmEvery <= 0 {
		m.warmEvery = DefaultWarmInterval
	}
	m.res = &Resolver{seen: m.seen}
	consuls := map[string]*consul.Resolver{}
	for i, s := range cfg.Services {
		if st := s.Discovery.Static; st != nil {
			m.static.Set(s.Name, staticEndpoints(st.Addresses))
			m.res.Route(s.Name, m.static, s.Name)
			continue
		}
		co := s.Discovery.Consul
		cc := cfg.ConsulConfig(co)
		key := consulKey(cc)
		res := consuls[key]
		if res == nil {
			if res, err = consul.New(cc); err != nil {
				return nil, cfg.ErrorAt(fmt.Sprintf("services[%d].discovery.consul", i), "%v", err)
			}
			consuls[key] = res
		}
		m.res.Route(s.Name, res, co.Service)
	}
	m.router, err = discovery.NewRouter(discovery.RouterConfig[grpc.ClientConnInterface]{
		Resolver:    m.res,
		Factory:     f,
		Pool:        cfg.KeyedPool(),
		NewBalancer: cfg.Balancer.New,
	})
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	return m, nil
}

func identity(cc grpc.ClientConnInterface) grpc.ClientConnInterface { return cc }

// consulKey tells apart the Consul settings that need resolvers of their
// own: services that differ only in their name share one.
func consulKey(c consul.Config) string {
	return fmt.Sprintf("%#v|%#v", c, c.TLS)
}

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

// Addresses returns the endpoints of every service, as their resolvers
// last delivered them, each once, in the order of the services in the file.
func (m *Manager) Addresses() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var all []string
	for _, s := range m.cfg.Services {
		for _, a := range m.eps[s.Name] {
			if !slices.Contains(all, a) {
				all = append(all, a)
			}
		}
	}
	// Services a reload removed keep running until a restart.
	for _, name := range sortedKeys(m.eps) {
		for _, a := range m.eps[name] {
			if !slices.Contains(all, a) {
				all = append(all, a)
			}
		}
	}
	return all
}

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// seen records and logs the endpoints a service's resolver delivered.
func (m *Manager) seen(service string, eps []discovery.Endpoint) {
	addrs := make([]string, 0, len(eps))
	for _, e := range eps {
		if a := e.Addr(); !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	m.mu.Lock()
	old := m.eps[service]
	m.eps[service] = addrs
	var added, removed []string
	for _, a := range addrs {
		if !slices.Contains(old, a) {
			added = append(added, a)
		}
		if _, ok := m.since[a]; !ok {
			m.since[a] = time.Now()
		}
	}
	for _, a := range old {
		if slices.Contains(addrs, a) {
			continue
		}
		removed = append(removed, a)
		if !m.listedLocked(a) {
			delete(m.since, a)
			delete(m.down, a)
		}
	}
	m.mu.Unlock()
	for _, a := range removed {
		m.log.Info("endpoint removed", "addr", a, "service", service)
	}
	for _, a := range added {
		m.log.Info("endpoint added", "addr", a, "service", service)
	}
}

// listedLocked reports whether some service lists addr.
func (m *Manager) listedLocked(addr string) bool {
	for _, addrs := range m.eps {
		if slices.Contains(addrs, addr) {
			return true
		}
	}
	return false
}

// Ready starts watching every service of the file, and waits, bounded by
// ctx, for each one's first lookup. It returns, joined, the errors of the
// services that have no endpoints then, each naming its service.
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

// touch starts watching service, without waiting for its first lookup.
func (m *Manager) touch(service string) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _ = m.router.Endpoints(ctx, service)
}

// Run watches every service, and tops every endpoint up to MinIdlePerKey
// connections every WarmInterval and when Apply changes the pool's
// configuration, until ctx ends. Connection failures are logged (once
// until the endpoint recovers), never fatal: the pool retries them.
func (m *Manager) Run(ctx context.Context) {
	for _, s := range m.Config().Services {
		m.touch(s.Name)
	}
	t := time.NewTicker(m.warmEvery)
	defer t.Stop()
	var again <-chan time.Time // set when Warm left endpoints to the Router
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.wake:
		case <-again:
		}
		again = nil
		if m.warm(ctx) {
			again = time.After(settle)
		}
	}
}

// settle is how long after an endpoint arrives Warm leaves it to the
// Router, which warms arriving endpoints itself.
const settle = 250 * time.Millisecond

// Warm tops every endpoint up to MinIdlePerKey idle connections at once,
// all endpoints in parallel, bounded by ctx (and each connect by the grpc
// section's connect_timeout). Connections being made count as idle ones,
// and an endpoint that arrived within the last moment is left alone: the
// Router is warming it, and two warm-ups at once would overshoot.
func (m *Manager) Warm(ctx context.Context) { m.warm(ctx) }

// warm is Warm; it reports whether it left an endpoint to the Router.
func (m *Manager) warm(ctx context.Context) (skipped bool) {
	pool := m.Pool()
	minIdle := pool.Config().MinIdlePerKey
	if minIdle == 0 {
		return false
	}
	var wg sync.WaitGroup
	for _, addr := range m.Addresses() {
		m.mu.Lock()
		fresh := time.Since(m.since[addr]) < settle
		m.mu.Unlock()
		ks := pool.KeyStats(addr)
		need := minIdle - ks.Idle - ks.Making
		if need <= 0 {
			continue
		}
		if fresh {
			skipped = true
			continue
		}
		wg.Go(func() {
			var err error
			for ; need > 0 && err == nil; need-- {
				err = pool.AddObject(ctx, addr)
			}
			if ctx.Err() != nil || errors.Is(err, keyedpool.ErrExhausted) ||
				errors.Is(err, keyedpool.ErrClosed) || errors.Is(err, discovery.ErrEndpointRemoved) {
				return // shutting down, the pool is full, or the endpoint left: not the endpoint's fault
			}
			m.mu.Lock()
			wasDown := m.down[addr]
			if m.listedLocked(addr) {
				m.down[addr] = err != nil
			}
			m.mu.Unlock()
			switch {
			case err != nil && !wasDown:
				m.log.Warn("cannot warm endpoint; retrying", "addr", addr, "err", err, "retry_every", m.warmEvery)
			case err == nil && wasDown:
				m.log.Info("endpoint warm again", "addr", addr)
			}
		})
	}
	wg.Wait()
	return skipped
}

// Apply puts a reloaded configuration into effect without dropping
// traffic: the pool's limits and evictor settings through SetConfig
// (lowered limits never touch lent connections), and the addresses of
// static services, through the static resolver (the Router warms arriving
// endpoints and drains leaving ones); a static service new in the file is
// watched at once. It refuses, changing nothing, a change of
// pool.max_shares_per_object (fixed when the pool is made) or a pool
// section SetConfig refuses. Changes it cannot make in place are logged as
// needing a restart and the running ones kept: the grpc, http, metrics,
// name and balancer sections, a service's Consul settings or kind of
// discovery, a new Consul service, a service removed from the file.
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
	m.cfg = cfg
	m.mu.Unlock()

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
				m.res.Route(s.Name, m.static, s.Name)
				added = append(added, s.Name)
			}
			if !had || !slices.Equal(o.Discovery.Static.Addresses, s.Discovery.Static.Addresses) {
				m.static.Set(s.Name, staticEndpoints(s.Discovery.Static.Addresses))
			}
		case had && reflect.DeepEqual(o.Discovery, s.Discovery):
		case had:
			restart = append(restart, fmt.Sprintf("services[%s].discovery", s.Name))
		default:
			restart = append(restart, fmt.Sprintf("services[%s] (new, consul)", s.Name))
		}
	}
	for _, name := range sortedKeys(running) {
		restart = append(restart, fmt.Sprintf("services[%s] (removed)", name))
	}
	if len(restart) > 0 {
		m.log.Warn("changed sections apply after a restart; running with the old ones", "sections", restart)
	}
	for _, name := range added {
		m.log.Info("service added", "service", name)
		m.touch(name)
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return nil
}

// Services returns the names of the services the Router serves.
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

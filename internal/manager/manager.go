// Package manager runs the pool of the kpool start command: one keyedpool
// of gRPC connections over grpcfactory, built from a configuration file and
// keyed by endpoint address, kept warm, and changed in place when the file
// is reloaded.
//
// For now it runs services with static discovery only; Consul services are
// refused with a clear error until discovery lands.
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

	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/config"
	"github.com/kpool-go/kpool/keyedpool"
)

// Client is a pooled connection. Its stub is the connection itself: make
// any generated stub from it, pb.NewFooClient(c.Stub()).
type Client = grpcfactory.Client[grpc.ClientConnInterface]

// Pool is the manager's pool, keyed by endpoint address.
type Pool = keyedpool.Pool[string, *Client]

// DefaultWarmInterval is how often, by default, the manager tops every
// endpoint up to MinIdlePerKey idle connections.
const DefaultWarmInterval = 5 * time.Second

// Options configure a Manager. The zero value is valid.
type Options struct {
	// Logger receives the manager's records. Nil: slog.Default().
	Logger *slog.Logger
	// WarmInterval is how often Run tops every endpoint up to
	// MinIdlePerKey idle connections, so that an endpoint that was down at
	// the start, or lost connections, is warmed again. Zero or negative:
	// DefaultWarmInterval.
	WarmInterval time.Duration
}

// Manager owns the pool for a configuration. Its methods are safe for
// concurrent use.
type Manager struct {
	pool      *Pool
	log       *slog.Logger
	warmEvery time.Duration
	wake      chan struct{} // 1-buffered: the addresses changed, warm now

	applyMu sync.Mutex // serializes Apply

	mu    sync.Mutex // protects the fields below; held for no I/O
	cfg   *config.File
	addrs []string
	down  map[string]bool // addresses whose last warm-up failed, so a failure is logged once
}

// New builds the pool that cfg describes. It does not connect: Run does.
func New(cfg *config.File, opts Options) (*Manager, error) {
	if err := runnable(cfg); err != nil {
		return nil, err
	}
	f, err := grpcfactory.New(config.FactoryConfig(cfg, identity))
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	p, err := keyedpool.New(f, cfg.KeyedPool())
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	m := &Manager{
		pool:      p,
		log:       opts.Logger,
		warmEvery: opts.WarmInterval,
		wake:      make(chan struct{}, 1),
		cfg:       cfg,
		addrs:     cfg.StaticAddresses(),
		down:      map[string]bool{},
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.warmEvery <= 0 {
		m.warmEvery = DefaultWarmInterval
	}
	return m, nil
}

func identity(cc grpc.ClientConnInterface) grpc.ClientConnInterface { return cc }

// runnable refuses what the manager cannot run yet.
func runnable(cfg *config.File) error {
	for _, s := range cfg.Services {
		if s.Discovery.Consul != nil {
			return fmt.Errorf("manager: %s: service %q: consul discovery is not supported by start yet; use static", cfg.Path, s.Name)
		}
	}
	return nil
}

// Pool returns the pool, for whatever serves traffic or reports on it
// (the HTTP endpoints). It stays the same for the Manager's life.
func (m *Manager) Pool() *Pool { return m.pool }

// Config returns the configuration file last applied. Its pool section
// and static addresses are in effect; its grpc, http and metrics sections
// are those of the file given to New until a restart.
func (m *Manager) Config() *config.File {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// Addresses returns the endpoints the manager keeps warm.
func (m *Manager) Addresses() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.addrs)
}

// Run warms every endpoint to MinIdlePerKey connections, then keeps them
// so every WarmInterval and when Apply changes the endpoints, until ctx
// ends. Connection failures are logged (once until the endpoint recovers),
// never fatal: the pool retries them.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.warmEvery)
	defer t.Stop()
	for {
		m.Warm(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.wake:
		}
	}
}

// Warm tops every endpoint up to MinIdlePerKey idle connections at once,
// all endpoints in parallel, bounded by ctx (and each connect by the grpc
// section's connect_timeout).
func (m *Manager) Warm(ctx context.Context) {
	var wg sync.WaitGroup
	for _, addr := range m.Addresses() {
		wg.Go(func() {
			err := m.pool.Prepare(ctx, addr)
			if ctx.Err() != nil || errors.Is(err, keyedpool.ErrExhausted) {
				return // shutting down, or the pool is full: not the endpoint's fault
			}
			m.mu.Lock()
			wasDown := m.down[addr]
			m.down[addr] = err != nil
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
}

// Apply puts a reloaded configuration into effect without dropping
// traffic: the pool's limits and evictor settings through SetConfig
// (lowered limits never touch lent connections), and the static endpoints
// (new ones are warmed, removed ones lose their idle connections). It
// refuses, changing nothing, a file the manager cannot run, a change of
// pool.max_shares_per_object (fixed when the pool is made) or a pool
// section SetConfig refuses. Changes of the grpc, http and metrics sections
// are logged as needing a restart.
func (m *Manager) Apply(cfg *config.File) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	if err := runnable(cfg); err != nil {
		return err
	}
	pc := cfg.KeyedPool()
	if running, want := m.pool.Config().MaxSharesPerObject, max(pc.MaxSharesPerObject, 1); running != want {
		return fmt.Errorf("manager: %s: pool.max_shares_per_object cannot change while kpool runs (running %d, file %d); restart to change it",
			cfg.Path, running, want)
	}
	if err := m.pool.SetConfig(pc); err != nil {
		return fmt.Errorf("manager: %s: pool: %w", cfg.Path, err)
	}

	m.mu.Lock()
	old, oldAddrs := m.cfg, m.addrs
	m.cfg, m.addrs = cfg, cfg.StaticAddresses()
	newAddrs := m.addrs
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
	if len(restart) > 0 {
		m.log.Warn("changed sections apply after a restart; running with the old ones", "sections", restart)
	}
	for _, a := range oldAddrs {
		if !slices.Contains(newAddrs, a) {
			m.log.Info("endpoint removed", "addr", a)
			// Idle connections go now; lent ones when returned, as
			// SetConfig does with surplus.
			if err := m.pool.Clear(context.Background(), a); err != nil {
				m.log.Warn("closing idle connections of a removed endpoint", "addr", a, "err", err)
			}
			m.mu.Lock()
			delete(m.down, a)
			m.mu.Unlock()
		}
	}
	for _, a := range newAddrs {
		if !slices.Contains(oldAddrs, a) {
			m.log.Info("endpoint added", "addr", a)
		}
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close closes the pool: no more borrows, idle connections closed, and a
// wait, bounded by ctx, for lent ones to come back. See keyedpool.Pool.Close.
func (m *Manager) Close(ctx context.Context) error { return m.pool.Close(ctx) }

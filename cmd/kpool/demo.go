package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/consul"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/backend"
	"github.com/kpool-go/kpool/internal/e2e"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
	"github.com/kpool-go/kpool/metrics/grpcmetrics"
)

const demoAbout = `Starts gRPC backends on 127.0.0.1 (with the standard health service),
routes traffic to them through a kpool Router (static discovery, or Consul
with --consul), sends RPCs from many goroutines for --duration while a live
line shows the rate, latency, connections per backend and waiters,
replaces one backend midway in a rolling release, serves /metrics, /health
and /stats on --http, and ends with a summary. It exits 1 if any RPC
failed: a rolling release through kpool should lose none.

SIGINT or SIGTERM ends the traffic early: RPCs in flight get
--shutdown-timeout to finish, the backends registered in Consul are
deregistered, the pools close, the summary is printed and the exit status is
0 unless an RPC failed. A second signal exits at once.`

// demoService is the name the backends are discovered under.
const demoService = "kpool-demo"

type demoOptions struct {
	duration, delay, rpcTimeout time.Duration
	shutdownTimeout             time.Duration
	backends, callers           int
	http, consulAddr            string
	release                     bool
	log                         *slog.Logger
	// tick is how often the live line is refreshed.
	tick time.Duration
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", "[flags]", demoAbout)
	var o demoOptions
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "how long traffic runs, at most 1h")
	fs.IntVar(&o.backends, "backends", 3, "backends to start, 1 to 16")
	fs.IntVar(&o.callers, "callers", 64, "goroutines sending RPCs, each its next when the last answered")
	fs.DurationVar(&o.delay, "delay", 2*time.Millisecond, "how long a backend works on each RPC")
	fs.StringVar(&o.http, "http", metrics.DefaultAddr, "`host:port` to serve /metrics, /health and /stats on (port 0: any free port)")
	fs.StringVar(&o.consulAddr, "consul", "", "`host:port` of a Consul agent: register the backends there and discover them from it")
	fs.BoolVar(&o.release, "release", true, "replace one backend midway (a rolling release)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "after SIGINT or SIGTERM, how long RPCs in flight may finish before they are cut")
	var level logLevel
	level.Set("warn")
	fs.Var(&level, "log-level", "log `level`: debug, info, warn or error")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	switch {
	case o.duration <= 0 || o.duration > time.Hour:
		return usageError(fs, stderr, "--duration is %v, want more than 0 and at most 1h", o.duration)
	case o.backends < 1 || o.backends > 16:
		return usageError(fs, stderr, "--backends is %d, want 1 to 16", o.backends)
	case o.callers < 1 || o.callers > 10000:
		return usageError(fs, stderr, "--callers is %d, want 1 to 10000", o.callers)
	case o.delay < 0:
		return usageError(fs, stderr, "--delay is %v, want 0 or more", o.delay)
	case o.shutdownTimeout <= 0:
		return usageError(fs, stderr, "--shutdown-timeout is %v, want more than 0", o.shutdownTimeout)
	}
	o.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &level.LevelVar}))
	o.rpcTimeout = 5*time.Second + o.delay
	o.tick = time.Second
	if err := demo(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "kpool demo: %v\n", err)
		return 1
	}
	return 0
}

// demoBackend is one demo backend and its part in the rolling release.
type demoBackend struct {
	srv  *backend.Server
	role string // "original", "retired" or "new"
}

// registry is where the demo's backends are announced: a static resolver,
// or Consul.
type registry interface {
	resolver() discovery.Resolver
	add(b *demoBackend) error
	remove(b *demoBackend) error
	close()
}

func demo(ctx context.Context, o demoOptions, stdout io.Writer) (err error) {
	var backends []*demoBackend
	var bmu sync.Mutex // protects backends: the progress line reads it
	defer func() {
		for _, b := range backends {
			b.srv.Stop()
		}
	}()
	startBackend := func(role string) (*demoBackend, error) {
		srv, err := backend.Listen(backend.Options{Delay: o.delay, MaxConcurrentStreams: 100})
		if err != nil {
			return nil, err
		}
		b := &demoBackend{srv: srv, role: role}
		bmu.Lock()
		backends = append(backends, b)
		bmu.Unlock()
		return b, nil
	}

	var reg registry = &staticRegistry{r: &static.Resolver{}}
	if o.consulAddr != "" {
		if reg, err = newConsulRegistry(o.consulAddr); err != nil {
			return err
		}
	}
	defer reg.close() // deregisters what the demo registered
	for range o.backends {
		b, err := startBackend("original")
		if err != nil {
			return err
		}
		if err := reg.add(b); err != nil {
			return err
		}
	}

	promReg := prometheus.NewRegistry()
	m, err := metrics.New(promReg, metrics.Options{Namespace: "kpool", PerKey: true})
	if err != nil {
		return err
	}
	obs, err := grpcmetrics.NewObserver(m)
	if err != nil {
		return err
	}
	f, err := grpcpool.New(grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		NewStub:        testpb.NewBenchmarkServiceClient,
		Insecure:       true,
		ConnectTimeout: 2 * time.Second,
		HealthCheck:    &grpcpool.HealthCheck{Interval: time.Second},
		Observer:       obs,
	})
	if err != nil {
		return err
	}
	router, err := discovery.NewRouter(discovery.RouterConfig[testpb.BenchmarkServiceClient]{
		Resolver: reg.resolver(),
		Factory:  f,
		Pool: keyedpool.Config{
			MaxSharesPerObject:      50,
			MaxTotalPerKey:          4,
			MinIdlePerKey:           1,
			TestOnCreate:            true,
			MakeFailureThreshold:    3,
			TimeBetweenEvictionRuns: time.Second,
		},
		NewBalancer: func() discovery.Balancer { return discovery.LeastLoaded{} },
	})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
		defer cancel()
		if cerr := router.Close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing the router: %w", cerr))
		}
	}()
	if err := metrics.AddPool(m, "demo", router.Pool(), grpcmetrics.FactoryHealth(f)); err != nil {
		return err
	}
	m.AddServices(grpcmetrics.RouterServices(router))

	lis, err := metrics.Listen(o.http)
	if err != nil {
		return fmt.Errorf("%w (choose another --http, or 127.0.0.1:0 for any free port)", err)
	}
	hctx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	httpDone := make(chan error, 1)
	go func() { httpDone <- metrics.Serve(hctx, lis, m.Handler(promReg)) }()
	defer func() {
		stopHTTP()
		if herr := <-httpDone; herr != nil {
			err = errors.Join(err, herr)
		}
	}()
	how := "static discovery"
	if o.consulAddr != "" {
		how = "Consul at " + o.consulAddr
	}
	fmt.Fprintf(stdout, "kpool demo: %d backends of %q found through %s; %d callers for %v\n", o.backends, demoService, how, o.callers, o.duration)
	fmt.Fprintf(stdout, "endpoints: http://%s/metrics  /health  /stats\n\n", lis.Addr())

	// Warm up: the first borrow waits for the service's first lookup.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = router.Endpoints(wctx, demoService)
	cancel()
	if err != nil {
		return fmt.Errorf("finding %s: %w", demoService, err)
	}

	stub := testpb.NewBenchmarkServiceClient(router.Conn(demoService))
	var t traffic
	t.lat = new(e2e.Histogram)
	// A signal (ctx ends) stops new RPCs at once; those in flight get
	// --shutdown-timeout to finish before hard cuts them.
	hard, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	stopCut := context.AfterFunc(ctx, func() { time.AfterFunc(o.shutdownTimeout, cut) })
	defer stopCut()
	t.hard = hard
	tctx, stopTraffic := context.WithTimeout(ctx, o.duration)
	defer stopTraffic()
	start := time.Now()
	var wg sync.WaitGroup
	for range o.callers {
		wg.Go(func() { t.run(tctx, stub, o.rpcTimeout) })
	}

	// The rolling release runs beside the traffic, from its midpoint.
	releaseDone := make(chan error, 1)
	if o.release {
		go func() { releaseDone <- rollingRelease(tctx, o, reg, router, startBackend, &bmu, &backends) }()
	} else {
		releaseDone <- nil
	}

	live := newProgress(stdout)
	tick := time.NewTicker(o.tick)
	defer tick.Stop()
	var lastN int64
	lastT := start
	for running := true; running; {
		select {
		case <-tctx.Done():
			running = false
		case now := <-tick.C:
			n := t.ok.Load() + t.failed.Load()
			bmu.Lock()
			conns := ""
			for _, b := range backends {
				conns += fmt.Sprintf(" %d", b.srv.Open())
			}
			bmu.Unlock()
			st := router.Pool().Stats()
			live.show(fmt.Sprintf("%5.1fs  %7.0f rps  p50 %-8v p99 %-8v failed %d  conns/backend%s  waiters %d",
				now.Sub(start).Seconds(), float64(n-lastN)/now.Sub(lastT).Seconds(),
				t.lat.Quantile(0.5).Round(10*time.Microsecond), t.lat.Quantile(0.99).Round(10*time.Microsecond),
				t.failed.Load(), conns, st.Waiters))
			lastN, lastT = n, now
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	live.done()
	if rerr := <-releaseDone; rerr != nil {
		o.log.Warn("rolling release did not complete", "err", rerr)
		fmt.Fprintf(stdout, "rolling release did not complete: %v\n", rerr)
	}

	bmu.Lock()
	summary(stdout, &t, elapsed, router.Pool().Stats(), backends)
	bmu.Unlock()
	if f := t.failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d RPCs failed; first: %v", f, f+t.ok.Load(), t.firstErr.Load())
	}
	if ctx.Err() != nil {
		o.log.Info("stopped by a signal: traffic ended, backends deregistered, pools closed")
	}
	return nil
}

// traffic counts the demo's RPCs.
type traffic struct {
	hard       context.Context // ends --shutdown-timeout after a signal
	ok, failed atomic.Int64
	firstErr   atomic.Value // error
	lat        *e2e.Histogram
}

func (t *traffic) run(ctx context.Context, stub testpb.BenchmarkServiceClient, timeout time.Duration) {
	req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("kpool")}}
	for ctx.Err() == nil {
		// Each RPC gets its own deadline, not the traffic's: the end of the
		// run stops new RPCs, never cuts one in flight.
		rctx, cancel := context.WithTimeout(t.hard, timeout)
		t0 := time.Now()
		_, err := stub.UnaryCall(rctx, req)
		t.lat.Record(time.Since(t0))
		cancel()
		if err != nil {
			t.failed.Add(1)
			t.firstErr.CompareAndSwap(nil, err)
			continue
		}
		t.ok.Add(1)
	}
}

// rollingRelease replaces the first backend, from the middle of the run: a
// new backend registers, and once it serves traffic the old one
// deregisters, its connections drain, and it stops gracefully.
func rollingRelease(ctx context.Context, o demoOptions, reg registry, router *discovery.Router[testpb.BenchmarkServiceClient],
	startBackend func(string) (*demoBackend, error), bmu *sync.Mutex, backends *[]*demoBackend) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(o.duration / 2):
	}
	bmu.Lock()
	old := (*backends)[0]
	bmu.Unlock()
	nb, err := startBackend("new")
	if err != nil {
		return err
	}
	o.log.Info("rolling release: a new backend registers", "addr", nb.srv.Addr)
	if err := reg.add(nb); err != nil {
		return err
	}
	if !waitUntil(ctx, 10*time.Second, func() bool { return nb.srv.UnaryCalls() > 0 }) {
		return fmt.Errorf("the new backend %s got no traffic within 10s", nb.srv.Addr)
	}
	o.log.Info("rolling release: the old backend deregisters", "addr", old.srv.Addr)
	bmu.Lock()
	old.role = "retired"
	bmu.Unlock()
	if err := reg.remove(old); err != nil {
		return err
	}
	// The router stops lending the old endpoint at once, closes its idle
	// connections, and destroys lent ones as they come back: wait for that,
	// then stop the old backend, which lets RPCs still in flight finish.
	if !waitUntil(context.WithoutCancel(ctx), 10*time.Second, func() bool {
		ks := router.Pool().KeyStats(old.srv.Addr)
		return ks.Active+ks.Idle+ks.Making == 0
	}) {
		return fmt.Errorf("connections to the old backend %s were not released within 10s", old.srv.Addr)
	}
	old.srv.GracefulStop()
	o.log.Info("rolling release: the old backend stopped", "addr", old.srv.Addr)
	return nil
}

// waitUntil polls cond until it holds (true) or ctx ends or limit passes.
func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

func summary(w io.Writer, t *traffic, elapsed time.Duration, st keyedpool.Stats, backends []*demoBackend) {
	ok, failed := t.ok.Load(), t.failed.Load()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requests\tfailures\trps\tp50\tp99\tconnections made\tconnections destroyed\t")
	fmt.Fprintf(tw, "%d\t%d\t%.0f\t%v\t%v\t%d\t%d\t\n", ok+failed, failed, float64(ok+failed)/elapsed.Seconds(),
		t.lat.Quantile(0.5).Round(10*time.Microsecond), t.lat.Quantile(0.99).Round(10*time.Microsecond), st.Created, st.Destroyed)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "backend\trole\tRPCs served\tconnections accepted\tconnections open\t")
	for _, b := range backends {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t\n", b.srv.Addr, b.role, b.srv.UnaryCalls(), b.srv.Accepted(), b.srv.Open())
	}
	tw.Flush()
}

// progress shows a line that rewrites itself on a terminal, and plain lines
// otherwise.
type progress struct {
	w    io.Writer
	tty  bool
	used bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) show(line string) {
	p.used = true
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progress) done() {
	if p.tty && p.used {
		fmt.Fprintln(p.w)
	}
	fmt.Fprintln(p.w)
}

// staticRegistry announces backends in a static resolver.
type staticRegistry struct {
	r   *static.Resolver
	mu  sync.Mutex
	eps []discovery.Endpoint
}

func (s *staticRegistry) resolver() discovery.Resolver { return s.r }

func (s *staticRegistry) add(b *demoBackend) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eps = append(s.eps, discovery.Endpoint{Address: b.srv.Addr, Health: discovery.HealthPassing})
	s.r.Set(demoService, s.eps)
	return nil
}

func (s *staticRegistry) remove(b *demoBackend) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.eps[:0]
	for _, e := range s.eps {
		if e.Addr() != b.srv.Addr {
			kept = append(kept, e)
		}
	}
	s.eps = kept
	s.r.Set(demoService, s.eps)
	return nil
}

func (s *staticRegistry) close() {}

// consulRegistry registers backends with a Consul agent and discovers them
// from it; close deregisters what is still registered.
type consulRegistry struct {
	agent *api.Agent
	res   *consul.Resolver
	mu    sync.Mutex
	ids   map[string]bool
}

func newConsulRegistry(addr string) (*consulRegistry, error) {
	c, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		return nil, fmt.Errorf("consul at %s: %w", addr, err)
	}
	res, err := consul.New(consul.Config{Address: addr, WaitTime: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	return &consulRegistry{agent: c.Agent(), res: res, ids: map[string]bool{}}, nil
}

func (c *consulRegistry) resolver() discovery.Resolver { return c.res }

func serviceID(b *demoBackend) string { return demoService + "-" + b.srv.Addr }

func (c *consulRegistry) add(b *demoBackend) error {
	_, portText, _ := net.SplitHostPort(b.srv.Addr)
	port, _ := strconv.Atoi(portText)
	err := c.agent.ServiceRegister(&api.AgentServiceRegistration{
		ID: serviceID(b), Name: demoService, Address: "127.0.0.1", Port: port,
	})
	if err != nil {
		return fmt.Errorf("registering %s with Consul: %w", b.srv.Addr, err)
	}
	c.mu.Lock()
	c.ids[serviceID(b)] = true
	c.mu.Unlock()
	return nil
}

func (c *consulRegistry) remove(b *demoBackend) error {
	if err := c.agent.ServiceDeregister(serviceID(b)); err != nil {
		return fmt.Errorf("deregistering %s from Consul: %w", b.srv.Addr, err)
	}
	c.mu.Lock()
	delete(c.ids, serviceID(b))
	c.mu.Unlock()
	return nil
}

func (c *consulRegistry) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.ids {
		_ = c.agent.ServiceDeregister(id) // best effort: the agent may be gone
		delete(c.ids, id)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
	"github.com/kpool-go/kpool/cmd/kpool/internal/manager"
	"github.com/kpool-go/kpool/cmd/kpool/internal/reload"
	"github.com/kpool-go/kpool/metrics"
	"github.com/kpool-go/kpool/metrics/grpcmetrics"
)

const startAbout = `Keeps warm pools of gRPC connections for the services of a configuration
file (see examples/kpool.yaml) and shows their state, as a program that
embeds kpool would hold them: it follows each service's endpoints (static
lists, Consul or DNS) through one kpool Router, keeps one pool of connections
keyed by endpoint address with every endpoint warmed to
pool.min_idle_per_key healthy connections, and serves /metrics, /health
and /stats on http.listen (or --http), which kpool stats and kpool health
read. It carries no RPCs: it is not a proxy. Use it to try a
configuration, watch discovery and connection health, and export the
pools' metrics; "kpool backends --config FILE" starts local backends for
the file's static addresses to try it on.

The file is read again when it changes (polled) or on SIGHUP. A valid new
version applies at once: pool limits and evictor settings through
SetConfig, and added or removed static endpoints (removed ones drain);
other changes (grpc, http, metrics, Consul or DNS settings) are logged as
needing a restart. An invalid version is logged, counted in
<namespace>_config_reloads_total{result="failed"}, and changes nothing.

SIGINT or SIGTERM shuts down gracefully: the router stops its watches and
closes the pools' connections within --shutdown-timeout, then the HTTP
server stops; exit status 0 (1 when they did not close cleanly in time). A
second signal exits at once.`

// readyTimeout bounds how long start waits for each service's first lookup
// before it reports itself started: a service still without endpoints then
// is logged, and the watch keeps trying.
const readyTimeout = 5 * time.Second

// startOptions are start's settings; tests set them directly.
type startOptions struct {
	configPath      string
	httpAddr        string // overrides the file's http.listen when set
	shutdownTimeout time.Duration
	reloadInterval  time.Duration
	warmInterval    time.Duration
	log             *slog.Logger

	// serve, when set, runs beside the manager until ctx ends and must
	// then return; in-flight work it holds delays the router's close,
	// within shutdownTimeout. Tests send traffic from it; an error shuts
	// kpool down with status 1.
	serve func(ctx context.Context, m *manager.Manager) error
}

func runStart(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("start", "--config FILE [flags]", startAbout)
	o := startOptions{}
	fs.StringVar(&o.configPath, "config", "", "the configuration `file` (required)")
	fs.StringVar(&o.httpAddr, "http", "", "`host:port` to serve /metrics, /health and /stats on, instead of the file's http.listen (port 0: any free port)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long closing the pools may take at shutdown")
	fs.DurationVar(&o.reloadInterval, "reload-interval", reload.DefaultInterval, "how often the configuration file is checked for changes")
	fs.DurationVar(&o.warmInterval, "warm-interval", manager.DefaultWarmInterval, "how often endpoints are topped up to min_idle_per_key connections")
	var level logLevel
	fs.Var(&level, "log-level", "log `level`: debug, info (the default), warn or error")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	switch {
	case o.configPath == "":
		return usageError(fs, stderr, "--config is required")
	case o.shutdownTimeout <= 0:
		return usageError(fs, stderr, "--shutdown-timeout is %v, want more than 0", o.shutdownTimeout)
	case o.reloadInterval <= 0:
		return usageError(fs, stderr, "--reload-interval is %v, want more than 0", o.reloadInterval)
	case o.warmInterval <= 0:
		return usageError(fs, stderr, "--warm-interval is %v, want more than 0", o.warmInterval)
	}
	if o.httpAddr != "" {
		if _, _, err := net.SplitHostPort(o.httpAddr); err != nil {
			return usageError(fs, stderr, "--http is %q, want host:port", o.httpAddr)
		}
	}
	o.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &level}))
	return start(ctx, o)
}

// instance is what start builds from the configuration: the manager, the
// metrics over it, and the HTTP listener.
type instance struct {
	m   *manager.Manager
	reg *prometheus.Registry
	met *metrics.Metrics
	lis net.Listener
}

// build makes the manager, its metrics and the listener for cfg. On error
// nothing is left open.
func build(cfg *config.File, w *reload.Watcher[*config.File], o startOptions) (_ *instance, err error) {
	in := &instance{reg: prometheus.NewRegistry()}
	in.met, err = metrics.New(in.reg, metrics.Options{
		Namespace:    cfg.Metrics.Namespace,
		PerKey:       cfg.Metrics.PerKey,
		MaxKeySeries: cfg.Metrics.MaxKeySeries,
	})
	if err != nil {
		return nil, err
	}
	err = errors.Join(
		in.reg.Register(reload.NewCollector(cfg.Metrics.Namespace, w.Counts)),
		in.reg.Register(collectors.NewGoCollector()),
		in.reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
	)
	if err != nil {
		return nil, err
	}
	obs, err := grpcmetrics.NewObserver(in.met)
	if err != nil {
		return nil, err
	}
	in.m, err = manager.New(cfg, manager.Options{Logger: o.log, WarmInterval: o.warmInterval, Observer: obs})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
			defer cancel()
			_ = in.m.Close(ctx) // nothing was lent
		}
	}()
	if err := metrics.AddPool(in.met, cfg.Name, in.m.Pool(), grpcmetrics.FactoryHealth(in.m.Factory())); err != nil {
		return nil, err
	}
	in.met.AddServices(grpcmetrics.RouterServices(in.m.Router()))
	addr := cmpOrString(o.httpAddr, cfg.HTTP.Listen)
	if in.lis, err = metrics.Listen(addr); err != nil {
		return nil, fmt.Errorf("%w (set http.listen in the file, or --http)", err)
	}
	return in, nil
}

// logProblems logs err as one record per problem it holds, so that each
// is a line of the log of its own.
func logProblems(log *slog.Logger, msg string, err error) {
	for _, p := range reload.Problems(err) {
		log.Error(msg, "err", p)
	}
}

func cmpOrString(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// start runs the services of o.configPath until ctx ends, then shuts
// down, and returns the exit status.
func start(ctx context.Context, o startOptions) int {
	log := o.log
	var m *manager.Manager
	w := reload.New(o.configPath, config.Parse, func(f *config.File) error { return m.Apply(f) },
		reload.Options{Interval: o.reloadInterval, Logger: log, Read: config.ReadFile})
	cfg, err := w.Load()
	if err != nil {
		msg := "cannot start" // the file could not be read: the error says so
		if errors.As(err, new(*config.Error)) {
			msg = "cannot start: invalid configuration"
		}
		logProblems(log, msg, err)
		return 1
	}
	in, err := build(cfg, w, o)
	if err != nil {
		logProblems(log, "cannot start", err)
		return 1
	}
	m = in.m

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var failed sync.Once
	serveFailed := false // written in failed, read after the goroutines end
	fail := func(what string, err error) {
		failed.Do(func() {
			log.Error(what+" failed; shutting down", "err", err)
			serveFailed = true
			cancel(err)
		})
	}

	// The HTTP endpoints outlive runCtx: /health and /stats show the
	// drain, and stop once the router has closed.
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if err := metrics.Serve(httpCtx, in.lis, in.met.Handler(in.reg)); err != nil && httpCtx.Err() == nil {
			fail("serving HTTP", err)
		}
	}()

	var wg sync.WaitGroup
	wg.Go(func() { w.Run(runCtx, hup) })
	rctx, rcancel := context.WithTimeout(runCtx, readyTimeout)
	if err := m.Ready(rctx); err != nil && runCtx.Err() == nil {
		log.Warn("some services have no endpoints yet; still watching", "err", err)
	}
	rcancel()
	if o.serve != nil {
		// After the first lookups: the pool makes connections only to
		// endpoints that some service lists.
		wg.Go(func() {
			if err := o.serve(runCtx, m); err != nil && runCtx.Err() == nil {
				fail("serving", err)
			}
		})
	}

	log.Info("kpool started", "config", o.configPath, "services", len(cfg.Services), "endpoints", m.Addresses(),
		"http", in.lis.Addr().String(), "pid", os.Getpid())

	<-runCtx.Done()
	log.Info("shutting down: closing the pools", "cause", context.Cause(runCtx), "timeout", o.shutdownTimeout)
	// ctx has ended: the close gets a deadline of its own.
	closeCtx, closeCancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
	defer closeCancel()
	closeErr := m.Close(closeCtx)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// The goroutines stop with runCtx; serve may still be finishing the
	// work that Close waited for, so it gets what is left of the timeout,
	// and at least a second.
	deadline, _ := closeCtx.Deadline()
	select {
	case <-done:
	case <-time.After(max(time.Until(deadline), time.Second)):
		log.Error("shutdown timed out waiting for work to stop", "timeout", o.shutdownTimeout)
		return 1
	}
	stopHTTP()
	<-httpDone // bounded: metrics.Serve cuts requests after 5s
	st := m.Pool().Stats()
	rc := w.Counts()
	if closeErr != nil {
		level, msg := slog.LevelWarn, "pools closed with errors"
		if errors.Is(closeErr, context.DeadlineExceeded) {
			level, msg = slog.LevelError, "pools closed before in-flight work finished"
		}
		log.Log(context.Background(), level, msg, "err", closeErr, "still_lent", st.Active,
			"created", st.Created, "destroyed", st.Destroyed, "reloads_ok", rc.OK, "reloads_failed", rc.Failed)
		return 1
	}
	log.Info("pools closed", "created", st.Created, "destroyed", st.Destroyed, "borrowed", st.Borrowed,
		"reloads_ok", rc.OK, "reloads_failed", rc.Failed)
	if serveFailed {
		return 1
	}
	return 0
}

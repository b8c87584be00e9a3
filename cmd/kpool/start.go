package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/kpool-go/kpool/internal/config"
	"github.com/kpool-go/kpool/internal/manager"
	"github.com/kpool-go/kpool/internal/reload"
)

const startAbout = `Runs one pool of gRPC connections for the services of a configuration
file (see examples/kpool.yaml), keyed by endpoint address, and keeps every
endpoint warm with pool.min_idle_per_key connections.

The file is read again when it changes (polled) or on SIGHUP. A valid new
version applies at once without dropping traffic: pool limits and evictor
settings through SetConfig, and added or removed static endpoints; an
invalid one is logged, counted, and changes nothing.

SIGINT or SIGTERM shuts down gracefully: no new borrows, in-flight work
finishes within --shutdown-timeout, the pool closes, exit status 0 (1 when
the timeout cut in-flight work short). A second signal exits at once.

Services with static discovery only, for now.`

// startOptions are start's settings; tests set them directly.
type startOptions struct {
	configPath      string
	shutdownTimeout time.Duration
	reloadInterval  time.Duration
	warmInterval    time.Duration
	log             *slog.Logger

	// serve, when set, runs beside the manager until ctx ends and must
	// then return; in-flight work it holds delays the pool's close, within
	// shutdownTimeout. It is where the HTTP endpoints (/metrics, /health,
	// /stats) and routed traffic will be served from m.Pool(); an error
	// shuts kpool down with status 1.
	serve func(ctx context.Context, m *manager.Manager) error
}

func runStart(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("start", "--config FILE [flags]", startAbout)
	o := startOptions{}
	fs.StringVar(&o.configPath, "config", "", "the configuration `file` (required)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight work may take to finish at shutdown")
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
	o.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &level}))
	return start(ctx, o)
}

// start runs the manager for o.configPath until ctx ends, then shuts down,
// and returns the exit status.
func start(ctx context.Context, o startOptions) int {
	log := o.log
	var m *manager.Manager
	w := reload.New(o.configPath, config.Parse, func(f *config.File) error { return m.Apply(f) },
		reload.Options{Interval: o.reloadInterval, Logger: log})
	cfg, err := w.Load()
	if err != nil {
		log.Error("cannot start: invalid configuration", "file", o.configPath, "err", err)
		return 1
	}
	m, err = manager.New(cfg, manager.Options{Logger: log, WarmInterval: o.warmInterval})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(runCtx) })
	wg.Go(func() { w.Run(runCtx, hup) })
	serveFailed := false
	if o.serve != nil {
		wg.Go(func() {
			if err := o.serve(runCtx, m); err != nil && runCtx.Err() == nil {
				log.Error("serving failed; shutting down", "err", err)
				serveFailed = true // read after wg.Wait
				cancel(err)
			}
		})
	}
	log.Info("kpool started", "config", o.configPath, "services", len(cfg.Services), "endpoints", m.Addresses(), "pid", os.Getpid())

	<-runCtx.Done()
	log.Info("shutting down: no new borrows; waiting for in-flight work", "cause", context.Cause(runCtx), "timeout", o.shutdownTimeout)
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

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
	"github.com/kpool-go/kpool/internal/backend"
)

const backendsAbout = `Starts a gRPC backend for each static address of a configuration file,
so that "kpool start" with the same file has healthy endpoints to keep
warm. Try the example on a fresh clone, in two terminals:

    kpool backends --config examples/kpool.yaml
    kpool start --config examples/kpool.yaml

Each backend is the one kpool demo runs: it serves the standard health
service (grpc.health.v1), SERVING for the server as a whole and for
grpc.health_check.service when the file names one, and an echo service
(grpc.testing.BenchmarkService), in plaintext: the file must dial with
grpc.insecure: true. The addresses must be on this machine's loopback
(127.0.0.1, or localhost, served on 127.0.0.1); services found through
Consul are left out.

It runs until SIGINT or SIGTERM, then marks the backends NOT_SERVING and
stops them gracefully, within --shutdown-timeout; exit status 0. A second
signal exits at once.`

func runBackends(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("backends", "--config FILE [flags]", backendsAbout)
	var path string
	var shutdownTimeout time.Duration
	fs.StringVar(&path, "config", "", "the configuration `file` whose static addresses to serve (required)")
	fs.DurationVar(&shutdownTimeout, "shutdown-timeout", 5*time.Second, "how long the backends may take to stop gracefully")
	var level logLevel
	fs.Var(&level, "log-level", "log `level`: debug, info (the default), warn or error")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	switch {
	case path == "":
		return usageError(fs, stderr, "--config is required")
	case shutdownTimeout <= 0:
		return usageError(fs, stderr, "--shutdown-timeout is %v, want more than 0", shutdownTimeout)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &level}))
	if err := backends(ctx, path, shutdownTimeout, log, stdout); err != nil {
		fmt.Fprintf(stderr, "kpool backends: %v\n", err)
		return 1
	}
	return 0
}

// backendAddr is an address to serve and the services that list it.
type backendAddr struct {
	addr     string // as the file writes it
	listen   string // where to listen: a loopback host:port
	services []string
}

// backendAddrs returns the static addresses of f to serve, each once, in
// the order of the file, or an error naming what cannot be served.
func backendAddrs(f *config.File) ([]backendAddr, error) {
	if f.GRPC.TLS != nil {
		return nil, errors.New("the file dials its backends with TLS (grpc.tls); kpool backends serves plaintext: use grpc.insecure: true")
	}
	var out []backendAddr
	at := map[string]int{}
	for _, s := range f.Services {
		st := s.Discovery.Static
		if st == nil {
			continue
		}
		for _, a := range st.Addresses {
			if i, ok := at[a]; ok {
				out[i].services = append(out[i].services, s.Name)
				continue
			}
			host, port, err := net.SplitHostPort(a)
			if err != nil {
				return nil, fmt.Errorf("service %s: address %q: %w", s.Name, a, err)
			}
			if host == "localhost" {
				host = "127.0.0.1"
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("service %s: address %s is not on this machine's loopback; kpool backends serves 127.0.0.1 (or localhost) only", s.Name, a)
			}
			at[a] = len(out)
			out = append(out, backendAddr{addr: a, listen: net.JoinHostPort(host, port), services: []string{s.Name}})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the file lists no static addresses to serve (services found through Consul are registered there by whoever runs them)")
	}
	return out, nil
}

// backends serves the static addresses of the file at path until ctx ends.
func backends(ctx context.Context, path string, shutdownTimeout time.Duration, log *slog.Logger, stdout io.Writer) error {
	f, err := config.Load(path)
	if err != nil {
		return err
	}
	addrs, err := backendAddrs(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	healthService := ""
	if h := f.GRPC.HealthCheck; h != nil {
		healthService = h.Service
	}

	var servers []*backend.Server
	stopAll := func() {
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
				defer cancel()
				if s.Shutdown(ctx) != nil {
					log.Warn("a backend did not stop within the timeout; its connections were closed", "addr", s.Addr, "timeout", shutdownTimeout)
				}
			})
		}
		wg.Wait()
	}
	for _, a := range addrs {
		s, err := backend.Listen(backend.Options{Addr: a.listen})
		if err != nil {
			stopAll()
			return fmt.Errorf("%w (is another kpool backends, or something else, serving %s?)", err, a.addr)
		}
		if healthService != "" {
			s.Health.SetServingStatus(healthService, healthpb.HealthCheckResponse_SERVING)
		}
		servers = append(servers, s)
	}

	fmt.Fprintf(stdout, "kpool backends: serving grpc.health.v1 for the static addresses of %s:\n", path)
	for _, a := range addrs {
		fmt.Fprintf(stdout, "  %-21s %s\n", a.addr, strings.Join(a.services, ", "))
	}
	fmt.Fprintf(stdout, "ready: run \"kpool start --config %s\" in another terminal; Ctrl-C stops the backends\n", path)

	<-ctx.Done()
	log.Info("stopping the backends", "cause", context.Cause(ctx), "timeout", shutdownTimeout)
	stopAll()
	log.Info("backends stopped")
	return nil
}

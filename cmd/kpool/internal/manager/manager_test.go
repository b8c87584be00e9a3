package manager_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
	"github.com/kpool-go/kpool/cmd/kpool/internal/manager"
	"github.com/kpool-go/kpool/cmd/kpool/internal/reload"
	"github.com/kpool-go/kpool/internal/grpctest"

	"github.com/kpool-go/kpool/internal/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

// poolYAML is a file for the servers at addrs with the given pool lines.
func poolYAML(pool string, addrs ...string) string {
	return fmt.Sprintf(`pool:
%s
grpc:
  insecure: true
  connect_timeout: 5s
services:
  - name: backend
    discovery:
      static:
        addresses: [%s]
`, pool, strings.Join(addrs, ", "))
}

// running is a Manager and a Watcher of its file, both running.
type running struct {
	path string
	m    *manager.Manager
	w    *reload.Watcher[*config.File]
	logs *syncbuf.Buffer
}

func startManager(t *testing.T, yaml string) *running {
	t.Helper()
	r := &running{path: filepath.Join(t.TempDir(), "kpool.yaml"), logs: &syncbuf.Buffer{}}
	r.write(t, yaml)
	log := slog.New(slog.NewTextHandler(r.logs, nil))
	var m *manager.Manager
	r.w = reload.New(r.path, config.Parse, func(f *config.File) error { return m.Apply(f) },
		reload.Options{Interval: 5 * time.Millisecond, Logger: log})
	cfg, err := r.w.Load()
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	m, err = manager.New(cfg, manager.Options{Logger: log, WarmInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("manager.New() = %v", err)
	}
	r.m = m
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.w.Run(ctx, nil) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		cctx, ccancel := context.WithTimeout(context.Background(), waitTimeout)
		defer ccancel()
		if err := m.Close(cctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return r
}

func (r *running) write(t *testing.T, s string) {
	t.Helper()
	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		t.Fatal(err)
	}
}

func (r *running) idle(addr string) int { return r.m.Pool().KeyStats(addr).Idle }

// TestReloadAppliesPoolChangesAndRefusesInvalidFiles is the hot reload
// end to end: a real backend, a file on disk, the poller, SetConfig.
func TestReloadAppliesPoolChangesAndRefusesInvalidFiles(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	r := startManager(t, poolYAML("  max_total_per_key: 4\n  min_idle_per_key: 1\n  max_shares_per_object: 10", srv.Addr))
	grpctest.WaitFor(t, waitTimeout, "the endpoint is warmed to min_idle_per_key 1", func() bool { return r.idle(srv.Addr) == 1 })

	// A changed file: higher limits and an evictor, applied in place.
	r.write(t, poolYAML("  max_total_per_key: 6\n  min_idle_per_key: 3\n  max_shares_per_object: 10\n  time_between_eviction_runs: 1h", srv.Addr))
	grpctest.WaitFor(t, waitTimeout, "the changed file is applied", func() bool { return r.m.Pool().Config().MaxTotalPerKey == 6 })
	pc := r.m.Pool().Config()
	if pc.MinIdlePerKey != 3 || pc.TimeBetweenEvictionRuns != time.Hour {
		t.Errorf("pool Config() after reload = min idle %d, evictor %v; want 3, 1h", pc.MinIdlePerKey, pc.TimeBetweenEvictionRuns)
	}
	grpctest.WaitFor(t, waitTimeout, "the endpoint is warmed to the new min_idle_per_key 3", func() bool { return r.idle(srv.Addr) == 3 })
	if got := r.w.Counts(); got != (reload.Counts{OK: 1}) {
		t.Errorf("Counts() = %+v, want {OK:1}", got)
	}

	// Invalid files: refused, counted, the running configuration stays.
	applied := r.m.Config()
	for i, bad := range []string{
		poolYAML("  max_total_per_key: 6\n  min_idle_per_key: -1\n  max_shares_per_object: 10", srv.Addr),
		poolYAML("  max_total_per_key: 6\n  max_shares_per_object: 20", srv.Addr), // fixed at start
		poolYAML("  max_total_per_key: six", srv.Addr),
	} {
		r.write(t, bad)
		grpctest.WaitFor(t, waitTimeout, fmt.Sprintf("invalid file %d is counted", i), func() bool { return r.w.Counts().Failed == int64(i+1) })
	}
	if got := r.w.Counts(); got != (reload.Counts{OK: 1, Failed: 3}) {
		t.Errorf("Counts() = %+v, want {OK:1 Failed:3}", got)
	}
	if got := r.m.Pool().Config(); got.MaxTotalPerKey != 6 || got.MinIdlePerKey != 3 || got.MaxSharesPerObject != 10 {
		t.Errorf("pool Config() after invalid files = %d/%d/%d, want 6/3/10 untouched", got.MaxTotalPerKey, got.MinIdlePerKey, got.MaxSharesPerObject)
	}
	if r.m.Config() != applied {
		t.Error("Config() changed after invalid files, want the applied file kept")
	}
	logs := r.logs.String()
	for _, want := range []string{
		"pool.min_idle_per_key: min_idle_per_key is -1, want 0 or more",
		r.path + ":3: pool.max_shares_per_object: cannot change while kpool runs (running 10, file 20)",
		`pool.max_total_per_key: want an integer, got \"six\"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs do not contain %q:\n%s", want, logs)
		}
	}
}

func TestReloadChangesEndpoints(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	b := grpctest.Start(t, grpctest.Options{})
	pool := "  min_idle_per_key: 2"
	r := startManager(t, poolYAML(pool, a.Addr))
	grpctest.WaitFor(t, waitTimeout, "a is warmed", func() bool { return r.idle(a.Addr) == 2 })

	r.write(t, poolYAML(pool, b.Addr))
	grpctest.WaitFor(t, waitTimeout, "b is warmed", func() bool { return r.idle(b.Addr) == 2 })
	grpctest.WaitFor(t, waitTimeout, "a's connections are closed", func() bool { return r.idle(a.Addr) == 0 && a.Open() == 0 })
	if got := r.m.Addresses(); len(got) != 1 || got[0] != b.Addr {
		t.Errorf("Addresses() = %v, want [%s]", got, b.Addr)
	}
	if logs := r.logs.String(); !strings.Contains(logs, `msg="endpoint removed" addr=`+a.Addr) || !strings.Contains(logs, `msg="endpoint added" addr=`+b.Addr) {
		t.Errorf("logs do not show the endpoint change:\n%s", logs)
	}
}

func TestReloadWarnsAboutSectionsNeedingRestart(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	r := startManager(t, poolYAML("  max_idle_per_key: 8", srv.Addr))
	r.write(t, poolYAML("  max_idle_per_key: 4", srv.Addr)+"http:\n  listen: 127.0.0.1:9191\n")
	grpctest.WaitFor(t, waitTimeout, "the file is applied", func() bool { return r.w.Counts().OK == 1 })
	if got := r.m.Pool().Config().MaxIdlePerKey; got != 4 {
		t.Errorf("MaxIdlePerKey = %d, want 4", got)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "changed sections apply after a restart") || !strings.Contains(logs, "sections=[http]") {
		t.Errorf("logs do not warn that http needs a restart:\n%s", logs)
	}
}

// TestWarmRetriesDownEndpoint: an endpoint down at the start is warmed
// once it is up, and its failure is logged once.
func TestWarmRetriesDownEndpoint(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	srv.Stop()
	r := startManager(t, poolYAML("  min_idle_per_key: 1", srv.Addr))
	grpctest.WaitFor(t, waitTimeout, "the failure is logged", func() bool { return strings.Contains(r.logs.String(), "cannot warm endpoint") })
	time.Sleep(100 * time.Millisecond) // several warm intervals
	if n := strings.Count(r.logs.String(), "cannot warm endpoint"); n != 1 {
		t.Errorf("failure logged %d times, want once until the endpoint recovers", n)
	}
	srv.Restart()
	grpctest.WaitFor(t, waitTimeout, "the endpoint is warmed after its restart", func() bool { return r.idle(srv.Addr) == 1 })
	grpctest.WaitFor(t, waitTimeout, "the recovery is logged", func() bool { return strings.Contains(r.logs.String(), "endpoint warm again") })
}

// TestReloadAddsStaticService: a static service new in the file is routed
// and warmed at once; a removed one keeps running until a restart.
func TestReloadAddsStaticService(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	b := grpctest.Start(t, grpctest.Options{})
	pool := "  min_idle_per_key: 1"
	r := startManager(t, poolYAML(pool, a.Addr))
	grpctest.WaitFor(t, waitTimeout, "a is warmed", func() bool { return r.idle(a.Addr) == 1 })
	r.write(t, poolYAML(pool, a.Addr)+"  - name: other\n    discovery: {static: {addresses: ["+b.Addr+"]}}\n")
	grpctest.WaitFor(t, waitTimeout, "the new service's endpoint is warmed", func() bool { return r.idle(b.Addr) == 1 })
	if got := r.m.Services(); strings.Join(got, ",") != "backend,other" {
		t.Errorf("Services() = %v, want [backend other]", got)
	}
	r.write(t, strings.Replace(poolYAML(pool, b.Addr), "name: backend", "name: other", 1))
	grpctest.WaitFor(t, waitTimeout, "the file is applied", func() bool { return r.w.Counts().OK == 2 })
	if logs := r.logs.String(); !strings.Contains(logs, `sections="[services[backend] (removed)]"`) {
		t.Errorf("logs do not say the removed service needs a restart:\n%s", logs)
	}
	if got := r.m.Addresses(); strings.Join(got, ",") != b.Addr+","+a.Addr {
		t.Errorf("Addresses() = %v, want [%s %s]", got, b.Addr, a.Addr)
	}
}

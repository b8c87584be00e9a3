package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kpool-go/kpool/cmd/kpool/internal/manager"
	"github.com/kpool-go/kpool/cmd/kpool/internal/shutdown"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/metrics"
)

// rvConfig is a file with services name→addresses (in order) and pool lines.
func rvConfig(pool string, services ...[2]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pool:\n%s\n  max_shares_per_object: 10\ngrpc:\n  insecure: true\n  connect_timeout: 2s\nservices:\n", pool)
	for _, s := range services {
		fmt.Fprintf(&b, "  - name: %s\n    discovery:\n      static:\n        addresses: [%s]\n", s[0], s[1])
	}
	return b.String()
}

// rvWrite replaces the file at path atomically.
func rvWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// rvMetric returns the value of the sample line that starts with name
// (labels included) in the exposition body; ok false when absent.
func rvMetric(body, name string) (float64, bool) {
	for l := range strings.SplitSeq(body, "\n") {
		if rest, ok := strings.CutPrefix(l, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// (1) "/health is 503 naming a service whose every endpoint refuses
// connections ... it is 200 again once a warm-up connects" — here the
// outage is brought by a reload that moves the service to dead addresses,
// and ended by a reload back.
func TestReviewCLIHealthReloadToDeadAddresses(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	dead := grpctest.DeadAddr(t)
	path := filepath.Join(t.TempDir(), "kpool.yaml")
	pool := "  min_idle_per_key: 1"
	rvWrite(t, path, rvConfig(pool, [2]string{"backend", a.Addr}))
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0", "--reload-interval", "20ms", "--warm-interval", "200ms")
	base := startedHTTP(t, p.stderr.String)
	grpctest.WaitFor(t, waitTimeout, "/health 200", func() bool { c, _, _ := getHealth(base); return c == http.StatusOK })

	rvWrite(t, path, rvConfig(pool, [2]string{"backend", dead}))
	grpctest.WaitFor(t, waitTimeout, "reload logged", func() bool { return strings.Contains(p.stderr.String(), `msg="configuration reloaded"`) })
	grpctest.WaitFor(t, 3*time.Second, "/health 503 naming backend once its only endpoint is dead", func() bool {
		c, rep, _ := getHealth(base)
		return c == http.StatusServiceUnavailable && len(rep.Reasons) == 1 && strings.Contains(rep.Reasons[0], `service "backend" has no usable endpoint`)
	})
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if c, _, body := getHealth(base); c != http.StatusServiceUnavailable {
			t.Fatalf("/health = %d %s while the only endpoint is dead", c, body)
		}
	}
	rvWrite(t, path, rvConfig(pool, [2]string{"backend", a.Addr}))
	grpctest.WaitFor(t, waitTimeout, "/health 200 again", func() bool { c, _, _ := getHealth(base); return c == http.StatusOK })
	p.stop(syscall.SIGTERM)
}

// (1)+(4) "new static services" apply at once on reload, and "/health is
// 503 naming a service whose every endpoint refuses connections from the
// first failed connect".
func TestReviewCLIHealthReloadAddsDeadService(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	dead := grpctest.DeadAddr(t)
	path := filepath.Join(t.TempDir(), "kpool.yaml")
	pool := "  min_idle_per_key: 1"
	rvWrite(t, path, rvConfig(pool, [2]string{"backend", a.Addr}))
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0", "--reload-interval", "20ms", "--warm-interval", "200ms")
	base := startedHTTP(t, p.stderr.String)
	grpctest.WaitFor(t, waitTimeout, "/health 200", func() bool { c, _, _ := getHealth(base); return c == http.StatusOK })

	rvWrite(t, path, rvConfig(pool, [2]string{"backend", a.Addr}, [2]string{"extra", dead}))
	var last string
	grpctest.WaitFor(t, 3*time.Second, "/health 503 naming the new dead service", func() bool {
		c, rep, body := getHealth(base)
		last = body
		return c == http.StatusServiceUnavailable && len(rep.Reasons) == 1 && strings.Contains(rep.Reasons[0], `service "extra" has no usable endpoint`)
	})
	// ?service=backend judges backend alone: 200.
	resp, err := http.Get(base + "/health?service=backend")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/health?service=backend = %d, want 200 (%s)", resp.StatusCode, last)
	}
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if c, _, body := getHealth(base); c != http.StatusServiceUnavailable {
			t.Fatalf("/health = %d %s while extra's only endpoint is dead", c, body)
		}
	}
	p.stop(syscall.SIGTERM)
}

// (1) "/health tells the truth ... while its discovery fails": a DNS
// service whose every server is unreachable has no endpoint; /health must
// be 503 naming it, with the lookup error ("503 with one reason per
// problem ... `service "users" has no usable endpoint (2 known): ...`").
func TestReviewCLIHealthDNSDiscoveryFails(t *testing.T) {
	dnsDead := grpctest.DeadAddr(t) // nothing listens: UDP port unreachable
	path := writeFile(t, fmt.Sprintf(`pool:
  min_idle_per_key: 1
grpc:
  insecure: true
  connect_timeout: 2s
services:
  - name: users
    discovery:
      dns:
        name: users.test
        port: 50051
        servers: [%s]
        interval: 50ms
        timeout: 200ms
`, dnsDead))
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0")
	base := startedHTTP(t, p.stderr.String)
	var rep metrics.HealthReport
	var body string
	grpctest.WaitFor(t, waitTimeout, "/health 503 naming users with the lookup error", func() bool {
		var c int
		c, rep, body = getHealth(base)
		return c == http.StatusServiceUnavailable && len(rep.Reasons) == 1 &&
			strings.Contains(rep.Reasons[0], `service "users" has no usable endpoint (0 known): `) && len(rep.Services) == 1 && rep.Services[0].Errors > 0
	})
	t.Logf("%s", body)
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if c, _, b := getHealth(base); c != http.StatusServiceUnavailable {
			t.Fatalf("/health = %d %s while discovery fails", c, b)
		}
	}
	p.stop(syscall.SIGINT)
}

// (1) with health_check and test_on_create: "with HealthCheck refuses a
// backend whose grpc.health.v1 Check does not say SERVING"; an endpoint is
// usable only when "its latest connect (a make, a reconnect, the
// validation of a connection) did not fail". A backend that says
// NOT_SERVING from the start must make /health 503.
func TestReviewCLIHealthNotServingBackend(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	a.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	path := writeFile(t, fmt.Sprintf(`pool:
  min_idle_per_key: 1
  test_on_create: true
  test_on_borrow: true
grpc:
  insecure: true
  connect_timeout: 2s
  health_check:
    interval: 100ms
services:
  - name: backend
    discovery:
      static:
        addresses: [%s]
`, a.Addr))
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0", "--warm-interval", "200ms")
	base := startedHTTP(t, p.stderr.String)
	grpctest.WaitFor(t, 3*time.Second, "/health 503 while the only backend is NOT_SERVING", func() bool {
		c, rep, _ := getHealth(base)
		return c == http.StatusServiceUnavailable && len(rep.Reasons) == 1 && strings.Contains(rep.Reasons[0], `service "backend"`)
	})
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if c, _, body := getHealth(base); c != http.StatusServiceUnavailable {
			t.Fatalf("/health = %d %s while the only backend is NOT_SERVING", c, body)
		}
	}
	a.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	grpctest.WaitFor(t, waitTimeout, "/health 200 once SERVING", func() bool { c, _, _ := getHealth(base); return c == http.StatusOK })
	p.stop(syscall.SIGTERM)
}

// (2) /stats and /metrics agree: both are read from the pool's Stats().
func TestReviewCLIStatsMatchMetrics(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	path := filepath.Join(t.TempDir(), "kpool.yaml")
	pool := "  min_idle_per_key: 2"
	rvWrite(t, path, rvConfig(pool, [2]string{"backend", a.Addr + ", " + b.Addr}))
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0", "--reload-interval", "20ms", "--warm-interval", "200ms")
	base := startedHTTP(t, p.stderr.String)
	grpctest.WaitFor(t, waitTimeout, "both warmed", func() bool { k := statsKeys(t, base); return k[a.Addr] == 2 && k[b.Addr] == 2 })
	// Drop b: its connections are destroyed.
	rvWrite(t, path, rvConfig(pool, [2]string{"backend", a.Addr}))
	grpctest.WaitFor(t, waitTimeout, "b drained", func() bool { return b.Open() == 0 })
	time.Sleep(300 * time.Millisecond)

	_, sbody := get(t, base+"/stats")
	_, mbody := get(t, base+"/metrics")
	var rep metrics.StatsReport
	if err := json.Unmarshal([]byte(sbody), &rep); err != nil || len(rep.Pools) != 1 {
		t.Fatalf("/stats: %v %s", err, sbody)
	}
	pr := rep.Pools[0]
	check := func(what string, stats int64, name string) {
		t.Helper()
		v, ok := rvMetric(mbody, name)
		if !ok {
			t.Errorf("/metrics lacks %s", name)
			return
		}
		if int64(v) != stats {
			t.Errorf("%s: /stats %d, /metrics %s %v", what, stats, name, v)
		}
	}
	check("idle", int64(pr.Idle), `kpool_grpc_pool_idle_connections{pool="kpool"}`)
	check("active", int64(pr.Active), `kpool_grpc_pool_active_connections{pool="kpool"}`)
	check("keys", int64(pr.Keys), `kpool_grpc_pool_keys{pool="kpool"}`)
	check("created", pr.Counters.Created, `kpool_grpc_connections_created_total{pool="kpool"}`)
	check("borrowed", pr.Counters.Borrowed, `kpool_grpc_pool_borrows_total{pool="kpool"}`)
	check("returned", pr.Counters.Returned, `kpool_grpc_pool_returns_total{pool="kpool"}`)
	var destroyed float64
	for l := range strings.SplitSeq(mbody, "\n") {
		if strings.HasPrefix(l, "kpool_grpc_connections_destroyed_total{") {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			destroyed += v
		}
	}
	if int64(destroyed) != pr.Counters.Destroyed {
		t.Errorf("destroyed: /stats %d, /metrics sum %v", pr.Counters.Destroyed, destroyed)
	}
	// What happened: 4 created, b's 2 destroyed, 2 idle, 1 key.
	if pr.Counters.Created != 4 || pr.Counters.Destroyed != 2 || pr.Idle != 2 || pr.Keys != 1 {
		t.Errorf("/stats = created %d destroyed %d idle %d keys %d, want 4 2 2 1\n%s", pr.Counters.Created, pr.Counters.Destroyed, pr.Idle, pr.Keys, sbody)
	}
	if v, _ := rvMetric(mbody, `kpool_config_reloads_total{result="ok"}`); v != 1 {
		t.Errorf(`kpool_config_reloads_total{result="ok"} = %v, want 1`, v)
	}
	if len(rep.Services) != 1 || rep.Services[0].Endpoints != 1 {
		t.Errorf("/stats services = %+v, want backend with 1 endpoint", rep.Services)
	}
	if v, ok := rvMetric(mbody, `kpool_grpc_service_discovery_nodes{service="backend"}`); !ok || v != 1 {
		t.Errorf("discovery_nodes = %v %v, want 1", v, ok)
	}
	p.stop(syscall.SIGTERM)
}

var rvProblemRE = regexp.MustCompile(`msg="cannot start: invalid configuration" err="([^"\\]|\\.)*"`)

// (3) "Unknown keys, repeated keys, values of the wrong type and invalid
// values are errors that name the file, the line and the key, all of them
// at once".
func TestReviewCLIConfigAllErrorsAtOnce(t *testing.T) {
	path := writeFile(t, `name: 5
balancer: fastest
pool:
  max_total: many
  max_total: 3
  min_idle_per_key: -1
  when_exhausted: panic
grpc:
  insecure: true
  connect_timeout: -1s
  keepalive: yes
http:
  listen: [1, 2]
metrics:
  max_key_series: -4
services:
  - name: a
    discovery:
      static:
        addresses: nope
  - name: a
    discovery: {}
`)
	code, logs, _ := runProcess(t, "start", "--config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	lines := logLines(logs, "cannot start: invalid configuration")
	t.Logf("%d problems:\n%s", len(lines), strings.Join(lines, "\n"))
	for _, want := range []string{
		":2: balancer", ":4: pool.max_total", ":5: pool.max_total", ":6: pool.min_idle_per_key", ":7: pool.when_exhausted",
		":10: grpc.connect_timeout", ":11: grpc.keepalive", ":13: http.listen", ":15: metrics.max_key_series",
		":20: services[0].discovery.static.addresses", ":21: services[1].name", ":22: services[1].discovery",
	} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, path+want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem %q", path+want)
		}
	}
}

// (3) "A file with more than 100 problems gets the first 100 and a count
// of the rest."
func TestReviewCLIConfigTooManyProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString("grpc: {insecure: true}\nservices:\n  - name: a\n    discovery: {static: {addresses: ['127.0.0.1:1']}}\npool:\n")
	for i := range 150 {
		fmt.Fprintf(&b, "  bogus_%d: 1\n", i)
	}
	path := writeFile(t, b.String())
	code, logs, _ := runProcess(t, "start", "--config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	lines := logLines(logs, "cannot start: invalid configuration")
	if len(lines) != 101 {
		t.Fatalf("%d records, want 100 problems and a count", len(lines))
	}
	if !strings.Contains(lines[100], "50 more problems") || !strings.Contains(lines[100], path+":106:") {
		t.Errorf("last record = %s, want 50 more problems at line 106", lines[100])
	}
}

// (3) hostile files: "a file larger than 1 MiB; more than 25,000 lines ...;
// collections nested more than 32 deep ... refused at once ... at the line
// where it passes a bound".
func TestReviewCLIConfigHostileFiles(t *testing.T) {
	head := "grpc: {insecure: true}\nservices:\n  - name: a\n    discovery: {static: {addresses: ['127.0.0.1:1']}}\n"
	cases := []struct {
		name, data, want string
	}{
		{"big", head + "# " + strings.Repeat("x", 1<<20) + "\n", "file too large: it passes 1048576 bytes"},
		{"lines", head + strings.Repeat("\n", 30000), "file too large: its lines, keys and list items pass 25000 on this line"},
		{"deep block", head + "pool:\n" + func() string {
			var s strings.Builder
			for i := range 40 {
				fmt.Fprintf(&s, "%s k%d:\n", strings.Repeat("  ", i), i)
			}
			return s.String()
		}(), "nested too deep"},
		{"deep flow", head + "name: " + strings.Repeat("[", 200) + strings.Repeat("]", 200) + "\n", "nested too deep"},
		{"wrong type root", "- 1\n- 2\n", ":1: want a mapping"},
		{"binary", "\x00\x01\x02\xff\xfe", ":"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.data)
			start := time.Now()
			code, logs, _ := runProcess(t, "start", "--config", path)
			el := time.Since(start)
			if code != 1 {
				t.Errorf("exit %d, want 1\n%s", code, logs)
			}
			lines := logLines(logs, "cannot start: invalid configuration")
			for _, l := range lines {
				if !regexp.MustCompile(regexp.QuoteMeta(path) + `:\d+: `).MatchString(l) {
					t.Errorf("record names no line: %s", l)
				}
			}
			if len(lines) == 0 || !strings.Contains(lines[0], path+":") || !strings.Contains(lines[0], tc.want) {
				t.Errorf("records = %q, want one naming %s and %q", lines, path, tc.want)
			}
			if strings.Contains(logs, "panic") {
				t.Errorf("panic:\n%s", logs)
			}
			if el > 3*time.Second {
				t.Errorf("took %v", el)
			}
		})
	}
}

// (4) "The first SIGINT or SIGTERM closes the router ... logs `pools
// closed` and exits 0".
func TestReviewCLISIGINTExitsZero(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	path := writeConfig(t, "", a.Addr, "  min_idle_per_key: 2")
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0")
	_ = startedHTTP(t, p.stderr.String)
	grpctest.WaitFor(t, waitTimeout, "warm", func() bool { return a.Open() == 2 })
	p.stop(syscall.SIGINT)
	if l := p.stderr.String(); !strings.Contains(l, `msg="pools closed"`) {
		t.Errorf("no pools closed:\n%s", l)
	}
	grpctest.WaitFor(t, waitTimeout, "connections closed", func() bool { return a.Open() == 0 })
}

// (4) "A second signal exits at once with 128 + the signal's number",
// with an RPC in flight; and no goroutine of start outlives it once the
// RPC ends.
func TestReviewCLISecondSignalExitsAtOnce(t *testing.T) {
	ign := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ign) }) // after the servers' cleanups
	srv := grpctest.Start(t, grpctest.Options{})
	release := srv.Hold()
	defer release()
	sigs := make(chan os.Signal, 2)
	exitCode := make(chan int, 1)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, stop := shutdown.Watch(context.Background(), discard, func(c int) { exitCode <- c }, sigs)
	inFlight := make(chan (<-chan error), 1)
	code, logs := startInProcess(ctx, startOptions{
		configPath:      writeConfig(t, "", srv.Addr, "  min_idle_per_key: 0"),
		shutdownTimeout: 2 * time.Second,
		serve: func(ctx context.Context, m *manager.Manager) error {
			inFlight <- heldRPC(t, srv, m)
			<-ctx.Done()
			return nil
		},
	})
	rpc := <-inFlight
	sigs <- syscall.SIGTERM
	grpctest.WaitFor(t, waitTimeout, "shutdown starts", func() bool { return strings.Contains(logs.String(), "shutting down") })
	sigs <- syscall.SIGINT
	select {
	case c := <-exitCode:
		if c != 130 {
			t.Errorf("second signal SIGINT exit = %d, want 130", c)
		}
	case <-time.After(time.Second):
		t.Errorf("second signal did not exit at once")
	}
	release()
	<-rpc
	if c := waitCode(t, code); c != 0 && c != 1 {
		t.Errorf("start = %d", c)
	}
	stop()
}

// (4) "The first SIGINT or SIGTERM ... exits 0" with an RPC in flight that
// ends within --shutdown-timeout: start waits and no goroutine leaks.
func TestReviewCLIShutdownInFlightNoLeak(t *testing.T) {
	ign := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ign) }) // after the servers' cleanups
	srv := grpctest.Start(t, grpctest.Options{})
	release := srv.Hold()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inFlight := make(chan (<-chan error), 1)
	code, logs := startInProcess(ctx, startOptions{
		configPath: writeConfig(t, "", srv.Addr, "  min_idle_per_key: 1"),
		serve: func(ctx context.Context, m *manager.Manager) error {
			inFlight <- heldRPC(t, srv, m)
			<-ctx.Done()
			return nil
		},
	})
	rpc := <-inFlight
	cancel()
	time.AfterFunc(200*time.Millisecond, release)
	if err := <-rpc; err != nil {
		t.Errorf("in-flight RPC = %v", err)
	}
	if c := waitCode(t, code); c != 0 {
		t.Errorf("start = %d, want 0\n%s", c, logs)
	}
}

// (4) "Changes of grpc, http, metrics, name, balancer, ... and removed
// services are logged as needing a restart; the running ones stay." The
// running ones stay: a later reload must still treat the running sections
// as running (a removed service still watched and judged by /health).
func TestReviewCLIReloadRemovedServiceStays(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	path := filepath.Join(t.TempDir(), "kpool.yaml")
	pool := "  min_idle_per_key: 1"
	rvWrite(t, path, rvConfig(pool, [2]string{"one", a.Addr}, [2]string{"two", b.Addr}))
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0", "--reload-interval", "20ms", "--warm-interval", "200ms")
	base := startedHTTP(t, p.stderr.String)
	grpctest.WaitFor(t, waitTimeout, "/health 200 with 2 services", func() bool {
		c, rep, _ := getHealth(base)
		return c == http.StatusOK && len(rep.Services) == 2
	})
	rvWrite(t, path, rvConfig(pool, [2]string{"one", a.Addr}))
	grpctest.WaitFor(t, waitTimeout, "restart warning", func() bool {
		return strings.Contains(p.stderr.String(), "services[two] (removed)")
	})
	// Another change: the removed service is still running, so it is
	// still a change needing a restart.
	rvWrite(t, path, rvConfig("  min_idle_per_key: 2", [2]string{"one", a.Addr}))
	grpctest.WaitFor(t, waitTimeout, "second reload", func() bool {
		return strings.Count(p.stderr.String(), `msg="configuration reloaded"`) == 2
	})
	_, rep, _ := getHealth(base)
	if len(rep.Services) != 2 {
		t.Errorf("/health services = %+v, want both (the running ones stay)", rep.Services)
	}
	p.stop(syscall.SIGTERM)
}

// (4) "A valid new version applies at once: ... the addresses of static
// services"; a change of "a service's ... kind of discovery" is "logged as
// needing a restart; the running ones stay". So after a refused switch of a
// static service to DNS, the service still runs static, and a later file
// that lists new static addresses for it must apply them.
func TestReviewCLIReloadStaticAfterRefusedKindChange(t *testing.T) {
	a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	path := filepath.Join(t.TempDir(), "kpool.yaml")
	pool := "  min_idle_per_key: 1"
	rvWrite(t, path, rvConfig(pool, [2]string{"backend", a.Addr}))
	p := startBinary(t, "start", "--config", path, "--http", "127.0.0.1:0", "--reload-interval", "20ms", "--warm-interval", "200ms")
	base := startedHTTP(t, p.stderr.String)
	grpctest.WaitFor(t, waitTimeout, "a warmed", func() bool { return statsKeys(t, base)[a.Addr] == 1 })

	dnsFile := strings.Replace(rvConfig(pool, [2]string{"backend", a.Addr}),
		"      static:\n        addresses: ["+a.Addr+"]\n",
		"      dns:\n        name: backend.test:50051\n        servers: [127.0.0.1:1]\n", 1)
	rvWrite(t, path, dnsFile)
	grpctest.WaitFor(t, waitTimeout, "the kind change is logged as needing a restart", func() bool {
		return strings.Contains(p.stderr.String(), "services[backend].discovery")
	})
	rvWrite(t, path, rvConfig(pool, [2]string{"backend", b.Addr}))
	grpctest.WaitFor(t, waitTimeout, "second reload", func() bool {
		return strings.Count(p.stderr.String(), `msg="configuration reloaded"`) == 2
	})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && statsKeys(t, base)[b.Addr] != 1 {
		time.Sleep(20 * time.Millisecond)
	}
	if k := statsKeys(t, base); k[b.Addr] != 1 {
		t.Errorf("/stats keys = %v after the static service's addresses changed to %s, want it warmed\n%s", k, b.Addr, p.stderr.String())
	}
	p.stop(syscall.SIGTERM)
}

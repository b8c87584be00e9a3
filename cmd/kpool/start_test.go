package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/cmd/kpool/internal/manager"
	"github.com/kpool-go/kpool/cmd/kpool/internal/shutdown"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/consultest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/syncbuf"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/metrics"
)

const waitTimeout = 10 * time.Second

// writeConfig writes a configuration for the backend at addr, with the
// given pool lines, and returns its path.
func writeConfig(t *testing.T, path, addr, pool string) string {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "kpool.yaml")
	}
	data := fmt.Sprintf(`pool:
%s
  max_shares_per_object: 10
grpc:
  insecure: true
  connect_timeout: 5s
services:
  - name: backend
    discovery:
      static:
        addresses: [%s]
`, pool, addr)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// startInProcess runs start in a goroutine and returns its status channel
// and logs.
func startInProcess(ctx context.Context, o startOptions) (<-chan int, *syncbuf.Buffer) {
	logs := &syncbuf.Buffer{}
	o.log = slog.New(slog.NewTextHandler(logs, nil))
	o.reloadInterval = cmpOr(o.reloadInterval, 20*time.Millisecond)
	o.warmInterval = cmpOr(o.warmInterval, time.Second)
	o.shutdownTimeout = cmpOr(o.shutdownTimeout, waitTimeout)
	o.httpAddr = cmpOrString(o.httpAddr, "127.0.0.1:0") // never the default port, which another run may hold
	code := make(chan int, 1)
	go func() { code <- start(ctx, o) }()
	return code, logs
}

func cmpOr(d, def time.Duration) time.Duration {
	if d != 0 {
		return d
	}
	return def
}

func waitCode(t *testing.T, code <-chan int) int {
	t.Helper()
	select {
	case c := <-code:
		return c
	case <-time.After(waitTimeout):
		t.Fatalf("start did not return within %v", waitTimeout)
		return 0
	}
}

// heldRPC starts one RPC through the pool that the server holds, and
// returns its result channel once the server has it.
func heldRPC(t *testing.T, srv *grpctest.Server, m *manager.Manager) <-chan error {
	stub := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(m.Pool(), srv.Addr))
	done := make(chan error, 1)
	go func() {
		_, err := stub.UnaryCall(context.Background(), &testpb.SimpleRequest{})
		done <- err
	}()
	grpctest.WaitFor(t, waitTimeout, "the server holds the RPC", func() bool { return srv.InFlight() == 1 })
	return done
}

// TestStartShutdownLetsInFlightWorkFinish: after the first signal (the
// context's end) new RPCs fail, the one in flight completes, then the pool
// closes and start returns 0.
func TestStartShutdownLetsInFlightWorkFinish(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	release := srv.Hold()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inFlight := make(chan (<-chan error), 1)
	afterClose := make(chan error, 1)
	code, logs := startInProcess(ctx, startOptions{
		configPath: writeConfig(t, "", srv.Addr, "  min_idle_per_key: 1"),
		serve: func(ctx context.Context, m *manager.Manager) error {
			inFlight <- heldRPC(t, srv, m)
			<-ctx.Done()
			// Once the pool is closing, borrows are refused. Until then
			// (the close follows the context's end) give back what is lent.
			var err error
			for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				var h *keyedpool.Pooled[string, *manager.Client]
				if h, err = m.Pool().Borrow(context.Background(), srv.Addr); err != nil {
					break
				}
				m.Pool().Return(h)
			}
			afterClose <- err
			return nil
		},
	})
	rpc := <-inFlight
	cancel()
	grpctest.WaitFor(t, waitTimeout, "shutdown starts", func() bool { return strings.Contains(logs.String(), "shutting down") })
	if err := <-afterClose; !errors.Is(err, keyedpool.ErrClosed) {
		t.Errorf("Borrow during shutdown = %v, want keyedpool.ErrClosed", err)
	}
	select {
	case c := <-code:
		t.Fatalf("start returned %d while an RPC was in flight", c)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if err := <-rpc; err != nil {
		t.Errorf("in-flight RPC = %v, want it to finish", err)
	}
	if c := waitCode(t, code); c != 0 {
		t.Errorf("start = %d, want 0\nlogs:\n%s", c, logs)
	}
	if l := logs.String(); !strings.Contains(l, `msg="pools closed"`) {
		t.Errorf("logs do not say the pools closed:\n%s", l)
	}
}

func TestStartShutdownTimeoutCutsInFlightWork(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	release := srv.Hold()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inFlight := make(chan (<-chan error), 1)
	code, logs := startInProcess(ctx, startOptions{
		configPath:      writeConfig(t, "", srv.Addr, "  min_idle_per_key: 0"),
		shutdownTimeout: 100 * time.Millisecond,
		serve: func(ctx context.Context, m *manager.Manager) error {
			inFlight <- heldRPC(t, srv, m)
			<-ctx.Done()
			return nil
		},
	})
	rpc := <-inFlight
	cancel()
	if c := waitCode(t, code); c != 1 {
		t.Errorf("start = %d, want 1 when in-flight work outlives --shutdown-timeout", c)
	}
	if l := logs.String(); !strings.Contains(l, "pools closed before in-flight work finished") || !strings.Contains(l, "still_lent=1") {
		t.Errorf("logs do not report the cut:\n%s", l)
	}
	release()
	<-rpc
}

func TestStartServeErrorShutsDown(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	code, logs := startInProcess(context.Background(), startOptions{
		configPath: writeConfig(t, "", srv.Addr, "  min_idle_per_key: 0"),
		serve: func(context.Context, *manager.Manager) error {
			return errors.New("listen tcp 127.0.0.1:9090: address already in use")
		},
	})
	if c := waitCode(t, code); c != 1 {
		t.Errorf("start = %d, want 1", c)
	}
	if l := logs.String(); !strings.Contains(l, "serving failed; shutting down") || !strings.Contains(l, "address already in use") {
		t.Errorf("logs do not report the serve error:\n%s", l)
	}
}

func TestStartRefusesInvalidConfig(t *testing.T) {
	path := writeConfig(t, "", "127.0.0.1:1", "  max_wait: soon")
	code, logs := startInProcess(context.Background(), startOptions{configPath: path})
	if c := waitCode(t, code); c != 1 {
		t.Errorf("start = %d, want 1", c)
	}
	if l := logs.String(); !strings.Contains(l, path+`:2: pool.max_wait: want a Go duration`) {
		t.Errorf("logs do not name the line and field:\n%s", l)
	}
}

// TestStartAcceptsExample runs start on examples/kpool.yaml as it is. Its
// backends are not running: start logs that and keeps going.
func TestStartAcceptsExample(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	code, logs := startInProcess(ctx, startOptions{configPath: filepath.Join("..", "..", "examples", "kpool.yaml")})
	grpctest.WaitFor(t, waitTimeout, "start runs", func() bool { return strings.Contains(logs.String(), "kpool started") })
	cancel()
	if c := waitCode(t, code); c != 0 {
		t.Errorf("start(examples/kpool.yaml) = %d, want 0\nlogs:\n%s", c, logs)
	}
}

// TestStartProcess runs kpool start as a real process against a real
// backend: it warms the pool, serves /health, reloads on a file change and
// on SIGHUP,
// refuses an invalid file, and on SIGTERM closes its pools and exits 0.
func TestStartProcess(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	path := writeConfig(t, "", srv.Addr, "  min_idle_per_key: 2")
	cmd := exec.Command(os.Args[0], "start", "--config", path, "--reload-interval", "20ms", "--http", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	stderr := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the process has ended, with its status in
	// waitErr.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	logs := func() string { return stderr.String() }
	wait := func(msg string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for !cond() {
			select {
			case <-exited:
				t.Fatalf("kpool exited (%v) while waiting: %s\nlogs:\n%s", waitErr, msg, logs())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v: %s\nlogs:\n%s", waitTimeout, msg, logs())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	wait("the pool warms 2 connections", func() bool { return srv.Open() == 2 })
	base := startedHTTP(t, logs)
	if c, body := get(t, base+"/health"); c != http.StatusOK {
		t.Errorf("GET /health = %d %s, want 200", c, body)
	}
	writeConfig(t, path, srv.Addr, "  min_idle_per_key: 3")
	wait("the file change warms a third", func() bool { return srv.Open() == 3 })
	wait("the reload is logged", func() bool { return strings.Contains(logs(), `msg="configuration reloaded"`) })

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait("SIGHUP reloads", func() bool { return strings.Count(logs(), `msg="configuration reloaded"`) == 2 })

	writeConfig(t, path, srv.Addr, "  min_idle_per_key: -1")
	wait("the invalid file is refused", func() bool {
		return strings.Contains(logs(), "pool.min_idle_per_key: min_idle_per_key is -1, want 0 or more")
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("kpool after SIGTERM: %v, want exit status 0\nlogs:\n%s", waitErr, logs())
		}
	case <-time.After(waitTimeout):
		t.Fatalf("kpool still runs %v after SIGTERM\nlogs:\n%s", waitTimeout, logs())
	}
	l := logs()
	for _, want := range []string{"signal=terminated", `msg="pools closed"`, "reloads_ok=2 reloads_failed=1"} {
		if !strings.Contains(l, want) {
			t.Errorf("logs do not contain %q:\n%s", want, l)
		}
	}
	grpctest.WaitFor(t, waitTimeout, "the server sees every connection closed", func() bool { return srv.Open() == 0 })
}

// httpAddrRE finds the HTTP address in start's "kpool started" record.
var httpAddrRE = regexp.MustCompile(`msg="kpool started" .*http=(\S+)`)

// startedHTTP waits for start to report itself started and returns the
// base URL of its HTTP endpoints.
func startedHTTP(t *testing.T, logs func() string) string {
	t.Helper()
	var addr string
	grpctest.WaitFor(t, waitTimeout, "start reports its HTTP address", func() bool {
		m := httpAddrRE.FindStringSubmatch(logs())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return "http://" + addr
}

// get returns the status and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// statsKeys returns the keys /stats lists for the pool, with their idle
// connections.
func statsKeys(t *testing.T, base string) map[string]int {
	t.Helper()
	code, body := get(t, base+"/stats")
	if code != http.StatusOK {
		t.Fatalf("GET /stats = %d %s, want 200", code, body)
	}
	var rep metrics.StatsReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("GET /stats: %v in %s", err, body)
	}
	keys := map[string]int{}
	for _, p := range rep.Pools {
		for _, k := range p.PerKey {
			keys[k.Key] = k.Idle
		}
	}
	return keys
}

// TestStartServesHTTPAndReloads runs start on a static config against
// real backends: /health is 200, /stats lists the warmed endpoints, a
// reload that swaps an address shows in /stats, and an invalid reload is
// counted in /metrics and leaves the running config.
func TestStartServesHTTPAndReloads(t *testing.T) {
	a := grpctest.Start(t, grpctest.Options{})
	b := grpctest.Start(t, grpctest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := "  min_idle_per_key: 2\n  max_total_per_key: 4"
	path := writeConfig(t, "", a.Addr, pool)
	code, logs := startInProcess(ctx, startOptions{configPath: path})
	base := startedHTTP(t, logs.String)

	grpctest.WaitFor(t, waitTimeout, "/stats lists a warmed", func() bool { return statsKeys(t, base)[a.Addr] == 2 })
	if c, body := get(t, base+"/health"); c != http.StatusOK || !strings.Contains(body, `"status": "ok"`) {
		t.Errorf("GET /health = %d %s, want 200 ok", c, body)
	}
	if c, body := get(t, base+"/health?service=backend"); c != http.StatusOK {
		t.Errorf("GET /health?service=backend = %d %s, want 200", c, body)
	}

	writeConfig(t, path, a.Addr+", "+b.Addr, pool)
	grpctest.WaitFor(t, waitTimeout, "/stats lists b warmed", func() bool { return statsKeys(t, base)[b.Addr] == 2 })
	writeConfig(t, path, b.Addr, pool)
	grpctest.WaitFor(t, waitTimeout, "a leaves /stats", func() bool {
		_, ok := statsKeys(t, base)[a.Addr]
		return !ok
	})
	grpctest.WaitFor(t, waitTimeout, "a's connections close", func() bool { return a.Open() == 0 })

	writeConfig(t, path, b.Addr, "  min_idle_per_key: 2\n  max_total_per_key: two")
	want := `kpool_config_reloads_total{result="failed"} 1`
	grpctest.WaitFor(t, waitTimeout, "/metrics counts the failed reload", func() bool {
		_, body := get(t, base+"/metrics")
		return strings.Contains(body, want)
	})
	_, body := get(t, base+"/metrics")
	for _, w := range []string{`kpool_config_reloads_total{result="ok"} 2`, `kpool_grpc_pool_up{pool="kpool"} 1`} {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics does not contain %s", w)
		}
	}
	if keys := statsKeys(t, base); len(keys) != 1 || keys[b.Addr] != 2 {
		t.Errorf("/stats keys after the invalid reload = %v, want only %s with 2 idle", keys, b.Addr)
	}
	cancel()
	if c := waitCode(t, code); c != 0 {
		t.Errorf("start = %d, want 0\nlogs:\n%s", c, logs)
	}
}

// TestStartConsul runs start on a service found in a real Consul agent:
// a backend registered there is warmed, and leaves when deregistered.
func TestStartConsul(t *testing.T) {
	agent := consultest.Start(t)
	srv := grpctest.Start(t, grpctest.Options{})
	path := filepath.Join(t.TempDir(), "kpool.yaml")
	cfg := fmt.Sprintf(`pool:
  min_idle_per_key: 1
grpc:
  insecure: true
  connect_timeout: 5s
balancer: least_loaded
services:
  - name: users
    discovery:
      consul:
        address: %s
        service: users-grpc
        wait_time: 2s
`, agent.Addr)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code, logs := startInProcess(ctx, startOptions{configPath: path})
	base := startedHTTP(t, logs.String)
	if c, body := get(t, base+"/health"); c != http.StatusServiceUnavailable {
		t.Errorf("GET /health with no instance = %d %s, want 503", c, body)
	}

	_, port, _ := net.SplitHostPort(srv.Addr)
	p, _ := strconv.Atoi(port)
	if err := agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "users-1", Name: "users-grpc", Address: "127.0.0.1", Port: p,
	}); err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, waitTimeout, "the registered backend is warmed", func() bool { return statsKeys(t, base)[srv.Addr] == 1 })
	if c, body := get(t, base+"/health?service=users"); c != http.StatusOK {
		t.Errorf("GET /health?service=users = %d %s, want 200", c, body)
	}
	if err := agent.Client().Agent().ServiceDeregister("users-1"); err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, waitTimeout, "the deregistered backend leaves /stats", func() bool {
		_, ok := statsKeys(t, base)[srv.Addr]
		return !ok
	})
	grpctest.WaitFor(t, waitTimeout, "its connections close", func() bool { return srv.Open() == 0 })
	cancel()
	if c := waitCode(t, code); c != 0 {
		t.Errorf("start = %d, want 0\nlogs:\n%s", c, logs)
	}
}

// TestStartSignalWhileTrafficRuns: SIGTERM, through the same shutdown
// handling main uses, while RPCs run through the Router: every RPC
// succeeds, start exits 0.
func TestStartSignalWhileTrafficRuns(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{Delay: time.Millisecond})
	sigs := make(chan os.Signal, 2)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, stop := shutdown.Watch(context.Background(), discard, func(int) { t.Error("a second signal exited") }, sigs)
	defer stop()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	code, logs := startInProcess(ctx, startOptions{
		configPath: writeConfig(t, "", srv.Addr, "  min_idle_per_key: 1"),
		serve: func(ctx context.Context, m *manager.Manager) error {
			stub := testpb.NewBenchmarkServiceClient(m.Router().Conn("backend"))
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for ctx.Err() == nil {
						rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), waitTimeout)
						_, err := stub.UnaryCall(rctx, &testpb.SimpleRequest{})
						cancel()
						if err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err)
							continue
						}
						ok.Add(1)
					}
				})
			}
			wg.Wait()
			return nil
		},
	})
	grpctest.WaitFor(t, waitTimeout, "traffic runs", func() bool { return ok.Load() > 200 })
	sigs <- syscall.SIGTERM
	if c := waitCode(t, code); c != 0 {
		t.Errorf("start = %d, want 0\nlogs:\n%s", c, logs)
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d RPCs failed; first: %v", n, n+ok.Load(), firstErr.Load())
	}
	if l := logs.String(); !strings.Contains(l, `cause="received terminated"`) || !strings.Contains(l, `msg="pools closed"`) {
		t.Errorf("logs do not show the signal and the close:\n%s", l)
	}
}

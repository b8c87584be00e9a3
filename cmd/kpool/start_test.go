package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/factory/grpcfactory"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/manager"
	"github.com/kpool-go/kpool/keyedpool"
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
func startInProcess(ctx context.Context, o startOptions) (<-chan int, *syncBuffer) {
	logs := &syncBuffer{}
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
	stub := testpb.NewBenchmarkServiceClient(grpcfactory.NewConn(m.Pool(), srv.Addr))
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
// backend: it warms the pool, reloads on a file change and on SIGHUP,
// refuses an invalid file, and on SIGTERM closes its pools and exits 0.
func TestStartProcess(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	path := writeConfig(t, "", srv.Addr, "  min_idle_per_key: 2")
	cmd := exec.Command(os.Args[0], "start", "--config", path, "--reload-interval", "20ms", "--http", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	stderr := &syncBuffer{}
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

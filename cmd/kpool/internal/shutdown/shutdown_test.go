package shutdown_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kpool-go/kpool/cmd/kpool/internal/shutdown"

	"github.com/kpool-go/kpool/internal/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFirstSignalCancelsSecondExits(t *testing.T) {
	logs := &syncbuf.Buffer{}
	sigs := make(chan os.Signal, 2)
	exited := make(chan int, 1)
	ctx, stop := shutdown.Watch(context.Background(), slog.New(slog.NewTextHandler(logs, nil)), func(code int) { exited <- code }, sigs)
	defer stop()

	sigs <- syscall.SIGTERM
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled 5s after the first signal")
	}
	if got := context.Cause(ctx); got == nil || got.Error() != "received terminated" {
		t.Errorf("Cause() = %v, want \"received terminated\"", got)
	}
	select {
	case code := <-exited:
		t.Fatalf("exit(%d) after one signal, want no exit", code)
	default:
	}

	sigs <- syscall.SIGINT
	select {
	case code := <-exited:
		if code != 130 {
			t.Errorf("exit(%d) after a second SIGINT, want exit(130)", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit 5s after the second signal")
	}
	if got := logs.String(); !strings.Contains(got, "signal=terminated") || !strings.Contains(got, "second signal: exiting now") {
		t.Errorf("logs = %s, want both signals logged", got)
	}
}

func TestStopWithoutSignal(t *testing.T) {
	ctx, stop := shutdown.Watch(context.Background(), slog.Default(), func(int) { t.Error("exit called") }, make(chan os.Signal))
	stop()
	if ctx.Err() == nil {
		t.Error("ctx not done after stop")
	}
}

func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		sig  os.Signal
		want int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}, {os.Interrupt, 130}} {
		if got := shutdown.ExitCode(tt.sig); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.sig, got, tt.want)
		}
	}
}

// TestNotifyRealSignal sends the test process a real SIGHUP (harmless: the
// test listens for it) and checks the context ends.
func TestNotifyRealSignal(t *testing.T) {
	ctx, stop := shutdown.Notify(context.Background(), slog.Default(), func(int) { t.Error("exit called") }, syscall.SIGHUP)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled 5s after a real signal")
	}
}

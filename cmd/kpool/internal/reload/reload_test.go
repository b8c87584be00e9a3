package reload_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/kpool-go/kpool/cmd/kpool/internal/reload"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// parseInt is a config format: one non-negative integer.
func parseInt(name string, data []byte) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: want a non-negative integer, got %q", name, data)
	}
	return n, nil
}

type fixture struct {
	path    string
	w       *reload.Watcher[int]
	applied atomic.Int64
	logs    *syncbuf.Buffer
	stop    func()
}

func start(t *testing.T, initial string, apply func(int) error) *fixture {
	t.Helper()
	f := &fixture{path: filepath.Join(t.TempDir(), "n.conf"), logs: &syncbuf.Buffer{}}
	f.write(t, initial)
	f.applied.Store(-1)
	if apply == nil {
		apply = func(n int) error { f.applied.Store(int64(n)); return nil }
	}
	f.w = reload.New(f.path, parseInt, apply, reload.Options{
		Interval: 2 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(f.logs, nil)),
	})
	if _, err := f.w.Load(); err != nil {
		t.Fatalf("Load() = %v", err)
	}
	return f
}

func (f *fixture) write(t *testing.T, s string) {
	t.Helper()
	// Write then rename, as editors do, so that a poll never reads half a
	// file.
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) run(trigger <-chan os.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.w.Run(ctx, trigger)
	}()
	f.stop = func() { cancel(); <-done }
}

func TestWatcherAppliesChangesAndCountsFailuresOnce(t *testing.T) {
	f := start(t, "1", nil)
	f.run(nil)
	defer f.stop()

	// Some polls of the unchanged file: nothing applied.
	time.Sleep(20 * time.Millisecond)
	if got := f.w.Counts(); got != (reload.Counts{}) || f.applied.Load() != -1 {
		t.Fatalf("after polls of an unchanged file: Counts() = %+v, applied %d; want none", got, f.applied.Load())
	}

	f.write(t, "2")
	grpctest.WaitFor(t, 5*time.Second, "a changed file is applied", func() bool { return f.applied.Load() == 2 })
	if got := f.w.Counts(); got != (reload.Counts{OK: 1}) {
		t.Errorf("Counts() = %+v, want {OK:1}", got)
	}

	f.write(t, "two")
	grpctest.WaitFor(t, 5*time.Second, "an invalid file is counted", func() bool { return f.w.Counts().Failed == 1 })
	time.Sleep(20 * time.Millisecond) // more polls of the same invalid file
	if got := f.w.Counts(); got != (reload.Counts{OK: 1, Failed: 1}) || f.applied.Load() != 2 {
		t.Errorf("invalid file: Counts() = %+v, applied %d; want {OK:1 Failed:1}, 2 kept", got, f.applied.Load())
	}
	if !strings.Contains(f.logs.String(), `want a non-negative integer, got \"two\"`) {
		t.Errorf("log does not say why the file was refused:\n%s", f.logs)
	}

	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, 5*time.Second, "a removed file is counted", func() bool { return f.w.Counts().Failed == 2 })
	time.Sleep(20 * time.Millisecond)
	if got := f.w.Counts().Failed; got != 2 {
		t.Errorf("removed file: Failed = %d after more polls, want 2 (counted once)", got)
	}

	f.write(t, "3")
	grpctest.WaitFor(t, 5*time.Second, "a fixed file is applied", func() bool { return f.applied.Load() == 3 })
	if got := f.w.Counts(); got != (reload.Counts{OK: 2, Failed: 2}) {
		t.Errorf("Counts() = %+v, want {OK:2 Failed:2}", got)
	}
}

func TestWatcherTriggerReloadsUnchangedFile(t *testing.T) {
	var applies atomic.Int64
	f := start(t, "5", func(int) error { applies.Add(1); return nil })
	hup := make(chan os.Signal, 1)
	f.run(hup)
	defer f.stop()
	hup <- syscall.SIGHUP
	grpctest.WaitFor(t, 5*time.Second, "SIGHUP reloads", func() bool { return applies.Load() == 1 })
	if !strings.Contains(f.logs.String(), "signal=hangup") {
		t.Errorf("log does not name the signal:\n%s", f.logs)
	}
}

func TestReloadApplyErrorKeepsCounting(t *testing.T) {
	refuse := errors.New("cannot change while running")
	f := start(t, "1", func(int) error { return refuse })
	if err := f.w.Reload(); !errors.Is(err, refuse) {
		t.Errorf("Reload() = %v, want %v", err, refuse)
	}
	if err := f.w.Reload(); !errors.Is(err, refuse) {
		t.Errorf("second Reload() = %v, want %v", err, refuse)
	}
	if got := f.w.Counts(); got != (reload.Counts{Failed: 2}) {
		t.Errorf("Counts() = %+v, want {Failed:2}: each forced reload counts", got)
	}
}

func TestLoadRefusesInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.conf")
	if err := os.WriteFile(path, []byte("-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := reload.New(path, parseInt, func(int) error { return nil }, reload.Options{})
	if _, err := w.Load(); err == nil {
		t.Error("Load(invalid) = nil error, want one")
	}
	if got := w.Counts(); got != (reload.Counts{}) {
		t.Errorf("Counts() = %+v, want none: Load is not a reload", got)
	}
}

func TestCollector(t *testing.T) {
	counts := reload.Counts{OK: 3, Failed: 1}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(reload.NewCollector("kpool", func() reload.Counts { return counts })); err != nil {
		t.Fatalf("Register() = %v", err)
	}
	want := `# HELP kpool_config_reloads_total Reloads of the configuration file, by result: ok (applied) or failed (refused; the running configuration stayed).
# TYPE kpool_config_reloads_total counter
kpool_config_reloads_total{result="failed"} 1
kpool_config_reloads_total{result="ok"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

package reload_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kpool-go/kpool/cmd/kpool/internal/reload"
)

// TestReloadLogsEachProblemOnALine checks a version refused for several
// reasons is logged one problem per record, so that no log line holds a
// newline, written out or escaped.
func TestReloadLogsEachProblemOnALine(t *testing.T) {
	refuse := errors.Join(errors.New("n.conf:1: too big"), fmt.Errorf("n.conf:2: too odd\nn.conf:3: too late"))
	f := start(t, "1", func(int) error { return refuse })
	if err := f.w.Reload(); !errors.Is(err, refuse) {
		t.Fatalf("Reload() = %v, want %v", err, refuse)
	}
	lines := strings.Split(strings.TrimSuffix(f.logs.String(), "\n"), "\n")
	var problems []string
	for _, l := range lines {
		if strings.Contains(l, `\n`) {
			t.Errorf("log line holds an escaped newline: %s", l)
		}
		if _, p, ok := strings.Cut(l, "problem="); ok {
			problems = append(problems, p)
		}
	}
	want := []string{`"n.conf:1: too big" reloads_failed=1`, `"n.conf:2: too odd" reloads_failed=1`, `"n.conf:3: too late" reloads_failed=1`}
	if !slices.Equal(problems, want) {
		t.Errorf("problems logged = %q, want %q\nlogs:\n%s", problems, want, f.logs)
	}
}

// TestReloadUnreadableFileSaysCannotRead checks a file that cannot be
// read is reported as such, naming it once and without a package prefix.
func TestReloadUnreadableFileSaysCannotRead(t *testing.T) {
	f := start(t, "1", nil)
	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	want := "cannot read " + f.path + ": no such file or directory"
	if err := f.w.Reload(); err == nil || err.Error() != want {
		t.Errorf("Reload(removed file) = %v, want %q", err, want)
	}
	if !errors.Is(f.w.Reload(), os.ErrNotExist) {
		t.Error("Reload(removed file) does not match os.ErrNotExist")
	}
	w := reload.New(f.path, parseInt, func(int) error { return nil }, reload.Options{})
	if _, err := w.Load(); err == nil || err.Error() != want {
		t.Errorf("Load(removed file) = %v, want %q", err, want)
	}
}

func TestOptionsReadReadsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.conf")
	read := func(p string) ([]byte, error) {
		if p != path {
			return nil, fmt.Errorf("read %q, want %q", p, path)
		}
		return []byte("42"), nil
	}
	w := reload.New(path, parseInt, func(int) error { return nil }, reload.Options{Read: read})
	if n, err := w.Load(); n != 42 || err != nil {
		t.Errorf("Load() = %d, %v; want 42 from Options.Read", n, err)
	}
}

func TestProblems(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want []string
	}{
		{nil, nil},
		{errors.New("one"), []string{"one"}},
		{errors.Join(errors.New("a"), errors.Join(errors.New("b"), errors.New("c\nd"))), []string{"a", "b", "c", "d"}},
		{fmt.Errorf("wrapped: %w", errors.Join(errors.New("a"), errors.New("b"))), []string{"wrapped: a", "b"}},
	} {
		if got := reload.Problems(tt.err); !slices.Equal(got, tt.want) {
			t.Errorf("Problems(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// Package reload watches a configuration file and applies each new version
// of it to a running program, after checking it: an invalid file leaves the
// running configuration untouched, is logged and is counted.
//
// The file is polled (read and hashed every Interval, 500 ms by default)
// rather than watched through the operating system: config files are small,
// a poll also sees a file replaced by a rename (as editors and Kubernetes
// ConfigMaps do), and modification times can be too coarse to see two
// writes in the same second. A signal (SIGHUP) asks for a reload at once,
// even of an unchanged file.
package reload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often a Watcher reads the file by default.
const DefaultInterval = 500 * time.Millisecond

// Counts is a snapshot of a Watcher's reloads.
type Counts struct {
	// OK counts the versions that were checked and applied.
	OK int64
	// Failed counts the versions that were not applied: the file could
	// not be read, did not parse or check, or apply refused it. A file
	// that stays unreadable or invalid is counted once, not at every poll.
	Failed int64
}

// Options configure a Watcher. The zero value is valid.
type Options struct {
	// Interval is how often the file is read. Zero or negative:
	// DefaultInterval.
	Interval time.Duration
	// Logger receives a record per reload, and one per problem of a
	// refused one. Nil: slog.Default().
	Logger *slog.Logger
	// Read reads the file. Nil: os.ReadFile. An error that is an
	// *fs.PathError is reported as "cannot read PATH: REASON"; any other
	// as it is.
	Read func(path string) ([]byte, error)
}

// Watcher reloads one file. Its methods are safe for concurrent use;
// reloads run one at a time.
type Watcher[T any] struct {
	path     string
	parse    func(name string, data []byte) (T, error)
	apply    func(T) error
	interval time.Duration
	log      *slog.Logger
	read     func(path string) ([]byte, error)

	ok, failed atomic.Int64

	mu   sync.Mutex // protects the fields below, and serializes reloads
	last [sha256.Size]byte
}

// New returns a Watcher of the file at path, which parse reads (and checks)
// and apply puts into effect. apply is only called with what parse
// accepted, never concurrently with itself.
func New[T any](path string, parse func(name string, data []byte) (T, error), apply func(T) error, opts Options) *Watcher[T] {
	w := &Watcher[T]{path: path, parse: parse, apply: apply, interval: opts.Interval, log: opts.Logger, read: opts.Read}
	if w.read == nil {
		w.read = os.ReadFile
	}
	if w.interval <= 0 {
		w.interval = DefaultInterval
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	return w
}

// Load reads and parses the file for the program's start, without applying
// it, and takes it as the running version: polls reload only a file that
// differs from it. A failed Load is neither counted nor logged; a file it
// cannot read is an error "cannot read PATH: REASON" (see Options.Read).
func (w *Watcher[T]) Load() (T, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var zero T
	data, err := w.readFile()
	if err != nil {
		return zero, err
	}
	v, err := w.parse(w.path, data)
	if err != nil {
		return zero, err
	}
	w.last = sha256.Sum256(data)
	return v, nil
}

// Counts returns the reloads so far.
func (w *Watcher[T]) Counts() Counts {
	return Counts{OK: w.ok.Load(), Failed: w.failed.Load()}
}

// Reload reads, checks and applies the file now, even if it has not
// changed, and returns why it was not applied (nil: it was). The reload is
// counted and logged.
func (w *Watcher[T]) Reload() error { return w.reload(true) }

// Run polls the file every Interval, and reloads it at once on each value
// from trigger (nil: none), until ctx ends.
func (w *Watcher[T]) Run(ctx context.Context, trigger <-chan os.Signal) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.reload(false)
		case sig := <-trigger:
			w.log.Info("reloading configuration", "file", w.path, "signal", sig.String())
			w.reload(true)
		}
	}
}

// reload applies the file if force is set or its contents changed since
// the last version tried.
func (w *Watcher[T]) reload(force bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, err := w.readFile()
	var sum [sha256.Size]byte
	if err != nil {
		// An unreadable file has a state of its own, so that it is
		// counted once while it stays so.
		sum = sha256.Sum256([]byte("unreadable\x00" + err.Error()))
	} else {
		sum = sha256.Sum256(data)
	}
	if !force && sum == w.last {
		return nil
	}
	w.last = sum
	if err != nil {
		return w.fail(err)
	}
	v, err := w.parse(w.path, data)
	if err != nil {
		return w.fail(err)
	}
	if err := w.apply(v); err != nil {
		return w.fail(err)
	}
	w.ok.Add(1)
	w.log.Info("configuration reloaded", "file", w.path, "reloads_ok", w.ok.Load())
	return nil
}

// readFile reads the file, and says so in an error that names it.
func (w *Watcher[T]) readFile() ([]byte, error) {
	data, err := w.read(w.path)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// The reason, not the *PathError: its message would name the
		// path again.
		return nil, fmt.Errorf("cannot read %s: %w", w.path, pe.Err)
	}
	return data, err
}

// fail counts and logs a refused version: a record per problem, so that
// each is one line of the log.
func (w *Watcher[T]) fail(err error) error {
	n := w.failed.Add(1)
	for _, p := range Problems(err) {
		w.log.Error("configuration not reloaded; the running one stays", "file", w.path, "problem", p, "reloads_failed", n)
	}
	return err
}

// Problems returns the problems that err holds, one a line: those it
// joins (errors.Join), and each line of the others.
func Problems(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var all []string
		for _, e := range j.Unwrap() {
			all = append(all, Problems(e)...)
		}
		return all
	}
	var all []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if line != "" {
			all = append(all, line)
		}
	}
	return all
}

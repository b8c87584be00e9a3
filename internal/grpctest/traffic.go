package grpctest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Traffic is continuous load for a test: goroutines that each make one call
// after another until Stop or the test's end, counting the calls and
// keeping every error. Its methods are safe for concurrent use.
type Traffic struct {
	timeout time.Duration
	calls   atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex // protects errs
	errs    []error
}

// StartTraffic starts n goroutines calling call, each call bounded by
// timeout (which also bounds More's waits). The test's end stops them.
func StartTraffic(tb testing.TB, n int, timeout time.Duration, call func(context.Context) error) *Traffic {
	tb.Helper()
	c, cancel := context.WithCancel(context.Background())
	l := &Traffic{timeout: timeout, cancel: cancel}
	for range n {
		l.wg.Go(func() {
			for c.Err() == nil {
				// Its own deadline, not c: Stop ends the loop, never a call
				// in flight.
				rc, rcancel := context.WithTimeout(context.Background(), timeout)
				err := call(rc)
				rcancel()
				l.calls.Add(1)
				if err != nil {
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
				}
			}
		})
	}
	tb.Cleanup(func() { l.Stop() })
	return l
}

// Calls returns the calls made so far.
func (l *Traffic) Calls() int64 { return l.calls.Load() }

// More waits until at least n more calls have been made, and fails the test
// if they take longer than the call timeout.
func (l *Traffic) More(tb testing.TB, n int64) {
	tb.Helper()
	want := l.Calls() + n
	WaitFor(tb, l.timeout, "traffic stalled", func() bool { return l.Calls() >= want })
}

// Stop stops the traffic, waits for the calls in flight, and returns the
// calls made and the errors met.
func (l *Traffic) Stop() (calls int64, errs []error) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls.Load(), l.errs
}

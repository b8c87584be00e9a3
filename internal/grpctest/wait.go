package grpctest

import (
	"context"
	"testing"
	"time"
)

// WaitFor polls cond until it holds or the timeout passes, and fails the
// test in that case with msg. Tests use it instead of sleeping: the wait is
// as short as the condition allows, and bounded.
func WaitFor(tb testing.TB, timeout time.Duration, msg string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(time.Millisecond)
	}
}

// Context returns a context that ends when the test does or after timeout,
// whichever comes first: a test's calls fail naming what did not happen,
// never hang.
func Context(tb testing.TB, timeout time.Duration) context.Context {
	tb.Helper()
	c, cancel := context.WithTimeout(context.Background(), timeout)
	tb.Cleanup(cancel)
	return c
}

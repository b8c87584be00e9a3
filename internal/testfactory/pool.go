package testfactory

import (
	"context"
	"errors"
	"testing"

	"github.com/kpool-go/kpool/keyedpool"
)

// NewPool makes a pool over f with cfg and closes it when the test ends,
// without waiting for objects still lent (they are the test's business),
// and checks then that f saw no misuse: every object destroyed exactly
// once.
func NewPool(tb testing.TB, f *Factory, cfg keyedpool.Config) *keyedpool.Pool[string, *Obj] {
	tb.Helper()
	p, err := keyedpool.New(f, cfg)
	if err != nil {
		tb.Fatalf("keyedpool.New() error = %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // don't wait for lent objects
		if err := p.Close(ctx); err != nil && !errors.Is(err, context.Canceled) {
			tb.Errorf("Close() = %v", err)
		}
		if err := f.Problems(); err != nil {
			tb.Errorf("factory saw misuse: %v", err)
		}
	})
	return p
}

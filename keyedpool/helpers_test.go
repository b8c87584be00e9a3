package keyedpool_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

type (
	pool   = keyedpool.Pool[string, *testfactory.Obj]
	handle = keyedpool.Pooled[string, *testfactory.Obj]
)

// newPool makes a pool over a fresh test factory and closes it when the test
// ends, checking that every object was destroyed exactly once.
func newPool(t *testing.T, cfg keyedpool.Config) (*pool, *testfactory.Factory) {
	t.Helper()
	f := &testfactory.Factory{}
	return testfactory.NewPool(t, f, cfg), f
}

// newPoolOf makes a pool over any factory of string keys and closes it when
// the test ends, failing the test if Close does not finish within 5 s (a
// lease never given back).
func newPoolOf[V any](t *testing.T, f factory.KeyedFactory[string, V], cfg keyedpool.Config) *keyedpool.Pool[string, V] {
	t.Helper()
	p, err := keyedpool.New(f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return p
}

func mustBorrow(t *testing.T, p *pool, key string) *handle {
	t.Helper()
	h, err := p.Borrow(context.Background(), key)
	if err != nil {
		t.Fatalf("Borrow(%q) error = %v", key, err)
	}
	if got := h.Key(); got != key {
		t.Fatalf("Borrow(%q).Key() = %q", key, got)
	}
	return h
}

func mustReturn(t *testing.T, p *pool, h *handle) {
	t.Helper()
	if err := p.Return(h); err != nil {
		t.Fatalf("Return() error = %v", err)
	}
}

// borrowAsync borrows in a goroutine and delivers the outcome.
type result struct {
	h   *handle
	err error
}

func borrowAsync(ctx context.Context, p *pool, key string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		h, err := p.Borrow(ctx, key)
		ch <- result{h, err}
	}()
	return ch
}

// borrowAtOnce borrows n objects of key from n goroutines at once.
func borrowAtOnce(t *testing.T, p *pool, key string, n int) []*handle {
	t.Helper()
	var wg sync.WaitGroup
	hs := make([]*handle, n)
	for i := range hs {
		wg.Go(func() {
			h, err := p.Borrow(context.Background(), key)
			if err != nil {
				t.Errorf("Borrow(%q) = %v", key, err)
				return
			}
			hs[i] = h
		})
	}
	wg.Wait()
	return hs
}

// returnAll returns every handle borrowAtOnce got.
func returnAll(t *testing.T, p *pool, hs []*handle) {
	t.Helper()
	for _, h := range hs {
		if h != nil {
			mustReturn(t, p, h)
		}
	}
}

// lendOrder borrows n objects of key one after another and returns their
// IDs in the order lent, then gives them all back in that order.
func lendOrder(t *testing.T, p *pool, key string, n int) []int64 {
	t.Helper()
	hs := make([]*handle, n)
	ids := make([]int64, n)
	for i := range hs {
		hs[i] = mustBorrow(t, p, key)
		ids[i] = hs[i].Value().ID
	}
	for _, h := range hs {
		mustReturn(t, p, h)
	}
	return ids
}

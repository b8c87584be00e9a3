package keyedpool_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// returnInOrder makes objects 1, 2, 3 of key and returns them in that
// order.
func returnInOrder(t *testing.T, p *pool, key string) {
	t.Helper()
	hs := []*handle{mustBorrow(t, p, key), mustBorrow(t, p, key), mustBorrow(t, p, key)}
	for _, h := range hs {
		mustReturn(t, p, h)
	}
}

func wantOrder(fifo bool) string {
	if fifo {
		return "[1 2 3]"
	}
	return "[3 2 1]"
}

// An eviction run that tests and keeps every idle object leaves them in
// the order FIFO promises: LIFO lends the most recently returned first.
func TestEvictionRunKeepsIdleOrder(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("FIFO=%v", fifo), func(t *testing.T) {
			p, f := newPool(t, keyedpool.Config{FIFO: fifo, TestWhileIdle: true, NumTestsPerEvictionRun: -1})
			returnInOrder(t, p, "k")
			mustRunEviction(t, p)
			mustRunEviction(t, p) // a second run goes over them again
			if got := f.Validated.Load(); got != 6 {
				t.Fatalf("validations = %d, want every object tested in each run", got)
			}
			if got := fmt.Sprint(lendOrder(t, p, "k", 3)); got != wantOrder(fifo) {
				t.Errorf("lent %s after eviction runs kept all, want %s", got, wantOrder(fifo))
			}
		})
	}
}

// An idle object taken for a borrower who gives up before it is activated
// goes back to its place, with its idle time: the order holds and the
// object is not made younger.
func TestUnusedIdleObjectKeepsItsPlace(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("FIFO=%v", fifo), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, f := newPool(t, keyedpool.Config{FIFO: fifo})
				mustRunEviction(t, p) // the clock runs, so returns are stamped
				returnInOrder(t, p, "k")
				before := p.ListObjects("k")
				time.Sleep(time.Second)
				ctx, cancel := context.WithCancel(context.Background())
				f.ActivateHook = func(context.Context, *testfactory.Obj) error {
					cancel()
					return ctx.Err()
				}
				if _, err := p.Borrow(ctx, "k"); !errors.Is(err, context.Canceled) {
					t.Fatalf("Borrow() = %v, want context.Canceled", err)
				}
				f.ActivateHook = nil
				for i, o := range p.ListObjects("k") {
					if !o.LastReturned.Equal(before[i].LastReturned) {
						t.Errorf("object %d returned at %v, now %v: an unused object kept its idle time", i+1, before[i].LastReturned, o.LastReturned)
					}
				}
				if got := fmt.Sprint(lendOrder(t, p, "k", 3)); got != wantOrder(fifo) {
					t.Errorf("lent %s after a borrower gave one up, want %s", got, wantOrder(fifo))
				}
			})
		})
	}
}

// A new idle object is in the state a returned one is in: AddObject,
// Prepare and min-idle upkeep passivate it; a failed Passivate destroys
// it, and is AddObject's error or, for upkeep, a background error.
func TestNewIdleObjectsArePassivated(t *testing.T) {
	ctx := context.Background()
	p, f := newPool(t, keyedpool.Config{MinIdlePerKey: 2})
	if err := p.AddObject(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := p.Prepare(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got := f.Passivated.Load(); got != 3 {
		t.Errorf("passivations after AddObject and Prepare of 2 = %d, want 3", got)
	}
	if err := p.Invalidate(mustBorrow(t, p, "b")); err != nil {
		t.Fatal(err)
	}
	// Upkeep makes b's second idle object again, and a's second: a key
	// AddObject made for is one the evictor keeps at MinIdlePerKey.
	mustRunEviction(t, p)
	if got := f.Passivated.Load(); got != 5 {
		t.Errorf("passivations after upkeep = %d, want 5", got)
	}

	errPassivate := errors.New("passivate failed")
	f.PassivateHook = func(context.Context, *testfactory.Obj) error { return errPassivate }
	if err := p.AddObject(ctx, "c"); !errors.Is(err, errPassivate) {
		t.Errorf("AddObject() with a failing Passivate = %v, want its error", err)
	}
	if err := p.Invalidate(mustBorrow(t, p, "b")); err != nil {
		t.Fatal(err)
	}
	// Upkeep makes b's second object and c's two (MinIdlePerKey keeps c):
	// each fails to passivate, is destroyed, and is a background error
	// that the run also returns.
	if err := p.RunEviction(ctx); !errors.Is(err, errPassivate) {
		t.Errorf("RunEviction() = %v, want the upkeep's Passivate errors", err)
	}
	s := p.Stats()
	if s.BackgroundErrors.Passivate != 3 || s.DestroyedByReturnValidation != 4 {
		t.Errorf("BackgroundErrors.Passivate = %d, DestroyedByReturnValidation = %d; want 3 and 4",
			s.BackgroundErrors.Passivate, s.DestroyedByReturnValidation)
	}
	if got := p.KeyStats("c").Idle; got != 0 {
		t.Errorf("idle objects of c = %d, want 0", got)
	}
	f.PassivateHook = nil
}

// Without an evictor, idle times count from the first RunEviction call:
// that call restamps the idle objects to its own time, later calls change
// no stamp, so a pool run by hand at any cadence evicts on time.
func TestIdleTimeCountsFromFirstRunEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MinEvictableIdle: time.Second, NumTestsPerEvictionRun: -1})
		idleObjects(t, p, "k", 1)
		time.Sleep(10 * time.Second) // idle, but nothing has measured it
		mustRunEviction(t, p)
		if got := p.KeyStats("k").Idle; got != 1 {
			t.Fatalf("idle after the first run = %d, want 1: idle time counts from that run", got)
		}
		for range 3 {
			time.Sleep(400 * time.Millisecond)
			mustRunEviction(t, p)
		}
		if got := p.KeyStats("k").Idle; got != 0 {
			t.Errorf("idle 1.2s after the first run (runs every 0.4s) = %d, want 0: later runs must not restart the idle time", got)
		}
	})
}

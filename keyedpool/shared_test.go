package keyedpool_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/kpool-go/kpool/keyedpool"
)

func TestSharedLeasesSpreadOverLeastLoaded(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxSharesPerObject: 3, MaxTotalPerKey: 2, WhenExhausted: keyedpool.Fail})
	// First borrow makes object A; the second finds A under its cap and
	// shares it rather than making B.
	a1 := mustBorrow(t, p, "k")
	a2 := mustBorrow(t, p, "k")
	if a2.Value() != a1.Value() || f.Made.Load() != 1 {
		t.Fatalf("second Borrow() = object %d (made %d), want a share of object %d", a2.Value().ID, f.Made.Load(), a1.Value().ID)
	}
	a3 := mustBorrow(t, p, "k")
	// A is at its cap of 3: the next borrow makes B.
	b1 := mustBorrow(t, p, "k")
	if b1.Value() == a1.Value() || f.Made.Load() != 2 {
		t.Fatalf("fourth Borrow() = object %d, want a new object", b1.Value().ID)
	}
	// Return one share of A: A has 2, B has 1, so B is the least loaded.
	mustReturn(t, p, a3)
	if h := mustBorrow(t, p, "k"); h.Value() != b1.Value() {
		t.Errorf("Borrow() = object %d, want least loaded object %d", h.Value().ID, b1.Value().ID)
	}
	s := p.KeyStats("k")
	if s.SharesInUse != 4 || s.Active != 2 || s.Idle != 0 {
		t.Errorf("KeyStats = %+v, want 4 shares on 2 active objects", s)
	}
	mustBorrow(t, p, "k") // 3 on A... A has 2 → 3; B has 2
	mustBorrow(t, p, "k") // B → 3
	if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("Borrow() with every object at its cap = %v, want ErrExhausted", err)
	}
	// Each object was activated once, when it left the idle set (or was made).
	if got := f.Activated.Load(); got != 2 {
		t.Errorf("Activate calls = %d, want 2", got)
	}
}

func TestSharedObjectGoesIdleWithLastShare(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxSharesPerObject: 2})
	h1, h2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k")
	mustReturn(t, p, h1)
	if s := p.KeyStats("k"); s.Idle != 0 || s.SharesInUse != 1 || f.Passivated.Load() != 0 {
		t.Errorf("after one of two returns: %+v, passivated %d; want still active, not passivated", s, f.Passivated.Load())
	}
	if err := p.Return(h1); !errors.Is(err, keyedpool.ErrNotBorrowed) {
		t.Errorf("Return() of the same share twice = %v, want ErrNotBorrowed", err)
	}
	mustReturn(t, p, h2)
	if s := p.KeyStats("k"); s.Idle != 1 || s.SharesInUse != 0 || f.Passivated.Load() != 1 {
		t.Errorf("after last return: %+v, passivated %d; want idle, passivated once", s, f.Passivated.Load())
	}
}

func TestSharedInvalidateWaitsForOtherShares(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MaxSharesPerObject: 2})
	h1, h2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k")
	if err := p.Invalidate(h1); err != nil {
		t.Fatalf("Invalidate() = %v", err)
	}
	if h1.Value().Destroyed() {
		t.Fatal("object destroyed under another borrower's share")
	}
	// The broken object is not lent again: a new borrow makes a new one.
	h3 := mustBorrow(t, p, "k")
	if h3.Value() == h1.Value() {
		t.Error("Borrow() lent an invalidated object")
	}
	mustReturn(t, p, h2)
	if !h1.Value().Destroyed() {
		t.Error("invalidated object not destroyed when its last share came back")
	}
	if got := p.Stats().DestroyedByInvalidate; got != 1 {
		t.Errorf("DestroyedByInvalidate = %d, want 1", got)
	}
	mustReturn(t, p, h3)
}

func TestSharedWaitersGetSharesOnceActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{MaxSharesPerObject: 3, MaxTotalPerKey: 1})
		var hs []*handle
		for range 3 {
			hs = append(hs, mustBorrow(t, p, "k"))
		}
		var chs []<-chan result
		for range 3 {
			chs = append(chs, borrowAsync(context.Background(), p, "k"))
			synctest.Wait() // queued in this order
		}
		if got := p.KeyStats("k").Waiters; got != 3 {
			t.Fatalf("waiters = %d, want 3", got)
		}
		// Freeing one share lets exactly one waiter in.
		mustReturn(t, p, hs[0])
		r := <-chs[0]
		if r.err != nil || r.h.Value() != hs[1].Value() {
			t.Fatalf("first waiter got %v, %v, want a share of the object", r.h, r.err)
		}
		synctest.Wait()
		if got := p.KeyStats("k").Waiters; got != 2 {
			t.Errorf("waiters = %d, want 2", got)
		}
		// All shares back: the object goes idle, is lent to the next waiter,
		// activated, and then shared with the last.
		mustReturn(t, p, hs[1])
		mustReturn(t, p, hs[2])
		mustReturn(t, p, r.h)
		for i, ch := range chs[1:] {
			if r := <-ch; r.err != nil || r.h.Value() != hs[0].Value() {
				t.Errorf("waiter %d got %v, %v, want the one object", i+1, r.h, r.err)
			} else {
				defer mustReturn(t, p, r.h)
			}
		}
		if got := f.Made.Load(); got != 1 {
			t.Errorf("objects made = %d, want 1", got)
		}
	})
}

// With shared leases, MinIdlePerKey counts spare objects: a lent object
// under its share cap can take the next borrower without a make, so upkeep
// makes a new object only when every object of the key is at its cap.
func TestSharedMinIdleCountsRoomUnderTheCap(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxSharesPerObject: 4, MaxTotalPerKey: 4, MinIdlePerKey: 1})
	if err := p.Prepare(context.Background(), "k"); err != nil {
		t.Fatalf("Prepare() = %v", err)
	}
	hs := borrowAtOnce(t, p, "k", 3) // 3 of the object's 4 shares
	mustRunEviction(t, p)
	if got := f.Made.Load(); got != 1 {
		t.Errorf("objects made with one lent under its share cap = %d, want 1 (it is the spare)", got)
	}
	if err := p.Prepare(context.Background(), "k"); err != nil || f.Made.Load() != 1 {
		t.Errorf("Prepare() = %v and made %d objects, want nil and 1", err, f.Made.Load())
	}
	hs = append(hs, mustBorrow(t, p, "k")) // the 4th share: no room left
	mustRunEviction(t, p)
	if s := p.KeyStats("k"); f.Made.Load() != 2 || s.Idle != 1 || s.Active != 1 {
		t.Errorf("after the object reached its cap: made %d, KeyStats %+v; want 2 made, 1 idle, 1 active", f.Made.Load(), s)
	}
	returnAll(t, p, hs)
}

package keyedpool_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// Shares pack onto the busiest object under its cap, and an idle object is
// taken only when every lent one is full: load that falls then leaves whole
// objects without a lease, for the evictor to retire, instead of every
// object half busy.
func TestSharedLeasesPackOntoBusiest(t *testing.T) {
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
	// Return one share of A: A has 2, B has 1, so A is the busiest with room.
	mustReturn(t, p, a3)
	if h := mustBorrow(t, p, "k"); h.Value() != a1.Value() {
		t.Errorf("Borrow() = object %d, want the busiest object %d", h.Value().ID, a1.Value().ID)
	}
	s := p.KeyStats("k")
	if s.SharesInUse != 4 || s.Active != 2 || s.Idle != 0 {
		t.Errorf("KeyStats = %+v, want 4 shares on 2 active objects", s)
	}
	mustBorrow(t, p, "k") // B → 2
	mustBorrow(t, p, "k") // B → 3
	if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("Borrow() with every object at its cap = %v, want ErrExhausted", err)
	}
	// Each object was activated once, when it left the idle set (or was made).
	if got := f.Activated.Load(); got != 2 {
		t.Errorf("Activate calls = %d, want 2", got)
	}
}

// A lent object with room is shared before an idle object is activated.
func TestSharedLeaseBeforeIdleObject(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxSharesPerObject: 3})
	a := mustBorrow(t, p, "k")
	if err := p.AddObject(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	h := mustBorrow(t, p, "k")
	if h.Value() != a.Value() {
		t.Errorf("Borrow() = object %d, want a share of lent object %d before idle one", h.Value().ID, a.Value().ID)
	}
	if s := p.KeyStats("k"); s.Idle != 1 || s.SharesInUse != 2 {
		t.Errorf("KeyStats = %+v, want 1 idle, 2 shares", s)
	}
	if got := f.Activated.Load(); got != 1 {
		t.Errorf("Activate calls = %d, want 1 (the idle object untouched)", got)
	}
	mustReturn(t, p, a)
	mustReturn(t, p, h)
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

// With shared leases a burst of borrowers on a cold key waits for the one
// object being made instead of making one each: for gRPC, one dial, not a
// storm.
func TestSharedColdBurstMakesOneObject(t *testing.T) {
	for _, action := range []keyedpool.ExhaustedAction{keyedpool.Block, keyedpool.Fail} {
		t.Run(action.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &testfactory.Factory{MakeHook: func(context.Context, string) error {
					time.Sleep(100 * time.Millisecond) // a dial
					return nil
				}}
				p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 100, WhenExhausted: action})
				hs := borrowAtOnce(t, p, "k", 8)
				if got := f.Made.Load(); got != 1 {
					t.Errorf("objects made for 8 borrowers with 100 shares each = %d, want 1", got)
				}
				returnAll(t, p, hs)
			})
		})
	}
}

// With shared leases, borrowers beyond what the objects in the making can
// take still make their own.
func TestSharedBurstBeyondPendingMakesMore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{MakeHook: func(context.Context, string) error {
			time.Sleep(100 * time.Millisecond)
			return nil
		}}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 2})
		hs := borrowAtOnce(t, p, "k", 6)
		if got := f.Made.Load(); got != 3 {
			t.Errorf("objects made for 6 borrowers with 2 shares each = %d, want 3", got)
		}
		returnAll(t, p, hs)
	})
}

// With shared leases an object under steady load never goes back to zero
// leases; past MaxLifetime it still takes no new one and retires, or the
// limit would never take effect.
func TestSharedExpiredObjectTakesNoNewLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{
			MaxSharesPerObject:      2,
			MaxLifetime:             10 * time.Second,
			TimeBetweenEvictionRuns: time.Second,
			NumTestsPerEvictionRun:  -1,
		})
		held := mustBorrow(t, p, "a")
		first := held.Value()
		for range 10 { // 100s, ten lifetimes
			sleepPast(10 * time.Second)
			next := mustBorrow(t, p, "a")
			mustReturn(t, p, held)
			held = next
		}
		if held.Value() == first {
			t.Errorf("Borrow at 100s got a new share of the object made at 0s (MaxLifetime 10s, DestroyedByLifetime = %d); "+
				"want an expired object to stop taking leases and retire", p.Stats().DestroyedByLifetime)
		}
		mustReturn(t, p, held)
	})
}

// A shared object invalidated while other shares are out is broken: it takes
// no borrower, so the key loses the spare room it gave. The next run's
// upkeep makes the key a new spare, although an earlier run took the key off
// the upkeep queue while that lent object was its spare. (Leases taken back
// by Abandoned.RemoveOnMaintenance are invalidated, and go the same way.)
func TestSharedInvalidatedSpareIsMadeUp(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxSharesPerObject: 4, MaxTotalPerKey: 4, MinIdlePerKey: 1})
	if err := p.Prepare(context.Background(), "k"); err != nil {
		t.Fatalf("Prepare() = %v", err)
	}
	h1 := mustBorrow(t, p, "k")
	h2 := mustBorrow(t, p, "k")
	if h1.Value() != h2.Value() {
		t.Fatalf("second Borrow() got another object, want a share of the first")
	}
	mustRunEviction(t, p) // the lent object (2 of 4 shares) is the spare: nothing made
	if got := f.Made.Load(); got != 1 {
		t.Fatalf("made %d objects before Invalidate, want 1", got)
	}
	if err := p.Invalidate(h1); err != nil {
		t.Fatalf("Invalidate() = %v", err)
	}
	// The object is broken: it takes no borrower. The key has 0 spare.
	mustRunEviction(t, p)
	if got := f.Made.Load(); got != 2 {
		t.Errorf("after Invalidate of the key's only spare and a run: made %d objects, want 2 (upkeep must make a spare); KeyStats %+v",
			got, p.KeyStats("k"))
	}
	mustReturn(t, p, h2)
}

// A lent shared object past MaxLifetime takes no new borrower (lending
// retires it), so it is no spare: Prepare makes one, and the next borrower
// need not make.
func TestSharedPrepareDoesNotCountExpiredLentObject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			MaxSharesPerObject: 4, MaxTotalPerKey: 4, MinIdlePerKey: 1,
			MaxLifetime: 10 * time.Second,
		})
		h := mustBorrow(t, p, "k")  // object A, 1 of 4 shares
		sleepPast(11 * time.Second) // A has outlived MaxLifetime
		if err := p.Prepare(context.Background(), "k"); err != nil {
			t.Fatalf("Prepare() = %v", err)
		}
		made := f.Made.Load()
		if made != 2 {
			t.Errorf("Prepare with the only lent object expired made %d objects in all, want 2 (an expired object takes no borrower)", made)
		}
		h2 := mustBorrow(t, p, "k")
		if got := f.Made.Load(); got != made {
			t.Errorf("Borrow() after Prepare had to make an object (made %d -> %d): Prepare left no spare", made, got)
		}
		mustReturn(t, p, h2)
		mustReturn(t, p, h)
	})
}

// The same for upkeep: when the key's only spare, a lent shared object,
// outlives MaxLifetime, a run makes a new spare, though no pool operation
// announces an expiry.
func TestSharedExpiredLentSpareIsMadeUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			MaxSharesPerObject: 4, MaxTotalPerKey: 4, MinIdlePerKey: 1,
			MaxLifetime: 10 * time.Second,
		})
		if err := p.Prepare(context.Background(), "k"); err != nil {
			t.Fatalf("Prepare() = %v", err)
		}
		h := mustBorrow(t, p, "k") // A, 1 of 4 shares: the spare
		mustRunEviction(t, p)
		sleepPast(11 * time.Second) // A expires while lent
		mustRunEviction(t, p)
		if got := f.Made.Load(); got != 2 {
			t.Errorf("after the key's only spare expired and a run: made %d objects, want 2", got)
		}
		mustReturn(t, p, h)
	})
}

// A Borrow that retires an expired lent object and shares another leaves the
// key one spare short of MinIdlePerKey; the next run makes it up, whether or
// not that share filled the other object to the cap.
func TestSharedLendRetiringExpiredObjectQueuesUpkeep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			MaxSharesPerObject: 4, MaxTotalPerKey: 4, MinIdlePerKey: 2,
			MaxLifetime: 10 * time.Second,
		})
		hA := mustBorrow(t, p, "k") // A made at 0s, lent
		sleepPast(5 * time.Second)
		mustRunEviction(t, p) // upkeep makes B (idle) at 5s: A and B are the 2 spares
		var fill []*keyedpool.Pooled[string, *testfactory.Obj]
		for range 3 { // A to its cap, so that the next Borrow takes B
			fill = append(fill, mustBorrow(t, p, "k"))
		}
		hB := mustBorrow(t, p, "k")
		if hB.Value() == hA.Value() {
			t.Fatalf("Borrow() shared A, want idle B")
		}
		for _, h := range fill {
			mustReturn(t, p, h)
		}
		mustRunEviction(t, p)
		if got := f.Made.Load(); got != 2 {
			t.Fatalf("made %d, want 2 before expiry", got)
		}
		sleepPast(6 * time.Second)  // 11s: A expired, B not
		hC := mustBorrow(t, p, "k") // retires A, shares B (2 of 4)
		if hC.Value() != hB.Value() {
			t.Fatalf("Borrow() got object %d, want a share of B", hC.Value().ID)
		}
		// Spare now: B only; MinIdlePerKey is 2.
		mustRunEviction(t, p)
		if got := f.Made.Load(); got != 3 {
			t.Errorf("after A was retired and a run: made %d objects, want 3 (key has 1 spare, MinIdlePerKey 2); KeyStats %+v",
				got, p.KeyStats("k"))
		}
		mustReturn(t, p, hA)
		mustReturn(t, p, hB)
		mustReturn(t, p, hC)
	})
}

// The eviction policy counts spare objects as upkeep and Prepare do
// (Candidate.IdleCount includes lent objects under the cap): with
// SoftMinEvictableIdle, an idle object beside a lent spare that covers
// MinIdlePerKey is evicted, not kept on top of it.
func TestSharedSoftEvictionCountsLentSpare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{
			MaxSharesPerObject: 4, MaxTotalPerKey: 4, MinIdlePerKey: 1,
			SoftMinEvictableIdle:   5 * time.Second,
			NumTestsPerEvictionRun: -1,
		})
		for range 2 {
			if err := p.AddObject(context.Background(), "k"); err != nil {
				t.Fatalf("AddObject() = %v", err)
			}
		}
		h := mustBorrow(t, p, "k") // one lent (1 of 4 shares): the spare
		mustRunEviction(t, p)      // starts the clock
		sleepPast(6 * time.Second)
		mustRunEviction(t, p)
		if s := p.KeyStats("k"); s.Idle != 0 {
			t.Errorf("KeyStats %+v: the idle object was kept by soft eviction although the lent one is the key's MinIdlePerKey spare; want Idle 0", s)
		}
		mustReturn(t, p, h)
	})
}

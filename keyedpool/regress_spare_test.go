package keyedpool_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/keyedpool"
)

// Found by a review of the change that made MinIdlePerKey count lent shared
// objects under the share cap as spare; each test failed on it. The
// comments say what was wrong then.

// Bug: a shared object that leaves sp.lent by Invalidate (stBroken while
// other shares are still out) took the key's spare capacity with it, but
// invalidate never called wantUpkeepLocked. The key was taken off the upkeep
// queue by the previous run (the lent object was its spare then), so every
// later run skips it: the key has no spare object until the last share of
// the broken object comes back, which under steady load may be never. The
// same happens for leases taken back by Abandoned.RemoveOnMaintenance
// (removeAbandoned -> invalidate), even inside the run whose upkeep follows.
func TestRegressSharedInvalidateLeavesKeyWithoutSpare(t *testing.T) {
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

// Bug: spareLocked counted every object in sp.lent under the share cap, even
// one that has outlived MaxLifetime. lendLocked never lends such an object
// (it retires it), so it cannot take a borrower without a make, yet Prepare
// counted it as the key's spare and made nothing; the next borrower then
// had to make.
func TestRegressSharedPrepareCountsExpiredLentObjectAsSpare(t *testing.T) {
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

// Bug: the same for the evictor. Expiry of a lent shared object is a
// change with time that queued nothing, and spareLocked counted the
// expired object anyway, so upkeep never replaced the key's only spare.
func TestRegressSharedUpkeepIgnoresExpiryOfLentSpare(t *testing.T) {
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

// Bug: lendLocked retires an expired lent object (stBroken, out of sp.lent)
// and lends a share of another one, but only queued upkeep when that share
// filled the other object to the cap. Losing the expired object's room was
// never queued, so the key stayed one spare short of MinIdlePerKey across
// runs (this holds even if spareLocked skipped expired objects).
func TestRegressSharedLendRetiringExpiredObjectDoesNotQueueUpkeep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			MaxSharesPerObject: 4, MaxTotalPerKey: 4, MinIdlePerKey: 2,
			MaxLifetime: 10 * time.Second,
		})
		hA := mustBorrow(t, p, "k") // A made at 0s, lent
		sleepPast(5 * time.Second)
		mustRunEviction(t, p) // upkeep makes B (idle) at 5s: A and B are the 2 spares
		hB := mustBorrow(t, p, "k")
		if hB.Value() == hA.Value() {
			t.Fatalf("Borrow() shared A, want idle B")
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

// Bug: the eviction policy still counted only idle objects against MinIdle
// (Candidate.IdleCount vs Settings.MinIdle), while upkeep and Prepare now
// count lent objects under the cap as spare. With SoftMinEvictableIdle, an
// idle object of a key whose lent object had room was never evicted: the
// key kept MinIdlePerKey idle objects on top of its lent spares, i.e. more
// spare objects than the documented rule, and the new upkeep would never
// make that idle object again.
func TestRegressSharedSoftEvictionKeepsIdleBesideLentSpare(t *testing.T) {
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

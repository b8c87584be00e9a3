package keyedpool_test

import (
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/keyedpool"
)

// Found by a review of the first lifetime sweep of lent shared objects,
// which retired every expired one in every run; each test failed on it.

// Bug: RunEviction's sweep retired every lent shared object past
// MaxLifetime (stBroken, brokenWhy = byLifetime) before it took back
// abandoned leases. removeAbandoned -> invalidate then found the object
// broken and counted the destroy under the first cause, byLifetime, so a
// leaked shared object was never counted in DestroyedByAbandoned, the
// counter users watch for leaks. The sweep now only queues upkeep. Exclusive mode (no sweep) and shared mode before the sweep
// count the same leak as DestroyedByAbandoned.
func TestRegressLentSweepHidesAbandonedTakeBack(t *testing.T) {
	for _, shares := range []int{1, 4} {
		t.Run(fmt.Sprintf("Shares=%d", shares), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, _ := newPool(t, keyedpool.Config{
					MaxSharesPerObject: shares,
					MaxLifetime:        10 * time.Second,
					Abandoned:          &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: 5 * time.Second},
				})
				leaked := mustBorrow(t, p, "k")
				sleepPast(11 * time.Second) // leaked for 11s (> 5s) and past its lifetime (10s)
				mustRunEviction(t, p)
				if err := p.Return(leaked); !errors.Is(err, keyedpool.ErrNotBorrowed) {
					t.Fatalf("Return of the lease taken back = %v, want ErrNotBorrowed", err)
				}
				if s := p.Stats(); s.Destroyed != 1 || s.DestroyedByAbandoned != 1 || s.DestroyedByLifetime != 0 {
					t.Errorf("leaked lease taken back by the run: Destroyed %d, DestroyedByAbandoned %d, DestroyedByLifetime %d; want 1, 1, 0",
						s.Destroyed, s.DestroyedByAbandoned, s.DestroyedByLifetime)
				}
			})
		})
	}
}

// Bug: the same preemption for Invalidate. Once a run's sweep had retired a
// lent shared object for its lifetime, an Invalidate of its only lease was
// counted in DestroyedByLifetime, not DestroyedByInvalidate ("Invalidate"),
// while DestroyedByLifetime is documented as "found idle by an eviction run
// or returned". In exclusive mode, and in shared mode before the sweep, the
// same Invalidate of an expired lent object counts as DestroyedByInvalidate:
// a lifetime retirement only stops new leases, it should not fix the
// reason of the destroy that an explicit Invalidate (or abandonment) causes.
func TestRegressLentSweepTurnsInvalidateIntoLifetime(t *testing.T) {
	for _, shares := range []int{1, 4} {
		t.Run(fmt.Sprintf("Shares=%d", shares), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, _ := newPool(t, keyedpool.Config{MaxSharesPerObject: shares, MaxLifetime: 10 * time.Second})
				h := mustBorrow(t, p, "k")
				sleepPast(11 * time.Second)
				mustRunEviction(t, p) // shared: the sweep retires the object
				if err := p.Invalidate(h); err != nil {
					t.Fatalf("Invalidate() = %v", err)
				}
				if s := p.Stats(); s.Destroyed != 1 || s.DestroyedByInvalidate != 1 || s.DestroyedByLifetime != 0 {
					t.Errorf("after Invalidate of the lent object: Destroyed %d, DestroyedByInvalidate %d, DestroyedByLifetime %d; want 1, 1, 0",
						s.Destroyed, s.DestroyedByInvalidate, s.DestroyedByLifetime)
				}
			})
		})
	}
}

// Bug: the lifetime sweep walked every lent shared object of the pool in
// every run, under the pool's lock, whatever NumTestsPerEvictionRun said, so
// a run cost what the pool lends, not what it looks at. It now looks at
// NumTestsPerEvictionRun lent objects per run, going on where the last run
// stopped: here 7 keys whose only (lent) objects expired get their upkeep 3
// keys a run.
func TestRegressLentSweepIsBoundedPerRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			MaxSharesPerObject: 2, MinIdlePerKey: 1,
			MaxLifetime: 10 * time.Second, NumTestsPerEvictionRun: 3,
		})
		var hs []*handle
		for k := range 7 {
			hs = append(hs, mustBorrow(t, p, fmt.Sprint("k", k))) // each key's lent object, with room, is its spare
		}
		made := f.Made.Load()
		if made != 7 {
			t.Fatalf("made %d objects before expiry, want 7 (one spare per key)", made)
		}
		sleepPast(11 * time.Second)
		for run, want := range []int64{3, 6, 7, 7} {
			mustRunEviction(t, p)
			if got := f.Made.Load() - made; got != want {
				t.Errorf("run %d after expiry: %d objects made in all, want %d (3 lent objects looked at per run)", run+1, got, want)
			}
		}
		returnAll(t, p, hs)
	})
}

// Only objects lent while MaxLifetime is on are in the sweep's list; an
// object lent before SetConfig turned it on, or after it turned it off, must
// still come back, go idle and be lent again without upsetting the list.
func TestLentSweepAcrossSetConfig(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := keyedpool.Config{MaxSharesPerObject: 2, MinIdlePerKey: 1}
		p, f := newPool(t, cfg)
		early := mustBorrow(t, p, "a") // lent with no lifetime: not in the sweep's list
		on := cfg
		on.MaxLifetime = 10 * time.Second
		if err := p.SetConfig(on); err != nil {
			t.Fatal(err)
		}
		late := mustBorrow(t, p, "b") // lent with a lifetime: swept
		mustReturn(t, p, early)
		again := mustBorrow(t, p, "a") // lent again, now with a lifetime
		sleepPast(11 * time.Second)
		made := f.Made.Load()
		mustRunEviction(t, p)
		if got := f.Made.Load() - made; got != 2 {
			t.Errorf("a run after both lent objects expired made %d, want 2 (a spare for a and for b)", got)
		}
		if err := p.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		mustReturn(t, p, again)
		mustReturn(t, p, late)
		if s := p.Stats(); s.Active != 0 || s.SharesInUse != 0 {
			t.Errorf("Stats after every lease came back = %+v, want nothing active", s.Gauges)
		}
	})
}

package keyedpool_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// Regression tests from an independent review of the evictor: each failed
// on the code as first written.

// A Borrow that passes the backoff period takes the probe, then finds the
// pool full with no idle object to take the room of and gets nothing: the
// probe is never ended and the key refuses every make for ever.
func TestEvictRegressBackoffProbeLostWhenPoolFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		f := &testfactory.Factory{MakeHook: func(_ context.Context, key string) error {
			if key == "dead" && down.Load() {
				return errDial
			}
			return nil
		}}
		p := newPoolWith(t, f, keyedpool.Config{
			MaxTotal:             1,
			WhenExhausted:        keyedpool.Fail,
			MakeFailureThreshold: 1,
			MakeBackoffBase:      time.Second,
			MakeBackoffMax:       time.Second,
		})
		ctx := context.Background()
		if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, errDial) {
			t.Fatalf("first Borrow(dead) = %v, want the make error", err)
		}
		other := mustBorrow(t, p, "other") // fills MaxTotal, nothing idle
		sleepPast(2 * time.Second)         // past the backoff period
		if _, err := p.Borrow(ctx, "dead"); !errors.Is(err, keyedpool.ErrExhausted) {
			t.Fatalf("Borrow(dead) in a full pool = %v, want ErrExhausted", err)
		}
		down.Store(false)
		mustReturn(t, p, other) // now there is an idle object whose room can be taken
		sleepPast(time.Minute)
		_, err := p.Borrow(ctx, "dead")
		if err != nil {
			t.Errorf("Borrow(dead) 1m later, backend up, room available = %v; want an object "+
				"(the probe taken by the ErrExhausted Borrow was never given back: the key is stuck)", err)
		}
	})
}

// A run that outlasts the interval makes the scheduler skip ticks, so the
// pool's clock is not advanced: objects returned meanwhile are stamped with
// a time long past, and the next run evicts them early.
func TestEvictRegressSlowRunMakesStampsEarlyAndEvictsEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var slowOnce atomic.Bool
		f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.Key == "slow" && slowOnce.CompareAndSwap(false, true) {
				time.Sleep(9500 * time.Millisecond) // a validation against a slow backend
			}
			return nil
		}
		p := newPoolWith(t, f, keyedpool.Config{
			TimeBetweenEvictionRuns: time.Second,
			NumTestsPerEvictionRun:  -1,
			TestWhileIdle:           true,
			MinEvictableIdle:        3 * time.Second,
		})
		idleObjects(t, p, "slow", 1)
		h := mustBorrow(t, p, "a")
		// The run of 1s tests "slow" until 10.5s; the ticks between are skipped.
		sleepPast(10 * time.Second)
		mustReturn(t, p, h) // at 10s
		obj := h.Value()
		sleepPast(1500 * time.Millisecond) // the run of 11s has looked at it
		if obj.Destroyed() {
			t.Errorf("object returned at 10s was evicted by the run at 11s (DestroyedByEvictor = %d): "+
				"idle 1s, want kept until idle more than MinEvictableIdle 3s", p.Stats().DestroyedByEvictor)
		}
	})
}

// The same stale clock declares a lease abandoned one second after Borrow.
func TestEvictRegressSlowRunMakesLeaseAbandonedEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var slowOnce atomic.Bool
		f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.Key == "slow" && slowOnce.CompareAndSwap(false, true) {
				time.Sleep(9500 * time.Millisecond)
			}
			return nil
		}
		p := newPoolWith(t, f, keyedpool.Config{
			TimeBetweenEvictionRuns: time.Second,
			NumTestsPerEvictionRun:  -1,
			TestWhileIdle:           true,
			Abandoned:               &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: 5 * time.Second},
		})
		idleObjects(t, p, "slow", 1)
		sleepPast(10 * time.Second)
		h := mustBorrow(t, p, "a") // at 10s
		sleepPast(1500 * time.Millisecond)
		if err := p.Return(h); err != nil {
			t.Errorf("Return of a lease borrowed 1.5s ago = %v (DestroyedByAbandoned = %d); "+
				"want nil: Abandoned.Timeout is 5s", err, p.Stats().DestroyedByAbandoned)
		}
	})
}

// Without an evictor (RunEviction called by hand) the pool's clock stays
// at the last run: an object returned long after it is stamped with the
// run's time, and evicted as idle though it was returned a second ago.
func TestEvictRegressManualRunEvictsJustReturnedObject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MinEvictableIdle: 10 * time.Second, NumTestsPerEvictionRun: -1})
		h := mustBorrow(t, p, "a") // made at 0s
		mustRunEviction(t, p)      // at 0s
		sleepPast(time.Minute)
		mustReturn(t, p, h) // at 60s
		sleepPast(time.Second)
		mustRunEviction(t, p) // at 61s
		if h.Value().Destroyed() {
			t.Errorf("object returned 1s before RunEviction was evicted (DestroyedByEvictor = %d); "+
				"want kept: MinEvictableIdle is 10s", p.Stats().DestroyedByEvictor)
		}
	})
}

// Upkeep drops a key from its queue when the key is at MaxTotalPerKey and
// never queues it again: once a lent object is invalidated there is room,
// but the key (which has no idle object for a run to visit and re-queue it)
// stays below MinIdlePerKey run after run.
func TestEvictRegressUpkeepForgetsKeyAtLimit(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MinIdlePerKey: 2, MaxTotalPerKey: 2})
	h1, h2 := mustBorrow(t, p, "a"), mustBorrow(t, p, "a")
	mustRunEviction(t, p) // "a" is at its limit: nothing to make now
	if err := p.Invalidate(h1); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		mustRunEviction(t, p)
	}
	if got := p.KeyStats("a").Idle; got != 1 {
		t.Errorf(`KeyStats("a").Idle after 3 runs = %d, want 1 (MinIdlePerKey 2, one of MaxTotalPerKey 2 lent)`, got)
	}
	mustReturn(t, p, h2)
}

// The same with MaxTotal: a key skipped because the pool was full is not
// made up once room frees.
func TestEvictRegressUpkeepForgetsKeyWhenPoolFull(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MinIdlePerKey: 1, MaxTotal: 2})
	ha := mustBorrow(t, p, "a")
	hb := mustBorrow(t, p, "b")
	mustRunEviction(t, p) // full: nothing made
	if err := p.Invalidate(hb); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		mustRunEviction(t, p)
	}
	if got := p.KeyStats("a").Idle; got != 1 {
		t.Errorf(`KeyStats("a").Idle after 3 runs = %d, want MinIdlePerKey 1 (one of 2 slots is free)`, got)
	}
	mustReturn(t, p, ha)
}

// With shared leases an object never goes back to zero leases under steady
// load, and Borrow keeps adding shares to it long past MaxLifetime: the
// limit never takes effect.
func TestEvictRegressSharedExpiredObjectKeepsTakingLeases(t *testing.T) {
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

// Exclusive mode, no evictor run reaching the object: Borrow lends an idle
// object past its MaxLifetime. (The evictor looks at a few objects per run,
// so with many idle objects this is the common case.)
func TestEvictRegressBorrowLendsExpiredIdleObject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxLifetime: 10 * time.Second})
		obj := idleObjects(t, p, "a", 1)[0]
		sleepPast(time.Minute)
		h := mustBorrow(t, p, "a")
		if h.Value() == obj {
			t.Errorf("Borrow at 60s lent the idle object made at 0s; want it retired: MaxLifetime is 10s")
		}
		mustReturn(t, p, h)
	})
}

// "Off when the threshold is 0": switching it off with SetConfig leaves a
// running backoff in place and Borrow still fails with ErrBackoff.
func TestEvictRegressBackoffSurvivesThresholdOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		f := &testfactory.Factory{MakeHook: func(context.Context, string) error {
			if down.Load() {
				return errDial
			}
			return nil
		}}
		cfg := keyedpool.Config{MakeFailureThreshold: 1, MakeBackoffBase: time.Minute, MakeBackoffMax: time.Minute}
		p := newPoolWith(t, f, cfg)
		if _, err := p.Borrow(context.Background(), "a"); !errors.Is(err, errDial) {
			t.Fatalf("Borrow = %v, want the make error", err)
		}
		cfg.MakeFailureThreshold = 0
		if err := p.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		down.Store(false)
		h, err := p.Borrow(context.Background(), "a")
		if err != nil {
			t.Fatalf("Borrow after SetConfig(MakeFailureThreshold: 0) = %v (KeysInBackoff %d); want an object: backoff is off",
				err, p.Stats().KeysInBackoff)
		}
		mustReturn(t, p, h)
	})
}

// Clear(key) while an eviction run tests one of key's idle objects leaves
// that object out, and it comes back idle after Clear returned.
func TestEvictRegressClearMissesObjectUnderTest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		release := make(chan struct{})
		f.ValidateHook = func(context.Context, *testfactory.Obj) error {
			<-release
			return nil
		}
		p := newPoolWith(t, f, keyedpool.Config{TestWhileIdle: true, NumTestsPerEvictionRun: 1})
		objs := idleObjects(t, p, "a", 2)
		run := make(chan error, 1)
		go func() { run <- p.RunEviction(context.Background()) }()
		synctest.Wait() // one object of "a" is under test
		if err := p.Clear(context.Background(), "a"); err != nil {
			t.Fatal(err)
		}
		close(release)
		if err := <-run; err != nil {
			t.Fatal(err)
		}
		if got := p.KeyStats("a").Idle; got != 0 {
			t.Errorf(`KeyStats("a").Idle after Clear("a") = %d, want 0 (destroyed: %v, %v)`,
				got, objs[0].Destroyed(), objs[1].Destroyed())
		}
	})
}

// With MakeFailureThreshold set, a key whose one make failed (far below the
// threshold, never in backoff) keeps its sub-pool for ever, though it holds
// nothing and nobody uses it again: one-off keys grow the pool without bound.
func TestEvictRegressFailedOnceKeysAreNeverDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{MakeHook: func(context.Context, string) error { return errDial }}
		p := newPoolWith(t, f, keyedpool.Config{
			MakeFailureThreshold:    3,
			TimeBetweenEvictionRuns: time.Second,
		})
		for i := range 100 {
			if _, err := p.Borrow(context.Background(), fmt.Sprint("host", i)); !errors.Is(err, errDial) {
				t.Fatalf("Borrow = %v, want the make error", err)
			}
		}
		sleepPast(time.Hour)
		if s := p.Stats(); s.Keys != 0 {
			t.Errorf("Stats().Keys an hour after 100 one-off keys each failed one make = %d (KeysInBackoff %d), want 0",
				s.Keys, s.KeysInBackoff)
		}
	})
}

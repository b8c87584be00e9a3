package keyedpool_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// setConfig applies cfg or fails the test.
func setConfig(t *testing.T, p *pool, cfg keyedpool.Config) {
	t.Helper()
	if err := p.SetConfig(cfg); err != nil {
		t.Fatalf("SetConfig(%+v) = %v", cfg, err)
	}
}

// A lowered MaxTotalPerKey holds from the moment SetConfig returns: lent
// objects are not taken away, no object is made over the new limit, and
// those over it are destroyed as surplus when they come back.
func TestLoweredMaxTotalPerKeyHoldsAsObjectsReturn(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxTotalPerKey: 4})
	hs := []*handle{mustBorrow(t, p, "k"), mustBorrow(t, p, "k"), mustBorrow(t, p, "k"), mustBorrow(t, p, "k")}
	setConfig(t, p, keyedpool.Config{MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
	if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("Borrow with 4 lent and MaxTotalPerKey now 1 = %v, want ErrExhausted (no fifth make)", err)
	}
	for _, h := range hs {
		mustReturn(t, p, h)
	}
	ks := p.KeyStats("k")
	if ks.Idle != 1 || ks.DestroyedSurplus != 3 || f.Live("k") != 1 || f.Made.Load() != 4 {
		t.Errorf("after the 4 came back: idle %d, surplus %d, live %d, made %d; want 1, 3, 1, 4",
			ks.Idle, ks.DestroyedSurplus, f.Live("k"), f.Made.Load())
	}
	// Raised again: the room is there at once.
	setConfig(t, p, keyedpool.Config{MaxTotalPerKey: 3, WhenExhausted: keyedpool.Fail})
	for range 3 {
		if _, err := p.Borrow(context.Background(), "k"); err != nil {
			t.Fatalf("Borrow after MaxTotalPerKey raised to 3 = %v", err)
		}
	}
}

// The same for MaxTotal, across keys.
func TestLoweredMaxTotalHoldsAsObjectsReturn(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxTotal: 4})
	hs := []*handle{mustBorrow(t, p, "a"), mustBorrow(t, p, "a"), mustBorrow(t, p, "b"), mustBorrow(t, p, "b")}
	setConfig(t, p, keyedpool.Config{MaxTotal: 2})
	for _, h := range hs {
		mustReturn(t, p, h)
	}
	if s := p.Stats(); s.Idle != 2 || s.DestroyedSurplus != 2 || f.LiveAll() != 2 {
		t.Errorf("after the 4 came back: idle %d, surplus %d, live %d; want 2, 2, 2", s.Idle, s.DestroyedSurplus, f.LiveAll())
	}
}

// With shared leases objects may never come back under steady load: those
// over a lowered limit stop taking leases at once and are destroyed when
// their last one comes back.
func TestLoweredLimitRetiresSharedObjects(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 3})
	hs := borrowAtOnce(t, p, "k", 6) // 3 objects, 2 leases each
	if got := f.Live("k"); got != 3 {
		t.Fatalf("objects for 6 borrowers at 2 shares each = %d, want 3", got)
	}
	mustReturn(t, p, hs[0]) // one object has room again
	setConfig(t, p, keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
	// Only one object still lends: the one with room went, so none has
	// room now.
	if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("Borrow after the limit fell to 1 = %v, want ErrExhausted: retired objects take no lease", err)
	}
	returnAll(t, p, hs[1:])
	ks := p.KeyStats("k")
	if f.Live("k") != 1 || ks.DestroyedSurplus != 2 {
		t.Errorf("after all came back: live %d, surplus %d; want 1 and 2", f.Live("k"), ks.DestroyedSurplus)
	}
}

// Switching to Fail fails the borrowers already waiting, as Fail would
// have at once; switching back to Block makes new borrowers wait again.
func TestSwitchToFailFailsWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 1})
		h := mustBorrow(t, p, "k")
		w := borrowAsync(ctx, p, "k")
		synctest.Wait()
		setConfig(t, p, keyedpool.Config{MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
		synctest.Wait()
		select {
		case r := <-w:
			if !errors.Is(r.err, keyedpool.ErrExhausted) {
				t.Errorf("waiter after the switch to Fail = %v, want ErrExhausted", r.err)
			}
		default:
			t.Fatal("the waiter still waits after the switch to Fail")
		}
		setConfig(t, p, keyedpool.Config{MaxTotalPerKey: 1})
		w = borrowAsync(ctx, p, "k")
		synctest.Wait()
		mustReturn(t, p, h)
		if r := <-w; r.err != nil {
			t.Errorf("Borrow after the switch back to Block = %v, want the returned object", r.err)
		} else {
			mustReturn(t, p, r.h)
		}
	})
}

// A shortened eviction interval judges idle objects by it at once: stamps
// taken under the long interval (late by up to an hour) are brought back,
// so an object idle past MinEvictableIdle goes within a few short runs.
// Lengthened, nothing is evicted before its time.
func TestEvictionIntervalChangeJudgesByNewInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := keyedpool.Config{TimeBetweenEvictionRuns: time.Hour, MinEvictableIdle: 2 * time.Second, NumTestsPerEvictionRun: -1}
		p, _ := newPool(t, cfg)
		idleObjects(t, p, "k", 1) // stamped with the next tick, an hour ahead
		cfg.TimeBetweenEvictionRuns = time.Second
		setConfig(t, p, cfg)
		sleepPast(4 * time.Second)
		if got := p.KeyStats("k").Idle; got != 0 {
			t.Errorf("idle objects 4s after the interval fell to 1s (MinEvictableIdle 2s) = %d, want 0", got)
		}
		idleObjects(t, p, "k", 1)
		cfg.TimeBetweenEvictionRuns = 10 * time.Second
		setConfig(t, p, cfg)
		sleepPast(1500 * time.Millisecond)
		if got := p.KeyStats("k").Idle; got != 1 {
			t.Errorf("idle objects 1.5s after the interval rose to 10s = %d, want 1 (not idle for 2s yet)", got)
		}
	})
}

// A changed MaxLifetime applies to the objects already in the pool, by
// their age: lowered, an idle object past it is not lent again; raised, one
// that has not reached it stays.
func TestMaxLifetimeChangeAppliesToObjectsInPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{})
		idleObjects(t, p, "k", 1)
		time.Sleep(10 * time.Second)
		setConfig(t, p, keyedpool.Config{MaxLifetime: 5 * time.Second})
		h := mustBorrow(t, p, "k")
		if h.Value().ID != 2 || p.Stats().DestroyedByLifetime != 1 {
			t.Errorf("Borrow after MaxLifetime fell below the idle object's age lent object %d (lifetime destroys %d), want a new one, 2, and 1",
				h.Value().ID, p.Stats().DestroyedByLifetime)
		}
		mustReturn(t, p, h)
		time.Sleep(3 * time.Second) // object 2 is 3s old
		setConfig(t, p, keyedpool.Config{MaxLifetime: time.Hour})
		time.Sleep(10 * time.Second)
		h = mustBorrow(t, p, "k")
		if h.Value().ID != 2 || f.Made.Load() != 2 {
			t.Errorf("Borrow after MaxLifetime rose to 1h lent object %d (made %d), want 2 (2)", h.Value().ID, f.Made.Load())
		}
		mustReturn(t, p, h)
	})
}

// A lowered MakeBackoffMax cuts a running backoff period to it; a raised
// MakeFailureThreshold ends the backoff of a key whose failures no longer
// reach it.
func TestBackoffChangeAppliesToRunningBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDial := errors.New("dial failed")
		f := &testfactory.Factory{}
		f.MakeHook = func(context.Context, string) error { return errDial }
		cfg := keyedpool.Config{MakeFailureThreshold: 1, MakeBackoffBase: time.Minute, MakeBackoffMax: time.Minute}
		p := testfactory.NewPool(t, f, cfg)
		if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, errDial) {
			t.Fatalf("first Borrow = %v, want the dial error", err)
		}
		cfg.MakeBackoffBase, cfg.MakeBackoffMax = time.Second, time.Second
		setConfig(t, p, cfg)
		time.Sleep(1300 * time.Millisecond)
		if _, err := p.Borrow(context.Background(), "k"); errors.Is(err, keyedpool.ErrBackoff) {
			t.Errorf("Borrow 1.3s after MakeBackoffMax fell to 1s = %v, want a probe (the dial error)", err)
		}
		// Now in backoff again (1s); a threshold of 5 ends it.
		cfg.MakeFailureThreshold = 5
		setConfig(t, p, cfg)
		f.MakeHook = nil
		if h, err := p.Borrow(context.Background(), "k"); err != nil {
			t.Errorf("Borrow after MakeFailureThreshold rose above the failures = %v, want an object", err)
		} else {
			mustReturn(t, p, h)
		}
		if got := p.Stats().KeysInBackoff; got != 0 {
			t.Errorf("KeysInBackoff = %d, want 0", got)
		}
	})
}

// Test flags apply from the next Borrow: switched on, a dead idle object
// is not lent; switched off, idle objects are lent untested.
func TestTestOnBorrowSwitch(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{})
	objs := idleObjects(t, p, "k", 1)
	objs[0].Dead.Store(true)
	setConfig(t, p, keyedpool.Config{TestOnBorrow: true})
	h := mustBorrow(t, p, "k")
	if h.Value() == objs[0] {
		t.Error("TestOnBorrow switched on: the dead idle object was lent")
	}
	h.Value().Dead.Store(true)
	mustReturn(t, p, h)
	setConfig(t, p, keyedpool.Config{})
	validated := f.Validated.Load()
	h = mustBorrow(t, p, "k")
	if f.Validated.Load() != validated {
		t.Error("TestOnBorrow switched off: the idle object was still validated")
	}
	h.Value().Dead.Store(false)
	mustReturn(t, p, h)
}

// MaxWait applies to borrowers that start waiting after the change, in
// both directions.
func TestMaxWaitChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 1})
		h := mustBorrow(t, p, "k")
		setConfig(t, p, keyedpool.Config{MaxTotalPerKey: 1, MaxWait: 100 * time.Millisecond})
		start := time.Now()
		if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) || time.Since(start) != 100*time.Millisecond {
			t.Errorf("Borrow after MaxWait set to 100ms = %v after %v, want ErrExhausted after 100ms", err, time.Since(start))
		}
		setConfig(t, p, keyedpool.Config{MaxTotalPerKey: 1})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start = time.Now()
		if _, err := p.Borrow(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("Borrow after MaxWait set back to 0 = %v after %v, want the context's deadline after 1s", err, time.Since(start))
		}
		mustReturn(t, p, h)
	})
}

// FactoryTimeout and MinEvictableIdle apply from the next call or run.
func TestFactoryTimeoutAndEvictionSettingsChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{FactoryTimeout: -1, MinEvictableIdle: time.Hour, NumTestsPerEvictionRun: -1})
		var deadlines []bool
		f.PassivateHook = func(ctx context.Context, _ *testfactory.Obj) error {
			_, ok := ctx.Deadline()
			deadlines = append(deadlines, ok)
			return nil
		}
		mustReturn(t, p, mustBorrow(t, p, "k"))
		setConfig(t, p, keyedpool.Config{FactoryTimeout: time.Second, MinEvictableIdle: time.Hour, NumTestsPerEvictionRun: -1})
		mustReturn(t, p, mustBorrow(t, p, "k"))
		f.PassivateHook = nil
		if len(deadlines) != 2 || deadlines[0] || !deadlines[1] {
			t.Errorf("Passivate saw a deadline: %v, want [false true] around FactoryTimeout set from -1 to 1s", deadlines)
		}
		mustRunEviction(t, p) // starts the clock
		time.Sleep(2 * time.Second)
		mustRunEviction(t, p)
		if got := p.KeyStats("k").Idle; got != 1 {
			t.Fatalf("idle after 2s with MinEvictableIdle 1h = %d, want 1", got)
		}
		setConfig(t, p, keyedpool.Config{FactoryTimeout: time.Second, MinEvictableIdle: time.Second, NumTestsPerEvictionRun: -1})
		mustRunEviction(t, p)
		if got := p.KeyStats("k").Idle; got != 0 {
			t.Errorf("idle after MinEvictableIdle fell to 1s with the object idle 2s = %d, want 0", got)
		}
	})
}

// The remaining fields, each changed in both directions: what the change
// does to the objects already in the pool and from when.
func TestSetConfigFieldsBothWays(t *testing.T) {
	ctx := context.Background()
	t.Run("MaxIdlePerKey", func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{})
		idleObjects(t, p, "k", 3)
		setConfig(t, p, keyedpool.Config{MaxIdlePerKey: 1})
		if got := p.KeyStats("k").Idle; got != 1 || f.Live("k") != 1 {
			t.Errorf("idle after MaxIdlePerKey fell to 1 = %d (live %d), want 1 at once", got, f.Live("k"))
		}
		setConfig(t, p, keyedpool.Config{MaxIdlePerKey: 3})
		idleObjects(t, p, "k", 3)
		if got := p.KeyStats("k").Idle; got != 3 {
			t.Errorf("idle after MaxIdlePerKey rose to 3 and 3 returns = %d, want 3", got)
		}
	})
	t.Run("MinIdlePerKey", func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{})
		idleObjects(t, p, "k", 1)
		setConfig(t, p, keyedpool.Config{MinIdlePerKey: 3})
		mustRunEviction(t, p)
		if got := p.KeyStats("k").Idle; got != 3 {
			t.Errorf("idle after MinIdlePerKey rose to 3 and a run = %d, want 3", got)
		}
		setConfig(t, p, keyedpool.Config{MinIdlePerKey: 1})
		if err := p.Invalidate(mustBorrow(t, p, "k")); err != nil {
			t.Fatal(err)
		}
		made := f.Made.Load()
		mustRunEviction(t, p)
		if f.Made.Load() != made {
			t.Errorf("a run after MinIdlePerKey fell to 1 (2 idle left) made %d objects, want none", f.Made.Load()-made)
		}
	})
	t.Run("TestOnCreate", func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{TestOnCreate: true})
		f.ValidateHook = func(context.Context, *testfactory.Obj) error { return testfactory.ErrDead }
		if _, err := p.Borrow(ctx, "k"); !errors.Is(err, keyedpool.ErrValidation) {
			t.Errorf("Borrow with TestOnCreate and a failing Validate = %v, want ErrValidation", err)
		}
		setConfig(t, p, keyedpool.Config{})
		h, err := p.Borrow(ctx, "k")
		if err != nil {
			t.Fatalf("Borrow after TestOnCreate switched off = %v, want the new object untested", err)
		}
		f.ValidateHook = nil
		mustReturn(t, p, h)
	})
	t.Run("TestOnReturn", func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{})
		h := mustBorrow(t, p, "k")
		setConfig(t, p, keyedpool.Config{TestOnReturn: true})
		h.Value().Dead.Store(true)
		if err := p.Return(h); !errors.Is(err, testfactory.ErrDead) {
			t.Errorf("Return of a dead object after TestOnReturn switched on = %v, want its validation error", err)
		}
		h = mustBorrow(t, p, "k")
		setConfig(t, p, keyedpool.Config{})
		h.Value().Dead.Store(true)
		mustReturn(t, p, h)
		if got := p.KeyStats("k").Idle; got != 1 {
			t.Errorf("idle after a dead return with TestOnReturn off = %d, want 1 (untested)", got)
		}
		h = mustBorrow(t, p, "k")
		h.Value().Dead.Store(false)
		mustReturn(t, p, h)
	})
	t.Run("TestWhileIdle", func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{NumTestsPerEvictionRun: -1})
		objs := idleObjects(t, p, "k", 2)
		objs[0].Dead.Store(true)
		mustRunEviction(t, p)
		if got := p.KeyStats("k").Idle; got != 2 {
			t.Errorf("idle after a run without TestWhileIdle = %d, want 2", got)
		}
		setConfig(t, p, keyedpool.Config{NumTestsPerEvictionRun: -1, TestWhileIdle: true})
		mustRunEviction(t, p)
		if got := p.KeyStats("k").Idle; got != 1 {
			t.Errorf("idle after a run with TestWhileIdle switched on = %d, want 1 (the dead one destroyed)", got)
		}
	})
	t.Run("NumTestsPerEvictionRun", func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{NumTestsPerEvictionRun: 1})
		idleObjects(t, p, "k", 4)
		mustRunEviction(t, p)
		setConfig(t, p, keyedpool.Config{NumTestsPerEvictionRun: -1})
		mustRunEviction(t, p)
		setConfig(t, p, keyedpool.Config{NumTestsPerEvictionRun: 2})
		mustRunEviction(t, p)
		if got := p.Stats().EvictionTests; got != 1+4+2 {
			t.Errorf("EvictionTests over runs of 1, all and 2 = %d, want 7", got)
		}
	})
	t.Run("Abandoned", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ab := &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: time.Second}
			p, _ := newPool(t, keyedpool.Config{})
			before := mustBorrow(t, p, "k")
			setConfig(t, p, keyedpool.Config{Abandoned: ab})
			after := mustBorrow(t, p, "k")
			time.Sleep(2 * time.Second)
			mustRunEviction(t, p)
			if err := p.Return(after); !errors.Is(err, keyedpool.ErrNotBorrowed) {
				t.Errorf("Return of a lease taken after Abandoned was switched on, left 2s = %v, want ErrNotBorrowed (taken back)", err)
			}
			mustReturn(t, p, before) // taken before: not tracked
			setConfig(t, p, keyedpool.Config{})
			h := mustBorrow(t, p, "k")
			time.Sleep(2 * time.Second)
			mustRunEviction(t, p)
			mustReturn(t, p, h) // Abandoned off: not taken back
		})
	})
	t.Run("SwallowedErrorListener", func(t *testing.T) {
		l, got := listen()
		p, f := newPool(t, keyedpool.Config{SwallowedErrorListener: l})
		f.DestroyHook = func(context.Context, *testfactory.Obj) error { return errors.New("close failed") }
		evict := keyedpool.Config{NumTestsPerEvictionRun: -1, MinEvictableIdle: -1, TestWhileIdle: true}
		idleObjects(t, p, "k", 2)[0].Dead.Store(true)
		evict.SwallowedErrorListener = l
		setConfig(t, p, evict)
		_ = p.RunEviction(ctx)
		heard := len(got())
		evict.SwallowedErrorListener = nil
		setConfig(t, p, evict)
		for _, o := range idleObjects(t, p, "k", 1) {
			o.Dead.Store(true)
		}
		_ = p.RunEviction(ctx)
		f.DestroyHook = nil
		if heard == 0 || len(got()) != heard || p.Stats().BackgroundErrors.Total() <= int64(heard) {
			t.Errorf("listener heard %d, then %d after it was unset (BackgroundErrors %d); want more than 0, the same, and more counted",
				heard, len(got()), p.Stats().BackgroundErrors.Total())
		}
	})
}

// MakeFailureThreshold 0 means off: switching it off with SetConfig ends a
// running backoff, and the key's next Borrow makes.
func TestBackoffSwitchedOffEndsRunningBackoff(t *testing.T) {
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
		p := testfactory.NewPool(t, f, cfg)
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

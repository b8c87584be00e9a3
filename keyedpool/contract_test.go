package keyedpool_test

// Tests of the pool's documented guarantees where faults, races and
// extreme values meet: each names the guarantee, and the comment above it
// says what it probes.

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// recvNow returns the result on ch if there is one now.
func recvNow(ch <-chan result) (result, bool) {
	select {
	case r := <-ch:
		return r, true
	default:
		return result{}, false
	}
}

// giveUpOnActivate arms f's Activate hook so that the next activation cancels the
// borrower's context and fails with its error: the borrower "gives up"
// while its object is activated, and the pool must put the object back
// where it was.
type giveUpOnActivate struct {
	cancel atomic.Pointer[context.CancelFunc]
}

func (g *giveUpOnActivate) hook(ctx context.Context, _ *testfactory.Obj) error {
	if c := g.cancel.Swap(nil); c != nil {
		(*c)()
		return ctx.Err()
	}
	return nil
}

// borrow makes one Borrow that gives up during activation.
func (g *giveUpOnActivate) borrow(t *testing.T, p *pool, key string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.cancel.Store(&cancel)
	if h, err := p.Borrow(ctx, key); !errors.Is(err, context.Canceled) {
		if err == nil {
			_ = p.Return(h)
		}
		t.Fatalf("giving-up Borrow = %v, want context.Canceled", err)
	}
}

// MaxWait: one MaxWait deadline for the whole Borrow, including the make
// after a failed hand-off (no other borrower involved).
func TestMaxWaitCoversRetryMake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var slowMake atomic.Bool
		f.MakeHook = func(context.Context, string) error {
			if slowMake.Load() {
				time.Sleep(time.Second)
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: 1, MaxWait: time.Second, TestOnBorrow: true})
		h := mustBorrow(t, p, "k")
		start := time.Now()
		a := borrowAsync(context.Background(), p, "k")
		synctest.Wait()
		time.Sleep(900 * time.Millisecond)
		slowMake.Store(true)
		h.Value().Dead.Store(true)
		mustReturn(t, p, h)
		r := <-a
		if !errors.Is(r.err, keyedpool.ErrExhausted) || time.Since(start) != time.Second {
			t.Errorf("Borrow() = %v after %v, want ErrExhausted after 1s", r.err, time.Since(start))
		}
		if r.err == nil {
			mustReturn(t, p, r.h)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
	})
}

// Forgotten keys: Clear forgets a key "even when MinIdlePerKey would keep it": it
// leaves once its lent objects are back and destroyed. An eviction run
// between the Clear and the Invalidate must not make idle objects for the
// forgotten key (which would keep it for ever). The same through ClearAll.
func TestClearedKeyNotMadeUpByUpkeep(t *testing.T) {
	for name, clear := range map[string]func(*pool) error{
		"Clear":    func(p *pool) error { return p.Clear(context.Background(), "k") },
		"ClearAll": func(p *pool) error { return p.ClearAll(context.Background()) },
	} {
		t.Run(name, func(t *testing.T) {
			p, f := newPool(t, keyedpool.Config{MinIdlePerKey: 1})
			h := mustBorrow(t, p, "k")
			if err := clear(p); err != nil {
				t.Fatal(err)
			}
			mustRunEviction(t, p)
			if err := p.Invalidate(h); err != nil {
				t.Fatal(err)
			}
			if keys, live := p.Keys(), f.LiveAll(); len(keys) != 0 || live != 0 {
				t.Errorf("after %s, an eviction run and Invalidate of the last lent object: Keys() = %v, live objects = %d; want none (the key was forgotten)", name, keys, live)
			}
		})
	}
}

// Idle order: a borrower that gives up after being handed an idle object
// puts it back where it was, also when the objects' return stamps are
// equal: within one clock step of an evictor, or after the first
// RunEviction by hand restamped them. Returned 1,2,3: FIFO lends 1,2,3,
// LIFO 3,2,1.
func TestGiveUpKeepsOrderWithEqualStamps(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     keyedpool.Config
		handRun bool
	}{
		{"FIFO/Evictor", keyedpool.Config{FIFO: true, TimeBetweenEvictionRuns: time.Hour}, false},
		{"FIFO/HandRun", keyedpool.Config{FIFO: true}, true},
		{"LIFO/Evictor", keyedpool.Config{TimeBetweenEvictionRuns: time.Hour}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &testfactory.Factory{}
				var g giveUpOnActivate
				f.ActivateHook = g.hook
				p := testfactory.NewPool(t, f, tt.cfg)
				objs := idleObjects(t, p, "k", 3)
				if tt.handRun {
					mustRunEviction(t, p)
				}
				g.borrow(t, p, "k")
				got := lendOrder(t, p, "k", 3)
				want := []int64{objs[0].ID, objs[1].ID, objs[2].ID}
				if !tt.cfg.FIFO {
					slices.Reverse(want)
				}
				if !slices.Equal(got, want) {
					t.Errorf("lending order after a borrower gave up = %v, want %v", got, want)
				}
			})
		})
	}
}

// Idle order, LIFO: while the front object is under an eviction test, a
// borrower takes the next one and gives up. Once the test ends the order
// must still be 3,2,1.
func TestLIFOGiveUpBesideObjectUnderTest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var g giveUpOnActivate
		f.ActivateHook = g.hook
		var blockID atomic.Int64
		release := make(chan struct{})
		f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.ID == blockID.Load() {
				<-release
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{TestWhileIdle: true, NumTestsPerEvictionRun: 1, TimeBetweenEvictionRuns: time.Hour})
		objs := idleObjects(t, p, "k", 3) // lent order 3,2,1; pool idle list oldest first: 1,2,3
		// The run looks at the oldest of all, object 1. Make the test pick
		// object 3 instead: test 1 and 2 first (they pass at once).
		blockID.Store(objs[2].ID)
		runs := make(chan error, 3)
		runEv := func() { runs <- p.RunEviction(context.Background()) }
		runEv() // tests 1
		runEv() // tests 2
		go runEv()
		synctest.Wait() // the third run is testing object 3, the front of the LIFO list
		g.borrow(t, p, "k")
		close(release)
		synctest.Wait()
		for range 3 {
			if err := <-runs; err != nil {
				t.Fatalf("RunEviction() = %v", err)
			}
		}
		got := lendOrder(t, p, "k", 3)
		want := []int64{objs[2].ID, objs[1].ID, objs[0].ID}
		if !slices.Equal(got, want) {
			t.Errorf("LIFO order after a give-up beside an object under test = %v, want %v", got, want)
		}
	})
}

// Background errors: a Destroy failing when a Borrow hands back an object because
// Close began while it was being activated. Nobody gets that error (Borrow
// returns ErrClosed, Close returns nil), so per
// Config.SwallowedErrorListener it must be counted and listened to.
func TestClosedBorrowDestroyErrorIsSwallowed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDestroy := errors.New("destroy failed")
		var heard atomic.Int64
		f := &testfactory.Factory{}
		var gate atomic.Bool
		release := make(chan struct{})
		f.ActivateHook = func(context.Context, *testfactory.Obj) error {
			if gate.Load() {
				<-release
			}
			return nil
		}
		f.DestroyHook = func(context.Context, *testfactory.Obj) error { return errDestroy }
		p := testfactory.NewPool(t, f, keyedpool.Config{SwallowedErrorListener: keyedpool.SwallowedErrorFunc(
			func(_ any, op keyedpool.Op, err error) {
				if op == keyedpool.OpDestroy && errors.Is(err, errDestroy) {
					heard.Add(1)
				}
			})})
		mustReturn(t, p, mustBorrow(t, p, "k"))
		gate.Store(true)
		b := borrowAsync(context.Background(), p, "k")
		synctest.Wait()
		closed := make(chan error, 1)
		go func() { closed <- p.Close(context.Background()) }()
		synctest.Wait()
		close(release)
		r := <-b
		if !errors.Is(r.err, keyedpool.ErrClosed) {
			t.Errorf("Borrow() = %v, want ErrClosed", r.err)
			if r.err == nil {
				_ = p.Return(r.h)
			}
		}
		if err := <-closed; err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
		if s := p.Stats(); s.BackgroundErrors.Destroy != 1 || heard.Load() != 1 || f.LiveAll() != 0 {
			t.Errorf("BackgroundErrors.Destroy = %d, listener heard %d, live %d; want 1, 1, 0 (nobody else gets that destroy error)",
				s.BackgroundErrors.Destroy, heard.Load(), f.LiveAll())
		}
	})
}

// Statistics: IdleTime is "the total time objects spent idle before being
// lent". A borrower that gave up during activation puts the object back
// keeping its idle time; the idle span must not be counted twice: one
// object that lived 20s cannot have spent 30s idle.
func TestIdleTimeNotDoubleCountedOnGiveUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var g giveUpOnActivate
		f.ActivateHook = g.hook
		p := testfactory.NewPool(t, f, keyedpool.Config{TimeBetweenEvictionRuns: time.Second})
		idleObjects(t, p, "k", 1)
		sleepPast(10 * time.Second)
		g.borrow(t, p, "k")
		sleepPast(10 * time.Second)
		h := mustBorrow(t, p, "k")
		s := p.Stats()
		mustReturn(t, p, h)
		if s.IdleTime > 21*time.Second {
			t.Errorf("IdleTime = %v over %d spans (mean %v) for one object idle ~20s in all; the given-up lend's span was counted and then counted again",
				s.IdleTime, s.IdleCount, s.MeanIdleTime())
		}
		if s.Borrowed != 2 { // the first Borrow of idleObjects, and h
			t.Errorf("Borrowed = %d, want 2", s.Borrowed)
		}
	})
}

// Statistics: ActiveTime is "not measured at all ... while the clock does not
// run: no evictor and no RunEviction call yet". An object lent 100s before
// the first RunEviction and returned 1s after it must not add 101s.
func TestActiveTimeNotCountedFromBeforeClockRan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{})
		if err := p.AddObject(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Second)
		h := mustBorrow(t, p, "k")
		mustRunEviction(t, p)
		time.Sleep(time.Second)
		mustReturn(t, p, h)
		s := p.Stats()
		if s.ActiveTime > time.Second {
			t.Errorf("ActiveTime = %v (count %d) for an object lent 1s after the clock started (lent 1s in all); want at most 1s",
				s.ActiveTime, s.ActiveCount)
		}
		if objs := p.ListObjects("k"); len(objs) != 1 || objs[0].State != keyedpool.ObjectIdle || objs[0].BorrowCount != 1 {
			t.Errorf("ListObjects = %+v, want one idle object borrowed once", objs)
		}
	})
}

// Statistics: ListObjects basics: oldest first, states, shares, borrow counts.
func TestListObjects(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	h1 := mustBorrow(t, p, "k")
	h2 := mustBorrow(t, p, "k")
	mustReturn(t, p, h2)
	objs := p.ListObjects("k")
	if len(objs) != 2 || objs[0].State != keyedpool.ObjectLent || objs[0].Shares != 1 ||
		objs[1].State != keyedpool.ObjectIdle || objs[1].Shares != 0 || objs[0].BorrowCount != 1 || objs[1].BorrowCount != 1 {
		t.Errorf("ListObjects = %+v, want [lent (1 share, 1 borrow), idle (1 borrow)]", objs)
	}
	if objs[0].Created.After(objs[1].Created) {
		t.Errorf("ListObjects not oldest first: %v after %v", objs[0].Created, objs[1].Created)
	}
	mustReturn(t, p, h1)
	if got := p.ListObjects("none"); got != nil {
		t.Errorf("ListObjects of an unknown key = %v, want nil", got)
	}
}

// FactoryTimeout: Return's lazily armed context ends FactoryTimeout after the
// factory first looks, for Validate too.
func TestReturnValidateBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var wait atomic.Bool
		f.ValidateHook = func(ctx context.Context, _ *testfactory.Obj) error {
			if !wait.Load() {
				return nil
			}
			time.Sleep(5 * time.Second) // before looking: not counted
			<-ctx.Done()
			return ctx.Err()
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{FactoryTimeout: time.Second, TestOnReturn: true})
		h := mustBorrow(t, p, "k")
		wait.Store(true)
		start := time.Now()
		err := p.Return(h)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 6*time.Second {
			t.Errorf("Return() = %v after %v, want DeadlineExceeded after 6s", err, time.Since(start))
		}
		if s := p.Stats(); s.Active+s.Idle != 0 {
			t.Errorf("Stats = %+v, want the object destroyed", s.Gauges)
		}
	})
}

// New idle objects: min-idle upkeep passivates new objects before they go idle; a
// failed Passivate destroys the object and is a background error.
func TestUpkeepPassivatesNewObjects(t *testing.T) {
	f := &testfactory.Factory{}
	var failOnce atomic.Bool
	errPass := errors.New("passivate failed")
	f.PassivateHook = func(context.Context, *testfactory.Obj) error {
		if failOnce.CompareAndSwap(true, false) {
			return errPass
		}
		return nil
	}
	p := testfactory.NewPool(t, f, keyedpool.Config{MinIdlePerKey: 2})
	if err := p.Invalidate(mustBorrow(t, p, "k")); err != nil {
		t.Fatal(err)
	}
	failOnce.Store(true)
	before := f.Passivated.Load()
	if err := p.RunEviction(context.Background()); err != nil && !errors.Is(err, errPass) {
		t.Fatalf("RunEviction() = %v", err)
	}
	s := p.Stats()
	if got := f.Passivated.Load() - before; got != 2 {
		t.Errorf("upkeep passivated %d new objects, want 2", got)
	}
	if s.Idle != 1 || s.BackgroundErrors.Passivate != 1 || s.DestroyedByReturnValidation != 1 || f.LiveAll() != 1 {
		t.Errorf("Idle %d, BackgroundErrors.Passivate %d, destroyed %d, live %d; want 1, 1, 1, 1",
			s.Idle, s.BackgroundErrors.Passivate, s.DestroyedByReturnValidation, f.LiveAll())
	}
	// Prepare makes it up, passivated; AddObject returns a Passivate error.
	if err := p.Prepare(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	failOnce.Store(true)
	if err := p.AddObject(context.Background(), "k"); !errors.Is(err, errPass) {
		t.Errorf("AddObject() = %v, want the Passivate error", err)
	}
	if s := p.KeyStats("k"); s.Idle != 2 || s.Active != 0 {
		t.Errorf("after Prepare and a failed AddObject: Idle %d, Active %d; want 2, 0", s.Idle, s.Active)
	}
}

// Extreme values: extreme durations keep their meaning.
func TestExtremeMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 1, MaxWait: math.MaxInt64})
		h := mustBorrow(t, p, "k")
		a := borrowAsync(context.Background(), p, "k")
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if r, ok := recvNow(a); ok {
			t.Fatalf("Borrow with MaxWait MaxInt64 ended after a day: %v", r.err)
		}
		mustReturn(t, p, h)
		r := <-a
		if r.err != nil {
			t.Fatalf("Borrow() = %v", r.err)
		}
		mustReturn(t, p, r.h)
	})
}

func TestExtremeBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		errDown := errors.New("down")
		f.MakeHook = func(context.Context, string) error { return errDown }
		p := testfactory.NewPool(t, f, keyedpool.Config{
			MakeFailureThreshold: 1, MakeBackoffBase: math.MaxInt64, MakeBackoffMax: math.MaxInt64,
		})
		if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, errDown) {
			t.Fatalf("first Borrow = %v", err)
		}
		time.Sleep(1000 * time.Hour)
		if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrBackoff) {
			t.Errorf("Borrow during a MaxInt64 backoff = %v, want ErrBackoff", err)
		}
		ks := p.KeyStats("k")
		if !ks.BackoffUntil.After(time.Now().Add(100 * 365 * 24 * time.Hour)) {
			t.Errorf("BackoffUntil = %v, want about 292 years (0.8 x MaxInt64) away", ks.BackoffUntil)
		}
		if err := p.AddObject(context.Background(), "k"); !errors.Is(err, keyedpool.ErrBackoff) {
			t.Errorf("AddObject during backoff = %v, want ErrBackoff", err)
		}
	})
}

func TestExtremeLimitsAndDurations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			MaxTotal: math.MaxInt, MaxTotalPerKey: math.MinInt, MaxIdlePerKey: math.MinInt,
			MaxLifetime: math.MaxInt64, MaxLifetimeJitter: math.MaxInt64,
			MinEvictableIdle: math.MaxInt64, SoftMinEvictableIdle: math.MaxInt64,
			NumTestsPerEvictionRun: math.MinInt, FactoryTimeout: math.MaxInt64,
			Abandoned:            &keyedpool.AbandonedConfig{RemoveOnBorrow: true, RemoveOnMaintenance: true, Timeout: math.MaxInt64},
			MakeFailureThreshold: math.MaxInt,
		})
		idleObjects(t, p, "k", 20)
		time.Sleep(1000 * time.Hour)
		mustRunEviction(t, p)
		s := p.Stats()
		if s.Idle != 20 || s.Destroyed != 0 || s.EvictionTests != 1 {
			t.Errorf("Idle %d, Destroyed %d, EvictionTests %d; want 20, 0, 1", s.Idle, s.Destroyed, s.EvictionTests)
		}
		hs := borrowAtOnce(t, p, "k", 20)
		time.Sleep(1000 * time.Hour)
		mustRunEviction(t, p)
		returnAll(t, p, hs)
		if s := p.Stats(); s.Idle != 20 || s.Destroyed != 0 || f.LiveAll() != 20 {
			t.Errorf("after a long lease: Idle %d, Destroyed %d, live %d; want 20, 0, 20", s.Idle, s.Destroyed, f.LiveAll())
		}
	})
}

// Factory panics: a panicking factory on paths the existing table does not try:
// a borrower giving up while a make panics, a Passivate panic when a
// borrower gives up during activation, shared leases.
func TestPanicsLeakNoRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var makePanic, activatePanic, passivatePanic atomic.Bool
		var cancelMe atomic.Pointer[context.CancelFunc]
		f.MakeHook = func(context.Context, string) error {
			if makePanic.Load() {
				time.Sleep(time.Second)
				panic("make")
			}
			return nil
		}
		f.ActivateHook = func(ctx context.Context, _ *testfactory.Obj) error {
			if activatePanic.CompareAndSwap(true, false) {
				if c := cancelMe.Swap(nil); c != nil {
					(*c)()
				}
				panic("activate")
			}
			return nil
		}
		f.PassivateHook = func(context.Context, *testfactory.Obj) error {
			if passivatePanic.CompareAndSwap(true, false) {
				panic("passivate")
			}
			return nil
		}
		for _, shares := range []int{1, 4} {
			p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: 1, MaxSharesPerObject: shares})
			// A borrower who gives up while the make runs; the make panics.
			makePanic.Store(true)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			_, err := p.Borrow(ctx, "k")
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("shares %d: Borrow = %v, want DeadlineExceeded", shares, err)
			}
			time.Sleep(2 * time.Second)
			synctest.Wait()
			makePanic.Store(false)
			if s := p.Stats(); s.Making+s.Active+s.Idle != 0 || s.BackgroundErrors.Make != 1 {
				t.Errorf("shares %d: after a panicking make nobody waited for: %+v, BackgroundErrors %+v", shares, s.Gauges, s.BackgroundErrors)
			}
			// A borrower gives up during an activation that panics, then
			// the passivation panics too.
			mustReturn(t, p, mustBorrow(t, p, "k"))
			ctx, cancel = context.WithCancel(context.Background())
			cancelMe.Store(&cancel)
			activatePanic.Store(true)
			passivatePanic.Store(true)
			_, err = p.Borrow(ctx, "k")
			cancel()
			if err == nil {
				t.Errorf("shares %d: Borrow succeeded", shares)
			}
			ks := p.KeyStats("k")
			if ks.Active != 0 || ks.SharesInUse != 0 {
				t.Errorf("shares %d: after the panics: %+v", shares, ks.Gauges)
			}
			bctx, bcancel := context.WithTimeout(context.Background(), time.Second)
			h, err := p.Borrow(bctx, "k")
			bcancel()
			if err != nil {
				t.Errorf("shares %d: Borrow after panics = %v (room leaked?)", shares, err)
			} else {
				mustReturn(t, p, h)
			}
			if err := p.Close(context.Background()); err != nil {
				t.Errorf("shares %d: Close = %v", shares, err)
			}
		}
	})
}

// Invalid keys: more unhashable and NaN keys, and a struct key type holding an
// interface.
func TestInvalidKeysMore(t *testing.T) {
	ctx := context.Background()
	type inner struct{ A any }
	type outer struct {
		N int
		I [2]inner
	}
	p, err := keyedpool.New[any, int](factory.Funcs[any, int]{MakeFunc: func(context.Context, any) (int, error) { return 1, nil }}, keyedpool.Config{MinIdlePerKey: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	keys := []any{
		func() {}, inner{[]int{1}}, [1]any{map[int]int{}}, complex(math.NaN(), 0),
		inner{math.NaN()}, outer{I: [2]inner{{1}, {[]byte("x")}}}, outer{I: [2]inner{{1}, {float32(math.NaN())}}},
		[0]any{}, // fine: comparable and equal to itself
	}
	for i, key := range keys {
		h, berr := p.Borrow(ctx, key)
		if berr == nil {
			if err := p.Return(h); err != nil {
				t.Fatal(err)
			}
		}
		errs := []error{berr, p.AddObject(ctx, key), p.Prepare(ctx, key), p.Clear(ctx, key)}
		valid := i == len(keys)-1
		for j, err := range errs {
			if valid != !errors.Is(err, keyedpool.ErrInvalidKey) {
				t.Errorf("key %d (%T) call %d = %v, valid=%v", i, key, j, err, valid)
			}
		}
		_ = p.KeyStats(key)
		_ = p.ListObjects(key)
		p.ForgetFailures(key)
	}
	if err := p.Clear(ctx, [0]any{}); err != nil {
		t.Fatal(err)
	}
	_ = p.ClearAll(ctx)
	if got := p.Stats(); got.Keys != 0 || got.Idle != 0 {
		t.Errorf("Stats().Keys = %d, Idle %d; want 0, 0", got.Keys, got.Idle)
	}

	// K a struct type with an interface field.
	sp, err := keyedpool.New(factory.Funcs[inner, int]{MakeFunc: func(context.Context, inner) (int, error) { return 1, nil }}, keyedpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close(ctx)
	for _, key := range []inner{{[]int{}}, {math.NaN()}} {
		if _, err := sp.Borrow(ctx, key); !errors.Is(err, keyedpool.ErrInvalidKey) {
			t.Errorf("Borrow(%#v) = %v, want ErrInvalidKey", key, err)
		}
		if err := sp.Prepare(ctx, key); !errors.Is(err, keyedpool.ErrInvalidKey) {
			t.Errorf("Prepare(%#v) = %v, want ErrInvalidKey", key, err)
		}
	}
	h, err := sp.Borrow(ctx, inner{"ok"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Return(h); err != nil {
		t.Fatal(err)
	}
	if n := sp.Stats().Keys; n != 1 {
		t.Errorf("Keys = %d, want 1", n)
	}
}

// Closed pools: Close racing AddObject's make, Prepare, and upkeep: nothing is
// kept, Close returns nil, AddObject gets ErrClosed.
func TestCloseRacingAddObjectAndUpkeep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var gate atomic.Bool
		release := make(chan struct{})
		f.MakeHook = func(context.Context, string) error {
			if gate.Load() {
				<-release // ignores its context
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MinIdlePerKey: 2, TimeBetweenEvictionRuns: time.Second})
		if err := p.Invalidate(mustBorrow(t, p, "up")); err != nil {
			t.Fatal(err)
		}
		gate.Store(true)
		add := make(chan error, 1)
		go func() { add <- p.AddObject(context.Background(), "a") }()
		prep := make(chan error, 1)
		go func() { prep <- p.Prepare(context.Background(), "b") }()
		sleepPast(time.Second) // an eviction run starts upkeep makes of "up"
		closed := make(chan error, 1)
		go func() { closed <- p.Close(context.Background()) }()
		synctest.Wait()
		close(release)
		if err := <-add; !errors.Is(err, keyedpool.ErrClosed) {
			t.Errorf("AddObject = %v, want ErrClosed", err)
		}
		if err := <-prep; !errors.Is(err, keyedpool.ErrClosed) {
			t.Errorf("Prepare = %v, want ErrClosed", err)
		}
		if err := <-closed; err != nil {
			t.Errorf("Close = %v, want nil", err)
		}
		if s := p.Stats(); f.LiveAll() != 0 || s.Idle+s.Active+s.Making != 0 || s.BackgroundErrors.Total() != 0 {
			t.Errorf("after Close: live %d, %+v, background errors %+v", f.LiveAll(), s.Gauges, s.BackgroundErrors)
		}
	})
}

// Closed pools, shared leases: Close while a waiter of a shared key waits for an
// object being activated.
func TestCloseRacingSharedActivation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		release := make(chan struct{})
		var gate atomic.Bool
		gate.Store(true)
		f.ActivateHook = func(context.Context, *testfactory.Obj) error {
			if gate.Load() {
				<-release
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 4, WhenExhausted: keyedpool.Fail})
		chs := make([]<-chan result, 3)
		for i := range chs {
			chs[i] = borrowAsync(context.Background(), p, "k")
			synctest.Wait()
		}
		closed := make(chan error, 1)
		go func() { closed <- p.Close(context.Background()) }()
		synctest.Wait()
		close(release)
		for i, ch := range chs {
			if r := <-ch; !errors.Is(r.err, keyedpool.ErrClosed) {
				t.Errorf("borrower %d = %v, want ErrClosed", i, r.err)
				if r.err == nil {
					_ = p.Return(r.h)
				}
			}
		}
		if err := <-closed; err != nil {
			t.Errorf("Close = %v", err)
		}
		if f.LiveAll() != 0 {
			t.Errorf("live = %d after Close", f.LiveAll())
		}
	})
}

// Background errors: eviction-run background errors reach the listener under
// concurrent runs without double counting; a panicking listener is dropped.
func TestPanickingListenerIsDropped(t *testing.T) {
	var calls atomic.Int64
	f := &testfactory.Factory{}
	f.DestroyHook = func(context.Context, *testfactory.Obj) error { return errors.New("nope") }
	p := testfactory.NewPool(t, f, keyedpool.Config{
		NumTestsPerEvictionRun: -1,
		EvictionPolicy:         evictor.PolicyFunc(func(evictor.Settings, evictor.Candidate) bool { return true }),
		SwallowedErrorListener: keyedpool.SwallowedErrorFunc(func(any, keyedpool.Op, error) {
			calls.Add(1)
			panic("listener")
		}),
	})
	idleObjects(t, p, "k", 4)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { _ = p.RunEviction(context.Background()) })
	}
	wg.Wait()
	if s := p.Stats(); s.BackgroundErrors.Destroy != 4 || calls.Load() != 4 || s.Idle != 0 {
		t.Errorf("BackgroundErrors.Destroy = %d, listener calls %d, idle %d; want 4, 4, 0", s.BackgroundErrors.Destroy, calls.Load(), s.Idle)
	}
}

// Background errors: "a failed Passivate of an object whose borrower gave up" is a
// background error. Here every Make cancels its borrower's context just as
// it succeeds, so the borrower gives up while (or just after) the object
// is made; the new object is then passivated on its way to the idle set,
// and every Passivate fails. Whichever of the two the borrower sees first,
// each failed Passivate must be counted: nobody else gets it. (Racy by
// nature: the test fails only when the make wins the race, which it does
// in some of the tries.)
func TestGaveUpDuringMakePassivateErrorIsSwallowed(t *testing.T) {
	f := &testfactory.Factory{}
	var cancelMe atomic.Pointer[context.CancelFunc]
	f.MakeHook = func(context.Context, string) error {
		if c := cancelMe.Swap(nil); c != nil {
			(*c)()
		}
		return nil
	}
	var failed atomic.Int64
	f.PassivateHook = func(context.Context, *testfactory.Obj) error {
		failed.Add(1)
		return errors.New("passivate failed")
	}
	p := testfactory.NewPool(t, f, keyedpool.Config{})
	for range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		cancelMe.Store(&cancel)
		h, err := p.Borrow(ctx, "k")
		cancel()
		if err == nil {
			_ = p.Invalidate(h)
		}
	}
	// Let the last make settle.
	for i := 0; i < 500 && p.Stats().Making+p.Stats().Active > 0; i++ {
		time.Sleep(time.Millisecond)
	}
	if s := p.Stats(); s.BackgroundErrors.Passivate != failed.Load() {
		t.Errorf("%d Passivates of new objects whose borrower gave up failed; BackgroundErrors.Passivate = %d", failed.Load(), s.BackgroundErrors.Passivate)
	}
}

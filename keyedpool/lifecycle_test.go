package keyedpool_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

func TestCloseFailsWaitersDestroysIdleAndWaitsForLent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{MaxTotalPerKey: 2})
		idle := mustBorrow(t, p, "a")
		lent := mustBorrow(t, p, "a")
		mustReturn(t, p, idle)
		again := mustBorrow(t, p, "a") // takes the idle object back; a is at its limit
		waiting := borrowAsync(context.Background(), p, "a")
		synctest.Wait()

		closed := make(chan error, 1)
		go func() { closed <- p.Close(context.Background()) }()
		if r := <-waiting; !errors.Is(r.err, keyedpool.ErrClosed) {
			t.Errorf("waiting Borrow() after Close = %v, want ErrClosed", r.err)
		}
		if _, err := p.Borrow(context.Background(), "a"); !errors.Is(err, keyedpool.ErrClosed) {
			t.Errorf("Borrow() after Close = %v, want ErrClosed", err)
		}
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close() = %v before lent objects came back", err)
		default:
		}
		// A return after Close destroys the object and succeeds.
		mustReturn(t, p, lent)
		if !lent.Value().Destroyed() {
			t.Error("object returned after Close not destroyed")
		}
		mustReturn(t, p, again)
		if err := <-closed; err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
		if got := f.LiveAll(); got != 0 {
			t.Errorf("objects alive after Close = %d, want 0", got)
		}
		if err := p.Close(context.Background()); err != nil {
			t.Errorf("second Close() = %v, want nil", err)
		}
		if got := p.Stats().DestroyedByClose; got != 2 {
			t.Errorf("DestroyedByClose = %d, want 2", got)
		}
	})
}

func TestCloseBoundedByContextAndJoinsDestroyErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("close failed")
		f := &testfactory.Factory{DestroyHook: func(context.Context, *testfactory.Obj) error { return boom }}
		p := testfactory.NewPool(t, f, keyedpool.Config{})
		mustReturn(t, p, mustBorrow(t, p, "a"))
		lent := mustBorrow(t, p, "b")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := p.Close(ctx)
		if !errors.Is(err, boom) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close() = %v, want the destroy error and DeadlineExceeded joined", err)
		}
		if err := p.Return(lent); !errors.Is(err, boom) {
			t.Errorf("Return() after Close = %v, want the destroy error", err)
		}
	})
}

func TestCloseCancelsMakesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{MakeHook: func(ctx context.Context, _ string) error {
			<-ctx.Done() // a dial that only ends when cancelled
			return ctx.Err()
		}}
		p := testfactory.NewPool(t, f, keyedpool.Config{})
		ch := borrowAsync(context.Background(), p, "a")
		synctest.Wait()
		if err := p.Close(context.Background()); err != nil {
			t.Errorf("Close() = %v", err)
		}
		if r := <-ch; !errors.Is(r.err, keyedpool.ErrClosed) || !errors.Is(r.err, context.Canceled) {
			t.Errorf("Borrow() during Close = %v, want ErrClosed with the cancelled make's error", r.err)
		}
		if got := p.Stats().MakeErrors; got != 0 {
			t.Errorf("MakeErrors = %d, want 0: a make cancelled by Close is not the factory's failure", got)
		}
	})
}

func TestAddObjectAndPrepare(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MinIdlePerKey: 3, MaxTotalPerKey: 4})
	ctx := context.Background()
	if err := p.Prepare(ctx, "a"); err != nil {
		t.Fatalf("Prepare() = %v", err)
	}
	if s := p.KeyStats("a"); s.Idle != 3 || s.Created != 3 {
		t.Errorf("after Prepare: %+v, want 3 idle", s)
	}
	if err := p.Prepare(ctx, "a"); err != nil || f.Made.Load() != 3 {
		t.Errorf("second Prepare() = %v with %d made, want nothing more made", err, f.Made.Load())
	}
	if err := p.AddObject(ctx, "a"); err != nil {
		t.Fatalf("AddObject() = %v", err)
	}
	if err := p.AddObject(ctx, "a"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("AddObject() beyond MaxTotalPerKey = %v, want ErrExhausted", err)
	}
	if got := f.Live("a"); got != 4 {
		t.Errorf("live objects = %d, want 4", got)
	}
}

func TestRaisingMaxTotalLetsWaiterIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 2})
		mustBorrow(t, p, "a")
		mustBorrow(t, p, "b")
		ch := borrowAsync(context.Background(), p, "a")
		synctest.Wait()
		if err := p.SetConfig(keyedpool.Config{MaxTotal: 3}); err != nil {
			t.Fatal(err)
		}
		// Raising MaxTotal lets the waiter make its own object.
		r := <-ch
		if r.err != nil {
			t.Fatalf("Borrow() after raising MaxTotal = %v", r.err)
		}
		mustReturn(t, p, r.h)
	})
}

func TestClearAndClearOldest(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	var lent []*handle
	for _, k := range []string{"a", "a", "b", "b", "b", "c"} {
		lent = append(lent, mustBorrow(t, p, k))
	}
	for _, h := range lent[:5] { // c stays lent
		mustReturn(t, p, h)
	}
	if err := p.Clear(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if !lent[0].Value().Destroyed() || !lent[1].Value().Destroyed() || lent[2].Value().Destroyed() {
		t.Errorf("Clear(a) destroyed the wrong objects")
	}
	// 3 idle left (b's): ClearOldest takes 15% + 1 = 1, the oldest.
	if err := p.ClearOldest(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !lent[2].Value().Destroyed() || lent[3].Value().Destroyed() {
		t.Errorf("ClearOldest() did not destroy exactly the oldest idle object")
	}
	if err := p.ClearAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lent[5].Value().Destroyed() || !lent[4].Value().Destroyed() {
		t.Errorf("ClearAll() destroyed a lent object or kept an idle one")
	}
	if s := p.Stats(); s.Idle != 0 || s.Active != 1 || s.DestroyedByClear != 5 {
		t.Errorf("Stats() = %+v, want 0 idle, 1 active, 5 cleared", s)
	}
	if got := p.Keys(); !slices.Equal(got, []string{"c"}) {
		t.Errorf("Keys() = %v, want [c]: emptied keys are dropped", got)
	}
}

// One-off keys must not grow the pool: a key with nothing held and nobody
// waiting is dropped.
func TestEmptyKeysAreDropped(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{WhenExhausted: keyedpool.Fail, MaxTotal: 1})
	for i := range 1000 {
		h := mustBorrow(t, p, string(rune('a'+i%26))+string(rune(i)))
		if err := p.Invalidate(h); err != nil {
			t.Fatal(err)
		}
	}
	h := mustBorrow(t, p, "held")
	if _, err := p.Borrow(context.Background(), "fails"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Fatalf("Borrow() = %v, want ErrExhausted", err)
	}
	if err := p.AddObject(context.Background(), "add-fails"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Fatalf("AddObject() = %v, want ErrExhausted", err)
	}
	if got := p.Keys(); !slices.Equal(got, []string{"held"}) {
		t.Errorf("Keys() = %v, want [held]", got)
	}
	if s := p.Stats(); s.Keys != 1 || s.Created != 1001 || s.Destroyed != 1000 {
		t.Errorf("Stats() = %+v, want 1 key, 1001 created, 1000 destroyed", s)
	}
	mustReturn(t, p, h)
}

func TestValidationHooks(t *testing.T) {
	boom := errors.New("broken")
	t.Run("TestOnBorrowTriesNext", func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{TestOnBorrow: true})
		h1, h2 := mustBorrow(t, p, "a"), mustBorrow(t, p, "a")
		mustReturn(t, p, h1)
		mustReturn(t, p, h2) // LIFO: h2 is lent first
		h2.Value().Dead.Store(true)
		h := mustBorrow(t, p, "a")
		if h.Value() != h1.Value() || !h2.Value().Destroyed() {
			t.Errorf("Borrow() = object %d, want the live object %d after the dead one is destroyed", h.Value().ID, h1.Value().ID)
		}
		h1.Value().Dead.Store(true)
		mustReturn(t, p, h)
		// Every idle object is dead: Borrow makes a new one.
		if h := mustBorrow(t, p, "a"); h.Value().ID != 3 || f.Made.Load() != 3 {
			t.Errorf("Borrow() = object %d, want a new object", h.Value().ID)
		}
		// Both of a's objects were destroyed, so a was dropped and made
		// anew; its key counters restarted: the pool's keep the total.
		if got := p.Stats().DestroyedByBorrowValidation; got != 2 {
			t.Errorf("DestroyedByBorrowValidation = %d, want 2", got)
		}
	})
	t.Run("ActivateFailureDestroys", func(t *testing.T) {
		f := &testfactory.Factory{}
		p := testfactory.NewPool(t, f, keyedpool.Config{})
		h := mustBorrow(t, p, "a")
		mustReturn(t, p, h)
		f.ActivateHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.ID == 1 {
				return boom
			}
			return nil
		}
		if got := mustBorrow(t, p, "a"); got.Value().ID != 2 || !h.Value().Destroyed() {
			t.Errorf("Borrow() = object %d, want new object 2 after object 1 failed activation", got.Value().ID)
		}
	})
	t.Run("NewObjectFailingActivationFailsBorrow", func(t *testing.T) {
		f := &testfactory.Factory{ActivateHook: func(context.Context, *testfactory.Obj) error { return boom }}
		p := testfactory.NewPool(t, f, keyedpool.Config{})
		_, err := p.Borrow(context.Background(), "a")
		if !errors.Is(err, keyedpool.ErrValidation) || !errors.Is(err, boom) {
			t.Errorf("Borrow() = %v, want ErrValidation wrapping %v", err, boom)
		}
		if s := p.Stats(); s.Borrowed != 0 || f.LiveAll() != 0 {
			t.Errorf("Stats() = %+v with %d alive, want no borrow counted and nothing alive", s, f.LiveAll())
		}
	})
	t.Run("TestOnCreate", func(t *testing.T) {
		f := &testfactory.Factory{ValidateHook: func(context.Context, *testfactory.Obj) error { return boom }}
		p := testfactory.NewPool(t, f, keyedpool.Config{TestOnCreate: true})
		_, err := p.Borrow(context.Background(), "a")
		if !errors.Is(err, keyedpool.ErrValidation) || !errors.Is(err, boom) {
			t.Errorf("Borrow() = %v, want ErrValidation wrapping %v", err, boom)
		}
		if s := p.Stats(); s.Created != 1 || s.DestroyedByBorrowValidation != 1 || f.LiveAll() != 0 {
			t.Errorf("Stats() = %+v, want 1 created and destroyed", s)
		}
	})
	t.Run("TestOnReturn", func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{TestOnReturn: true})
		h := mustBorrow(t, p, "a")
		h.Value().Dead.Store(true)
		if err := p.Return(h); !errors.Is(err, testfactory.ErrDead) {
			t.Errorf("Return() of a dead object = %v, want the validation error", err)
		}
		if s := p.Stats(); s.Idle != 0 || s.Keys != 0 || s.DestroyedByReturnValidation != 1 || !h.Value().Destroyed() {
			t.Errorf("Stats() = %+v, want the object destroyed and its key dropped", s)
		}
	})
	t.Run("PassivateFailureDestroys", func(t *testing.T) {
		f := &testfactory.Factory{PassivateHook: func(context.Context, *testfactory.Obj) error { return boom }}
		p := testfactory.NewPool(t, f, keyedpool.Config{})
		h := mustBorrow(t, p, "a")
		if err := p.Return(h); !errors.Is(err, boom) {
			t.Errorf("Return() = %v, want %v", err, boom)
		}
		if !h.Value().Destroyed() {
			t.Error("object that failed passivation not destroyed")
		}
	})
}

func TestReturnBeyondMaxIdleDestroys(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MaxIdlePerKey: 1})
	h1, h2 := mustBorrow(t, p, "a"), mustBorrow(t, p, "a")
	mustReturn(t, p, h1)
	mustReturn(t, p, h2)
	if s := p.KeyStats("a"); s.Idle != 1 || s.DestroyedSurplus != 1 || !h2.Value().Destroyed() {
		t.Errorf("KeyStats() = %+v, want 1 idle and the surplus destroyed", s)
	}
}

// The factory is never called with the pool's lock held: every factory call
// here takes the lock itself (through Stats), which would deadlock. A
// deadlock on a mutex is not one synctest sees, so a watchdog turns it into a
// failure.
func TestFactoryNotCalledUnderLock(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		factoryNotCalledUnderLock(t)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		panic("TestFactoryNotCalledUnderLock: deadlocked: a factory call ran with the pool's lock held")
	}
}

func factoryNotCalledUnderLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p *pool
		touch := func() error { p.Stats(); p.KeyStats("a"); return nil }
		f := &testfactory.Factory{
			MakeHook:      func(context.Context, string) error { return touch() },
			DestroyHook:   func(context.Context, *testfactory.Obj) error { return touch() },
			ValidateHook:  func(context.Context, *testfactory.Obj) error { return touch() },
			ActivateHook:  func(context.Context, *testfactory.Obj) error { return touch() },
			PassivateHook: func(context.Context, *testfactory.Obj) error { return touch() },
		}
		p = testfactory.NewPool(t, f, keyedpool.Config{TestOnBorrow: true, TestOnReturn: true, TestOnCreate: true, MaxTotal: 2, MinIdlePerKey: 1})
		ctx := context.Background()
		a := mustBorrow(t, p, "a")
		b := mustBorrow(t, p, "b")
		mustReturn(t, p, b)
		mustBorrow(t, p, "c") // destroys b's idle object to make room
		if err := p.Invalidate(a); err != nil {
			t.Fatal(err)
		}
		if err := p.Prepare(ctx, "d"); err != nil {
			t.Fatal(err)
		}
		if err := p.ClearAll(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.SetConfig(keyedpool.Config{MaxTotal: 1}); err != nil {
			t.Fatal(err)
		}
		if got := f.Made.Load(); got != 4 {
			t.Errorf("objects made = %d, want 4", got)
		}
	})
}

// A make that succeeds after Close began lends nothing: its Borrow gets
// ErrClosed, the object is destroyed, and Close does not wait for it. The
// same for every path that makes objects.
func TestNothingLentFromClosedPool(t *testing.T) {
	for _, path := range []string{"Borrow", "AddObject", "Prepare", "Upkeep"} {
		t.Run(path, func(t *testing.T) {
			f := &testfactory.Factory{}
			p, err := keyedpool.New(f, keyedpool.Config{MinIdlePerKey: 1})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if path == "Upkeep" {
				// A key with one object that goes is queued for upkeep.
				if err := p.Invalidate(mustBorrow(t, p, "k")); err != nil {
					t.Fatal(err)
				}
			}
			made := f.Made.Load()
			started, release := make(chan struct{}), make(chan struct{})
			f.MakeHook = func(context.Context, string) error {
				close(started)
				<-release // ignores cancellation: the make succeeds
				return nil
			}
			errc := make(chan error, 1)
			go func() {
				var err error
				switch path {
				case "Borrow":
					var h *handle
					if h, err = p.Borrow(ctx, "k"); err == nil {
						err = errors.Join(errors.New("Borrow lent an object"), p.Return(h))
					}
				case "AddObject":
					err = p.AddObject(ctx, "k")
				case "Prepare":
					err = p.Prepare(ctx, "k")
				case "Upkeep":
					err = p.RunEviction(ctx)
				}
				errc <- err
			}()
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s made no object", path) // Close below ends what was started
			}
			closed := make(chan error, 1)
			go func() { closed <- p.Close(ctx) }()
			for !p.Stats().Closed {
				runtime.Gosched()
			}
			close(release)
			if err := <-closed; err != nil {
				t.Errorf("Close() = %v, want nil", err)
			}
			if err := <-errc; !errors.Is(err, keyedpool.ErrClosed) && !(path == "Upkeep" && errors.Is(err, context.Canceled)) {
				t.Errorf("%s() = %v, want ErrClosed", path, err)
			}
			if f.Made.Load() != made+1 || f.LiveAll() != 0 {
				t.Errorf("made %d, alive %d after Close: want the late object made and destroyed", f.Made.Load()-made, f.LiveAll())
			}
			if s := p.Stats(); s.Active+s.Idle+s.Making != 0 || s.Borrowed != s.Returned {
				t.Errorf("Stats() after Close = %+v, want nothing held or lent", s)
			}
		})
	}
}

// Eviction replaces what it evicts below MinIdlePerKey: a key it covers is
// never left empty for good.
func TestMinIdlePerKeyKeptThroughEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			TimeBetweenEvictionRuns: 20 * time.Millisecond,
			MinEvictableIdle:        60 * time.Millisecond,
			MinIdlePerKey:           2,
			NumTestsPerEvictionRun:  -1,
		})
		hs := make([]*handle, 5)
		for i := range hs {
			hs[i] = mustBorrow(t, p, "k")
		}
		for _, h := range hs {
			mustReturn(t, p, h)
		}
		for range 10 {
			sleepPast(100 * time.Millisecond)
			if got := p.KeyStats("k").Idle; got != 2 {
				t.Fatalf("idle objects of a key MinIdlePerKey 2 covers = %d, want 2", got)
			}
		}
		if got := f.LiveAll(); got != 2 {
			t.Errorf("live objects = %d, want 2", got)
		}
		if s := p.Stats(); s.DestroyedByEvictor < 5 {
			t.Errorf("DestroyedByEvictor = %d, want at least the 5 first objects: they age out and are replaced", s.DestroyedByEvictor)
		}
	})
}

// Clear forgets a key that MinIdlePerKey would keep: it leaves the pool and
// upkeep makes nothing more for it, until it is used again.
// A key dropped when it emptied and borrowed again, with no other key in
// between, gets a sub-pool the pool knows: the fast path for a run of
// Borrows on one key must not keep using the dropped one.
func TestDroppedKeyBorrowedAgainIsKnown(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	if err := p.Invalidate(mustBorrow(t, p, "a")); err != nil {
		t.Fatal(err)
	}
	if got := p.Keys(); len(got) != 0 {
		t.Fatalf("Keys() after the only object of a was invalidated = %v, want none", got)
	}
	h := mustBorrow(t, p, "a")
	if got := p.Keys(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Keys() with a borrowed again = %v, want [a]", got)
	}
	if got := p.KeyStats("a"); got.Active != 1 {
		t.Errorf("KeyStats(a).Active = %d, want 1", got.Active)
	}
	mustReturn(t, p, h)
	if got := p.KeyStats("a"); got.Idle != 1 {
		t.Errorf("KeyStats(a).Idle after Return = %d, want 1", got.Idle)
	}
}

func TestClearForgetsKey(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MinIdlePerKey: 1})
	ctx := context.Background()
	mustReturn(t, p, mustBorrow(t, p, "a"))
	mustReturn(t, p, mustBorrow(t, p, "b"))
	if err := p.Clear(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	mustRunEviction(t, p)
	if got := p.Keys(); len(got) != 1 || got[0] != "b" {
		t.Errorf("Keys() after Clear(a) and a run = %v, want [b]", got)
	}
	if got := f.Live("a"); got != 0 {
		t.Errorf("live objects of a = %d, want 0", got)
	}
	mustReturn(t, p, mustBorrow(t, p, "a")) // used again: covered again
	if err := p.Clear(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	mustReturn(t, p, mustBorrow(t, p, "a"))
	mustRunEviction(t, p)
	if got := p.KeyStats("a").Idle; got != 1 {
		t.Errorf("idle objects of a key used after Clear = %d, want 1", got)
	}
}

// Close of a pool that holds nothing succeeds even with a context that has
// already ended: nothing is left to wait for, and the ended context must not
// hide that (repeated, as Close checks both).
func TestCloseDrainedWithEndedContextSucceeds(t *testing.T) {
	for range 100 {
		p, err := keyedpool.New(&testfactory.Factory{}, keyedpool.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := p.Close(ctx); err != nil {
			t.Fatalf("Close(ended ctx) of an empty pool = %v, want nil", err)
		}
	}
}

// Close forgets the keys of the waiters it fails; a key with a lent object
// stays until that object comes back.
func TestCloseDropsKeysOfFailedWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 1})
		h := mustBorrow(t, p, "a")
		ch := borrowAsync(context.Background(), p, "b")
		synctest.Wait()
		go p.Close(context.Background())
		if r := <-ch; !errors.Is(r.err, keyedpool.ErrClosed) {
			t.Fatalf("waiting Borrow() = %v, want ErrClosed", r.err)
		}
		synctest.Wait()
		if got := p.Keys(); !slices.Equal(got, []string{"a"}) {
			t.Errorf("Keys() after Close = %v, want [a]", got)
		}
		mustReturn(t, p, h)
		synctest.Wait()
		if got := p.Keys(); len(got) != 0 {
			t.Errorf("Keys() after the last return = %v, want none", got)
		}
	})
}

// Clear(key) while an eviction run tests one of key's idle objects destroys
// that object too, when its test ends: none of key's objects comes back idle
// after Clear.
func TestClearDestroysObjectUnderTest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		release := make(chan struct{})
		f.ValidateHook = func(context.Context, *testfactory.Obj) error {
			<-release
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{TestWhileIdle: true, NumTestsPerEvictionRun: 1})
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

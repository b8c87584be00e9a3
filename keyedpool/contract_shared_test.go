package keyedpool_test

// Tests of the pool's guarantees with shared leases, across SetConfig
// changes, and under random faults: each names the guarantee it protects.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// ---------------------------------------------------------------------------
// (b) SetConfig and the idle order.

// Switching LIFO -> FIFO by SetConfig must lend the oldest idle object next,
// as Config.FIFO documents ("lends idle objects in the order they were
// returned (oldest first)").
func TestSetConfigLIFOToFIFOLendsOldest(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	objs := idleObjects(t, p, "a", 3) // returned 0, 1, 2
	cfg := p.Config()
	cfg.FIFO = true
	if err := p.SetConfig(cfg); err != nil {
		t.Fatalf("SetConfig() = %v", err)
	}
	h := mustBorrow(t, p, "a")
	defer mustReturn(t, p, h)
	if h.Value() != objs[0] {
		t.Errorf("after SetConfig(FIFO: true) Borrow() = object %d, want the oldest returned, %d (objects returned: %d, %d, %d)",
			h.Value().ID, objs[0].ID, objs[0].ID, objs[1].ID, objs[2].ID)
	}
}

// Switching FIFO -> LIFO must lend the most recently returned object next.
func TestSetConfigFIFOToLIFOLendsNewest(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{FIFO: true})
	objs := idleObjects(t, p, "a", 3)
	cfg := p.Config()
	cfg.FIFO = false
	if err := p.SetConfig(cfg); err != nil {
		t.Fatalf("SetConfig() = %v", err)
	}
	h := mustBorrow(t, p, "a")
	defer mustReturn(t, p, h)
	if h.Value() != objs[2] {
		t.Errorf("after SetConfig(FIFO: false) Borrow() = object %d, want the most recently returned, %d",
			h.Value().ID, objs[2].ID)
	}
}

// Lowering MaxIdlePerKey together with a FIFO switch must destroy the coldest
// objects (those lent last in the new order), keeping the warm ones.
func TestSetConfigFIFOSwitchTrimsColdest(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	objs := idleObjects(t, p, "a", 3) // LIFO: 2 is warmest
	cfg := p.Config()
	cfg.FIFO = true
	cfg.MaxIdlePerKey = 1
	if err := p.SetConfig(cfg); err != nil {
		t.Fatalf("SetConfig() = %v", err)
	}
	// In FIFO order the object lent next is the oldest, objs[0]; the two
	// lent last (objs[1], objs[2]) are the coldest and go.
	var kept []int64
	for _, o := range objs {
		if !o.Destroyed() {
			kept = append(kept, o.ID)
		}
	}
	if len(kept) != 1 || kept[0] != objs[0].ID {
		t.Errorf("after SetConfig(FIFO, MaxIdlePerKey 1) kept objects %v, want [%d] (the one FIFO lends next)", kept, objs[0].ID)
	}
}

// A give-up after a FIFO switch must put the object back at its place.
func TestSetConfigFIFOSwitchGiveUpKeepsPlace(t *testing.T) {
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{})
	objs := idleObjects(t, p, "a", 3)
	cfg := p.Config()
	cfg.FIFO = true
	if err := p.SetConfig(cfg); err != nil {
		t.Fatalf("SetConfig() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var once atomic.Bool
	f.ActivateHook = func(c context.Context, o *testfactory.Obj) error {
		if once.CompareAndSwap(false, true) {
			cancel()
			return c.Err()
		}
		return nil
	}
	if _, err := p.Borrow(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Borrow() with give-up = %v, want context.Canceled", err)
	}
	var got []int64
	hs := []*handle{}
	for range 3 {
		h := mustBorrow(t, p, "a")
		hs = append(hs, h)
		got = append(got, h.Value().ID)
	}
	for _, h := range hs {
		mustReturn(t, p, h)
	}
	want := []int64{objs[0].ID, objs[1].ID, objs[2].ID}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("FIFO lend order after switch and a give-up = %v, want %v", got, want)
	}
}

// (b) MinIdlePerKey lowered to 0: keys it alone kept must leave.
func TestSetConfigMinIdleToZeroDropsEmptyKeys(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MinIdlePerKey: 1})
	for _, k := range []string{"a", "b"} {
		if err := p.Invalidate(mustBorrow(t, p, k)); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Stats().Keys; got != 2 {
		t.Fatalf("Keys with MinIdlePerKey 1 after invalidating = %d, want 2 (kept)", got)
	}
	cfg := p.Config()
	cfg.MinIdlePerKey = 0
	if err := p.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().Keys; got != 0 {
		t.Errorf("Keys after MinIdlePerKey lowered to 0 = %d, want 0", got)
	}
	// Raised again: RunEviction makes nothing for the dropped keys, and a
	// key used again is covered.
	cfg.MinIdlePerKey = 1
	if err := p.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	mustRunEviction(t, p)
	if got := p.Stats().Keys; got != 0 {
		t.Errorf("Keys after MinIdlePerKey raised and a run = %d, want 0", got)
	}
	h := mustBorrow(t, p, "c")
	if err := p.Invalidate(h); err != nil {
		t.Fatal(err)
	}
	mustRunEviction(t, p)
	if got := p.KeyStats("c").Idle; got != 1 {
		t.Errorf(`KeyStats("c").Idle after upkeep = %d, want 1`, got)
	}
}

// A lowered MinIdlePerKey with keys queued for upkeep: the dropped key must
// not be made up by the next run.
func TestSetConfigMinIdleLoweredQueuedKeyNotMadeUp(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MinIdlePerKey: 2})
	h := mustBorrow(t, p, "a") // queued for upkeep: no spare
	if err := p.Invalidate(h); err != nil {
		t.Fatal(err)
	}
	cfg := p.Config()
	cfg.MinIdlePerKey = 0
	if err := p.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	mustRunEviction(t, p)
	if got := f.Made.Load(); got != 1 {
		t.Errorf("made after MinIdlePerKey lowered to 0 and a run = %d, want 1", got)
	}
}

// (b) TimeBetweenEvictionRuns shortened: the pool's clock must not go back
// (clock.go: "The clock never goes back"), so idle and active spans stay
// non-negative and LastBorrowed is not before LastReturned of the same
// cycle.
func TestShorterEvictionIntervalKeepsSpansNonNegative(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{TimeBetweenEvictionRuns: time.Hour})
		idleObjects(t, p, "a", 1) // stamped with the next tick: 1h
		idleObjects(t, p, "b", 1)
		long := mustBorrow(t, p, "b") // lent from the idle set: active since 1h
		cfg := p.Config()
		cfg.TimeBetweenEvictionRuns = time.Second
		if err := p.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		sleepPast(2500 * time.Millisecond)
		h := mustBorrow(t, p, "a")
		mustReturn(t, p, h)
		before := p.Stats()
		mustReturn(t, p, long) // lent at 0s (stamped 1h), returned at 2.5s
		s := p.Stats()
		if d := s.ActiveTime - before.ActiveTime; d < 0 || s.ActiveCount != before.ActiveCount+1 {
			t.Errorf("active span of an object lent 2.5s = %v (count %d -> %d), want about 2.5s, never negative", d, before.ActiveCount, s.ActiveCount)
		}
		if s.IdleTime < 0 || s.MeanIdleTime() < 0 {
			t.Errorf("IdleTime = %v over %d (mean %v) after a shorter interval, want >= 0", s.IdleTime, s.IdleCount, s.MeanIdleTime())
		}
		if s.ActiveTime < 0 || s.MeanActiveTime() < 0 {
			t.Errorf("ActiveTime = %v over %d (mean %v) after a shorter interval, want >= 0", s.ActiveTime, s.ActiveCount, s.MeanActiveTime())
		}
		for _, k := range []string{"a", "b"} {
			for _, o := range p.ListObjects(k) {
				if o.LastReturned.Before(o.LastBorrowed) {
					t.Errorf("key %s: LastReturned %v before LastBorrowed %v of the same cycle", k, o.LastReturned, o.LastBorrowed)
				}
			}
		}
	})
}

// (b)/(e) TimeBetweenEvictionRuns switched off: ObjectInfo says stamps are
// "equal to Created while the clock does not run", and clock.go says a stamp
// is "late by up to one interval, never early". A Borrow long after the
// switch must not be stamped with the time of the switch.
func TestEvictorSwitchedOffStampsNotEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{TimeBetweenEvictionRuns: time.Second})
		idleObjects(t, p, "a", 1)
		sleepPast(5500 * time.Millisecond)
		cfg := p.Config()
		cfg.TimeBetweenEvictionRuns = 0
		if err := p.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		sleepPast(60 * time.Second)
		before := time.Now()
		h := mustBorrow(t, p, "a")
		objs := p.ListObjects("a")
		mustReturn(t, p, h)
		if len(objs) != 1 {
			t.Fatalf("ListObjects = %v", objs)
		}
		o := objs[0]
		if o.LastBorrowed.Before(before) && !o.LastBorrowed.Equal(o.Created) {
			t.Errorf("LastBorrowed = %v, %v before the Borrow and not Created (%v): a stamp from the clock frozen at the switch",
				o.LastBorrowed, before.Sub(o.LastBorrowed), o.Created)
		}
	})
}

// ---------------------------------------------------------------------------
// (a) Shared leases.

// The first activation of a shared object panics while other borrowers wait
// for it ("soon"): they must be served (one makes, the other shares), the
// first gets ErrFactoryPanic, nothing leaks.
func TestSharedFirstActivationPanicWithSoonWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		release := make(chan struct{})
		var makes atomic.Int32
		f.MakeHook = func(ctx context.Context, _ string) error {
			if makes.Add(1) == 1 {
				<-release
			}
			return nil
		}
		var acts atomic.Int32
		f.ActivateHook = func(context.Context, *testfactory.Obj) error {
			if acts.Add(1) == 1 {
				panic("activate boom")
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 3, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
		first := borrowAsync(context.Background(), p, "k")
		synctest.Wait()
		w1 := borrowAsync(context.Background(), p, "k")
		w2 := borrowAsync(context.Background(), p, "k")
		synctest.Wait()
		if got := p.Stats().Waiters; got != 2 {
			t.Fatalf("Waiters = %d, want 2 waiting for the object being made", got)
		}
		close(release)
		r := <-first
		if !errors.Is(r.err, keyedpool.ErrFactoryPanic) {
			t.Errorf("first Borrow = %v, want ErrFactoryPanic", r.err)
			if r.err == nil {
				mustReturn(t, p, r.h)
			}
		}
		var hs []*handle
		for i, ch := range []<-chan result{w1, w2} {
			r := <-ch
			if r.err != nil {
				t.Errorf("waiter %d = %v, want an object", i, r.err)
				continue
			}
			hs = append(hs, r.h)
		}
		if len(hs) == 2 && hs[0].Value() != hs[1].Value() {
			t.Errorf("waiters got objects %d and %d, want one shared object", hs[0].Value().ID, hs[1].Value().ID)
		}
		for _, h := range hs {
			mustReturn(t, p, h)
		}
		s := p.Stats()
		if s.Created != f.Made.Load() || s.Created != 2 {
			t.Errorf("Created = %d, factory made %d; want 2", s.Created, f.Made.Load())
		}
		if s.Borrowed != s.Returned {
			t.Errorf("Borrowed %d != Returned %d with every handle back", s.Borrowed, s.Returned)
		}
		if s.DestroyedByBorrowValidation != 1 || s.Idle != 1 || s.SharesInUse != 0 || s.Active != 0 {
			t.Errorf("Stats = %+v, want 1 destroyed by borrow validation, 1 idle, nothing active", s)
		}
	})
}

// Passivate panics when the last shared lease comes back: Return reports it,
// the object is destroyed, and its room serves a waiter.
func TestSharedPassivatePanicOnLastReturn(t *testing.T) {
	f := &testfactory.Factory{}
	var boom atomic.Bool
	f.PassivateHook = func(context.Context, *testfactory.Obj) error {
		if boom.Load() {
			panic("passivate boom")
		}
		return nil
	}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 1})
	h1, h2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k")
	mustReturn(t, p, h1)
	boom.Store(true)
	err := p.Return(h2)
	if !errors.Is(err, keyedpool.ErrFactoryPanic) {
		t.Errorf("last Return with panicking Passivate = %v, want ErrFactoryPanic", err)
	}
	boom.Store(false)
	if !h2.Value().Destroyed() {
		t.Error("object whose Passivate panicked not destroyed")
	}
	s := p.Stats()
	if s.DestroyedByReturnValidation != 1 || s.Idle != 0 || s.Active != 0 || s.Borrowed != s.Returned {
		t.Errorf("Stats = %+v", s)
	}
	h := mustBorrow(t, p, "k")
	mustReturn(t, p, h)
}

// Invalidate of a shared object with another lease out, then a Destroy that
// panics when the last lease comes back.
func TestSharedInvalidateThenDestroyPanics(t *testing.T) {
	f := &testfactory.Factory{}
	var boom atomic.Bool
	boom.Store(true)
	defer boom.Store(false)
	f.DestroyHook = func(context.Context, *testfactory.Obj) error {
		if boom.Load() {
			panic("destroy boom")
		}
		return nil
	}
	var swallowed atomic.Int32
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 3, MaxTotalPerKey: 2,
		SwallowedErrorListener: keyedpool.SwallowedErrorFunc(func(any, keyedpool.Op, error) { swallowed.Add(1) })})
	h1, h2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k")
	if err := p.Invalidate(h1); err != nil {
		t.Fatalf("Invalidate with another lease out = %v, want nil", err)
	}
	objs := p.ListObjects("k")
	if len(objs) != 1 || objs[0].State != keyedpool.ObjectRetiring || objs[0].Shares != 1 || objs[0].BorrowCount != 2 {
		t.Errorf("ListObjects after Invalidate = %+v, want one retiring object, 1 share, 2 borrows", objs)
	}
	h3 := mustBorrow(t, p, "k")
	if h3.Value() == h1.Value() {
		t.Fatal("retiring object lent again")
	}
	err := p.Return(h2)
	if err != nil && !errors.Is(err, keyedpool.ErrFactoryPanic) {
		t.Errorf("Return of the last lease = %v, want nil or ErrFactoryPanic", err)
	}
	if !h1.Value().Destroyed() {
		t.Error("invalidated object not destroyed with its last lease")
	}
	boom.Store(false)
	mustReturn(t, p, h3)
	s := p.Stats()
	if s.DestroyedByInvalidate != 1 || s.Borrowed != s.Returned || s.Created != f.Made.Load() {
		t.Errorf("Stats = %+v", s)
	}
	if err == nil && swallowed.Load() == 0 && s.BackgroundErrors.Destroy == 0 {
		t.Errorf("Destroy panic neither returned by Return nor reported as swallowed")
	}
}

// MaxLifetime retirement of a shared object (no evictor): it takes no new
// lease, shows as retiring and is destroyed (by lifetime) with its last
// lease, even when Destroy panics.
func TestSharedLifetimeRetirement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var boom atomic.Bool
		f.DestroyHook = func(context.Context, *testfactory.Obj) error {
			if boom.Load() {
				panic("destroy boom")
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 3, MaxLifetime: time.Minute})
		h1 := mustBorrow(t, p, "k")
		sleepPast(2 * time.Minute)
		h2 := mustBorrow(t, p, "k")
		if h2.Value() == h1.Value() {
			t.Fatal("object past MaxLifetime took a new lease")
		}
		objs := p.ListObjects("k")
		if len(objs) != 2 || objs[0].State != keyedpool.ObjectRetiring || objs[1].State != keyedpool.ObjectLent {
			t.Errorf("ListObjects = %+v, want [retiring, lent]", objs)
		}
		boom.Store(true)
		err := p.Return(h1)
		boom.Store(false)
		if err != nil && !errors.Is(err, keyedpool.ErrFactoryPanic) {
			t.Errorf("Return of the expired object's last lease = %v", err)
		}
		if !h1.Value().Destroyed() {
			t.Error("expired object not destroyed with its last lease")
		}
		mustReturn(t, p, h2)
		s := p.Stats()
		if s.DestroyedByLifetime != 1 || s.Borrowed != s.Returned || s.Idle != 1 {
			t.Errorf("Stats = %+v, want 1 destroyed by lifetime, 1 idle", s)
		}
	})
}

// MaxWait with shared waiters waiting ("soon") for a slow make: every one of
// them gets ErrExhausted at its deadline, the made object joins the pool and
// is lendable, nothing waits.
func TestSharedMaxWaitWithSoonWaiters(t *testing.T) {
	for _, action := range []keyedpool.ExhaustedAction{keyedpool.Block, keyedpool.Fail} {
		t.Run(action.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &testfactory.Factory{}
				release := make(chan struct{})
				f.MakeHook = func(ctx context.Context, _ string) error {
					select {
					case <-release:
					case <-ctx.Done():
						return ctx.Err()
					}
					return nil
				}
				p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 4, MaxWait: time.Second, WhenExhausted: action})
				chs := []<-chan result{}
				for range 3 {
					chs = append(chs, borrowAsync(context.Background(), p, "k"))
					synctest.Wait()
				}
				start := time.Now()
				for i, ch := range chs {
					r := <-ch
					if !errors.Is(r.err, keyedpool.ErrExhausted) {
						t.Errorf("borrower %d = %v, want ErrExhausted", i, r.err)
						if r.err == nil {
							mustReturn(t, p, r.h)
						}
					}
				}
				if d := time.Since(start); d > time.Second+time.Millisecond {
					t.Errorf("waited %v, want MaxWait 1s", d)
				}
				close(release)
				synctest.Wait()
				s := p.Stats()
				if s.Idle != 1 || s.Waiters != 0 || s.Making != 0 || f.Made.Load() != 1 {
					t.Errorf("after the make: Stats = %+v, made %d; want 1 idle object, no waiters", s, f.Made.Load())
				}
				h := mustBorrow(t, p, "k")
				mustReturn(t, p, h)
				if s := p.Stats(); s.Borrowed != s.Returned {
					t.Errorf("Borrowed %d != Returned %d", s.Borrowed, s.Returned)
				}
			})
		})
	}
}

// Idle order after give-ups in shared mode (FIFO): an object taken from the
// idle set whose borrower gave up during activation goes back to its place.
func TestSharedGiveUpKeepsIdleOrder(t *testing.T) {
	for _, fifo := range []bool{true, false} {
		t.Run(fmt.Sprintf("FIFO=%v", fifo), func(t *testing.T) {
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 2, FIFO: fifo})
			for range 3 {
				if err := p.AddObject(context.Background(), "k"); err != nil {
					t.Fatal(err)
				}
			}
			mustRunEviction(t, p) // the clock runs: idle spans are counted
			// Learn the lending order without disturbing it: borrow the
			// first, note it, give up on it.
			ctx, cancel := context.WithCancel(context.Background())
			var first atomic.Pointer[testfactory.Obj]
			f.ActivateHook = func(c context.Context, o *testfactory.Obj) error {
				if first.CompareAndSwap(nil, o) {
					cancel()
					return c.Err()
				}
				return nil
			}
			if _, err := p.Borrow(ctx, "k"); !errors.Is(err, context.Canceled) {
				t.Fatalf("Borrow with give-up = %v", err)
			}
			h := mustBorrow(t, p, "k")
			defer mustReturn(t, p, h)
			if h.Value() != first.Load() {
				t.Errorf("after a give-up Borrow() = object %d, want %d (the same object, back at its place)", h.Value().ID, first.Load().ID)
			}
			if s := p.Stats(); s.IdleCount != 1 {
				t.Errorf("IdleCount = %d, want 1: the lend given up takes its idle span back", s.IdleCount)
			}
		})
	}
}

// ListObjects in shared mode.
func TestSharedListObjects(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MaxSharesPerObject: 3})
	hs := []*handle{mustBorrow(t, p, "k"), mustBorrow(t, p, "k"), mustBorrow(t, p, "k")}
	objs := p.ListObjects("k")
	if len(objs) != 1 || objs[0].State != keyedpool.ObjectLent || objs[0].Shares != 3 || objs[0].BorrowCount != 3 {
		t.Errorf("ListObjects with 3 leases = %+v, want one lent object, 3 shares, 3 borrows", objs)
	}
	mustReturn(t, p, hs[0])
	objs = p.ListObjects("k")
	if len(objs) != 1 || objs[0].State != keyedpool.ObjectLent || objs[0].Shares != 2 || objs[0].BorrowCount != 3 {
		t.Errorf("ListObjects with 2 leases = %+v", objs)
	}
	mustReturn(t, p, hs[1])
	mustReturn(t, p, hs[2])
	objs = p.ListObjects("k")
	if len(objs) != 1 || objs[0].State != keyedpool.ObjectIdle || objs[0].Shares != 0 || objs[0].BorrowCount != 3 {
		t.Errorf("ListObjects after all returned = %+v, want idle, 0 shares, 3 borrows", objs)
	}
	if s := p.Stats(); s.Borrowed != 3 || s.Returned != 3 {
		t.Errorf("Borrowed/Returned = %d/%d, want 3/3", s.Borrowed, s.Returned)
	}
}

// MeanActiveTime in shared mode: one span from the first lease to the last
// return, on the pool's clock (to within one interval).
func TestSharedMeanActiveTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxSharesPerObject: 2, TimeBetweenEvictionRuns: time.Second})
		idleObjects(t, p, "k", 1)
		sleepPast(10 * time.Second)
		h1 := mustBorrow(t, p, "k")
		sleepPast(5 * time.Second)
		h2 := mustBorrow(t, p, "k")
		mustReturn(t, p, h1)
		sleepPast(5 * time.Second)
		mustReturn(t, p, h2)
		s := p.Stats()
		if s.ActiveCount != 2 { // the first idleObjects cycle, and this one
			t.Errorf("ActiveCount = %d, want 2 (one span per busy period)", s.ActiveCount)
		}
		// The busy period lasted 10s; the spans are measured to within one
		// interval.
		if s.ActiveTime < 9*time.Second || s.ActiveTime > 12*time.Second {
			t.Errorf("ActiveTime = %v, want about 10s", s.ActiveTime)
		}
		if s.IdleCount != 1 || s.IdleTime < 9*time.Second || s.IdleTime > 11*time.Second {
			t.Errorf("IdleTime = %v over %d, want about 10s over 1", s.IdleTime, s.IdleCount)
		}
	})
}

// ---------------------------------------------------------------------------
// (c) Abandoned objects with a panicking logger handler and Destroy.

type panicHandler struct{}

func (panicHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (panicHandler) Handle(context.Context, slog.Record) error { panic("handler boom") }
func (h panicHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h panicHandler) WithGroup(string) slog.Handler           { return h }

func TestAbandonedRemoveOnBorrowWithPanics(t *testing.T) {
	for _, shares := range []int{1, 2} {
		t.Run(fmt.Sprintf("Shares=%d", shares), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &testfactory.Factory{}
				var boom atomic.Bool
				boom.Store(true)
				f.DestroyHook = func(context.Context, *testfactory.Obj) error {
					if boom.Load() {
						panic("destroy boom")
					}
					return nil
				}
				var ops []keyedpool.Op
				var mu sync.Mutex
				p := testfactory.NewPool(t, f, keyedpool.Config{
					MaxTotalPerKey:     1,
					MaxSharesPerObject: shares,
					WhenExhausted:      keyedpool.Fail,
					Abandoned: &keyedpool.AbandonedConfig{RemoveOnBorrow: true, Timeout: time.Second,
						LogAbandoned: true, Logger: slog.New(panicHandler{})},
					SwallowedErrorListener: keyedpool.SwallowedErrorFunc(func(_ any, op keyedpool.Op, _ error) {
						mu.Lock()
						ops = append(ops, op)
						mu.Unlock()
					}),
				})
				var leaked []*handle
				for range shares {
					leaked = append(leaked, mustBorrow(t, p, "k"))
				}
				sleepPast(2 * time.Second)
				h, err := p.Borrow(context.Background(), "k")
				if err != nil {
					t.Fatalf("Borrow with leaked leases = %v, want them taken back", err)
				}
				boom.Store(false)
				for i, l := range leaked {
					if err := p.Return(l); !errors.Is(err, keyedpool.ErrNotBorrowed) {
						t.Errorf("Return of leaked lease %d = %v, want ErrNotBorrowed", i, err)
					}
				}
				mustReturn(t, p, h)
				s := p.Stats()
				if s.DestroyedByAbandoned != 1 || s.BackgroundErrors.Destroy != 1 {
					t.Errorf("Stats = %+v, want 1 destroyed as abandoned, 1 background destroy error", s)
				}
				mu.Lock()
				if len(ops) != 1 || ops[0] != keyedpool.OpDestroy {
					t.Errorf("listener got %v, want [destroy]", ops)
				}
				mu.Unlock()
				if s.Borrowed != s.Returned || s.Created != f.Made.Load() {
					t.Errorf("Borrowed %d Returned %d Created %d Made %d", s.Borrowed, s.Returned, s.Created, f.Made.Load())
				}
			})
		})
	}
}

// RemoveOnMaintenance with a panicking handler: the run survives, returns the
// destroy error, and the key's upkeep replaces the object.
func TestAbandonedMaintenancePanickingHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		f.DestroyHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.ID == 1 {
				panic("destroy boom")
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{
			MinIdlePerKey: 1,
			Abandoned: &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: time.Second,
				LogAbandoned: true, Logger: slog.New(panicHandler{})},
		})
		h := mustBorrow(t, p, "k")
		sleepPast(2 * time.Second)
		err := p.RunEviction(context.Background())
		if !errors.Is(err, keyedpool.ErrFactoryPanic) {
			t.Errorf("RunEviction = %v, want the Destroy panic joined", err)
		}
		if err := p.Return(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
			t.Errorf("Return of taken-back lease = %v", err)
		}
		if s := p.KeyStats("k"); s.Idle != 1 || s.DestroyedByAbandoned != 1 {
			t.Errorf("KeyStats = %+v, want 1 idle (upkeep), 1 abandoned", s)
		}
	})
}

// ---------------------------------------------------------------------------
// (d) Random fault injection with shared leases and SetConfig toggles of the
// new features; invariants checked at the end.
func TestRandomFaultsInvariants(t *testing.T) {
	for _, shares := range []int{1, 3} {
		t.Run(fmt.Sprintf("Shares=%d", shares), func(t *testing.T) { randomFaults(t, shares) })
	}
}

func randomFaults(t *testing.T, shares int) {
	const (
		goroutines = 8
		ops        = 300
		keys       = 6
		maxTotal   = 6
		maxPerKey  = 2
	)
	maybe := func(n int) error {
		switch rand.IntN(n) {
		case 0:
			panic("boom")
		case 1:
			return errors.New("fail")
		}
		return nil
	}
	f := &testfactory.Factory{
		MakeHook:      func(context.Context, string) error { return maybe(15) },
		ActivateHook:  func(context.Context, *testfactory.Obj) error { return maybe(30) },
		PassivateHook: func(context.Context, *testfactory.Obj) error { return maybe(30) },
		ValidateHook:  func(context.Context, *testfactory.Obj) error { return maybe(30) },
		DestroyHook:   func(context.Context, *testfactory.Obj) error { return maybe(20) },
	}
	var swallowed atomic.Int64
	base := keyedpool.Config{
		MaxTotal: maxTotal, MaxTotalPerKey: maxPerKey, MaxSharesPerObject: shares,
		MinIdlePerKey: 1, MaxWait: 5 * time.Millisecond, TestOnBorrow: true, TestOnReturn: true,
		MaxLifetime: 20 * time.Millisecond, NumTestsPerEvictionRun: -1, TestWhileIdle: true,
		Abandoned:              &keyedpool.AbandonedConfig{RemoveOnBorrow: true, RemoveOnMaintenance: true, Timeout: 10 * time.Millisecond},
		SwallowedErrorListener: keyedpool.SwallowedErrorFunc(func(any, keyedpool.Op, error) { swallowed.Add(1) }),
	}
	p, err := keyedpool.New(f, base)
	if err != nil {
		t.Fatal(err)
	}
	var (
		hmu     sync.Mutex
		holders = map[*testfactory.Obj]int{}
		bad     []string
	)
	note := func(s string) {
		hmu.Lock()
		if len(bad) < 10 {
			bad = append(bad, s)
		}
		hmu.Unlock()
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range ops {
				key := fmt.Sprintf("k%d", rand.IntN(keys))
				if g == 0 && i%20 == 0 {
					cfg := base
					cfg.FIFO = rand.IntN(2) == 0
					cfg.MinIdlePerKey = rand.IntN(2)
					if rand.IntN(2) == 0 {
						cfg.TimeBetweenEvictionRuns = time.Millisecond
					}
					cfg.FactoryTimeout = time.Duration(rand.IntN(3)-1) * time.Second
					if err := p.SetConfig(cfg); err != nil && !errors.Is(err, keyedpool.ErrFactoryPanic) && !errors.Is(err, errors.ErrUnsupported) {
						// destroy errors are fine
						_ = err
					}
					continue
				}
				if g == 1 && i%10 == 0 {
					_ = p.RunEviction(context.Background())
					continue
				}
				if g == 2 && i%25 == 0 {
					_ = p.Clear(context.Background(), key)
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(3))*time.Millisecond)
				h, err := p.Borrow(ctx, key)
				cancel()
				if err != nil {
					continue
				}
				o := h.Value()
				if o.Destroyed() {
					note(fmt.Sprintf("lent destroyed object %d", o.ID))
				}
				if o.Key != key {
					note(fmt.Sprintf("Borrow(%q) lent object of %q", key, o.Key))
				}
				hmu.Lock()
				holders[o]++
				if holders[o] > shares {
					if len(bad) < 10 {
						bad = append(bad, fmt.Sprintf("object %d held by %d borrowers, cap %d", o.ID, holders[o], shares))
					}
				}
				hmu.Unlock()
				if rand.IntN(4) == 0 {
					time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
				}
				hmu.Lock()
				holders[o]--
				hmu.Unlock()
				switch rand.IntN(10) {
				case 0:
					_ = p.Invalidate(h)
				case 1:
					if rand.IntN(4) == 0 {
						// leak it: abandoned tracking takes it back
						time.Sleep(15 * time.Millisecond)
						_ = p.RunEviction(context.Background())
						_ = p.Return(h) // ErrNotBorrowed if taken back
						continue
					}
					_ = p.Return(h)
				default:
					_ = p.Return(h)
				}
			}
		})
	}
	wg.Wait()
	cfg := base
	cfg.TimeBetweenEvictionRuns = 0
	cfg.Abandoned = nil
	_ = p.SetConfig(cfg)
	s := p.Stats()
	if s.Borrowed != s.Returned {
		t.Errorf("Borrowed %d != Returned %d with every handle back", s.Borrowed, s.Returned)
	}
	if s.SharesInUse != 0 || s.Waiters != 0 || s.Active != 0 && s.Making == 0 {
		// Active may include objects being destroyed by a background
		// upkeep in flight, which RunEviction is not; allow Making.
		t.Logf("Stats at rest = %+v", s)
	}
	if s.ActiveTime < 0 || s.IdleTime < 0 || s.IdleCount < 0 || s.ActiveCount < 0 {
		t.Errorf("negative spans: active %v/%d idle %v/%d", s.ActiveTime, s.ActiveCount, s.IdleTime, s.IdleCount)
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(closeCtx); errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close did not complete: %v", err)
	}
	s = p.Stats()
	if s.Created != f.Made.Load() {
		t.Errorf("Stats().Created = %d, factory made %d", s.Created, f.Made.Load())
	}
	if s.Destroyed != s.Created || f.Destroyed.Load() != f.Made.Load() || f.LiveAll() != 0 {
		t.Errorf("Destroyed %d, Created %d, factory destroyed %d of %d, live %d", s.Destroyed, s.Created, f.Destroyed.Load(), f.Made.Load(), f.LiveAll())
	}
	if f.MaxLiveAll() > maxTotal || f.MaxLivePerKey() > maxPerKey {
		t.Errorf("limits exceeded: max live %d (MaxTotal %d), per key %d (MaxTotalPerKey %d)", f.MaxLiveAll(), maxTotal, f.MaxLivePerKey(), maxPerKey)
	}
	if err := f.Problems(); err != nil {
		t.Errorf("factory problems: %v", err)
	}
	if s.Keys != 0 {
		t.Errorf("Keys after Close = %d, want 0", s.Keys)
	}
	hmu.Lock()
	for _, b := range bad {
		t.Error(b)
	}
	hmu.Unlock()
	t.Logf("swallowed %d, stats %+v", swallowed.Load(), s)
}

// (e) Counters.Waited "counts Borrows that had to wait, whatever the
// outcome": a Borrow that waits twice (its hand-off failed validation and the
// freed room went to an older waiter of another key) is one Borrow.
func TestWaitedCountsBorrowsNotWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var p *keyedpool.Pool[string, *testfactory.Obj]
		var failing atomic.Pointer[testfactory.Obj]
		// The object failing goes to b3, c's key being at its limit.
		// While b3 validates it, b's limit is raised, so that c, older
		// than b3, takes the room its destruction frees, and b3 waits
		// again.
		f.ValidateHook = func(ctx context.Context, o *testfactory.Obj) error {
			if o != failing.Load() {
				return nil
			}
			cfg := p.Config()
			cfg.MaxTotalPerKey = 2
			if err := p.SetConfig(cfg); err != nil {
				t.Errorf("SetConfig = %v", err)
			}
			return errors.New("broken")
		}
		p = testfactory.NewPool(t, f, keyedpool.Config{MaxTotal: 2, MaxTotalPerKey: 1, TestOnBorrow: true})
		ha, hb := mustBorrow(t, p, "a"), mustBorrow(t, p, "b")
		// c waits first, for key b at its MaxTotalPerKey; b3 then for a.
		c := borrowAsync(context.Background(), p, "b")
		synctest.Wait()
		b3 := borrowAsync(context.Background(), p, "a")
		synctest.Wait()
		failing.Store(ha.Value())
		mustReturn(t, p, ha)
		synctest.Wait()
		rc := <-c
		if rc.err != nil {
			t.Fatalf("borrower of b = %v", rc.err)
		}
		mustReturn(t, p, hb) // b3 waited again; now served
		r3 := <-b3
		if r3.err != nil {
			t.Fatalf("borrower of a = %v", r3.err)
		}
		mustReturn(t, p, r3.h)
		mustReturn(t, p, rc.h)
		if got := p.Stats().Waited; got != 2 {
			t.Errorf("Stats().Waited = %d after 2 Borrows waited (one of them twice), want 2", got)
		}
	})
}

package keyedpool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
	"github.com/kpool-go/kpool/keyedpool/internal/evictsched"
)

// idleObjects makes n idle objects of key: borrowed at once, then returned.
func idleObjects(t *testing.T, p *pool, key string, n int) []*testfactory.Obj {
	t.Helper()
	hs := make([]*handle, n)
	objs := make([]*testfactory.Obj, n)
	for i := range hs {
		hs[i] = mustBorrow(t, p, key)
		objs[i] = hs[i].Value()
	}
	for _, h := range hs {
		mustReturn(t, p, h)
	}
	return objs
}

func mustRunEviction(t *testing.T, p *pool) {
	t.Helper()
	if err := p.RunEviction(context.Background()); err != nil {
		t.Fatalf("RunEviction() = %v", err)
	}
}

// sleepPast sleeps d and lets everything the fake clock woke finish.
func sleepPast(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestEvictorEvictsIdleObjects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			TimeBetweenEvictionRuns: time.Second,
			MinEvictableIdle:        10 * time.Second,
			NumTestsPerEvictionRun:  -1,
		})
		idleObjects(t, p, "a", 2)
		idleObjects(t, p, "b", 1)
		// Returned at 0s, stamped with the first run's time, 1s: never
		// evicted early, and at most one run late, at the run of 12s.
		sleepPast(11*time.Second + 500*time.Millisecond)
		if got := p.Stats().Idle; got != 3 {
			t.Fatalf("Idle after 11.5s = %d, want 3 (MinEvictableIdle is 10s, nothing evicted early)", got)
		}
		sleepPast(time.Second)
		s := p.Stats()
		if s.Idle != 0 || s.DestroyedByEvictor != 3 || f.LiveAll() != 0 {
			t.Errorf("after 12.5s: Idle = %d, DestroyedByEvictor = %d, live = %d; want 0, 3, 0",
				s.Idle, s.DestroyedByEvictor, f.LiveAll())
		}
		if s.EvictionTests < 3 {
			t.Errorf("EvictionTests = %d, want at least 3", s.EvictionTests)
		}
	})
}

func TestEvictorRecentlyUsedObjectsStay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			TimeBetweenEvictionRuns: time.Second,
			MinEvictableIdle:        3 * time.Second,
			NumTestsPerEvictionRun:  -1,
		})
		idleObjects(t, p, "a", 1)
		for range 10 {
			sleepPast(2 * time.Second)
			mustReturn(t, p, mustBorrow(t, p, "a"))
		}
		if got := f.Made.Load(); got != 1 {
			t.Errorf("objects made = %d, want 1: an object used every 2s must outlive a 3s MinEvictableIdle", got)
		}
	})
}

func TestSoftMinEvictableIdleKeepsMinIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{
			MinIdlePerKey:          2,
			SoftMinEvictableIdle:   5 * time.Second,
			NumTestsPerEvictionRun: -1,
		})
		idleObjects(t, p, "a", 5)
		idleObjects(t, p, "b", 1)
		mustRunEviction(t, p) // starts the clock
		sleepPast(6 * time.Second)
		mustRunEviction(t, p)
		if got, want := p.KeyStats("a").Idle, 2; got != want {
			t.Errorf(`KeyStats("a").Idle = %d, want %d (soft eviction stops at MinIdlePerKey)`, got, want)
		}
		// b had fewer than MinIdlePerKey; upkeep made it up.
		if got, want := p.KeyStats("b").Idle, 2; got != want {
			t.Errorf(`KeyStats("b").Idle = %d, want %d`, got, want)
		}
		if got := p.Stats().DestroyedByEvictor; got != 3 {
			t.Errorf("DestroyedByEvictor = %d, want 3", got)
		}
	})
}

func TestEvictionPolicyDecides(t *testing.T) {
	var seen []evictor.Candidate
	var mu sync.Mutex
	p, _ := newPool(t, keyedpool.Config{
		NumTestsPerEvictionRun: -1,
		EvictionPolicy: evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool {
			mu.Lock()
			seen = append(seen, c)
			mu.Unlock()
			return c.Key == "evict-me"
		}),
	})
	idleObjects(t, p, "evict-me", 2)
	idleObjects(t, p, "keep-me", 1)
	mustRunEviction(t, p)
	if got := p.KeyStats("evict-me").Idle + p.KeyStats("keep-me").Idle; got != 1 {
		t.Errorf("idle objects left = %d, want 1", got)
	}
	if len(seen) != 3 {
		t.Fatalf("policy saw %d candidates, want 3", len(seen))
	}
	for _, c := range seen {
		if c.Created.IsZero() || c.LastReturned.Before(c.Created) || c.IdleTime < 0 || c.IdleCount < 1 {
			t.Errorf("candidate %+v: want times set, LastReturned not before Created, IdleCount >= 1", c)
		}
	}
}

// A policy written for the pool's key type is handed each candidate's key
// as that type; one written for another key type keeps every object and is
// reported as a panicking policy, not left silent.
func TestEvictionPolicyWithTypedKey(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{
		NumTestsPerEvictionRun: -1,
		EvictionPolicy: evictor.KeyedPolicyFunc[string](func(_ evictor.Settings, key string, _ evictor.Candidate) bool {
			return strings.HasPrefix(key, "evict-")
		}),
	})
	idleObjects(t, p, "evict-me", 2)
	idleObjects(t, p, "keep-me", 1)
	mustRunEviction(t, p)
	if got := p.KeyStats("evict-me").Idle; got != 0 {
		t.Errorf(`KeyStats("evict-me").Idle = %d, want 0`, got)
	}
	if got := p.KeyStats("keep-me").Idle; got != 1 {
		t.Errorf(`KeyStats("keep-me").Idle = %d, want 1`, got)
	}

	l, got := listen()
	wrong, _ := newPool(t, keyedpool.Config{
		NumTestsPerEvictionRun: -1,
		SwallowedErrorListener: l,
		EvictionPolicy:         evictor.KeyedPolicyFunc[int](func(evictor.Settings, int, evictor.Candidate) bool { return true }),
	})
	idleObjects(t, wrong, "a", 1)
	mustRunEviction(t, wrong)
	if got := wrong.KeyStats("a").Idle; got != 1 {
		t.Errorf(`KeyStats("a").Idle under a policy for int keys = %d, want 1 (kept)`, got)
	}
	errs := got()
	if len(errs) != 1 || errs[0].op != keyedpool.OpEvictionPolicy || !errors.Is(errs[0].err, keyedpool.ErrFactoryPanic) ||
		!strings.Contains(errs[0].err.Error(), "KeyedPolicyFunc[int]") {
		t.Errorf("swallowed errors = %+v, want one OpEvictionPolicy panic naming KeyedPolicyFunc[int]", errs)
	}
}

// Each run goes on where the last stopped, so runs of NumTests objects
// visit every idle object, whatever its key, before any twice.
func TestEvictionVisitsEveryIdleObjectInTurn(t *testing.T) {
	f := &testfactory.Factory{}
	var mu sync.Mutex
	tested := map[int64]int{}
	f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
		mu.Lock()
		tested[o.ID]++
		mu.Unlock()
		return nil
	}
	p := testfactory.NewPool(t, f, keyedpool.Config{TestWhileIdle: true, NumTestsPerEvictionRun: 3})
	for k := range 10 {
		idleObjects(t, p, fmt.Sprint("key", k), 2)
	}
	for range 6 {
		mustRunEviction(t, p)
	}
	if len(tested) != 18 {
		t.Errorf("6 runs of 3 tested %d distinct objects, want 18: %v", len(tested), tested)
	}
	mustRunEviction(t, p)
	if len(tested) != 20 {
		t.Errorf("7 runs of 3 tested %d distinct objects, want all 20", len(tested))
	}
	if got := p.Stats().Idle; got != 20 {
		t.Errorf("Idle = %d, want 20: passing objects are kept", got)
	}
}

func TestNumTestsNegativeTestsAFraction(t *testing.T) {
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{TestWhileIdle: true, NumTestsPerEvictionRun: -3, MaxIdlePerKey: -1, MaxTotalPerKey: -1})
	idleObjects(t, p, "a", 10)
	mustRunEviction(t, p)
	if got := f.Validated.Load(); got != 4 {
		t.Errorf("validated %d objects, want ceil(10/3) = 4", got)
	}
}

func TestTestWhileIdleDestroysBrokenObjects(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{TestWhileIdle: true, NumTestsPerEvictionRun: -1})
	objs := idleObjects(t, p, "a", 4)
	objs[1].Dead.Store(true)
	objs[3].Dead.Store(true)
	mustRunEviction(t, p)
	s := p.Stats()
	if s.Idle != 2 || s.DestroyedByEvictor != 2 {
		t.Errorf("Idle = %d, DestroyedByEvictor = %d, want 2, 2", s.Idle, s.DestroyedByEvictor)
	}
	if !objs[1].Destroyed() || !objs[3].Destroyed() || objs[0].Destroyed() {
		t.Error("the dead objects, and only they, should be destroyed")
	}
	if objs[0].Active.Load() || objs[2].Active.Load() || f.Activated.Load() != 8 {
		t.Errorf("survivors active %v/%v, Activated %d; want false/false, 8: each object tested once and passivated",
			objs[0].Active.Load(), objs[2].Active.Load(), f.Activated.Load())
	}
}

// The scenario: objects die at random while idle; with TestWhileIdle
// and enough runs to visit them all, no borrower ever gets a dead one.
func TestDeadIdleObjectsAreNeverLent(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{TestWhileIdle: true, NumTestsPerEvictionRun: 3, MaxTotalPerKey: 6, MaxIdlePerKey: 6})
	keys := []string{"a", "b", "c", "d"}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 30 {
		var all []*testfactory.Obj
		for _, k := range keys {
			all = append(all, idleObjects(t, p, k, 6)...)
		}
		for _, o := range all {
			if rng.IntN(4) == 0 {
				o.Dead.Store(true)
			}
		}
		for range (len(all) + 2) / 3 {
			mustRunEviction(t, p)
		}
		for _, k := range keys {
			for _, h := range borrowAtOnce(t, p, k, 6) {
				if h.Value().Dead.Load() {
					t.Fatalf("round %d: Borrow(%q) lent dead object %d", round, k, h.Value().ID)
				}
				mustReturn(t, p, h)
			}
		}
	}
	if p.Stats().DestroyedByEvictor == 0 || f.Problems() != nil {
		t.Errorf("DestroyedByEvictor = %d, factory problems %v", p.Stats().DestroyedByEvictor, f.Problems())
	}
}

func TestObjectUnderTestIsNotLent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		release := make(chan error)
		var testing atomic.Pointer[testfactory.Obj]
		f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
			if testing.Load() == o {
				return <-release
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{TestWhileIdle: true, MaxTotalPerKey: 1})
		obj := idleObjects(t, p, "a", 1)[0]
		testing.Store(obj)
		run := make(chan error, 1)
		go func() { run <- p.RunEviction(context.Background()) }()
		synctest.Wait()
		if got := p.KeyStats("a").Idle; got != 1 {
			t.Errorf("Idle during the test = %d, want 1 (an object under test still counts idle)", got)
		}
		got := borrowAsync(context.Background(), p, "a")
		synctest.Wait()
		select {
		case r := <-got:
			t.Fatalf("Borrow during the test returned %v, %v; want it to wait", r.h, r.err)
		default:
		}
		testing.Store(nil)
		release <- nil
		r := <-got
		if r.err != nil || r.h.Value() != obj {
			t.Fatalf("Borrow after the test = %v, %v; want the tested object", r.h, r.err)
		}
		if !obj.Active.Load() {
			t.Error("the object was lent without being activated for its borrower")
		}
		mustReturn(t, p, r.h)
		if err := <-run; err != nil {
			t.Errorf("RunEviction() = %v", err)
		}
	})
}

// A borrower of another key waits for room that an eviction frees.
func TestEvictionFreesRoomForWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		release := make(chan struct{})
		f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
			<-release
			return testfactory.ErrDead
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{TestWhileIdle: true, MaxTotal: 1})
		idleObjects(t, p, "a", 1)
		go p.RunEviction(context.Background())
		synctest.Wait()
		got := borrowAsync(context.Background(), p, "b")
		synctest.Wait()
		if w := p.Stats().Waiters; w != 1 {
			t.Fatalf("Waiters = %d, want 1: a's object is under test, the pool is full", w)
		}
		close(release)
		r := <-got
		if r.err != nil {
			t.Fatalf(`Borrow("b") = %v, want the room a's evicted object left`, r.err)
		}
		mustReturn(t, p, r.h)
	})
}

func TestMaxLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{
			TimeBetweenEvictionRuns: time.Second,
			NumTestsPerEvictionRun:  -1,
			MaxLifetime:             10 * time.Second,
		})
		idleObjects(t, p, "idle", 1)
		lent := mustBorrow(t, p, "lent")
		sleepPast(9*time.Second + 500*time.Millisecond)
		if got := p.Stats().Idle; got != 1 {
			t.Fatalf("Idle at 9.5s = %d, want 1: not expired yet", got)
		}
		sleepPast(2 * time.Second)
		s := p.Stats()
		if s.Idle != 0 || s.DestroyedByLifetime != 1 {
			t.Fatalf("at 11.5s: Idle = %d, DestroyedByLifetime = %d, want 0, 1", s.Idle, s.DestroyedByLifetime)
		}
		if lent.Value().Destroyed() {
			t.Fatal("an expired object was destroyed while borrowed")
		}
		mustReturn(t, p, lent)
		if s := p.Stats(); s.DestroyedByLifetime != 2 || f.LiveAll() != 0 {
			t.Errorf("after Return of the expired object: DestroyedByLifetime = %d, live = %d, want 2, 0",
				s.DestroyedByLifetime, f.LiveAll())
		}
	})
}

// Without an evictor, Return still retires expired objects.
func TestMaxLifetimeOnReturnWithoutEvictor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxLifetime: time.Minute})
		h := mustBorrow(t, p, "a")
		sleepPast(59 * time.Second)
		mustReturn(t, p, h)
		h = mustBorrow(t, p, "a")
		sleepPast(time.Second)
		mustReturn(t, p, h)
		if s := p.Stats(); s.Created != 1 || s.DestroyedByLifetime != 1 || s.Idle != 0 {
			t.Errorf("Created = %d, DestroyedByLifetime = %d, Idle = %d, want 1, 1, 0", s.Created, s.DestroyedByLifetime, s.Idle)
		}
	})
}

func TestMaxLifetimeJitterSpreadsExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{
			MaxLifetime:            10 * time.Second,
			MaxLifetimeJitter:      10 * time.Second,
			NumTestsPerEvictionRun: -1,
			MaxTotalPerKey:         -1,
			MaxIdlePerKey:          -1,
		})
		idleObjects(t, p, "a", 100)
		sleepPast(10*time.Second - time.Millisecond)
		mustRunEviction(t, p)
		if got := p.Stats().Idle; got != 100 {
			t.Fatalf("Idle before MaxLifetime = %d, want 100", got)
		}
		sleepPast(5 * time.Second)
		mustRunEviction(t, p)
		if got := p.Stats().Idle; got < 10 || got > 90 {
			t.Errorf("Idle halfway through the jitter = %d, want between 10 and 90 of 100", got)
		}
		sleepPast(5*time.Second + time.Millisecond) // 20 s in all: every share of the jitter has passed
		mustRunEviction(t, p)
		if got := p.Stats().Idle; got != 0 {
			t.Errorf("Idle after MaxLifetime + MaxLifetimeJitter = %d, want 0", got)
		}
	})
}

func TestMinIdleUpkeep(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{MinIdlePerKey: 2, MaxTotalPerKey: 4})
	hs := borrowAtOnce(t, p, "a", 3)
	mustRunEviction(t, p)
	if got := p.KeyStats("a").Idle; got != 1 {
		t.Errorf(`Idle of "a" with 3 of 4 lent = %d, want 1 (MaxTotalPerKey caps upkeep)`, got)
	}
	returnAll(t, p, hs)
	if got := p.KeyStats("a").Idle; got != 4 {
		t.Fatalf(`Idle of "a" = %d, want 4`, got)
	}
	h := mustBorrow(t, p, "b")
	mustRunEviction(t, p)
	if got := p.KeyStats("b").Idle; got != 2 {
		t.Errorf(`Idle of "b" = %d, want 2: upkeep keeps MinIdlePerKey spare`, got)
	}
	mustReturn(t, p, h)
	made := f.Made.Load()
	mustRunEviction(t, p)
	if got := f.Made.Load(); got != made {
		t.Errorf("a run with every key at MinIdlePerKey made %d objects, want 0", got-made)
	}
}

func TestMinIdleUpkeepBoundsConcurrentMakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var inFlight, peak atomic.Int64
		f.MakeHook = func(context.Context, string) error {
			n := inFlight.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inFlight.Add(-1)
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MinIdlePerKey: 1})
		for k := range 40 {
			mustReturn(t, p, mustBorrow(t, p, fmt.Sprint(k)))
			if err := p.Clear(context.Background(), fmt.Sprint(k)); err != nil {
				t.Fatal(err)
			}
		}
		// Clear dropped the keys; borrow again to have 40 keys with one object lent.
		hs := make([]*handle, 40)
		for k := range hs {
			hs[k] = mustBorrow(t, p, fmt.Sprint(k))
		}
		peak.Store(0)
		mustRunEviction(t, p)
		if got := p.Stats().Idle; got != 40 {
			t.Errorf("Idle after upkeep = %d, want 40", got)
		}
		if got := peak.Load(); got > 4 || got < 2 {
			t.Errorf("peak concurrent makes = %d, want 2..4: upkeep is parallel but bounded", got)
		}
		returnAll(t, p, hs)
	})
}

func TestEvictorSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		if got := evictsched.Default.Groups(); got != 0 {
			t.Fatalf("evictor goroutines before any pool = %d, want 0", got)
		}
		p0, _ := newPool(t, keyedpool.Config{})
		p1, _ := newPool(t, keyedpool.Config{TimeBetweenEvictionRuns: time.Second})
		p2, _ := newPool(t, keyedpool.Config{TimeBetweenEvictionRuns: time.Second})
		if got := evictsched.Default.Groups(); got != 1 {
			t.Errorf("evictor goroutines for two pools at 1s and one without = %d, want 1", got)
		}
		idleObjects(t, p1, "a", 1)
		sleepPast(3*time.Second + time.Millisecond)
		if got := p1.Stats().EvictionTests; got != 3 {
			t.Errorf("EvictionTests after 3 runs of 1 object = %d, want 3", got)
		}
		if err := p2.SetConfig(keyedpool.Config{TimeBetweenEvictionRuns: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if got := evictsched.Default.Groups(); got != 2 {
			t.Errorf("evictor goroutines after a pool moved to 1m = %d, want 2", got)
		}
		for _, p := range []*pool{p0, p1, p2} {
			if err := p.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if got := evictsched.Default.Groups(); got != 0 {
			t.Errorf("evictor goroutines after every pool closed = %d, want 0", got)
		}
		if err := p1.RunEviction(context.Background()); !errors.Is(err, keyedpool.ErrClosed) {
			t.Errorf("RunEviction() on a closed pool = %v, want ErrClosed", err)
		}
	})
}

// Close cancels an eviction run in flight and waits for it.
func TestCloseEndsEvictionRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		f.ValidateHook = func(ctx context.Context, _ *testfactory.Obj) error {
			<-ctx.Done()
			return ctx.Err()
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{TestWhileIdle: true})
		obj := idleObjects(t, p, "a", 1)[0]
		run := make(chan error, 1)
		go func() { run <- p.RunEviction(context.Background()) }()
		synctest.Wait()
		if err := p.Close(context.Background()); err != nil {
			t.Fatalf("Close() = %v", err)
		}
		if err := <-run; !errors.Is(err, context.Canceled) {
			t.Errorf("RunEviction() cut by Close = %v, want context.Canceled", err)
		}
		if !obj.Destroyed() || p.Stats().DestroyedByClose != 1 {
			t.Errorf("object under test at Close: destroyed %v, DestroyedByClose %d; want true, 1",
				obj.Destroyed(), p.Stats().DestroyedByClose)
		}
	})
}

// A run that outlasts the interval makes the scheduler skip ticks; the
// pool's clock still moves at each of them, so an object returned meanwhile
// is stamped with its time, and the next run does not evict it before
// MinEvictableIdle.
func TestSlowRunEvictsNothingEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		var slowOnce atomic.Bool
		f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.Key == "slow" && slowOnce.CompareAndSwap(false, true) {
				time.Sleep(9500 * time.Millisecond) // a validation against a slow backend
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{
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

// Without an evictor (RunEviction called by hand) an object returned long
// after a run is stamped with its return time, not the run's: the next run
// judges its idle time from its return.
func TestManualRunJudgesIdleTimeFromReturn(t *testing.T) {
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

// A key that upkeep skipped because it was at MaxTotalPerKey is made up once
// room frees (a lent object invalidated), although it has no idle object
// for a run to visit.
func TestMinIdleUpkeepResumesWhenKeyLimitFrees(t *testing.T) {
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

// The same with MaxTotal: a key that upkeep skipped because the pool was
// full is made up once room frees.
func TestMinIdleUpkeepResumesWhenPoolRoomFrees(t *testing.T) {
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

// Borrow never lends an idle object past its MaxLifetime, though no eviction
// run has reached it (a run looks at a few objects, so with many idle ones
// this is the common case).
func TestBorrowNeverLendsExpiredIdleObject(t *testing.T) {
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

// An Invalidate of a lent object past MaxLifetime counts in
// DestroyedByInvalidate, in exclusive and in shared mode, also after a run's
// lifetime sweep found the object expired: expiry only stops new leases, and
// DestroyedByLifetime counts the objects found idle by a run or returned.
func TestInvalidateOfExpiredLentObjectCountsAsInvalidate(t *testing.T) {
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

// A run looks at NumTestsPerEvictionRun lent shared objects for expiry,
// going on where the last run stopped, so that a run costs what it looks at,
// not what the pool lends: here 7 keys whose only (lent) objects expired get
// their upkeep 3 keys a run.
func TestLentLifetimeSweepIsBoundedPerRun(t *testing.T) {
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

// Prepare calls at the same time, and an eviction run's upkeep beside them,
// count the objects being made for the key: between them they make
// MinIdlePerKey objects, not MinIdlePerKey each.
func TestUpkeepAndPrepareCountMakesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		release := make(chan struct{})
		f.MakeHook = func(context.Context, string) error {
			<-release
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MinIdlePerKey: 3, MaxIdlePerKey: 8, MaxTotalPerKey: 8})
		errs := make(chan error, 3)
		for range 3 {
			go func() { errs <- p.Prepare(context.Background(), "k") }()
		}
		synctest.Wait()
		if got := p.KeyStats("k").Making; got != 3 {
			t.Fatalf("Making with three Prepare calls at once = %d, want 3 (MinIdlePerKey)", got)
		}
		// An eviction run now finds the key's upkeep in flight.
		runDone := make(chan error, 1)
		go func() { runDone <- p.RunEviction(context.Background()) }()
		synctest.Wait()
		close(release)
		for range 3 {
			if err := <-errs; err != nil {
				t.Errorf("Prepare() = %v, want nil", err)
			}
		}
		if err := <-runDone; err != nil {
			t.Errorf("RunEviction() = %v, want nil", err)
		}
		synctest.Wait()
		ks := p.KeyStats("k")
		if ks.Idle != 3 || ks.Created != 3 {
			t.Errorf("after Prepare x3 and an eviction run: Idle %d, Created %d, want 3 and 3", ks.Idle, ks.Created)
		}
	})
}

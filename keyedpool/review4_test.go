package keyedpool_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// ---------------------------------------------------------------------------
// Helpers of this file.

// r4Key is a pointer key, so that a test can see whether the pool still
// references a key (runtime.AddCleanup runs once nothing does).
type r4Key struct {
	name string
	_    [64]byte // not a tiny allocation: collected on its own
}

type r4Pool = keyedpool.Pool[*r4Key, int]

// r4KeyPool makes a pool of pointer keys whose makes fail while fail says
// so, and closes it when the test ends.
func r4KeyPool(t *testing.T, cfg keyedpool.Config, fail *atomic.Bool) *r4Pool {
	t.Helper()
	var n atomic.Int64
	f := factory.Funcs[*r4Key, int]{
		MakeFunc: func(context.Context, *r4Key) (int, error) {
			if fail != nil && fail.Load() {
				return 0, errors.New("r4: make fails")
			}
			return int(n.Add(1)), nil
		},
	}
	p, err := keyedpool.New(f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return p
}

// r4Collected reports whether the key whose cleanup sets gone has been
// collected, running the GC a few times (bounded: about 2 s).
func r4Collected(gone *atomic.Bool) bool {
	for range 40 {
		runtime.GC()
		if gone.Load() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return gone.Load()
}

// r4NewKey returns a new key and a flag set once it has been collected.
func r4NewKey(name string) (*r4Key, *atomic.Bool) {
	k := &r4Key{name: name}
	gone := new(atomic.Bool)
	runtime.AddCleanup(k, func(g *atomic.Bool) { g.Store(true) }, gone)
	return k, gone
}

// r4WaitFor polls cond for up to 5 s of real time.
func r4WaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// 3. Keys and memory.

// README, "How keys leave": "With MinIdlePerKey 0 a key's sub-pool is
// dropped as soon as it holds nothing and nobody waits (one-off keys cost
// nothing)." Stats.Keys: "the number of keys that have a sub-pool: ones
// that hold objects or have waiters, whose makes are failing, or that
// MinIdlePerKey keeps".
//
// A borrower of key b waits for room under MaxTotal (b holds nothing);
// SetConfig switches WhenExhausted to Fail, which fails it with
// ErrExhausted. Key b now holds nothing, nobody waits on it, its makes
// never failed: it must leave the pool.
func TestReview4SetConfigFailDropsEmptyKeyOfFailedWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := keyedpool.Config{MaxTotal: 1}
		p, _ := newPool(t, cfg)
		ha := mustBorrow(t, p, "a")
		ch := borrowAsync(context.Background(), p, "b")
		synctest.Wait()
		if s := p.Stats(); s.Waiters != 1 || s.Keys != 2 {
			t.Fatalf("before SetConfig: Waiters %d, Keys %d; want 1, 2", s.Waiters, s.Keys)
		}
		cfg.WhenExhausted = keyedpool.Fail
		if err := p.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		if r := <-ch; !errors.Is(r.err, keyedpool.ErrExhausted) {
			t.Fatalf("waiting Borrow(b) after SetConfig(Fail) = %v, want ErrExhausted", r.err)
		}
		mustReturn(t, p, ha)
		mustRunEviction(t, p)
		if s, ks := p.Stats(), p.KeyStats("b"); s.Keys != 1 || ks != (keyedpool.KeyStats{}) {
			t.Errorf("after b's only borrower failed: Stats().Keys = %d (want 1, key a), KeyStats(b) = %+v (want zero)", s.Keys, ks)
		}
	})
}

// Same, with the waiter's context ending at the moment SetConfig fails it
// (the error grant races with giving up): the key must leave either way.
func TestReview4GaveUpAtErrorGrantDropsKey(t *testing.T) {
	for i := range 50 {
		cfg := keyedpool.Config{MaxTotal: 1}
		f := &testfactory.Factory{}
		p, err := keyedpool.New(f, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ha := mustBorrow(t, p, "a")
		ctx, cancel := context.WithCancel(context.Background())
		ch := borrowAsync(ctx, p, "b")
		r4WaitFor(t, "b to wait", func() bool { return p.Stats().Waiters == 1 })
		cfg.WhenExhausted = keyedpool.Fail
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := p.SetConfig(cfg); err != nil {
				t.Error(err)
			}
		})
		wg.Go(cancel)
		wg.Wait()
		r := <-ch
		if r.err == nil {
			t.Fatalf("try %d: Borrow(b) lent an object", i)
		}
		mustReturn(t, p, ha)
		if s := p.Stats(); s.Keys != 1 {
			p.Close(context.Background())
			t.Fatalf("try %d: b's borrower failed with %v; Stats().Keys = %d, want 1 (key a)", i, r.err, s.Keys)
		}
		if err := p.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// Config.MakeFailureThreshold: "A failing key is kept while it holds
// nothing, so that its backoff holds". README: "With MinIdlePerKey 0 a
// key's sub-pool is dropped as soon as it holds nothing ... (one-off keys
// cost nothing)".
//
// A one-off key whose first make fails and second succeeds is no longer
// failing (KeyStats shows no failures, Stats().Keys drops it once its
// object is gone). Without an evictor it must not stay referenced by the
// pool for ever; here the pool keeps a reference to its dropped sub-pool
// (and so the key) in its list of failing keys, which only eviction runs
// trim. (Shared leases keep the lanes, and their key index, out of it.)
func TestReview4RecoveredFailingKeyIsNotRetained(t *testing.T) {
	var fail atomic.Bool
	p := r4KeyPool(t, keyedpool.Config{MakeFailureThreshold: 3, MaxSharesPerObject: 2}, &fail)
	bg := context.Background()

	// Control: a key that never failed is collected once dropped.
	ctrl, ctrlGone := r4NewKey("control")
	h, err := p.Borrow(bg, ctrl)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Invalidate(h); err != nil {
		t.Fatal(err)
	}
	h, ctrl = nil, nil
	if !r4Collected(ctrlGone) {
		t.Skip("a dropped key that never failed is not collected either: the test cannot tell")
	}

	k, gone := r4NewKey("flaky")
	fail.Store(true)
	if _, err := p.Borrow(bg, k); err == nil {
		t.Fatal("Borrow with a failing make succeeded")
	}
	fail.Store(false)
	h, err = p.Borrow(bg, k)
	if err != nil {
		t.Fatal(err)
	}
	if ks := p.KeyStats(k); ks.MakeFailures != 0 {
		t.Fatalf("MakeFailures after a successful make = %d, want 0", ks.MakeFailures)
	}
	if err := p.Invalidate(h); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Keys != 0 {
		t.Fatalf("Stats().Keys = %d after the recovered key's object was destroyed, want 0", s.Keys)
	}
	h, k = nil, nil
	// The pool goes on serving other keys, as a long-running one does.
	for i := range 10 {
		h, err := p.Borrow(bg, &r4Key{name: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Invalidate(h); err != nil {
			t.Fatal(err)
		}
	}
	if !r4Collected(gone) {
		t.Errorf("a one-off key that failed once and then recovered, dropped from the pool (Stats().Keys = %d), is still referenced by it", p.Stats().Keys)
	}
	runtime.KeepAlive(p)
}

// The same for the lanes' key index: README "one-off keys cost nothing";
// lane.go's indexLocked says the index is "made again once the keys it
// misses or holds stale reach a quarter of p.keys". A key dropped from the
// pool must not stay referenced by the index for ever while the pool goes
// on serving a key the index already holds.
func TestReview4DroppedKeyNotRetainedByLaneIndex(t *testing.T) {
	for _, shares := range []int{2, 1} {
		t.Run(fmt.Sprintf("Shares=%d", shares), func(t *testing.T) {
			p := r4KeyPool(t, keyedpool.Config{MaxSharesPerObject: shares}, nil)
			bg := context.Background()
			steady := &r4Key{name: "steady"}
			hs, err := p.Borrow(bg, steady)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Return(hs); err != nil {
				t.Fatal(err)
			}
			k, gone := r4NewKey("one-off")
			h, err := p.Borrow(bg, k)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Invalidate(h); err != nil {
				t.Fatal(err)
			}
			if s := p.Stats(); s.Keys != 1 {
				t.Fatalf("Stats().Keys = %d, want 1 (steady)", s.Keys)
			}
			h, k = nil, nil
			for range 100 {
				hs, err := p.Borrow(bg, steady)
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Return(hs); err != nil {
					t.Fatal(err)
				}
			}
			if !r4Collected(gone) {
				t.Errorf("a one-off key dropped from the pool (Stats().Keys = %d) is still referenced by it", p.Stats().Keys)
			}
		})
	}
}

// ForgetFailures: "ends key's make-failure streak and its backoff, if any,
// and forgets the key as Clear does (without destroying anything): its
// sub-pool is dropped once it holds nothing and nobody waits on it ...
// unless the key is used again. It is for callers that know the key is
// gone for good (a router whose endpoint left its service), whose failing
// keys would otherwise stay until an eviction run forgets them".
//
// A make of the key that was in flight when ForgetFailures was called
// fails afterwards; the key, forgotten and not used again, holds nothing
// once the make is over: it must leave, and not come back as a key in
// backoff that only an eviction run (none here) would forget.
func TestReview4ForgetFailuresWithMakeInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		started, release := make(chan struct{}), make(chan struct{})
		f.MakeHook = func(_ context.Context, key string) error {
			if key == "gone" {
				started <- struct{}{}
				<-release
				return errors.New("connection refused")
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MakeFailureThreshold: 2})
		bg := context.Background()
		// One failure first: the key is failing.
		go func() { <-started; release <- struct{}{} }()
		if _, err := p.Borrow(bg, "gone"); err == nil {
			t.Fatal("Borrow succeeded")
		}
		ch := borrowAsync(bg, p, "gone")
		<-started // the second make is in flight
		p.ForgetFailures("gone")
		release <- struct{}{}
		if r := <-ch; r.err == nil {
			t.Fatal("Borrow succeeded")
		}
		synctest.Wait()
		if s, ks := p.Stats(), p.KeyStats("gone"); s.Keys != 0 || s.KeysInBackoff != 0 {
			t.Errorf("after ForgetFailures(gone) and its last make's failure: Stats().Keys = %d, KeysInBackoff = %d (KeyStats %+v); want 0, 0",
				s.Keys, s.KeysInBackoff, ks)
		}
	})
}

// ---------------------------------------------------------------------------
// 2. The evictor and upkeep.

// Config.MinIdlePerKey: "the number of spare objects Prepare makes for a
// key (and the evictor keeps)". README: "Min-idle upkeep. After testing, a
// run makes idle objects for the keys below MinIdlePerKey spare objects
// (as Prepare counts them), within every limit".
//
// A key whose objects came from AddObject alone (new, or used again after
// Clear) has fewer than MinIdlePerKey idle objects: a run must make up the
// rest.
func TestReview4UpkeepForKeyMadeByAddObject(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, p *pool)
	}{
		{"BorrowReturn", func(t *testing.T, p *pool) { idleObjects(t, p, "k", 1) }}, // control
		{"AddObject", func(t *testing.T, p *pool) {
			if err := p.AddObject(context.Background(), "k"); err != nil {
				t.Fatal(err)
			}
		}},
		{"AddObjectAfterClear", func(t *testing.T, p *pool) {
			idleObjects(t, p, "k", 1)
			if err := p.Clear(context.Background(), "k"); err != nil {
				t.Fatal(err)
			}
			if err := p.AddObject(context.Background(), "k"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newPool(t, keyedpool.Config{MinIdlePerKey: 2})
			tc.setup(t, p)
			if got := p.KeyStats("k").Idle; got != 1 {
				t.Fatalf("idle after setup = %d, want 1", got)
			}
			mustRunEviction(t, p)
			mustRunEviction(t, p)
			if got := p.KeyStats("k").Idle; got != 2 {
				t.Errorf("idle after two eviction runs = %d, want MinIdlePerKey 2", got)
			}
		})
	}
}

// SetConfig: "MaxIdlePerKey lowered: idle objects over it are destroyed at
// once", "objects already lent are never taken from their borrowers, but
// nothing the pool holds keeps breaking the new setting for longer than it
// takes them to come back". README: "An object under test stays where it
// is in the idle order but is not lent".
//
// Two eviction runs test the key's two idle objects (TestWhileIdle) when
// SetConfig lowers MaxIdlePerKey to 1 (and, in the second case, MaxTotal
// to 1 with objects of two keys): the objects are left to their tests,
// but once the tests pass and they are idle again, the key (the pool) must
// not hold more than the new limit.
func TestReview4LoweredLimitDuringEvictionTests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		keys  []string
		lower func(c *keyedpool.Config)
		over  func(p *pool) (int, int)
	}{
		{"MaxIdlePerKey", []string{"k", "k"}, func(c *keyedpool.Config) { c.MaxIdlePerKey = 1 },
			func(p *pool) (int, int) { return p.KeyStats("k").Idle, 1 }},
		{"MaxTotalPerKey", []string{"k", "k"}, func(c *keyedpool.Config) { c.MaxTotalPerKey = 1; c.MaxIdlePerKey = 1 },
			func(p *pool) (int, int) { ks := p.KeyStats("k"); return ks.Idle + ks.Active, 1 }},
		{"MaxTotal", []string{"x", "y"}, func(c *keyedpool.Config) { c.MaxTotal = 1 },
			func(p *pool) (int, int) { s := p.Stats(); return s.Idle + s.Active + s.Making, 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &testfactory.Factory{}
				var testing atomic.Bool
				entered := make(chan struct{}, 2)
				release := make(chan struct{})
				f.ActivateHook = func(context.Context, *testfactory.Obj) error {
					if testing.Load() {
						entered <- struct{}{}
						<-release
					}
					return nil
				}
				cfg := keyedpool.Config{TestWhileIdle: true, NumTestsPerEvictionRun: 1, FactoryTimeout: -1}
				p := testfactory.NewPool(t, f, cfg)
				hs := make([]*handle, len(tc.keys))
				for i, k := range tc.keys {
					hs[i] = mustBorrow(t, p, k)
				}
				for _, h := range hs {
					mustReturn(t, p, h)
				}
				if s := p.Stats(); s.Idle != 2 {
					t.Fatalf("idle = %d, want 2", s.Idle)
				}
				testing.Store(true)
				var runs sync.WaitGroup
				for range 2 {
					runs.Go(func() {
						if err := p.RunEviction(context.Background()); err != nil {
							t.Errorf("RunEviction() = %v", err)
						}
					})
					<-entered // each run holds one object under test
				}
				tc.lower(&cfg)
				if err := p.SetConfig(cfg); err != nil {
					t.Fatal(err)
				}
				close(release)
				runs.Wait()
				synctest.Wait()
				if got, limit := tc.over(p); got > limit {
					t.Errorf("after the tests ended: %d objects held, over the lowered limit %d (pool gauges %+v)", got, limit, p.Stats().Gauges)
				}
				if tc.name == "MaxTotalPerKey" {
					// What it leads to: two objects of the key lent at
					// once under MaxTotalPerKey 1.
					h1 := mustBorrow(t, p, "k")
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					defer cancel()
					if h2, err := p.Borrow(ctx, "k"); err == nil {
						t.Errorf("a second object of the key lent under MaxTotalPerKey 1 (%d lent)", p.KeyStats("k").SharesInUse)
						mustReturn(t, p, h2)
					}
					mustReturn(t, p, h1)
				}
			})
		})
	}
}

// ---------------------------------------------------------------------------
// 1. Abandoned-object tracking.

// README: "a lease not used for Abandoned.Timeout ... is taken back ...: the
// handle stops being valid and the object is invalidated". AbandonedConfig:
// "A leaked object is taken back: its handle stops being valid (Return
// gives ErrNotBorrowed) ... It is counted in Counters.DestroyedByAbandoned".
//
// Every lease is past the timeout; each is returned while eviction runs
// sweep: each lease ends exactly once, either returned (nil, object not
// destroyed) or taken back (ErrNotBorrowed, counted once), in exclusive and
// shared mode, and the counts add up.
func TestReview4AbandonedSweepRacesReturnExactlyOnce(t *testing.T) {
	for _, shares := range []int{1, 3} {
		t.Run(fmt.Sprintf("Shares=%d", shares), func(t *testing.T) {
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, keyedpool.Config{
				MaxSharesPerObject: shares,
				MaxTotalPerKey:     -1,
				MaxIdlePerKey:      -1,
				Abandoned:          &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: time.Nanosecond},
			})
			bg := context.Background()
			var returned, takenBack int64
			for round := range 40 {
				hs := make([]*handle, 12)
				for i := range hs {
					hs[i] = mustBorrow(t, p, fmt.Sprint("k", i%3))
				}
				time.Sleep(time.Microsecond)
				before := p.Stats().DestroyedByAbandoned
				var ok, gone atomic.Int64
				var wg sync.WaitGroup
				for _, h := range hs {
					wg.Go(func() {
						switch err := p.Return(h); {
						case err == nil:
							ok.Add(1)
						case errors.Is(err, keyedpool.ErrNotBorrowed):
							gone.Add(1)
						default:
							t.Errorf("Return() = %v", err)
						}
					})
				}
				wg.Go(func() { _ = p.RunEviction(bg) })
				wg.Go(func() { _ = p.RunEviction(bg) })
				wg.Wait()
				if ok.Load()+gone.Load() != int64(len(hs)) {
					t.Fatalf("round %d: %d returned + %d taken back != %d leases", round, ok.Load(), gone.Load(), len(hs))
				}
				s := p.Stats()
				if shares == 1 && s.DestroyedByAbandoned-before != gone.Load() {
					t.Fatalf("round %d: DestroyedByAbandoned grew by %d, %d leases were taken back", round, s.DestroyedByAbandoned-before, gone.Load())
				}
				if s.SharesInUse != 0 || s.Active != 0 {
					t.Fatalf("round %d: everything given back, but SharesInUse %d, Active %d", round, s.SharesInUse, s.Active)
				}
				returned += ok.Load()
				takenBack += gone.Load()
			}
			s := p.Stats()
			if s.Borrowed != s.Returned {
				t.Errorf("Borrowed %d != Returned %d (taken back counted as returned) with nothing out", s.Borrowed, s.Returned)
			}
			if s.Created != s.Destroyed+int64(s.Idle) {
				t.Errorf("Created %d != Destroyed %d + Idle %d", s.Created, s.Destroyed, s.Idle)
			}
			t.Logf("returned %d, taken back %d", returned, takenBack)
		})
	}
}

// SetConfig: "Abandoned: switched on, covers leases taken from then on".
// Lanes doc: abandoned-object tracking goes "the pool-wide way". With
// objects on the key's lane when tracking is switched on, a Borrow after
// that must be tracked (and taken back once leaked); switched off again,
// a lease taken then is never taken back, even if switched on later.
func TestReview4AbandonedToggleWithObjectsOnLanes(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{})
	idleObjects(t, p, "a", 2) // on the lane
	on := keyedpool.Config{Abandoned: &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: time.Nanosecond}}
	if err := p.SetConfig(on); err != nil {
		t.Fatal(err)
	}
	h := mustBorrow(t, p, "a")
	time.Sleep(time.Millisecond)
	mustRunEviction(t, p)
	if err := p.Return(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
		t.Errorf("Return of a lease leaked after tracking was switched on = %v, want ErrNotBorrowed", err)
	}
	if s := p.Stats(); s.DestroyedByAbandoned != 1 || s.Idle != 1 || f.LiveAll() != 1 {
		t.Errorf("DestroyedByAbandoned %d, Idle %d, live %d; want 1, 1, 1", s.DestroyedByAbandoned, s.Idle, f.LiveAll())
	}
	// Off: a lease taken now, returned on the lane path later.
	if err := p.SetConfig(keyedpool.Config{}); err != nil {
		t.Fatal(err)
	}
	h2 := mustBorrow(t, p, "a")
	if err := p.SetConfig(on); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	mustRunEviction(t, p)
	if err := p.Return(h2); err != nil {
		t.Errorf("Return of a lease taken while tracking was off = %v, want nil", err)
	}
	if s := p.Stats(); s.DestroyedByAbandoned != 1 {
		t.Errorf("DestroyedByAbandoned = %d, want 1", s.DestroyedByAbandoned)
	}
}

// README, "Waiting and fairness": "When room frees (a destroy, an
// invalidate, a clear), the longest-waiting borrower of any key whose key
// can take it gets it". A Borrow's RemoveOnBorrow sweep frees the room of
// a leaked lease: it goes to W, who waited first (another key), not to the
// sweeping borrower Y; Y gets the next room.
func TestReview4AbandonedRoomGoesToFirstWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{
			MaxTotal:  1,
			Abandoned: &keyedpool.AbandonedConfig{RemoveOnBorrow: true, Timeout: time.Minute},
		})
		leaked := mustBorrow(t, p, "a")
		w := borrowAsync(context.Background(), p, "b") // sweeps at 0s: nothing leaked yet
		synctest.Wait()
		sleepPast(2 * time.Minute)
		y := borrowAsync(context.Background(), p, "c") // sweeps: leaked is taken back
		synctest.Wait()
		var hw *handle
		select {
		case r := <-w:
			if r.err != nil {
				t.Fatalf("W = %v", r.err)
			}
			hw = r.h
		default:
			t.Fatal("the leaked room did not go to W, the first waiter")
		}
		select {
		case r := <-y:
			t.Fatalf("Y got %v, %v ahead of W", r.h, r.err)
		default:
		}
		if err := p.Return(leaked); !errors.Is(err, keyedpool.ErrNotBorrowed) {
			t.Errorf("Return(leaked) = %v, want ErrNotBorrowed", err)
		}
		mustReturn(t, p, hw)
		synctest.Wait()
		r := <-y
		if r.err != nil {
			t.Fatalf("Y = %v", r.err)
		}
		mustReturn(t, p, r.h)
		if s := p.Stats(); s.DestroyedByAbandoned != 1 || s.Waiters != 0 {
			t.Errorf("DestroyedByAbandoned %d, Waiters %d; want 1, 0", s.DestroyedByAbandoned, s.Waiters)
		}
	})
}

// ---------------------------------------------------------------------------
// 4. Waiters giving up.

// Borrow: a borrower that gives up returns ctx.Err(); README: "nothing
// lost". W1 gives up at the moment it is granted something (an object, a
// room, a share); W2, next in line, must get it, and once everything is
// back the counts are exact.
func TestReview4GiveUpAtGrantPassesItOn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shares int
		free   func(p *pool, h *handle) error
	}{
		{"Object", 1, (*pool).Return},
		{"Room", 1, (*pool).Invalidate},
		{"Share", 2, (*pool).Return},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: 1, MaxSharesPerObject: tc.shares})
			bg := context.Background()
			gaveUp := 0
			for i := range 150 {
				var hold []*handle
				for range tc.shares {
					hold = append(hold, mustBorrow(t, p, "k"))
				}
				ctx1, cancel1 := context.WithCancel(bg)
				w1 := borrowAsync(ctx1, p, "k")
				r4WaitFor(t, "W1 to wait", func() bool { return p.Stats().Waiters == 1 })
				ctx2, cancel2 := context.WithTimeout(bg, 5*time.Second)
				w2 := borrowAsync(ctx2, p, "k")
				r4WaitFor(t, "W2 to wait", func() bool { return p.Stats().Waiters == 2 })
				var wg sync.WaitGroup
				wg.Go(func() {
					if err := tc.free(p, hold[0]); err != nil {
						t.Errorf("free = %v", err)
					}
				})
				wg.Go(cancel1)
				wg.Wait()
				r1 := <-w1
				if r1.err == nil {
					// W1 got it first: W2 gets it when W1 is done.
					mustReturn(t, p, r1.h)
				} else if !errors.Is(r1.err, context.Canceled) {
					t.Fatalf("try %d: W1 = %v", i, r1.err)
				} else {
					gaveUp++
				}
				r2 := <-w2
				cancel2()
				if r2.err != nil {
					t.Fatalf("try %d: W2, next in line, = %v (W1 = %v)", i, r2.err, r1.err)
				}
				mustReturn(t, p, r2.h)
				for _, h := range hold[1:] {
					mustReturn(t, p, h)
				}
				s := p.Stats()
				if s.Waiters != 0 || s.Active != 0 || s.SharesInUse != 0 || s.Borrowed != s.Returned || s.Idle > 1 ||
					s.Created != s.Destroyed+int64(s.Idle) || f.LiveAll() != s.Idle {
					t.Fatalf("try %d: counts after all came back: %+v, live %d", i, s, f.LiveAll())
				}
			}
			t.Logf("W1 gave up in %d of 150 tries", gaveUp)
		})
	}
}

// MaxWait passing at the moment of a grant, with lanes switching on and
// off around it (exclusive mode, waiters come and go): the given-up grant
// goes to the next borrower, and counts are exact.
func TestReview4MaxWaitAtGrantWithLanes(t *testing.T) {
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotalPerKey: 1, MaxWait: 5 * time.Millisecond})
	bg := context.Background()
	var timedOut, got int
	for i := range 150 {
		h := mustBorrow(t, p, "k")
		w1 := borrowAsync(bg, p, "k")
		time.Sleep(time.Duration(i%10) * time.Millisecond) // around W1's MaxWait
		mustReturn(t, p, h)
		r1 := <-w1
		switch {
		case r1.err == nil:
			got++
			mustReturn(t, p, r1.h)
		case errors.Is(r1.err, keyedpool.ErrExhausted):
			timedOut++
		default:
			t.Fatalf("try %d: W1 = %v", i, r1.err)
		}
		// The object is lendable at once, from the lane or the idle set.
		ctx, cancel := context.WithTimeout(bg, time.Second)
		h2, err := p.Borrow(ctx, "k")
		cancel()
		if err != nil {
			t.Fatalf("try %d: Borrow after W1 (%v) = %v", i, r1.err, err)
		}
		mustReturn(t, p, h2)
		s := p.Stats()
		if s.Waiters != 0 || s.Active != 0 || s.Borrowed != s.Returned || s.Idle != 1 || s.Created != 1 {
			t.Fatalf("try %d: %+v", i, s)
		}
	}
	t.Logf("W1 timed out %d times, got the object %d times", timedOut, got)
}

// ---------------------------------------------------------------------------
// 3 (cont.). Invalid keys are refused everywhere.

// README: "Keys a map cannot hold (an unhashable value in an interface key,
// a NaN) are refused with ErrInvalidKey before any lock is taken."
// KeyStats: "all zero for a key ... one the pool cannot hold"; ListObjects:
// "nil for a key the pool does not hold (or cannot)".
func TestReview4InvalidKeysEverywhere(t *testing.T) {
	pa, err := keyedpool.New[any, int](factory.Funcs[any, int]{MakeFunc: func(context.Context, any) (int, error) { return 1, nil }},
		keyedpool.Config{MinIdlePerKey: 1, MakeFailureThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close(context.Background())
	bg := context.Background()
	nan := 0.0
	nan /= nan
	h, err := pa.Borrow(bg, "ok") // lanes on, the index made
	if err != nil {
		t.Fatal(err)
	}
	if err := pa.Return(h); err != nil {
		t.Fatal(err)
	}
	for _, k := range []any{[]int{1}, map[string]int{}, func() {}, nan, struct{ F any }{[]byte{}}, [2]any{1, nan}} {
		if _, err := pa.Borrow(bg, k); !errors.Is(err, keyedpool.ErrInvalidKey) {
			t.Errorf("Borrow(%T) = %v", k, err)
		}
		if err := pa.AddObject(bg, k); !errors.Is(err, keyedpool.ErrInvalidKey) {
			t.Errorf("AddObject(%T) = %v", k, err)
		}
		if err := pa.Prepare(bg, k); !errors.Is(err, keyedpool.ErrInvalidKey) {
			t.Errorf("Prepare(%T) = %v", k, err)
		}
		if err := pa.Clear(bg, k); !errors.Is(err, keyedpool.ErrInvalidKey) {
			t.Errorf("Clear(%T) = %v", k, err)
		}
		if ks := pa.KeyStats(k); ks != (keyedpool.KeyStats{}) {
			t.Errorf("KeyStats(%T) = %+v", k, ks)
		}
		if l := pa.ListObjects(k); l != nil {
			t.Errorf("ListObjects(%T) = %v", k, l)
		}
		pa.ForgetFailures(k) // must not panic
	}
	if s := pa.Stats(); s.Keys != 1 || s.Idle != 1 {
		t.Errorf("after invalid keys: Keys %d, Idle %d; want 1, 1", s.Keys, s.Idle)
	}
	if err := pa.RunEviction(bg); err != nil {
		t.Errorf("RunEviction() = %v", err)
	}
}

// README, "Nothing swallowed": "Errors of work no caller waits for
// (destroys in eviction runs and clean-up, upkeep makes, failed idle tests,
// ...) are counted in Stats().BackgroundErrors by operation ... and handed
// to Config.SwallowedErrorListener". "Bounded factory calls": "every call
// of an eviction run" gets "a context that ends after FactoryTimeout".
//
// An idle test (TestWhileIdle) whose Activate or Validate blocks until
// FactoryTimeout ends its context fails with that error, and the object is
// destroyed for it (DestroyedByEvictor): the failed test must be counted
// and reported, as a failing test that returns at once is.
func TestReview4TimedOutIdleTestIsReported(t *testing.T) {
	for _, op := range []keyedpool.Op{keyedpool.OpActivate, keyedpool.OpValidate} {
		for _, block := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/block=%v", op, block), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					f := &testfactory.Factory{}
					var inRun atomic.Bool
					hook := func(ctx context.Context, _ *testfactory.Obj) error {
						if !inRun.Load() {
							return nil
						}
						if block {
							<-ctx.Done() // hangs until FactoryTimeout
							return ctx.Err()
						}
						return errors.New("broken")
					}
					if op == keyedpool.OpActivate {
						f.ActivateHook = hook
					} else {
						f.ValidateHook = hook
					}
					l, got := listen()
					p := testfactory.NewPool(t, f, keyedpool.Config{
						TestWhileIdle: true, FactoryTimeout: time.Second, SwallowedErrorListener: l,
					})
					idleObjects(t, p, "k", 1)
					inRun.Store(true)
					start := time.Now()
					mustRunEviction(t, p)
					if block && time.Since(start) != time.Second {
						t.Errorf("the run took %v, want FactoryTimeout (1s)", time.Since(start))
					}
					s := p.Stats()
					if s.DestroyedByEvictor != 1 {
						t.Fatalf("DestroyedByEvictor = %d, want 1 (the test failed)", s.DestroyedByEvictor)
					}
					if n := s.BackgroundErrors.Of(op); n != 1 || len(got()) != 1 {
						t.Errorf("the failed idle test destroyed its object but BackgroundErrors.%v = %d, listener calls = %d; want 1, 1",
							op, n, len(got()))
					}
				})
			})
		}
	}
}

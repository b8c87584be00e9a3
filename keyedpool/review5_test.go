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

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// r5Recorder is an eviction policy that records the keys it is asked about
// and keeps every object.
type r5Recorder struct {
	mu     sync.Mutex
	looked []string
}

func (r *r5Recorder) policy() evictor.Policy {
	return evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool {
		r.mu.Lock()
		r.looked = append(r.looked, fmt.Sprint(c.Key))
		r.mu.Unlock()
		return false
	})
}

func (r *r5Recorder) take() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := fmt.Sprint(r.looked)
	r.looked = nil
	return s
}

// r5Modes are the ways the pool's paths differ: lanes on or off (abandoned
// tracking turns them off), LIFO or FIFO.
var r5Modes = []struct {
	name string
	cfg  func(keyedpool.Config) keyedpool.Config
}{
	{"lanes/LIFO", func(c keyedpool.Config) keyedpool.Config { return c }},
	{"lanes/FIFO", func(c keyedpool.Config) keyedpool.Config { c.FIFO = true; return c }},
	{"nolanes/LIFO", func(c keyedpool.Config) keyedpool.Config {
		c.Abandoned = &keyedpool.AbandonedConfig{Timeout: time.Hour}
		return c
	}},
	{"nolanes/FIFO", func(c keyedpool.Config) keyedpool.Config {
		c.FIFO = true
		c.Abandoned = &keyedpool.AbandonedConfig{Timeout: time.Hour}
		return c
	}},
}

// 1. Eviction: the cursor. The eviction run stopped before b, the newest
// idle object; b's borrower gives up during activation, so b goes back to
// its place unused. The next run must go on where the last stopped: at b.
// (The case where b is in the middle is TestDiscardReviewGaveUpObjectKeepsEvictionTurn;
// here b is the last of the idle list, so the cursor became nil.)
func TestReview5GaveUpLastObjectKeepsEvictionTurn(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			rec := &r5Recorder{}
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, m.cfg(keyedpool.Config{NumTestsPerEvictionRun: 1, EvictionPolicy: rec.policy()}))
			ctx := context.Background()
			ha, hb := mustBorrow(t, p, "a"), mustBorrow(t, p, "b")
			mustReturn(t, p, ha)
			mustReturn(t, p, hb)
			mustRunEviction(t, p)
			if got := rec.take(); got != "[a]" {
				t.Fatalf("run 1 looked at %v, want [a]", got)
			}
			bctx, cancel := context.WithCancel(ctx)
			defer cancel()
			f.ActivateHook = func(ctx context.Context, o *testfactory.Obj) error {
				if o.Key != "b" {
					return nil
				}
				cancel()
				return ctx.Err()
			}
			if _, err := p.Borrow(bctx, "b"); !errors.Is(err, context.Canceled) {
				t.Fatalf("Borrow(b) = %v, want context.Canceled", err)
			}
			f.ActivateHook = nil
			mustRunEviction(t, p)
			if got := rec.take(); got != "[b]" {
				t.Errorf("run 2 looked at %v, want [b]: run 1 stopped before b, which went back unused to its place", got)
			}
		})
	}
}

// NumTestsPerEvictionRun: zero means 3, positive n looks at min(n, idle),
// negative n at ceil(idle/|n|).
func TestReview5NumTestsPerEvictionRun(t *testing.T) {
	for _, tc := range []struct {
		n, idle int
		want    int64
	}{
		{0, 5, 3}, {0, 2, 2}, {2, 5, 2}, {7, 5, 5}, {-1, 5, 5}, {-2, 5, 3}, {-3, 7, 3}, {-10, 5, 1}, {-5, 5, 1},
	} {
		for _, m := range r5Modes {
			t.Run(fmt.Sprintf("n=%d/idle=%d/%s", tc.n, tc.idle, m.name), func(t *testing.T) {
				p, _ := newPool(t, m.cfg(keyedpool.Config{NumTestsPerEvictionRun: tc.n, MaxTotalPerKey: -1, MaxIdlePerKey: -1}))
				idleObjects(t, p, "k0", tc.idle-tc.idle/2)
				idleObjects(t, p, "k1", tc.idle/2)
				before := p.Stats().EvictionTests
				mustRunEviction(t, p)
				if got := p.Stats().EvictionTests - before; got != tc.want {
					t.Errorf("one run with %d idle objects looked at %d, want %d", p.Stats().Idle, got, tc.want)
				}
			})
		}
	}
}

// SoftMinEvictableIdle evicts only while the key has more than
// MinIdlePerKey spare objects; MinEvictableIdle evicts whatever the count,
// and upkeep makes the key's MinIdlePerKey up again.
func TestReview5SoftAndHardMinEvictableIdle(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, f := newPool(t, m.cfg(keyedpool.Config{
					NumTestsPerEvictionRun: -1, MinIdlePerKey: 2,
					SoftMinEvictableIdle: time.Second, MinEvictableIdle: 10 * time.Second,
				}))
				idleObjects(t, p, "k", 5)
				mustRunEviction(t, p) // starts the clock
				sleepPast(2 * time.Second)
				mustRunEviction(t, p)
				s := p.KeyStats("k")
				if s.Idle != 2 || s.DestroyedByEvictor != 3 {
					t.Fatalf("after the soft limit: idle %d, evicted %d; want 2 and 3", s.Idle, s.DestroyedByEvictor)
				}
				made := f.Made.Load()
				sleepPast(9 * time.Second) // 11s idle: past the hard limit
				mustRunEviction(t, p)
				s = p.KeyStats("k")
				if s.DestroyedByEvictor != 5 {
					t.Errorf("after the hard limit: evicted %d, want 5 (the hard limit ignores MinIdlePerKey)", s.DestroyedByEvictor)
				}
				if s.Idle != 2 || f.Made.Load() != made+2 {
					t.Errorf("after the hard limit: idle %d, made %d more; want 2 and 2 (upkeep)", s.Idle, f.Made.Load()-made)
				}
			})
		})
	}
}

// Idle and active time counters are exact with the hand clock (RunEviction
// by hand, no evictor): they are stamped from the real clock after the
// first call.
func TestReview5MeanTimesExactWithHandClock(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, _ := newPool(t, m.cfg(keyedpool.Config{}))
				ctx := context.Background()
				// Before the clock runs: nothing measured.
				mustReturn(t, p, mustBorrow(t, p, "pre"))
				time.Sleep(time.Second)
				mustReturn(t, p, mustBorrow(t, p, "pre"))
				if s := p.Stats(); s.ActiveCount != 0 || s.IdleCount != 0 || s.ActiveTime != 0 || s.IdleTime != 0 {
					t.Fatalf("before the clock runs: %+v, want no times measured", s.Counters)
				}
				mustRunEviction(t, p)      // the clock runs from now
				time.Sleep(time.Second)    // pre's object idle 1s
				h := mustBorrow(t, p, "k") // made
				time.Sleep(10 * time.Second)
				mustReturn(t, p, h) // active 10s
				time.Sleep(5 * time.Second)
				h = mustBorrow(t, p, "k") // idle 5s
				time.Sleep(3 * time.Second)
				mustReturn(t, p, h) // active 3s
				if err := p.AddObject(ctx, "k"); err != nil {
					t.Fatal(err)
				}
				hp := mustBorrow(t, p, "pre") // idle 19s: since the first run (t=1s) to t=20s
				time.Sleep(2 * time.Second)
				mustReturn(t, p, hp) // active 2s
				time.Sleep(7 * time.Second)
				h1, h2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k") // idle 9s each: returned and added at t=20s, lent at t=29s
				time.Sleep(time.Second)
				mustReturn(t, p, h1)
				mustReturn(t, p, h2) // active 1s each
				s := p.Stats()
				want := keyedpool.Counters{ActiveTime: 17 * time.Second, ActiveCount: 5, IdleTime: 42 * time.Second, IdleCount: 4}
				if s.ActiveTime != want.ActiveTime || s.ActiveCount != want.ActiveCount || s.IdleTime != want.IdleTime || s.IdleCount != want.IdleCount {
					t.Errorf("Stats() active %v/%d idle %v/%d, want active %v/%d idle %v/%d",
						s.ActiveTime, s.ActiveCount, s.IdleTime, s.IdleCount,
						want.ActiveTime, want.ActiveCount, want.IdleTime, want.IdleCount)
				}
				ks := p.KeyStats("k")
				if ks.ActiveTime != 15*time.Second || ks.ActiveCount != 4 || ks.IdleTime != 23*time.Second || ks.IdleCount != 3 {
					t.Errorf("KeyStats(k) active %v/%d idle %v/%d, want active 15s/4 idle 23s/3",
						ks.ActiveTime, ks.ActiveCount, ks.IdleTime, ks.IdleCount)
				}
				if got := s.MeanIdleTime(); got != 10500*time.Millisecond {
					t.Errorf("MeanIdleTime = %v, want 10.5s", got)
				}
			})
		})
	}
}

// With an evictor, times are measured to within one interval, never less
// than the real span.
func TestReview5MeanTimesWithEvictor(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const every = time.Second
				p, _ := newPool(t, m.cfg(keyedpool.Config{TimeBetweenEvictionRuns: every}))
				time.Sleep(500 * time.Millisecond)
				h := mustBorrow(t, p, "k")
				time.Sleep(3 * time.Second)
				mustReturn(t, p, h)
				time.Sleep(4 * time.Second)
				h = mustBorrow(t, p, "k")
				time.Sleep(2 * time.Second)
				mustReturn(t, p, h)
				s := p.Stats()
				if s.ActiveCount != 2 || s.IdleCount != 1 {
					t.Fatalf("counts active %d idle %d, want 2 and 1", s.ActiveCount, s.IdleCount)
				}
				if s.ActiveTime < 5*time.Second || s.ActiveTime > 5*time.Second+2*every {
					t.Errorf("ActiveTime %v, want 5s to 7s", s.ActiveTime)
				}
				if s.IdleTime < 4*time.Second-every || s.IdleTime > 4*time.Second+every {
					t.Errorf("IdleTime %v, want 4s within one interval", s.IdleTime)
				}
			})
		})
	}
}

// MaxLifetime plus jitter: no object destroyed before MaxLifetime, every
// one by MaxLifetime+MaxLifetimeJitter; on Return as well as idle.
func TestReview5MaxLifetimeJitterBounds(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, _ := newPool(t, m.cfg(keyedpool.Config{
					MaxLifetime: 10 * time.Second, MaxLifetimeJitter: 10 * time.Second,
					NumTestsPerEvictionRun: -1, MaxTotalPerKey: -1, MaxIdlePerKey: -1,
				}))
				idleObjects(t, p, "k", 40)
				held := mustBorrow(t, p, "k")
				mustRunEviction(t, p)
				for i := 1; i <= 21; i++ {
					time.Sleep(time.Second)
					mustRunEviction(t, p)
					s := p.Stats()
					gone := s.DestroyedByLifetime
					if i < 10 && gone != 0 {
						t.Fatalf("at %ds %d objects destroyed by lifetime, want 0 before MaxLifetime", i, gone)
					}
					if i >= 20 && s.Idle != 0 {
						t.Fatalf("at %ds %d objects idle, want 0 past MaxLifetime+jitter", i, s.Idle)
					}
					if i == 15 && (gone == 0 || gone == 39) {
						t.Logf("at 15s %d of 39 destroyed: jitter spread is poor", gone)
					}
				}
				mustReturn(t, p, held)
				if s := p.Stats(); s.DestroyedByLifetime != 40 || s.Idle != 0 {
					t.Errorf("after returning the last one past its lifetime: %d destroyed, %d idle; want 40, 0", s.DestroyedByLifetime, s.Idle)
				}
			})
		})
	}
}

// A panicking EvictionPolicy keeps the object, is reported as swallowed
// (OpEvictionPolicy) and counted, and the run goes on with the next.
func TestReview5PanickingPolicy(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			var mu sync.Mutex
			var ops []keyedpool.Op
			var calls atomic.Int64
			p, _ := newPool(t, m.cfg(keyedpool.Config{
				NumTestsPerEvictionRun: -1,
				EvictionPolicy: evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool {
					if calls.Add(1)%2 == 1 {
						panic("boom")
					}
					return true
				}),
				SwallowedErrorListener: keyedpool.SwallowedErrorFunc(func(_ any, op keyedpool.Op, err error) {
					mu.Lock()
					ops = append(ops, op)
					mu.Unlock()
					if !errors.Is(err, keyedpool.ErrFactoryPanic) {
						var pe *keyedpool.PanicError
						if !errors.As(err, &pe) {
							t.Errorf("swallowed %v: not a PanicError", err)
						}
					}
				}),
			}))
			idleObjects(t, p, "k", 4)
			_ = p.RunEviction(context.Background())
			s := p.Stats()
			if s.Idle != 2 || s.DestroyedByEvictor != 2 || s.BackgroundErrors.EvictionPolicy != 2 || s.EvictionTests != 4 {
				t.Errorf("after a run with a policy panicking every other call: idle %d, evicted %d, policy errors %d, tests %d; want 2, 2, 2, 4",
					s.Idle, s.DestroyedByEvictor, s.BackgroundErrors.EvictionPolicy, s.EvictionTests)
			}
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(ops) != fmt.Sprint([]keyedpool.Op{keyedpool.OpEvictionPolicy, keyedpool.OpEvictionPolicy}) {
				t.Errorf("listener got %v, want two OpEvictionPolicy", ops)
			}
		})
	}
}

// 2. Lending order across paths: returns (lane and pool-wide), AddObject,
// Prepare, and SetConfig flipping FIFO while objects sit on lanes.
func TestReview5LendingOrderAcrossPaths(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := m.cfg(keyedpool.Config{MaxTotalPerKey: -1, MaxIdlePerKey: -1})
			p, _ := newPool(t, cfg)
			ctx := context.Background()
			hs := []*handle{mustBorrow(t, p, "k"), mustBorrow(t, p, "k")} // 1, 2
			mustReturn(t, p, hs[0])                                       // 1
			if err := p.AddObject(ctx, "k"); err != nil {                 // 3
				t.Fatal(err)
			}
			mustReturn(t, p, hs[1])                       // 2
			_ = p.Stats()                                 // flushes the lanes
			if err := p.AddObject(ctx, "k"); err != nil { // 4
				t.Fatal(err)
			}
			// Return order: 1, 3, 2, 4.
			want := "[4 2 3 1]"
			if cfg.FIFO {
				want = "[1 3 2 4]"
			}
			got := fmt.Sprint(lendOrder(t, p, "k", 4))
			if got != want {
				t.Errorf("lend order %v, want %v", got, want)
			}
			// lendOrder returned them in lend order: now flip FIFO while
			// they may sit on the lane.
			cfg.FIFO = !cfg.FIFO
			if err := p.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
			var back []int64
			ids := lendOrderIDs(got)
			if cfg.FIFO {
				back = ids // returned in this order: oldest first
			} else {
				for i := len(ids) - 1; i >= 0; i-- {
					back = append(back, ids[i])
				}
			}
			if got2 := fmt.Sprint(lendOrder(t, p, "k", 4)); got2 != fmt.Sprint(back) {
				t.Errorf("after flipping FIFO to %v: lend order %v, want %v", cfg.FIFO, got2, back)
			}
		})
	}
}

func lendOrderIDs(s string) []int64 {
	var ids []int64
	var id int64
	for _, f := range splitFields(s[1 : len(s)-1]) {
		fmt.Sscan(f, &id)
		ids = append(ids, id)
	}
	return ids
}

func splitFields(s string) []string {
	var out []string
	cur := ""
	for _, r := range s {
		if r == ' ' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		cur += string(r)
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

// A borrower that gives up during activation puts the object back where it
// was, in both orders, whether it came from the lane or the idle list.
func TestReview5GaveUpKeepsLendingOrder(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := m.cfg(keyedpool.Config{})
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, cfg)
			returnInOrder(t, p, "k") // 1, 2, 3, maybe on the lane
			bctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f.ActivateHook = func(ctx context.Context, o *testfactory.Obj) error {
				cancel()
				return ctx.Err()
			}
			if _, err := p.Borrow(bctx, "k"); !errors.Is(err, context.Canceled) {
				t.Fatalf("Borrow = %v, want Canceled", err)
			}
			f.ActivateHook = nil
			if got := fmt.Sprint(lendOrder(t, p, "k", 3)); got != wantOrder(cfg.FIFO) {
				t.Errorf("after a give-up: lend order %v, want %v", got, wantOrder(cfg.FIFO))
			}
		})
	}
}

// A failed validation at Borrow destroys the object and lends the next in
// order.
func TestReview5FailedValidationLendsNextInOrder(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := m.cfg(keyedpool.Config{TestOnBorrow: true})
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, cfg)
			returnInOrder(t, p, "k")
			f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
				if o.ID == 1 || o.ID == 3 {
					return errors.New("dead")
				}
				return nil
			}
			h := mustBorrow(t, p, "k")
			if h.Value().ID != 2 {
				t.Errorf("lent %d, want 2: the first in order failed validation", h.Value().ID)
			}
			f.ValidateHook = nil
			mustReturn(t, p, h)
			if s := p.Stats(); s.Idle != 2 || s.DestroyedByBorrowValidation != 1 {
				t.Errorf("idle %d, destroyed by validation %d; want 2, 1", s.Idle, s.DestroyedByBorrowValidation)
			}
		})
	}
}

// ClearOldest destroys the oldest 15% (at least one) idle objects of all
// keys together, by when they went idle, whatever the lending order.
func TestReview5ClearOldestAcrossKeys(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			p, _ := newPool(t, m.cfg(keyedpool.Config{}))
			var hs []*handle
			for i := range 14 {
				hs = append(hs, mustBorrow(t, p, fmt.Sprint("k", i%3)))
			}
			for _, h := range hs {
				mustReturn(t, p, h)
			}
			// 14 idle: 14*15/100+1 = 3 oldest: those returned first.
			if err := p.ClearOldest(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i, h := range hs {
				if d := h.Value().Destroyed(); d != (i < 3) {
					t.Errorf("object %d (returned %d-th) destroyed = %v, want %v", h.Value().ID, i+1, d, i < 3)
				}
			}
			if s := p.Stats(); s.Idle != 11 || s.DestroyedByClear != 3 {
				t.Errorf("idle %d, cleared %d; want 11, 3", s.Idle, s.DestroyedByClear)
			}
		})
	}
}

// 3. Limits and gauges under concurrency with lanes on.
func TestReview5LimitsAndGaugesUnderLoad(t *testing.T) {
	const maxTotal, perKey, maxIdle, keys = 6, 3, 2, 4
	f := &testfactory.Factory{}
	p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotal: maxTotal, MaxTotalPerKey: perKey, MaxIdlePerKey: maxIdle})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprint("k", (g+i)%keys)
				bctx, bcancel := context.WithTimeout(ctx, 5*time.Millisecond)
				h, err := p.Borrow(bctx, key)
				bcancel()
				if err != nil {
					continue
				}
				if i%3 == 0 {
					runtime.Gosched()
				}
				if err := p.Return(h); err != nil {
					t.Errorf("Return = %v", err)
					return
				}
			}
		})
	}
	bad := 0
	for ctx.Err() == nil && bad < 5 {
		s := p.Stats()
		if s.Active < 0 || s.Idle < 0 || s.Making < 0 || s.Waiters < 0 || s.SharesInUse < 0 ||
			s.Active+s.Idle+s.Making > maxTotal || s.Idle > keys*maxIdle || s.SharesInUse > s.Active {
			t.Errorf("Stats gauges %+v break the limits", s.Gauges)
			bad++
		}
		for k := range keys {
			ks := p.KeyStats(fmt.Sprint("k", k))
			if ks.Active < 0 || ks.Idle < 0 || ks.Making < 0 || ks.Waiters < 0 ||
				ks.Active+ks.Idle+ks.Making > perKey || ks.Idle > maxIdle {
				t.Errorf("KeyStats(k%d) gauges %+v break the limits", k, ks.Gauges)
				bad++
			}
		}
		runtime.Gosched()
	}
	wg.Wait()
	if got := f.MaxLiveAll(); got > maxTotal {
		t.Errorf("at most %d objects alive at once, want at most MaxTotal %d", got, maxTotal)
	}
	if got := f.MaxLivePerKey(); got > perKey {
		t.Errorf("at most %d objects of a key alive at once, want at most %d", got, perKey)
	}
	// A make whose borrower gave up may still be joining the pool.
	s := p.Stats()
	for end := time.Now().Add(2 * time.Second); (s.Active != 0 || s.Making != 0) && time.Now().Before(end); s = p.Stats() {
		time.Sleep(time.Millisecond)
	}
	if s.Active != 0 || s.Waiters != 0 || s.Making != 0 || s.Idle > keys*maxIdle {
		t.Errorf("at rest: %+v", s.Gauges)
	}
	if s.Borrowed != s.Returned {
		t.Errorf("Borrowed %d != Returned %d at rest", s.Borrowed, s.Returned)
	}
	if s.Created-s.Destroyed != int64(s.Idle) || int64(f.LiveAll()) != int64(s.Idle) {
		t.Errorf("created %d - destroyed %d != idle %d (factory live %d)", s.Created, s.Destroyed, s.Idle, f.LiveAll())
	}
}

// A Return over MaxIdlePerKey destroys, on the lane path too.
func TestReview5ReturnOverMaxIdleDestroys(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			p, f := newPool(t, m.cfg(keyedpool.Config{MaxIdlePerKey: 2}))
			hs := []*handle{mustBorrow(t, p, "k"), mustBorrow(t, p, "k"), mustBorrow(t, p, "k"), mustBorrow(t, p, "k")}
			for i, h := range hs {
				mustReturn(t, p, h)
				if want := i >= 2; h.Value().Destroyed() != want {
					t.Errorf("return %d: destroyed = %v, want %v", i+1, h.Value().Destroyed(), want)
				}
			}
			if ks := p.KeyStats("k"); ks.Idle != 2 || ks.DestroyedSurplus != 2 || f.Live("k") != 2 {
				t.Errorf("KeyStats %+v, live %d; want 2 idle, 2 surplus", ks, f.Live("k"))
			}
		})
	}
}

// KeyStats of a key dropped when it emptied is all zero.
func TestReview5KeyStatsOfDroppedKey(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			p, _ := newPool(t, m.cfg(keyedpool.Config{}))
			h := mustBorrow(t, p, "k")
			if err := p.Invalidate(h); err != nil {
				t.Fatal(err)
			}
			if ks := p.KeyStats("k"); fmt.Sprint(ks) != fmt.Sprint(keyedpool.KeyStats{}) {
				t.Errorf("KeyStats of a dropped key = %+v, want zero", ks)
			}
			mustReturn(t, p, mustBorrow(t, p, "j"))
			if err := p.Clear(context.Background(), "j"); err != nil {
				t.Fatal(err)
			}
			if ks := p.KeyStats("j"); fmt.Sprint(ks) != fmt.Sprint(keyedpool.KeyStats{}) {
				t.Errorf("KeyStats of a cleared key = %+v, want zero", ks)
			}
			if s := p.Stats(); s.Keys != 0 {
				t.Errorf("Keys = %d, want 0", s.Keys)
			}
		})
	}
}

// 4. Close.
func TestReview5CloseCtxEndsBeforeDrain(t *testing.T) {
	for _, m := range r5Modes {
		t.Run(m.name, func(t *testing.T) {
			f := &testfactory.Factory{}
			p, err := keyedpool.New(f, m.cfg(keyedpool.Config{TimeBetweenEvictionRuns: time.Hour}))
			if err != nil {
				t.Fatal(err)
			}
			h := mustBorrow(t, p, "k")
			mustReturn(t, p, mustBorrow(t, p, "j")) // idle, maybe on a lane
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			if err := p.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Close with an object lent = %v, want DeadlineExceeded", err)
			}
			if s := p.Stats(); !s.Closed || s.Idle != 0 || s.Active != 1 || s.DestroyedByClose != 1 {
				t.Errorf("after Close: %+v", s)
			}
			ctx = context.Background()
			for _, e := range []struct {
				name string
				err  error
			}{
				{"RunEviction", p.RunEviction(ctx)},
				{"Prepare", p.Prepare(ctx, "k")},
				{"AddObject", p.AddObject(ctx, "k")},
				{"SetConfig", p.SetConfig(keyedpool.Config{})},
			} {
				if !errors.Is(e.err, keyedpool.ErrClosed) {
					t.Errorf("%s after Close = %v, want ErrClosed", e.name, e.err)
				}
			}
			if _, err := p.Borrow(ctx, "k"); !errors.Is(err, keyedpool.ErrClosed) {
				t.Errorf("Borrow after Close = %v, want ErrClosed", err)
			}
			if err := p.Return(h); err != nil {
				t.Errorf("Return after Close = %v", err)
			}
			if err := p.Return(h); !errors.Is(err, keyedpool.ErrNotBorrowed) {
				t.Errorf("second Return = %v, want ErrNotBorrowed", err)
			}
			if !h.Value().Destroyed() || f.Destroyed.Load() != 2 {
				t.Errorf("destroyed %d, want 2", f.Destroyed.Load())
			}
			cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer ccancel()
			if err := p.Close(cctx); err != nil {
				t.Errorf("second Close = %v, want nil", err)
			}
			if err := p.Close(cctx); err != nil {
				t.Errorf("third Close = %v, want nil", err)
			}
			if s := p.Stats(); s.DestroyedByClose != 2 || s.Active != 0 || s.Keys != 0 {
				t.Errorf("after all: %+v", s)
			}
			if err := f.Problems(); err != nil {
				t.Error(err)
			}
		})
	}
}

// Close leaves no goroutine: the evictor's, makes in flight, waiters.
func TestReview5CloseLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	f := &testfactory.Factory{}
	p, err := keyedpool.New(f, keyedpool.Config{TimeBetweenEvictionRuns: 3*time.Millisecond + 7*time.Microsecond, MaxTotal: 2, MinIdlePerKey: 1})
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	f.MakeHook = func(ctx context.Context, key string) error {
		if key == "slow" {
			select {
			case <-block:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	h := mustBorrow(t, p, "a")
	slow := borrowAsync(context.Background(), p, "slow")
	bctx, bcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer bcancel()
	_, _ = p.Borrow(bctx, "slow") // gives up during the make (MaxTotal 2 reached?)
	waiter := borrowAsync(context.Background(), p, "c")
	time.Sleep(30 * time.Millisecond)
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go func() { time.Sleep(50 * time.Millisecond); _ = p.Return(h) }()
	if err := p.Close(cctx); err != nil {
		t.Errorf("Close = %v", err)
	}
	if r := <-slow; r.err == nil {
		_ = p.Return(r.h)
	}
	if r := <-waiter; r.err == nil {
		_ = p.Return(r.h)
	}
	close(block)
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	if err := f.Problems(); err != nil {
		t.Error(err)
	}
	if live := f.LiveAll(); live != 0 {
		t.Errorf("%d objects alive after Close", live)
	}
}

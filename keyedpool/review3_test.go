package keyedpool_test

// Third review: shared leases, run-time SetConfig, statistics and
// Clear/ClearOldest/ForgetFailures/Prepare/AddObject racing borrowers.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// r3Drain hands back whatever a pending borrower eventually gets.
func r3Drain(t *testing.T, p *pool, ch <-chan result) {
	t.Helper()
	r := <-ch
	if r.err == nil {
		mustReturn(t, p, r.h)
	}
}

// With Fail, a shared borrower that arrives while an object of its key is
// being made or activated waits for that object instead of failing ("soon").
// When the object it waited for turns out to take no share at all (it is
// past MaxLifetime when its first borrower has activated it, so it takes
// no new lease), the waiter is left with nothing on its way: with Fail it
// must fail at once, as a borrower arriving at that moment does, instead
// of blocking until some lease comes back.
//
// README, Waiting and fairness: "With shared leases, borrowers arriving
// while an object of their key is being made or activated wait for it
// (even with Fail) ... When an object comes with a lower cap than was
// known, the waiters it leaves without a share fail at once with Fail".
// Config.WhenExhausted: "fails at once with ErrExhausted (Fail) when no
// object can be lent".
func TestReview3FailSoonWaiterWhenActivatedObjectIsPastLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		gate := make(chan struct{})
		var first atomic.Bool
		f.ActivateHook = func(ctx context.Context, _ *testfactory.Obj) error {
			if first.CompareAndSwap(false, true) {
				<-gate
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{
			MaxSharesPerObject: 3, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail,
			MaxLifetime: 100 * time.Millisecond,
		})
		c1 := borrowAsync(context.Background(), p, "k")
		synctest.Wait() // made, its activation blocks
		c2 := borrowAsync(context.Background(), p, "k")
		synctest.Wait()
		if s := p.Stats(); s.Waiters != 1 {
			t.Fatalf("second borrower did not wait for the object on its way: %+v", s)
		}
		time.Sleep(200 * time.Millisecond) // the object outlives MaxLifetime while activated
		close(gate)
		synctest.Wait()
		r1 := <-c1
		if r1.err != nil {
			t.Fatalf("first Borrow = %v", r1.err)
		}
		// A borrower arriving now fails at once.
		if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
			t.Errorf("new Borrow with Fail = %v, want ErrExhausted", err)
		}
		r2, waiting := pending(c2)
		if waiting {
			t.Errorf("Fail-mode waiter still blocked after the object it waited for took no share (Stats %+v, objects %v); want ErrExhausted at once",
				p.Stats(), fmtObjs(p.ListObjects("k")))
		} else if !errors.Is(r2.err, keyedpool.ErrExhausted) {
			t.Errorf("Fail-mode waiter = %v, want ErrExhausted", r2.err)
			if r2.err == nil {
				mustReturn(t, p, r2.h)
			}
		}
		mustReturn(t, p, r1.h)
		if waiting {
			r3Drain(t, p, c2)
		}
	})
}

// The same with a limit SetConfig lowered while the objects were on their
// way: the first object activated is over the new MaxTotalPerKey and serves
// its borrower alone, the second takes one more share, and the waiter left
// over must fail with Fail rather than block.
func TestReview3FailSoonWaiterWhenLoweredLimitRetiresObject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		gate := make(chan struct{})
		f.MakeHook = func(ctx context.Context, _ string) error {
			<-gate
			return nil
		}
		cfg := keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 2, WhenExhausted: keyedpool.Fail}
		p := testfactory.NewPool(t, f, cfg)
		var chs []<-chan result
		for range 4 { // maker, soon, maker, soon
			chs = append(chs, borrowAsync(context.Background(), p, "k"))
			synctest.Wait()
		}
		if s := p.Stats(); s.Making != 2 || s.Waiters != 2 {
			t.Fatalf("setup: Stats = %+v, want 2 making, 2 waiting", s)
		}
		cfg.MaxTotalPerKey = 1
		setConfig(t, p, cfg)
		close(gate)
		synctest.Wait()
		var got []result
		var stuck []<-chan result
		for _, ch := range chs {
			if r, waiting := pending(ch); waiting {
				stuck = append(stuck, ch)
			} else {
				got = append(got, r)
			}
		}
		if len(stuck) > 0 {
			t.Errorf("%d Fail-mode borrower(s) still blocked with nothing on its way (Stats %+v, objects %v); want ErrExhausted",
				len(stuck), p.Stats(), fmtObjs(p.ListObjects("k")))
		}
		for _, r := range got {
			if r.err == nil {
				mustReturn(t, p, r.h)
			} else if !errors.Is(r.err, keyedpool.ErrExhausted) {
				t.Errorf("Borrow = %v, want an object or ErrExhausted", r.err)
			}
		}
		for _, ch := range stuck {
			r3Drain(t, p, ch)
		}
	})
}

// MakeBackoffBase is the first backoff period of a key. A key whose
// failures in a row reach a MakeFailureThreshold that SetConfig lowered
// below them backs off for the first time: for MakeBackoffBase (±20%),
// not for a period already doubled once per failure before it.
//
// Config.MakeBackoffBase: "MakeBackoffBase is the first backoff period;
// each further failed probe doubles it". SetConfig: "lowered, a key
// reaching it backs off at its next failure".
func TestReview3LoweredThresholdFirstBackoffIsBase(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDial := errors.New("dial failed")
		f := &testfactory.Factory{}
		f.MakeHook = func(context.Context, string) error { return errDial }
		cfg := keyedpool.Config{MakeFailureThreshold: 10, MakeBackoffBase: time.Second, MakeBackoffMax: time.Hour}
		p := testfactory.NewPool(t, f, cfg)
		for i := range 6 {
			if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, errDial) {
				t.Fatalf("Borrow %d = %v, want the dial error", i, err)
			}
		}
		if ks := p.KeyStats("k"); ks.MakeFailures != 6 || !ks.BackoffUntil.IsZero() {
			t.Fatalf("KeyStats = %+v, want 6 failures, no backoff", ks)
		}
		cfg.MakeFailureThreshold = 2
		setConfig(t, p, cfg)
		if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, errDial) {
			t.Fatalf("Borrow after lowering = %v, want the dial error", err)
		}
		ks := p.KeyStats("k")
		if ks.BackoffUntil.IsZero() {
			t.Fatalf("no backoff after the failure that reached the lowered threshold: %+v", ks)
		}
		if d := time.Until(ks.BackoffUntil); d > 1200*time.Millisecond {
			t.Errorf("first backoff period = %v, want MakeBackoffBase 1s ±20%%", d)
		}
	})
}

// With shared leases, an eviction run stops lending objects past
// MaxLifetime, and ListObjects calls such an object retiring.
//
// ObjectRetiring: "with shared leases, invalidated or past MaxLifetime; it
// takes no new lease and is destroyed when its last one comes back".
// README: "With shared leases a run also stops lending objects past
// MaxLifetime; they close when their last lease comes back."
func TestReview3ListObjectsShowsExpiredSharedObjectRetiring(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 4, MaxLifetime: time.Minute})
		h := mustBorrow(t, p, "k")
		sleepPast(2 * time.Minute)
		mustRunEviction(t, p)
		objs := p.ListObjects("k")
		if len(objs) != 1 || objs[0].State != keyedpool.ObjectRetiring {
			t.Errorf("after an eviction run found the lent object past MaxLifetime: ListObjects = %v, want [retiring with 1 leases]", fmtObjs(objs))
		}
		mustReturn(t, p, h)
		if s := p.Stats(); s.DestroyedByLifetime != 1 || s.Idle != 0 {
			t.Errorf("Stats = %+v, want the object destroyed by lifetime", s)
		}
	})
}

// SetConfig lowering MaxTotalPerKey destroys the idle objects over the new
// limit, counting as the pool counts everywhere else: an object that
// already retires (invalidated, with a lease still out) is gone as far as
// the limits go (it takes no lease and is destroyed when its last comes
// back). So with one retiring object, one idle and one lent, lowering the
// limit to 2 leaves the idle object alone: the pool itself, right after,
// keeps a returned object of that key idle (not surplus), and would not
// have destroyed it had the retiring object been retired by SetConfig.
//
// SetConfig: "idle objects over the new limits are destroyed at once ...
// with shared leases, lent objects over the limit stop taking new leases
// and are destroyed when their last one comes back".
func TestReview3LoweredLimitCountsRetiringObjectAsGone(t *testing.T) {
	f := &testfactory.Factory{}
	cfg := keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 3}
	p := testfactory.NewPool(t, f, cfg)
	h1, h2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k") // obj1, full
	h3, h4 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k") // obj2, full
	h5 := mustBorrow(t, p, "k")                            // obj3
	if h1.Value() != h2.Value() || h3.Value() != h4.Value() || h5.Value() == h1.Value() || h5.Value() == h3.Value() {
		t.Fatalf("setup: unexpected packing %v", fmtObjs(p.ListObjects("k")))
	}
	mustReturn(t, p, h3)
	mustReturn(t, p, h4) // obj2 idle
	if err := p.Invalidate(h1); err != nil {
		t.Fatal(err) // obj1 retires, h2 still on it
	}
	idleObj := h3.Value()
	cfg.MaxTotalPerKey = 2
	setConfig(t, p, cfg)
	if idleObj.Destroyed() {
		t.Errorf("SetConfig(MaxTotalPerKey 2) destroyed the idle object although only it and one lent object stay (the third retires): objects now %v",
			fmtObjs(p.ListObjects("k")))
	}
	lent := h5.Value()
	mustReturn(t, p, h5)
	if lent.Destroyed() {
		t.Errorf("obj3 returned after SetConfig destroyed as surplus")
	} // the pool counts the key within its limit here: kept idle
	mustReturn(t, p, h2)
	s := p.Stats()
	if s.SharesInUse != 0 || s.Borrowed != s.Returned {
		t.Errorf("Stats = %+v", s)
	}
}

// r3Conn is a shared value whose cap is fixed when it is made: nil (no
// ShareCapper cap: MaxSharesPerObject bounds it), 1, 2, or "no cap".
type r3Conn struct {
	id        int64
	key       string
	cap       keyedpool.ShareCap
	hasCap    bool
	limit     int32 // min(MaxSharesPerObject, its cap)
	holders   atomic.Int32
	destroyed atomic.Bool
	dead      atomic.Bool
}

func (c *r3Conn) ShareCap() *keyedpool.ShareCap {
	if !c.hasCap {
		return nil
	}
	return &c.cap
}

type r3Factory struct {
	maxShares int32
	failMake  atomic.Bool
	next      atomic.Int64

	mu               sync.Mutex
	live, maxLive    map[string]int
	liveAll, maxAll  int
	problems         []error
	created, deleted int64
}

func newR3Factory(maxShares int32) *r3Factory {
	return &r3Factory{maxShares: maxShares, live: map[string]int{}, maxLive: map[string]int{}}
}

func (f *r3Factory) problem(format string, args ...any) {
	f.mu.Lock()
	f.problems = append(f.problems, fmt.Errorf(format, args...))
	f.mu.Unlock()
}

func (f *r3Factory) Make(ctx context.Context, key string) (*r3Conn, error) {
	time.Sleep(time.Duration(f.next.Load()%3) * 100 * time.Microsecond)
	if f.failMake.Load() && f.next.Load()%2 == 0 {
		f.next.Add(1)
		return nil, errors.New("make failed")
	}
	c := &r3Conn{id: f.next.Add(1), key: key, limit: f.maxShares}
	switch c.id % 4 {
	case 1:
		c.hasCap, c.limit = true, 1
		c.cap.Set(1)
	case 2:
		c.hasCap, c.limit = true, min(2, f.maxShares)
		c.cap.Set(2)
	case 3:
		c.hasCap = true
		c.cap.Set(-1) // no cap of its own
	}
	f.mu.Lock()
	f.created++
	f.live[key]++
	f.maxLive[key] = max(f.maxLive[key], f.live[key])
	f.liveAll++
	f.maxAll = max(f.maxAll, f.liveAll)
	f.mu.Unlock()
	return c, nil
}

func (f *r3Factory) Destroy(_ context.Context, key string, c *r3Conn) error {
	if c.destroyed.Swap(true) {
		f.problem("conn %d destroyed twice", c.id)
		return nil
	}
	if n := c.holders.Load(); n != 0 {
		f.problem("conn %d destroyed with %d borrowers using it", c.id, n)
	}
	f.mu.Lock()
	f.deleted++
	f.live[key]--
	f.liveAll--
	f.mu.Unlock()
	return nil
}

func (f *r3Factory) Validate(_ context.Context, _ string, c *r3Conn) error {
	if c.destroyed.Load() {
		f.problem("Validate on destroyed conn %d", c.id)
	}
	if c.dead.Load() {
		return errors.New("dead")
	}
	return nil
}

func (f *r3Factory) Activate(_ context.Context, _ string, c *r3Conn) error {
	if c.destroyed.Load() {
		f.problem("Activate on destroyed conn %d", c.id)
	}
	return nil
}

func (f *r3Factory) Passivate(_ context.Context, _ string, c *r3Conn) error {
	if c.destroyed.Load() {
		f.problem("Passivate on destroyed conn %d", c.id)
	}
	return nil
}

// Shared leases under churn of every kind: caps fixed per object, limits
// fixed, everything else changed by SetConfig as borrowers run, with
// Clear, ClearOldest, AddObject, Prepare, ForgetFailures, eviction runs,
// Invalidate, dead objects and failing makes. No object ever carries more
// borrowers than its cap, no key or the pool ever holds more than its
// limits, nothing is destroyed while used or twice, and once everything
// is back every count is exact.
func TestReview3SharedChurnInvariants(t *testing.T) {
	const maxShares, perKey, total = 3, 3, 7
	f := newR3Factory(maxShares)
	base := keyedpool.Config{MaxSharesPerObject: maxShares, MaxTotalPerKey: perKey, MaxTotal: total}
	p := newPoolOf(t, f, base)
	keys := []string{"a", "b", "c"}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				key := keys[(g+i)%len(keys)]
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				h, err := p.Borrow(ctx, key)
				cancel()
				if err != nil {
					continue
				}
				c := h.Value()
				if n := c.holders.Add(1); n > c.limit {
					f.problem("conn %d (cap %d) lent to %d borrowers at once", c.id, c.limit, n)
				}
				if c.destroyed.Load() {
					f.problem("lent destroyed conn %d", c.id)
				}
				if c.key != key {
					f.problem("Borrow(%q) lent conn of key %q", key, c.key)
				}
				time.Sleep(time.Duration(i%3) * 50 * time.Microsecond)
				c.holders.Add(-1)
				if i%13 == 0 {
					c.dead.Store(true) // TestOnBorrow finds it, if on when next lent
				}
				if i%11 == 0 {
					_ = p.Invalidate(h)
				} else if err := p.Return(h); err != nil && !errors.Is(err, keyedpool.ErrFactoryPanic) {
					f.problem("Return: %v", err)
				}
			}
		})
	}
	wg.Go(func() {
		ctx := context.Background()
		for i := 0; !stop.Load(); i++ {
			cfg := base
			cfg.FIFO = i%2 == 0
			cfg.MaxIdlePerKey = 1 + i%3
			cfg.MinIdlePerKey = i % 2
			cfg.TestOnBorrow = i%3 == 0
			if i%4 == 0 {
				cfg.MaxLifetime = 5 * time.Millisecond
			}
			if i%5 == 0 {
				cfg.WhenExhausted = keyedpool.Fail
			}
			cfg.MaxWait = time.Duration(i%3) * time.Millisecond
			cfg.MakeFailureThreshold = i % 3
			cfg.MakeBackoffBase, cfg.MakeBackoffMax = time.Millisecond, 2*time.Millisecond
			f.failMake.Store(i%7 == 0)
			if err := p.SetConfig(cfg); err != nil {
				f.problem("SetConfig: %v", err)
			}
			key := keys[i%len(keys)]
			switch i % 6 {
			case 0:
				_ = p.Clear(ctx, key)
			case 1:
				_ = p.ClearOldest(ctx)
			case 2:
				_ = p.AddObject(ctx, key)
			case 3:
				_ = p.Prepare(ctx, key)
			case 4:
				p.ForgetFailures(key)
			case 5:
				_ = p.RunEviction(ctx)
			}
			for _, o := range p.ListObjects(key) {
				if o.Shares > maxShares {
					f.problem("ListObjects: %d shares", o.Shares)
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	})
	time.Sleep(1500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	f.failMake.Store(false)
	if err := p.SetConfig(base); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return p.Stats().Making == 0 })
	f.mu.Lock()
	problems, maxAll, maxLive := errors.Join(f.problems...), f.maxAll, f.maxLive
	created, deleted, liveAll := f.created, f.deleted, f.liveAll
	f.mu.Unlock()
	if problems != nil {
		t.Errorf("problems:\n%v", problems)
	}
	if maxAll > total {
		t.Errorf("%d objects alive at once, MaxTotal %d", maxAll, total)
	}
	for k, n := range maxLive {
		if n > perKey {
			t.Errorf("key %s: %d objects alive at once, MaxTotalPerKey %d", k, n, perKey)
		}
	}
	s := p.Stats()
	byReason := s.DestroyedByBorrowValidation + s.DestroyedByReturnValidation + s.DestroyedSurplus +
		s.DestroyedByInvalidate + s.DestroyedByClear + s.DestroyedByClose + s.DestroyedByEvictor +
		s.DestroyedByLifetime + s.DestroyedByAbandoned
	switch {
	case s.SharesInUse != 0 || s.Active != 0 || s.Waiters != 0 || s.Making != 0:
		t.Errorf("gauges after everything came back: %+v", s.Gauges)
	case s.Borrowed != s.Returned:
		t.Errorf("Borrowed %d != Returned %d", s.Borrowed, s.Returned)
	case s.Destroyed != byReason:
		t.Errorf("Destroyed %d != sum by reason %d", s.Destroyed, byReason)
	case s.Created != created || s.Destroyed != deleted:
		t.Errorf("Created %d Destroyed %d, factory made %d destroyed %d", s.Created, s.Destroyed, created, deleted)
	case int64(s.Idle) != s.Created-s.Destroyed || s.Idle != liveAll:
		t.Errorf("Idle %d, Created-Destroyed %d, alive %d", s.Idle, s.Created-s.Destroyed, liveAll)
	}
	t.Logf("borrowed %d, created %d, destroyed %d (%+v)", s.Borrowed, s.Created, s.Destroyed, s.Counters)
	idle, shares := 0, 0
	for _, ks := range p.AllKeyStats() {
		idle += ks.Idle
		shares += ks.SharesInUse
	}
	if idle != s.Idle || shares != 0 {
		t.Errorf("AllKeyStats: idle %d shares %d, Stats idle %d", idle, shares, s.Idle)
	}
}

// Exclusive use with the lanes switching on and off (the pool fills and
// empties, SetConfig quiesces them) while every other setting changes and
// Clear, ClearOldest, AddObject and Prepare run: the limits hold at every
// instant and the counters are exact once everything is back.
func TestReview3ExclusiveLanesChurnCounts(t *testing.T) {
	const perKey, total = 3, 5
	f := &testfactory.Factory{}
	base := keyedpool.Config{MaxTotalPerKey: perKey, MaxTotal: total}
	p := testfactory.NewPool(t, f, base)
	keys := []string{"a", "b", "c", "d"}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := range 6 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				key := keys[(g*7+i)%len(keys)]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
				h, err := p.Borrow(ctx, key)
				cancel()
				if err != nil {
					continue
				}
				if h.Value().Destroyed() || h.Value().Key != key {
					bad.Add(1)
				}
				if i%17 == 0 {
					h.Value().Dead.Store(true)
				}
				if i%19 == 0 {
					_ = p.Invalidate(h)
				} else {
					_ = p.Return(h)
				}
			}
		})
	}
	wg.Go(func() {
		ctx := context.Background()
		for i := 0; !stop.Load(); i++ {
			cfg := base
			cfg.FIFO = i%2 == 0
			cfg.MaxIdlePerKey = 1 + i%3
			cfg.MinIdlePerKey = i % 2
			cfg.TestOnBorrow = i%3 == 0
			cfg.TestOnReturn = i%3 == 1
			if i%4 == 0 {
				cfg.MaxLifetime = 3 * time.Millisecond
			}
			if i%5 == 0 {
				cfg.WhenExhausted = keyedpool.Fail
			}
			if i%6 == 0 {
				cfg.TimeBetweenEvictionRuns = time.Millisecond
			}
			if err := p.SetConfig(cfg); err != nil {
				t.Errorf("SetConfig: %v", err)
			}
			key := keys[i%len(keys)]
			switch i % 5 {
			case 0:
				_ = p.Clear(ctx, key)
			case 1:
				_ = p.ClearOldest(ctx)
			case 2:
				_ = p.AddObject(ctx, key)
			case 3:
				_ = p.Prepare(ctx, key)
			case 4:
				_ = p.RunEviction(ctx)
			}
			_ = p.AllKeyStats()
			time.Sleep(300 * time.Microsecond)
		}
	})
	time.Sleep(1500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if err := p.SetConfig(base); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return p.Stats().Making == 0 })
	if n := bad.Load(); n != 0 {
		t.Errorf("%d Borrows lent a destroyed object or one of another key", n)
	}
	if f.MaxLiveAll() > total || f.MaxLivePerKey() > perKey {
		t.Errorf("alive at once: %d all, %d per key; limits %d, %d", f.MaxLiveAll(), f.MaxLivePerKey(), total, perKey)
	}
	s := p.Stats()
	byReason := s.DestroyedByBorrowValidation + s.DestroyedByReturnValidation + s.DestroyedSurplus +
		s.DestroyedByInvalidate + s.DestroyedByClear + s.DestroyedByClose + s.DestroyedByEvictor +
		s.DestroyedByLifetime + s.DestroyedByAbandoned
	t.Logf("%+v", s.Counters)
	switch {
	case s.SharesInUse != 0 || s.Active != 0 || s.Waiters != 0:
		t.Errorf("gauges after everything came back: %+v", s.Gauges)
	case s.Borrowed != s.Returned:
		t.Errorf("Borrowed %d != Returned %d", s.Borrowed, s.Returned)
	case s.Destroyed != byReason:
		t.Errorf("Destroyed %d != sum by reason %d", s.Destroyed, byReason)
	case s.Created != f.Made.Load() || s.Destroyed != f.Destroyed.Load():
		t.Errorf("Created %d Destroyed %d, factory made %d destroyed %d", s.Created, s.Destroyed, f.Made.Load(), f.Destroyed.Load())
	case int64(s.Idle) != s.Created-s.Destroyed || s.Idle != f.LiveAll():
		t.Errorf("Idle %d, Created-Destroyed %d, alive %d", s.Idle, s.Created-s.Destroyed, f.LiveAll())
	}
}

// An invalid SetConfig is refused with a *FieldError naming the field,
// and the pool keeps its old config in full, lanes and limits included.
func TestReview3InvalidSetConfigKeepsOldConfig(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 2, FIFO: true})
	h := mustBorrow(t, p, "k")
	mustReturn(t, p, h)
	before := p.Config()
	for _, tc := range []struct {
		field string
		cfg   keyedpool.Config
	}{
		{"MinIdlePerKey", keyedpool.Config{MaxTotalPerKey: 1, MinIdlePerKey: 2}},
		{"MaxWait", keyedpool.Config{MaxWait: -time.Second}},
		{"MakeBackoffMax", keyedpool.Config{MakeBackoffBase: time.Minute, MakeBackoffMax: time.Second}},
		{"Abandoned.Timeout", keyedpool.Config{Abandoned: &keyedpool.AbandonedConfig{Timeout: -1}}},
	} {
		err := p.SetConfig(tc.cfg)
		var fe *keyedpool.FieldError
		if !errors.Is(err, keyedpool.ErrInvalidConfig) || !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("SetConfig(bad %s) = %v, want a FieldError for it", tc.field, err)
		}
		if got := p.Config(); fmt.Sprint(got) != fmt.Sprint(before) {
			t.Errorf("config changed by a refused SetConfig: %+v, was %+v", got, before)
		}
	}
	if err := p.SetConfig(keyedpool.Config{MaxSharesPerObject: 2}); !errors.Is(err, keyedpool.ErrInvalidConfig) {
		t.Errorf("SetConfig changing MaxSharesPerObject = %v, want ErrInvalidConfig", err)
	}
	// Old limits and order still hold.
	if ids := lendOrder(t, p, "k", 2); ids[0] > ids[1] {
		t.Errorf("FIFO lost: lent %v", ids)
	}
	if s := p.KeyStats("k"); s.Idle != 2 || p.Config().MaxTotalPerKey != 2 {
		t.Errorf("KeyStats = %+v", s)
	}
}

// Close with shares out and a borrower waiting for an object on its way:
// the waiter gets ErrClosed, the made object is destroyed, the shares come
// back and their object is destroyed by Close; every count exact.
func TestReview3CloseWithSharesOutAndSoonWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		gate := make(chan struct{})
		var n atomic.Int64
		f.MakeHook = func(ctx context.Context, _ string) error {
			if n.Add(1) == 2 {
				select {
				case <-gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		p, err := keyedpool.New(f, keyedpool.Config{MaxSharesPerObject: 2})
		if err != nil {
			t.Fatal(err)
		}
		h1, h2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k")
		c3 := borrowAsync(context.Background(), p, "k") // makes the second object
		synctest.Wait()
		c4 := borrowAsync(context.Background(), p, "k") // waits for it
		synctest.Wait()
		if s := p.Stats(); s.Waiters != 1 || s.Making != 1 || s.SharesInUse != 2 {
			t.Fatalf("setup: %+v", s.Gauges)
		}
		closed := make(chan error, 1)
		go func() { closed <- p.Close(context.Background()) }()
		synctest.Wait()
		for i, ch := range []<-chan result{c3, c4} {
			r := <-ch
			if !errors.Is(r.err, keyedpool.ErrClosed) {
				t.Errorf("borrower %d after Close = %v, want ErrClosed", i+3, r.err)
			}
		}
		mustReturn(t, p, h1)
		mustReturn(t, p, h2)
		synctest.Wait()
		if err := <-closed; err != nil {
			t.Errorf("Close = %v", err)
		}
		s := p.Stats()
		if s.SharesInUse != 0 || s.Active != 0 || s.Borrowed != s.Returned || s.Created != s.Destroyed ||
			s.DestroyedByClose != s.Destroyed || f.LiveAll() != 0 {
			t.Errorf("after Close: %+v, alive %d", s, f.LiveAll())
		}
		if err := f.Problems(); err != nil {
			t.Error(err)
		}
	})
}

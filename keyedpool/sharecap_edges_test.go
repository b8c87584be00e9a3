package keyedpool_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/keyedpool"
)

// rvConn is a pooled value with its own share cap; held counts the leases
// the test holds on it.
type rvConn struct {
	id   int64
	key  string
	cap  keyedpool.ShareCap
	held atomic.Int64
}

func (c *rvConn) ShareCap() *keyedpool.ShareCap { return &c.cap }

// rvFactory makes rvConns with per-key initial caps and optional hooks.
type rvFactory struct {
	initial  map[string]int // per key; missing: def
	def      int
	maxTotal int64 // >0: Make checks live objects stay within it
	maxKey   int64 // >0: same per key

	makeHook     func(ctx context.Context, key string)
	activateHook func(c *rvConn)
	passivHook   func(c *rvConn)
	validateHook func(c *rvConn)
	destroyHook  func(c *rvConn)

	mu        sync.Mutex
	all       []*rvConn
	liveKey   map[string]int64
	violation []string

	made, destroyed, live atomic.Int64
}

func (f *rvFactory) Make(ctx context.Context, key string) (*rvConn, error) {
	n := f.live.Add(1)
	f.mu.Lock()
	if f.liveKey == nil {
		f.liveKey = map[string]int64{}
	}
	f.liveKey[key]++
	k := f.liveKey[key]
	if f.maxTotal > 0 && n > f.maxTotal {
		f.violation = append(f.violation, "live objects over MaxTotal")
	}
	if f.maxKey > 0 && k > f.maxKey {
		f.violation = append(f.violation, "live objects of "+key+" over MaxTotalPerKey")
	}
	f.mu.Unlock()
	if f.makeHook != nil {
		f.makeHook(ctx, key)
	}
	c := &rvConn{id: f.made.Add(1), key: key}
	init := f.def
	if v, ok := f.initial[key]; ok {
		init = v
	}
	c.cap.Set(init)
	f.mu.Lock()
	f.all = append(f.all, c)
	f.mu.Unlock()
	return c, nil
}

func (f *rvFactory) Destroy(_ context.Context, key string, c *rvConn) error {
	f.live.Add(-1)
	f.mu.Lock()
	f.liveKey[key]--
	f.mu.Unlock()
	if f.destroyHook != nil {
		f.destroyHook(c)
	}
	f.destroyed.Add(1)
	return nil
}

func (f *rvFactory) Validate(_ context.Context, _ string, c *rvConn) error {
	if f.validateHook != nil {
		f.validateHook(c)
	}
	return nil
}

func (f *rvFactory) Activate(_ context.Context, _ string, c *rvConn) error {
	if f.activateHook != nil {
		f.activateHook(c)
	}
	return nil
}

func (f *rvFactory) Passivate(_ context.Context, _ string, c *rvConn) error {
	if f.passivHook != nil {
		f.passivHook(c)
	}
	return nil
}

func (f *rvFactory) conns() []*rvConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*rvConn(nil), f.all...)
}

type rvPool = keyedpool.Pool[string, *rvConn]
type rvHandle = keyedpool.Pooled[string, *rvConn]

func rvNew(t *testing.T, f *rvFactory, cfg keyedpool.Config) *rvPool {
	t.Helper()
	return newPoolOf(t, f, cfg)
}

func rvBorrow(t *testing.T, p *rvPool, key string) *rvHandle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := p.Borrow(ctx, key)
	if err != nil {
		t.Fatalf("Borrow(%q) = %v", key, err)
	}
	return h
}

type rvResult struct {
	h   *rvHandle
	err error
}

func rvAsync(p *rvPool, key string, timeout time.Duration) <-chan rvResult {
	ch := make(chan rvResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		h, err := p.Borrow(ctx, key)
		ch <- rvResult{h, err}
	}()
	return ch
}

func rvWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached in 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// collect waits up to d for r; ok false if nothing came.
func collect(r <-chan rvResult, d time.Duration) (rvResult, bool) {
	select {
	case x := <-r:
		return x, true
	default:
	}
	select {
	case x := <-r:
		return x, true
	case <-time.After(d):
		return rvResult{}, false
	}
}

// A cap that rises must serve the waiting borrower of its key at once, even
// when an older borrower of another key waits for room the full pool does
// not have: a share needs no room.
func TestCapRiseServesWaiterBehindOtherKey(t *testing.T) {
	f := &rvFactory{def: 1}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: 10, MaxTotal: 2, MaxTotalPerKey: 2})
	hA := rvBorrow(t, p, "A")
	hB := rvBorrow(t, p, "B")
	wA := rvAsync(p, "A", 4*time.Second)
	rvWait(t, "A waits", func() bool { return p.Stats().Waiters == 1 })
	wB := rvAsync(p, "B", 4*time.Second)
	rvWait(t, "B waits", func() bool { return p.Stats().Waiters == 2 })

	hB.Value().cap.Set(2) // objB can take one more share now

	r, ok := collect(wB, time.Second)
	switch {
	case !ok:
		t.Errorf("B's waiter not served within 1s after objB's cap rose from 1 to 2 (KeyStats(B) = %+v)", p.KeyStats("B").Gauges)
	case r.err != nil:
		t.Errorf("B's waiter = %v, want a share of objB", r.err)
	default:
		p.Return(r.h)
	}
	if !ok {
		// FIFO: a newcomer must not take the share the waiter is owed.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		h, err := p.Borrow(ctx, "B")
		cancel()
		if err == nil {
			t.Errorf("a new Borrow(B) took the share while B's older waiter still waits (barging)")
			p.Return(h)
		}
		if r, ok := collect(wB, 5*time.Second); ok && r.err == nil {
			p.Return(r.h)
		}
	}
	p.Return(hA)
	if r, ok := collect(wA, 5*time.Second); ok && r.err == nil {
		p.Return(r.h)
	}
	p.Return(hB)
}

// With WhenExhausted Fail, borrowers that arrived while the key's first
// object was being made waited for it ("soon"), sized by MaxSharesPerObject
// since no cap was known. When the object comes with a cap of 2, only one of
// them can share it and MaxTotalPerKey 1 leaves no room: the others must
// fail with ErrExhausted, as Fail does, not wait on.
func TestFailModeSoonWaitersFailWhenObjectCapIsLower(t *testing.T) {
	release := make(chan struct{})
	var first atomic.Bool
	f := &rvFactory{def: 2, makeHook: func(context.Context, string) {
		if first.CompareAndSwap(false, true) {
			<-release
		}
	}}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: keyedpool.MaxShares, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
	b1 := rvAsync(p, "k", 5*time.Second)
	rvWait(t, "make running", func() bool { return p.Stats().Making == 1 })
	var ws []<-chan rvResult
	for range 3 {
		ws = append(ws, rvAsync(p, "k", 5*time.Second))
	}
	rvWait(t, "3 waiters", func() bool { return p.Stats().Waiters == 3 })
	close(release)
	var hs []*rvHandle
	r, _ := collect(b1, 5*time.Second)
	if r.err != nil {
		t.Fatalf("first Borrow = %v", r.err)
	}
	hs = append(hs, r.h)
	served, exhausted, stuck := 0, 0, 0
	deadline := time.Now().Add(1500 * time.Millisecond)
	var late []<-chan rvResult
	for _, w := range ws {
		r, ok := collect(w, time.Until(deadline))
		switch {
		case !ok:
			stuck++
			late = append(late, w)
		case r.err == nil:
			served++
			hs = append(hs, r.h)
		case errors.Is(r.err, keyedpool.ErrExhausted):
			exhausted++
		default:
			t.Errorf("waiter = %v", r.err)
		}
	}
	for _, w := range late {
		r, _ := collect(w, 5*time.Second)
		if r.err == nil && r.h != nil {
			hs = append(hs, r.h)
		}
		t.Logf("a Fail-mode waiter still waited 1.5s after the object came; it ended with %v", r.err)
	}
	if served != 1 || exhausted != 2 {
		t.Errorf("Fail mode, object cap 2, MaxTotalPerKey 1: %d served, %d ErrExhausted, %d kept waiting; want 1 served, 2 ErrExhausted", served, exhausted, stuck)
	}
	for _, h := range hs {
		p.Return(h)
	}
}

// Set on the cap of an object destroyed to make room for another key (a
// "victim") must change nothing in the pool (ShareCap's doc), as it does
// for objects destroyed any other way.
func TestVictimCapSetAfterDestroyChangesNothing(t *testing.T) {
	f := &rvFactory{initial: map[string]int{"A": 5, "B": 5}}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: 10, MaxTotal: 2, MaxTotalPerKey: 2})
	h1 := rvBorrow(t, p, "A")
	if err := p.AddObject(context.Background(), "A"); err != nil {
		t.Fatal(err)
	}
	if s := p.KeyStats("A"); s.Idle != 1 {
		t.Fatalf("want 1 idle A object, got %+v", s.Gauges)
	}
	hB := rvBorrow(t, p, "B") // MaxTotal: A's idle object is destroyed for B
	var victim *rvConn
	for _, c := range f.conns() {
		if c.key == "A" && c != h1.Value() {
			victim = c
		}
	}
	if victim == nil || f.destroyed.Load() != 1 {
		t.Fatalf("no victim destroyed (destroyed %d)", f.destroyed.Load())
	}
	victim.cap.Set(1)
	if got := p.KeyStats("A").ShareCap; got != 5 {
		t.Errorf("KeyStats(A).ShareCap = %d after Set(1) on a destroyed victim, want 5 (its live object's)", got)
	}
	p.Return(h1)
	p.Return(hB)
}

// Shares are packed under each object's cap; a cap that only rises is
// never exceeded; live objects stay within MaxTotal and MaxTotalPerKey;
// nobody is stranded, under concurrent Borrow, Return, Invalidate, Clear,
// eviction runs and cap changes, and Close leaves nothing behind.
func TestShareCapStress(t *testing.T) {
	const maxShares = 6
	f := &rvFactory{def: 1, maxTotal: 5, maxKey: 3}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: maxShares, MaxTotal: 5, MaxTotalPerKey: 3,
		MaxWait: 4 * time.Second, MinIdlePerKey: 1})
	keys := []string{"a", "b", "c"}
	eff := func(n int) int64 {
		if n == 0 || n > maxShares {
			return maxShares
		}
		return int64(n)
	}
	var errs sync.Map
	report := func(s string) { errs.Store(s, true) }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[r.IntN(len(keys))]
				ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
				h, err := p.Borrow(ctx, key)
				cancel()
				if err != nil {
					report("Borrow: " + err.Error())
					continue
				}
				c := h.Value()
				if n := c.held.Add(1); n > eff(c.cap.Load()) {
					report("an object carries more shares than its (rising) cap")
				}
				time.Sleep(time.Duration(r.IntN(300)) * time.Microsecond)
				c.held.Add(-1)
				if r.IntN(40) == 0 {
					if err := p.Invalidate(h); err != nil {
						report("Invalidate: " + err.Error())
					}
				} else if err := p.Return(h); err != nil {
					report("Return: " + err.Error())
				}
			}
		})
	}
	wg.Go(func() { // caps only rise: 1..maxShares-1, then 0 (MaxSharesPerObject)
		r := rand.New(rand.NewPCG(99, 1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			cs := f.conns()
			if len(cs) > 0 {
				c := cs[r.IntN(len(cs))]
				switch n := c.cap.Load(); {
				case n == 0:
				case n >= maxShares-1:
					c.cap.Set(0)
				default:
					c.cap.Set(n + 1)
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = p.Clear(ctx, keys[rand.IntN(len(keys))])
			_ = p.RunEviction(ctx)
			cancel()
		}
	})
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("stress goroutines did not finish in 20s: a borrower stuck")
	}
	errs.Range(func(k, _ any) bool { t.Errorf("%v", k); return true })
	f.mu.Lock()
	for _, v := range f.violation {
		t.Errorf("limit violated: %s", v)
	}
	f.mu.Unlock()
	s := p.Stats()
	if s.SharesInUse != 0 || s.Waiters != 0 || s.Borrowed != s.Returned {
		t.Errorf("after the stress: %+v", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Errorf("Close = %v", err)
	}
	if f.live.Load() != 0 {
		t.Errorf("%d objects left undestroyed after Close", f.live.Load())
	}
	for _, c := range f.conns() { // after Close: nothing, no panic, no block
		c.cap.Set(int(c.id % 4))
	}
}

// Rising and falling caps while other goroutines Close the pool: no
// panic, no deadlock, waiters get ErrClosed, nothing leaks.
func TestShareCapSetDuringClose(t *testing.T) {
	for round := range 20 {
		f := &rvFactory{def: 1}
		p, err := keyedpool.New(f, keyedpool.Config{MaxSharesPerObject: 8, MaxTotalPerKey: 2})
		if err != nil {
			t.Fatal(err)
		}
		h1 := rvBorrow(t, p, "k")
		h2 := rvBorrow(t, p, "k")
		var ws []<-chan rvResult
		for range 4 {
			ws = append(ws, rvAsync(p, "k", 5*time.Second))
		}
		rvWait(t, "waiters", func() bool { return p.Stats().Waiters == 4 })
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				for _, c := range f.conns() {
					c.cap.Set(i % 5)
				}
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		closed := make(chan error, 1)
		go func() { closed <- p.Close(ctx) }()
		var got []*rvHandle
		for _, w := range ws {
			r, ok := collect(w, 5*time.Second)
			if !ok {
				t.Fatalf("round %d: a waiter was not released after Close", round)
			}
			if r.err == nil {
				got = append(got, r.h)
			} else if !errors.Is(r.err, keyedpool.ErrClosed) {
				t.Errorf("round %d: waiter = %v", round, r.err)
			}
		}
		for _, h := range append(got, h1, h2) {
			if err := p.Return(h); err != nil {
				t.Errorf("Return after Close = %v", err)
			}
		}
		if err := <-closed; err != nil {
			t.Errorf("round %d: Close = %v", round, err)
		}
		close(stop)
		wg.Wait()
		cancel()
		if f.live.Load() != 0 {
			t.Errorf("round %d: %d objects not destroyed", round, f.live.Load())
		}
	}
}

// An exclusive pool (MaxSharesPerObject 1) ignores caps: a cap of 5 lends
// no second lease, KeyStats shows no cap, Set does not block.
func TestExclusivePoolIgnoresCaps(t *testing.T) {
	f := &rvFactory{def: 5}
	p := rvNew(t, f, keyedpool.Config{MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
	h := rvBorrow(t, p, "k")
	h.Value().cap.Set(9)
	if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("second Borrow of an exclusive pool = %v, want ErrExhausted", err)
	}
	if got := p.KeyStats("k").ShareCap; got != 0 {
		t.Errorf("exclusive pool: KeyStats.ShareCap = %d, want 0", got)
	}
	p.Return(h)
	h.Value().cap.Set(0)
}

// A cap set back to not known (0) lets MaxSharesPerObject bound the object
// again: borrowers waiting at the old cap of 1 are served at once.
func TestCapToUnknownServesWaiters(t *testing.T) {
	f := &rvFactory{def: 1}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: 3, MaxTotalPerKey: 1})
	h := rvBorrow(t, p, "k")
	w1 := rvAsync(p, "k", 4*time.Second)
	w2 := rvAsync(p, "k", 4*time.Second)
	w3 := rvAsync(p, "k", 4*time.Second)
	rvWait(t, "3 waiters", func() bool { return p.Stats().Waiters == 3 })
	h.Value().cap.Set(0)
	n := 0
	for _, w := range []<-chan rvResult{w1, w2, w3} {
		r, ok := collect(w, 300*time.Millisecond)
		if ok && r.err == nil {
			n++
			defer p.Return(r.h)
		} else if !ok {
			defer func() {
				if r, ok := collect(w, 5*time.Second); ok && r.err == nil {
					p.Return(r.h)
				}
			}()
		}
	}
	if n != 2 {
		t.Errorf("cap 1 -> not known (MaxSharesPerObject 3): %d waiters served at once, want 2", n)
	}
	defer p.Return(h)
}

// Set from inside every factory method (and ShareCap itself) never
// deadlocks: the pool calls none of them under its lock.
func TestShareCapSetInsideFactoryMethods(t *testing.T) {
	f := &rvFactory{def: 1}
	bump := func(c *rvConn) { c.cap.Set(int(c.cap.Load()%3) + 1) }
	f.activateHook, f.passivHook, f.validateHook, f.destroyHook = bump, bump, bump, bump
	f.makeHook = func(context.Context, string) {}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: 4, MaxTotalPerKey: 3, TestOnBorrow: true,
		TestOnReturn: true, TestOnCreate: true, TestWhileIdle: true, MinEvictableIdle: time.Nanosecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for j := range 200 {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					h, err := p.Borrow(ctx, "k")
					cancel()
					if err != nil {
						t.Errorf("Borrow = %v", err)
						return
					}
					bump(h.Value())
					if j%17 == 0 {
						p.Invalidate(h)
					} else {
						p.Return(h)
					}
				}
			})
		}
		wg.Go(func() {
			for range 50 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = p.RunEviction(ctx)
				cancel()
			}
		})
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("deadlock: borrowers with Set inside factory methods did not finish in 20s")
	}
}

// MinIdlePerKey counts a lent object under its cap as spare. When its cap
// falls to its shares, the key has no spare object left, and the next
// eviction run's upkeep must make one, as it does when shares fill it.
func TestCapFallQueuesUpkeep(t *testing.T) {
	f := &rvFactory{def: 5}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: 10, MaxTotalPerKey: 4, MinIdlePerKey: 1})
	h := rvBorrow(t, p, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	if s := p.KeyStats("k"); s.Idle != 0 || f.made.Load() != 1 {
		t.Fatalf("lent under its cap 5, the object is spare: want no upkeep make, got %+v made %d", s.Gauges, f.made.Load())
	}
	h.Value().cap.Set(1) // at its cap now: no spare
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	if s := p.KeyStats("k"); s.Idle != 1 {
		t.Errorf("cap fell to the object's 1 share: after an eviction run Idle = %d, made %d; want upkeep to make 1 spare", s.Idle, f.made.Load())
	}
	// The same state reached by a share instead of a cap change does queue upkeep:
	f2 := &rvFactory{def: 2}
	p2 := rvNew(t, f2, keyedpool.Config{MaxSharesPerObject: 10, MaxTotalPerKey: 4, MinIdlePerKey: 1})
	h1 := rvBorrow(t, p2, "k")
	h2 := rvBorrow(t, p2, "k")
	if err := p2.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	if s := p2.KeyStats("k"); s.Idle != 1 {
		t.Errorf("control: object filled to its cap by shares: Idle = %d after a run, want 1", s.Idle)
	}
	p2.Return(h1)
	p2.Return(h2)
	p.Return(h)
}

// A key whose object learned cap 1 and then "not known" (0: a reconnect to
// a server without a limit) no longer carries cap 1: KeyStats shows no cap,
// and a burst arriving while that object is being activated waits for it
// (it takes MaxSharesPerObject) instead of each borrower making an object.
func TestKeyCapForgottenWhenObjectCapUnknown(t *testing.T) {
	gate := make(chan struct{})
	var gated atomic.Bool
	f := &rvFactory{def: 1}
	f.activateHook = func(*rvConn) {
		if gated.Load() {
			<-gate
		}
	}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: 50, MaxTotalPerKey: 8, MaxWait: 5 * time.Second})
	h := rvBorrow(t, p, "k")
	h.Value().cap.Set(0)
	p.Return(h)
	if got := p.KeyStats("k").ShareCap; got != 0 {
		t.Errorf("KeyStats.ShareCap = %d after the key's only object's cap became not known, want 0", got)
	}
	gated.Store(true)
	first := rvAsync(p, "k", 5*time.Second)
	rvWait(t, "activating", func() bool { return p.KeyStats("k").Active == 1 })
	var ws []<-chan rvResult
	for range 3 {
		ws = append(ws, rvAsync(p, "k", 5*time.Second))
	}
	rvWait(t, "3 more borrowers waiting or making", func() bool {
		s := p.KeyStats("k")
		return s.Waiters+s.Making+s.Active-1 >= 3
	})
	time.Sleep(50 * time.Millisecond)
	close(gate)
	gated.Store(false)
	var hs []*rvHandle
	for _, w := range append(ws, first) {
		r, _ := collect(w, 5*time.Second)
		if r.err != nil {
			t.Errorf("Borrow = %v", r.err)
			continue
		}
		hs = append(hs, r.h)
	}
	if got := f.made.Load(); got != 1 {
		t.Errorf("burst of 3 during activation of an object with no cap (MaxSharesPerObject 50): %d objects made in all, want 1", got)
	}
	for _, h := range hs {
		p.Return(h)
	}
}

// With shared leases and WhenExhausted Fail, borrowers arriving while the
// key's object is being activated wait for it as far as the key's learned
// cap allows, and those beyond fail at once.
func TestFailModeWaitsUpToKeyCap(t *testing.T) {
	gate := make(chan struct{})
	var gated atomic.Bool
	f := &rvFactory{def: 3}
	f.activateHook = func(*rvConn) {
		if gated.Load() {
			<-gate
		}
	}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: 50, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
	p.Return(rvBorrow(t, p, "k")) // learn cap 3; the object goes idle
	gated.Store(true)
	first := rvAsync(p, "k", 5*time.Second)
	rvWait(t, "activating", func() bool { return p.KeyStats("k").Active == 1 })
	w1 := rvAsync(p, "k", 5*time.Second)
	w2 := rvAsync(p, "k", 5*time.Second)
	rvWait(t, "2 waiters", func() bool { return p.KeyStats("k").Waiters == 2 })
	if _, err := p.Borrow(context.Background(), "k"); !errors.Is(err, keyedpool.ErrExhausted) {
		t.Errorf("4th Borrow with cap 3 = %v, want ErrExhausted at once", err)
	}
	close(gate)
	for _, w := range []<-chan rvResult{first, w1, w2} {
		r, _ := collect(w, 5*time.Second)
		if r.err != nil {
			t.Errorf("Borrow = %v, want a share", r.err)
			continue
		}
		defer p.Return(r.h)
	}
}

// An invalidated (retiring) object whose cap rises is lent to nobody.
func TestCapRiseOnRetiringObjectLendsNothing(t *testing.T) {
	f := &rvFactory{def: 2}
	p := rvNew(t, f, keyedpool.Config{MaxSharesPerObject: 10, MaxTotalPerKey: 1, WhenExhausted: keyedpool.Fail})
	h1 := rvBorrow(t, p, "k")
	h2 := rvBorrow(t, p, "k")
	obj := h1.Value()
	if err := p.Invalidate(h1); err != nil {
		t.Fatal(err)
	}
	obj.cap.Set(9)
	if h, err := p.Borrow(context.Background(), "k"); err == nil {
		if h.Value() == obj {
			t.Errorf("an invalidated object was lent after its cap rose")
		}
		p.Return(h)
	}
	p.Return(h2)
}

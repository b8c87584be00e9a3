package keyedpool

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/factory"
)

// safeLanePool is lanePool with a factory safe for concurrent use.
func safeLanePool(t *testing.T, cfg Config) *Pool[string, *laneObj] {
	t.Helper()
	var made atomic.Int64
	f := factory.Funcs[string, *laneObj]{
		MakeFunc: func(_ context.Context, key string) (*laneObj, error) {
			return &laneObj{key: key, n: int(made.Add(1))}, nil
		},
	}
	p, err := New[string, *laneObj](f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return p
}

// checkLanesLocked checks, at a section boundary (mu held by the caller),
// what lane.go, object.go and dispatch.go claim: lanes on only while
// laneWantLocked holds; lanes off (or a waiter) means no object on any lane;
// a lane with objects is registered in pool.dirty; lane objects are idle,
// newer than every object in their key's idle list, in order; the idle lists
// are in idleSeq order (the pool's oldest first; a key's by FIFO/LIFO);
// idleN and countN mirror their fields; and the fairness invariant: no
// waiter of a key with a lendable idle object, and none whose key could take
// room the pool has.
func checkLanesLocked[V any](p *Pool[string, V]) error {
	on := p.lanes.Load() != nil
	if on && !p.laneWantLocked() {
		return fmt.Errorf("lanes on while laneWantLocked is false (waiters %d, full %v, closed %v)", p.wq.Len(), p.fullLocked(), p.closed)
	}
	fifo := p.cfg.Load().FIFO
	for o, prev := p.idle.Front(), (*object[string, V])(nil); o != nil; prev, o = o, p.idle.Next(o) {
		if prev != nil && prev.idleSeq >= o.idleSeq {
			return fmt.Errorf("pool idle list out of idleSeq order: %d before %d", prev.idleSeq, o.idleSeq)
		}
	}
	sum, sumDying := 0, 0
	for k, sp := range p.keys {
		sp.lane.mu.Lock()
		n, ln, dirty := int(sp.lane.n.Load()), sp.lane.objs.Len(), sp.lane.dirty
		var newest uint64
		for o := sp.idle.Front(); o != nil; o = sp.idle.Next(o) {
			newest = max(newest, o.idleSeq)
			if o.state != stIdle && o.state != stTesting {
				sp.lane.mu.Unlock()
				return fmt.Errorf("key %s: idle-list object in state %d", k, o.state)
			}
		}
		var last uint64
		var bad error
		for o := sp.lane.objs.Front(); o != nil; o = sp.lane.objs.Next(o) {
			switch {
			case o.state != stIdle:
				bad = fmt.Errorf("key %s: lane object in state %d", k, o.state)
			case o.idleSeq <= newest:
				bad = fmt.Errorf("key %s: lane object %d not newer than idle-list object %d", k, o.idleSeq, newest)
			case o.idleSeq <= last:
				bad = fmt.Errorf("key %s: lane out of order", k)
			}
			last = o.idleSeq
		}
		dying := 0 // under the lane's mutex too: the fast paths move lent objects under it
		for o := sp.objs.Front(); o != nil; o = sp.objs.Next(o) {
			if o.state == stDestroy {
				dying++
			}
		}
		sp.lane.mu.Unlock()
		if bad != nil {
			return bad
		}
		if n != ln {
			return fmt.Errorf("key %s: lane.n %d, lane holds %d", k, n, ln)
		}
		if n > 0 && (!on || p.wq.Len() > 0) {
			return fmt.Errorf("key %s: %d objects on its lane while lanes are off (waiters %d)", k, n, p.wq.Len())
		}
		if n > 0 && (!dirty || !sp.lane.links.In()) {
			return fmt.Errorf("key %s: lane holds %d objects but is not in pool.dirty", k, n)
		}
		if dying != sp.dying {
			return fmt.Errorf("key %s: %d objects being destroyed, dying %d", k, dying, sp.dying)
		}
		sumDying += dying
		if int(sp.idleN.Load()) != sp.idle.Len() || int(sp.countN.Load()) != sp.count {
			return fmt.Errorf("key %s: idleN %d/%d countN %d/%d", k, sp.idleN.Load(), sp.idle.Len(), sp.countN.Load(), sp.count)
		}
		for o, prev := sp.idle.Front(), (*object[string, V])(nil); o != nil; prev, o = o, sp.idle.Next(o) {
			if prev != nil && (prev.idleSeq < o.idleSeq) != fifo {
				return fmt.Errorf("key %s: idle list not in %s order", k, map[bool]string{true: "FIFO", false: "LIFO"}[fifo])
			}
		}
		sum += sp.idle.Len()
		if sp.waiters.Len() == 0 {
			continue
		}
		for o := sp.idle.Front(); o != nil; o = sp.idle.Next(o) {
			if o.state == stIdle {
				return fmt.Errorf("key %s: %d waiters while an idle object of the key is lendable", k, sp.waiters.Len())
			}
		}
		if sp.count < p.lim.maxPerKey && sp.bo == nil {
			if !p.fullLocked() {
				return fmt.Errorf("key %s: %d waiters, key under MaxTotalPerKey (%d) and pool not full", k, sp.waiters.Len(), sp.count)
			}
			for o := p.idle.Front(); o != nil; o = p.idle.Next(o) {
				if o.state == stIdle {
					return fmt.Errorf("key %s: waiter while the pool is full but idle objects of other keys could make room", k)
				}
			}
		}
	}
	if sum != p.idle.Len() {
		return fmt.Errorf("key idle lists hold %d, pool idle list %d", sum, p.idle.Len())
	}
	if sumDying != p.dying {
		return fmt.Errorf("keys have %d objects being destroyed, pool dying %d", sumDying, p.dying)
	}
	return nil
}

// Under a mix of Borrow and Return on a few keys (each worker holds one
// object at a time, so no Borrow ever needs MaxWait), with waiters coming and
// going (MaxTotalPerKey and MaxTotal small), MinIdlePerKey upkeep, and
// observers that flush (Stats, KeyStats, ListObjects), reconfigure (FIFO,
// MaxIdlePerKey, MaxTotalPerKey), evict and clear, a checker that takes the
// pool's lock at random moments finds every invariant of checkLanesLocked
// holding; and nothing deadlocks.
func TestLanesReview2InvariantsUnderLoad(t *testing.T) {
	p := safeLanePool(t, Config{MaxTotal: 5, MaxTotalPerKey: 2, MaxIdlePerKey: 3, MinIdlePerKey: 1,
		NumTestsPerEvictionRun: 2, MaxWait: 2 * time.Second,
		EvictionPolicy: evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool { return c.Created.UnixNano()%3 == 0 })})
	keys := []string{"a", "b", "c"}
	ctx := context.Background()
	var workers, observer sync.WaitGroup
	for g := range 6 {
		workers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			var held []*Pooled[string, *laneObj]
			for range 4000 {
				if len(held) == 0 { // one at a time: no hold-and-wait among the workers
					h, err := p.Borrow(ctx, keys[rng.IntN(len(keys))])
					if err != nil {
						// Nobody holds an object while waiting, so a
						// waiter that times out was left waiting.
						t.Errorf("Borrow() = %v", err)
						return
					}
					held = append(held, h)
				} else if len(held) > 0 {
					i := rng.IntN(len(held))
					if err := p.Return(held[i]); err != nil {
						t.Errorf("Return() = %v", err)
						return
					}
					held = append(held[:i], held[i+1:]...)
				}
			}
			for _, h := range held {
				if err := p.Return(h); err != nil {
					t.Errorf("Return() = %v", err)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	observer.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			k := keys[i%len(keys)]
			switch i % 8 {
			case 0:
				_ = p.Stats()
			case 1:
				_ = p.KeyStats(k)
			case 2:
				_ = p.ListObjects(k)
			case 3:
				c := p.Config()
				c.FIFO = !c.FIFO
				c.MaxIdlePerKey = 1 + i%3
				c.MaxTotalPerKey = 2 + i%2
				if err := p.SetConfig(c); err != nil {
					t.Errorf("SetConfig() = %v", err)
				}
			case 4:
				_ = p.RunEviction(ctx)
			case 5:
				if i%40 == 5 {
					_ = p.Clear(ctx, k)
				}
			case 6:
				_ = p.AllKeyStats()
			}
		}
	})
	timeout := time.After(30 * time.Second)
	checks, sawWaiters, sawLane := 0, 0, 0
	var failure error
loop:
	for failure == nil {
		select {
		case <-done:
			break loop
		case <-timeout:
			t.Fatal("workers did not finish within 30s: deadlock, or a waiter never served")
		default:
		}
		p.mu.Lock()
		failure = checkLanesLocked(p)
		if p.wq.Len() > 0 {
			sawWaiters++
		}
		for _, sp := range p.keys {
			if sp.lane.n.Load() > 0 {
				sawLane++
				break
			}
		}
		p.mu.Unlock()
		checks++
		for range 20 {
			runtime.Gosched()
		}
	}
	if failure != nil {
		t.Fatalf("after %d checks: %v", checks, failure)
	}
	observer.Wait()
	p.mu.Lock()
	err := checkLanesLocked(p)
	p.mu.Unlock()
	if err != nil {
		t.Fatalf("at the end: %v", err)
	}
	if s := p.Stats(); s.Active != 0 || s.SharesInUse != 0 || s.Borrowed != s.Returned {
		t.Errorf("at the end Stats() = %+v, want nothing lent", s)
	}
	if sawWaiters == 0 || sawLane == 0 {
		t.Errorf("of %d checks, %d saw waiters and %d objects on lanes: the test needs both", checks, sawWaiters, sawLane)
	}
	t.Logf("%d checks, %d with waiters, %d with objects on lanes", checks, sawWaiters, sawLane)
}

// README: a run "looks at NumTestsPerEvictionRun idle objects, going on
// where the last run stopped in its list of idle objects (oldest first, all
// keys together)", and doc.go: the lists catch up whenever something reads
// them, "so that every promise about order ... holds as if every object had
// gone through them". An object returned on a lane during a run gets its
// place by idleSeq when the next run flushes, which may be behind the
// cursor (evictNext) if an object that went idle after it the pool-wide
// way is where the last run stopped: the next run then skips it for a
// newer one. Here b is returned (lane) before c is added (pool-wide),
// both during run 1, after the cursor; run 2 must look at b first, as it
// would had b gone into the idle list when returned.
func TestLanesReview2EvictionCursorSkipsLaneObjects(t *testing.T) {
	var p *Pool[string, *laneObj]
	var visited []string
	var hb *Pooled[string, *laneObj]
	stepped := false
	step := func(key string) {
		visited = append(visited, key)
		if stepped {
			return
		}
		stepped = true
		// During run 1, with its cursor on v: b goes on its lane, then c
		// into the idle list the pool-wide way.
		if err := p.Return(hb); err != nil {
			t.Errorf("Return(b) = %v", err)
		}
		p.mu.Lock()
		onLane := p.keys["b"].lane.n.Load()
		p.mu.Unlock()
		if onLane != 1 {
			t.Errorf("b's lane holds %d objects, want 1: the test needs b on its lane", onLane)
		}
		if err := p.AddObject(context.Background(), "c"); err != nil {
			t.Errorf("AddObject(c) = %v", err)
		}
	}
	p = lanePool(t, Config{NumTestsPerEvictionRun: 2,
		EvictionPolicy: evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool {
			step(c.Key.(string))
			return false
		})})
	ctx := context.Background()
	for _, k := range []string{"w", "v"} {
		if err := p.AddObject(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if hb, err = p.Borrow(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"w", "v"}; fmt.Sprint(visited) != fmt.Sprint(want) {
		t.Fatalf("run 1 looked at %v, want %v", visited, want)
	}
	visited = nil
	if err := p.RunEviction(ctx); err != nil {
		t.Fatal(err)
	}
	// Idle order now: w, v, b, c; run 1 stopped after v.
	if want := []string{"b", "c"}; fmt.Sprint(visited) != fmt.Sprint(want) {
		t.Errorf("run 2 looked at %v, want %v: b, idle since before c, was skipped for c", visited, want)
	}
}

// doc.go ("Costs"): in exclusive mode, while no borrower waits and the pool
// is below MaxTotal, a Return puts its object on its key's lane and a Borrow
// takes it from there, "neither takes the pool's mutex". With MinIdlePerKey
// (README's own long-running example sets 2) a Borrow that leaves the key
// below it takes the pool's mutex to queue upkeep (borrowFast), even when
// the key is queued already: here every Borrow of a key with one object,
// on its lane, under MinIdlePerKey 2. A section of the pool's lock held
// elsewhere holds such Borrows up.
func TestLanesReview2MinIdleBorrowTakesThePoolsLock(t *testing.T) {
	p := lanePool(t, Config{MinIdlePerKey: 2})
	cycle(t, p, "a")
	cycle(t, p, "a") // indexed

	p.mu.Lock()
	done := make(chan error, 1)
	go func() {
		h, err := p.Borrow(context.Background(), "a")
		if err == nil {
			err = p.Return(h)
		}
		done <- err
	}()
	select {
	case err := <-done:
		p.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		p.mu.Unlock()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		t.Fatal("Borrow+Return of a key with an object on its lane waited for the pool's lock (MinIdlePerKey upkeep in borrowFast)")
	}
}

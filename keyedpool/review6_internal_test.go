package keyedpool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/factory"
)

// r6Obj is an object of TestReview6StressInvariants: it counts its destroys
// and whether it is lent, so that the test sees an object lent twice, lent
// after being destroyed, or destroyed other than once.
type r6Obj struct {
	key      string
	n        int64
	lent     atomic.Int32
	destroys atomic.Int32
}

var errR6Make = errors.New("review6: make failed")

// checkReview6Locked checks, with mu held, what the latest changes claim
// beyond checkLanesLocked: dying counts exactly the objects in stDestroy
// still in some key's objs list; failing is exact (each entry has a
// makeBackoff whose at is its index, is the key's live sub-pool, and every
// key with a makeBackoff is in it); backoffKeys counts the keys in backoff;
// evictNext is nil or in the pool's idle list; and no key has a waiter while
// it has an idle object, on its idle list or its lane.
func checkReview6Locked(p *Pool[string, *r6Obj]) error {
	if err := checkLanesLocked(p); err != nil {
		return err
	}
	dying := 0
	for k, sp := range p.keys {
		sp.lane.mu.Lock()
		for o := sp.objs.Front(); o != nil; o = sp.objs.Next(o) {
			if o.state == stDestroy {
				dying++
			}
		}
		onLane := sp.lane.objs.Len()
		sp.lane.mu.Unlock()
		if sp.waiters.Len() > 0 {
			if onLane > 0 {
				return fmt.Errorf("key %s: %d waiters while %d objects are on its lane", k, sp.waiters.Len(), onLane)
			}
			for o := sp.idle.Front(); o != nil; o = sp.idle.Next(o) {
				if o.state == stIdle {
					return fmt.Errorf("key %s: %d waiters while it has an idle object", k, sp.waiters.Len())
				}
			}
		}
	}
	if dying != p.dying {
		return fmt.Errorf("p.dying %d, %d objects in stDestroy in the keys' objs lists", p.dying, dying)
	}
	inBackoff := 0
	for i, sp := range p.failing {
		switch {
		case sp == nil:
			return fmt.Errorf("failing[%d] is nil (len %d)", i, len(p.failing))
		case sp.bo == nil:
			return fmt.Errorf("failing[%d] (key %s) has no makeBackoff", i, sp.key)
		case sp.bo.at != i:
			return fmt.Errorf("failing[%d] (key %s) has bo.at %d", i, sp.key, sp.bo.at)
		case p.keys[sp.key] != sp:
			return fmt.Errorf("failing[%d] (key %s) is not the key's sub-pool in keys", i, sp.key)
		}
		if !sp.bo.until.IsZero() {
			inBackoff++
		}
	}
	for k, sp := range p.keys {
		if sp.bo != nil && (sp.bo.at >= len(p.failing) || p.failing[sp.bo.at] != sp) {
			return fmt.Errorf("key %s has a makeBackoff (at %d) but is not in failing (len %d)", k, sp.bo.at, len(p.failing))
		}
	}
	if inBackoff != p.backoffKeys {
		return fmt.Errorf("backoffKeys %d, %d failing keys in backoff", p.backoffKeys, inBackoff)
	}
	if p.evictNext != nil {
		found := false
		for o := p.idle.Front(); o != nil; o = p.idle.Next(o) {
			if o == p.evictNext {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("evictNext (key %s, state %d) is not in the idle list", p.evictNext.sub.key, p.evictNext.state)
		}
	}
	return nil
}

// For about two seconds, seven workers Borrow, Return and Invalidate over
// four keys (holding up to two objects, under MaxWait, so that waiters come
// and go and lanes switch on and off), with TestOnBorrow failing at random,
// a short MaxLifetime, MinIdlePerKey 1 and makes of one key failing at
// random; an observer runs evictions (one test each), ClearOldest, Clear,
// SetConfig (FIFO, limits), Stats and ForgetFailures; a checker takes the
// pool's lock at random moments and checks checkReview6Locked. At the end,
// with everything returned and quiet, Stats add up, and Close destroys every
// object exactly once.
func TestReview6StressInvariants(t *testing.T) {
	var (
		madeMu sync.Mutex
		made   []*r6Obj
		seq    atomic.Int64
		rngMu  sync.Mutex
		frng   = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 6))
	)
	chance := func(pct int) bool {
		rngMu.Lock()
		defer rngMu.Unlock()
		return frng.IntN(100) < pct
	}
	var badDestroy atomic.Int64
	f := factory.Funcs[string, *r6Obj]{
		MakeFunc: func(_ context.Context, key string) (*r6Obj, error) {
			if key == "d" && chance(30) {
				return nil, errR6Make
			}
			o := &r6Obj{key: key, n: seq.Add(1)}
			madeMu.Lock()
			made = append(made, o)
			madeMu.Unlock()
			return o, nil
		},
		DestroyFunc: func(_ context.Context, _ string, o *r6Obj) error {
			if o.destroys.Add(1) != 1 || o.lent.Load() != 0 {
				badDestroy.Add(1)
			}
			return nil
		},
		ValidateFunc: func(_ context.Context, _ string, o *r6Obj) error {
			if chance(15) {
				return errors.New("review6: validation failed")
			}
			return nil
		},
	}
	base := Config{
		MaxTotal: 6, MaxTotalPerKey: 2, MaxIdlePerKey: 2, MinIdlePerKey: 1,
		MaxWait: 20 * time.Millisecond, TestOnBorrow: true,
		MaxLifetime: 15 * time.Millisecond, NumTestsPerEvictionRun: 1,
		MakeFailureThreshold: 2, MakeBackoffBase: time.Millisecond, MakeBackoffMax: 5 * time.Millisecond,
	}
	p, err := New[string, *r6Obj](f, base)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = p.Close(ctx)
		}
	})
	keys := []string{"a", "b", "c", "d"}
	ctx := context.Background()
	stop := make(chan struct{})
	var workers, observer sync.WaitGroup
	var borrows, invalidates, borrowErrs atomic.Int64
	failf := func(format string, args ...any) {
		t.Errorf(format, args...)
	}
	for g := range 7 {
		workers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			var held []*Pooled[string, *r6Obj]
			give := func(i int) {
				h := held[i]
				held = append(held[:i], held[i+1:]...)
				o := h.Value()
				if o.lent.Add(-1) != 0 {
					failf("object %s#%d lent count went wrong on give-back", o.key, o.n)
				}
				var err error
				if rng.IntN(100) < 15 {
					invalidates.Add(1)
					err = p.Invalidate(h)
				} else {
					err = p.Return(h)
				}
				if err != nil {
					failf("Return/Invalidate(%s#%d) = %v", o.key, o.n, err)
				}
			}
			for {
				select {
				case <-stop:
					for len(held) > 0 {
						give(0)
					}
					return
				default:
				}
				// Calm phases (every other 100ms, for workers 3 and up) leave
				// the pool below its limits, so that lanes come on.
				if g >= 3 && time.Now().UnixMilli()/100%2 == 0 {
					for len(held) > 0 {
						give(0)
					}
					time.Sleep(time.Duration(1+rng.IntN(3)) * time.Millisecond)
					continue
				}
				if len(held) < 2 && (len(held) == 0 || rng.IntN(3) == 0) {
					k := keys[rng.IntN(len(keys))]
					h, err := p.Borrow(ctx, k)
					if err != nil {
						borrowErrs.Add(1)
						if !errors.Is(err, ErrExhausted) && !errors.Is(err, ErrValidation) &&
							!errors.Is(err, ErrBackoff) && !errors.Is(err, errR6Make) {
							failf("Borrow(%s) = %v", k, err)
						}
						continue
					}
					borrows.Add(1)
					o := h.Value()
					if o.key != k {
						failf("Borrow(%s) lent %s#%d", k, o.key, o.n)
					}
					if o.lent.Add(1) != 1 {
						failf("object %s#%d lent twice", o.key, o.n)
					}
					if o.destroys.Load() != 0 {
						failf("object %s#%d lent after it was destroyed", o.key, o.n)
					}
					held = append(held, h)
					if rng.IntN(4) == 0 {
						time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
					}
				} else {
					give(rng.IntN(len(held)))
				}
			}
		})
	}
	observer.Go(func() {
		rng := rand.New(rand.NewPCG(99, uint64(time.Now().UnixNano())))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := keys[rng.IntN(len(keys))]
			switch rng.IntN(8) {
			case 0, 1:
				if err := p.RunEviction(ctx); err != nil && !errors.Is(err, errR6Make) && !errors.Is(err, ErrBackoff) {
					failf("RunEviction() = %v", err)
				}
			case 2:
				if i%5 == 0 {
					_ = p.ClearOldest(ctx)
				}
			case 3:
				if i%5 == 0 {
					_ = p.Clear(ctx, k)
				}
			case 4:
				c := p.Config()
				c.FIFO = !c.FIFO
				c.MaxTotal = 3 + rng.IntN(6)
				c.MaxTotalPerKey = 1 + rng.IntN(3)
				c.MaxIdlePerKey = 1 + rng.IntN(2)
				if err := p.SetConfig(c); err != nil {
					failf("SetConfig() = %v", err)
				}
			case 5:
				_ = p.Stats()
			case 6:
				p.ForgetFailures(k)
			case 7:
				time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
			}
		}
	})
	deadline := time.Now().Add(2 * time.Second)
	crng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	checks, sawWaiters, sawLane, sawDying, sawFailing, sawCursor := 0, 0, 0, 0, 0, 0
	var failure error
	for failure == nil && time.Now().Before(deadline) {
		p.mu.Lock()
		failure = checkReview6Locked(p)
		if p.wq.Len() > 0 {
			sawWaiters++
		}
		if p.lanes.Load() != nil {
			for _, sp := range p.keys {
				if sp.lane.n.Load() > 0 {
					sawLane++
					break
				}
			}
		}
		if p.dying > 0 {
			sawDying++
		}
		if len(p.failing) > 0 {
			sawFailing++
		}
		if p.evictNext != nil {
			sawCursor++
		}
		p.mu.Unlock()
		checks++
		for range crng.IntN(40) {
			runtime.Gosched()
		}
	}
	close(stop)
	done := make(chan struct{})
	go func() { workers.Wait(); observer.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("workers did not stop within 20s (deadlock?)\n%s", buf[:runtime.Stack(buf, true)])
	}
	if failure != nil {
		t.Fatalf("after %d checks: %v", checks, failure)
	}
	t.Logf("%d checks: %d with waiters, %d with lane objects, %d with dying, %d with failing keys, %d with a cursor; %d borrows, %d invalidates, %d borrow errors",
		checks, sawWaiters, sawLane, sawDying, sawFailing, sawCursor, borrows.Load(), invalidates.Load(), borrowErrs.Load())
	if sawWaiters == 0 || sawLane == 0 {
		t.Errorf("the test needs waiters (%d) and lane objects (%d)", sawWaiters, sawLane)
	}

	// Quiet: nothing lent; wait for makes and destroys in flight to end.
	var s Stats
	quiet := time.Now().Add(5 * time.Second)
	for {
		s = p.Stats()
		if s.Active == 0 && s.Making == 0 && s.Waiters == 0 || time.Now().After(quiet) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	p.mu.Lock()
	err = checkReview6Locked(p)
	p.mu.Unlock()
	if err != nil {
		t.Errorf("at the end: %v", err)
	}
	if s.Active != 0 || s.Waiters != 0 || s.Making != 0 || s.SharesInUse != 0 {
		t.Errorf("at the end Stats() gauges = %+v, want nothing active, waiting or making", s.Gauges)
	}
	if s.Borrowed != s.Returned {
		t.Errorf("at the end Borrowed %d, Returned %d", s.Borrowed, s.Returned)
	}
	if s.Borrowed != borrows.Load() {
		t.Errorf("Stats().Borrowed %d, workers borrowed %d", s.Borrowed, borrows.Load())
	}
	if s.Created-s.Destroyed != int64(s.Idle) {
		t.Errorf("at the end Created %d - Destroyed %d != Idle %d", s.Created, s.Destroyed, s.Idle)
	}
	madeMu.Lock()
	nMade := len(made)
	madeMu.Unlock()
	if int64(nMade) != s.Created {
		t.Errorf("factory made %d objects, Stats().Created %d", nMade, s.Created)
	}

	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(cctx); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	closed = true
	madeMu.Lock()
	defer madeMu.Unlock()
	bad := 0
	for _, o := range made {
		if d := o.destroys.Load(); d != 1 {
			if bad < 10 {
				t.Errorf("object %s#%d destroyed %d times", o.key, o.n, d)
			}
			bad++
		}
	}
	if bad > 0 || badDestroy.Load() > 0 {
		t.Errorf("%d of %d objects not destroyed exactly once; %d destroys of a lent or destroyed object", bad, len(made), badDestroy.Load())
	}
	if s := p.Stats(); s.Created != s.Destroyed || s.Idle != 0 || s.Active != 0 {
		t.Errorf("after Close Stats() = %+v", s)
	}
}

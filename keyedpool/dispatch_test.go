package keyedpool_test

// Dispatch: parking and unparking of keys, first come first served across
// keys, requeue with a kept ticket, grants racing with give-ups and Close,
// and the SetConfig promises that go through the same paths.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// pending reports whether ch has no result yet (after synctest.Wait).
func pending(ch <-chan result) (result, bool) {
	select {
	case r := <-ch:
		return r, false
	default:
		return result{}, true
	}
}

// fmtObjs shows each object's state and leases.
func fmtObjs(objs []keyedpool.ObjectInfo) []string {
	var states []string
	for _, o := range objs {
		states = append(states, fmt.Sprintf("%v with %d leases", o.State, o.Shares))
	}
	return states
}

// Shared leases: a borrower that waits ("soon") for a share of an object
// of its key being activated must not be stranded when that object turns
// out, once activated, to be past MaxLifetime: lendLocked retires it
// instead of lending it, the key's activations went down (activatedLocked
// unparked the key) but nothing dispatches, so the waiter waits while the
// pool has room, and a later borrower of the same key is served at once,
// past it.
func TestSoonWaiterNotStrandedWhenAwaitedObjectExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := &testfactory.Factory{}
		gate := make(chan struct{})
		f.ActivateHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.ID == 1 {
				<-gate
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 2, MaxLifetime: time.Minute})
		a := borrowAsync(ctx, p, "k") // makes object 1, held in Activate
		synctest.Wait()
		b := borrowAsync(ctx, p, "k") // waits for object 1's second share
		synctest.Wait()
		if got := p.Stats().Waiters; got != 1 {
			t.Fatalf("Waiters = %d, want 1 (b waiting for the object being activated)", got)
		}
		time.Sleep(2 * time.Minute) // object 1 is now past MaxLifetime
		close(gate)
		synctest.Wait()
		ra := <-a
		if ra.err != nil {
			t.Fatalf("a's Borrow() = %v", ra.err)
		}
		defer mustReturn(t, p, ra.h)
		rb, waiting := pending(b)
		if waiting {
			s := p.Stats()
			// Show the consequence: a later borrower of the key is served
			// at once, past b (whom the object it makes then serves).
			c, err := p.Borrow(ctx, "k")
			if err == nil {
				defer mustReturn(t, p, c)
			}
			t.Fatalf("b still waits (Waiters %d, objects %d, no MaxTotal, MaxTotalPerKey 8) after the object it waited for "+
				"retired on activation; a later Borrow is served at once (%v): b is stranded until another borrower comes, and passed by it",
				s.Waiters, s.Active+s.Idle+s.Making, err)
		}
		if rb.err != nil {
			t.Fatalf("b's Borrow() = %v", rb.err)
		}
		mustReturn(t, p, rb.h)
	})
}

// Same root cause, with WhenExhausted Fail: a borrower that Fail let wait
// for an object on its way is stranded the same way.
func TestSoonWaiterNotStrandedWhenAwaitedObjectExpiresFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := &testfactory.Factory{}
		gate := make(chan struct{})
		f.ActivateHook = func(_ context.Context, o *testfactory.Obj) error {
			if o.ID == 1 {
				<-gate
			}
			return nil
		}
		p := testfactory.NewPool(t, f, keyedpool.Config{MaxSharesPerObject: 2, MaxLifetime: time.Minute, WhenExhausted: keyedpool.Fail})
		a := borrowAsync(ctx, p, "k")
		synctest.Wait()
		b := borrowAsync(ctx, p, "k")
		synctest.Wait()
		time.Sleep(2 * time.Minute)
		close(gate)
		synctest.Wait()
		ra := <-a
		if ra.err != nil {
			t.Fatalf("a's Borrow() = %v", ra.err)
		}
		defer mustReturn(t, p, ra.h)
		rb, waiting := pending(b)
		if waiting {
			t.Fatalf("b (WhenExhausted Fail) still waits, %d waiter(s), for an object that retired: it should have been served or failed",
				p.Stats().Waiters)
		}
		if rb.err == nil {
			mustReturn(t, p, rb.h)
		}
	})
}

// First come first served across keys with parked keys: room freed goes to
// the oldest waiter whose key can take it; a key at its own limit is
// skipped while it is, and gets its turn back, by its old ticket, as soon
// as its count goes down (not after later waiters of other keys).
func TestRoomGoesOldestFirstAcrossParkedKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 3, MaxTotalPerKey: 2})
		a1, a2 := mustBorrow(t, p, "a"), mustBorrow(t, p, "a")
		b1 := mustBorrow(t, p, "b")
		wa := borrowAsync(ctx, p, "a") // 1: a at its own limit
		synctest.Wait()
		wb := borrowAsync(ctx, p, "b") // 2: pool full
		synctest.Wait()
		wc := borrowAsync(ctx, p, "c") // 3: pool full
		synctest.Wait()
		// Room frees in b: a (older) cannot take it and is parked, b can.
		if err := p.Invalidate(b1); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		rb, waiting := pending(wb)
		if waiting || rb.err != nil {
			t.Fatalf("b's waiter after room freed in b: waiting %v, err %v", waiting, rb.err)
		}
		if _, waiting := pending(wa); !waiting {
			t.Fatal("a's waiter served while a is at its limit")
		}
		// Room frees in a: a is unparked and, older than c, gets it.
		if err := p.Invalidate(a1); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		ra, waiting := pending(wa)
		if waiting || ra.err != nil {
			_, cw := pending(wc)
			t.Fatalf("a's (older) waiter after room freed in a: waiting %v, err %v; c's (later) served %v", waiting, ra.err, !cw)
		}
		if _, waiting := pending(wc); !waiting {
			t.Fatal("c served though no room was left")
		}
		// Room frees in a again: a has no waiter, c gets it.
		mustReturn(t, p, a2) // idle object of a: c takes its room
		synctest.Wait()
		rc, waiting := pending(wc)
		if waiting || rc.err != nil {
			t.Fatalf("c's waiter after a's object went idle: waiting %v, err %v", waiting, rc.err)
		}
		for _, h := range []*handle{rb.h, ra.h, rc.h} {
			mustReturn(t, p, h)
		}
		if s := p.Stats(); s.Waiters != 0 || s.Borrowed != s.Returned {
			t.Errorf("Stats = %+v", s)
		}
	})
}

// The heap after a requeue: a borrower handed an object that fails
// validation, whose freed room an older waiter takes, goes back to its key
// with its old ticket, in front of a later waiter of the same key. Its
// key's place in the heap must follow (up), so that the next room goes to
// it, not to a waiter of another key that came after it but before its
// key's later waiter.
func TestRequeuedBorrowerKeepsItsPlaceAcrossKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p, f := newPool(t, keyedpool.Config{MaxTotal: 3, MaxTotalPerKey: 1, TestOnBorrow: true})
		var failing atomic.Pointer[testfactory.Obj]
		f.ValidateHook = func(ctx context.Context, o *testfactory.Obj) error {
			if o != failing.Load() {
				return nil
			}
			// While a1 is validated, b's waiter, older than a's, comes
			// out of its key's limit: it takes the room a1's destruction
			// frees, and a's waiter queues again.
			cfg := p.Config()
			cfg.MaxTotalPerKey = 2
			if err := p.SetConfig(cfg); err != nil {
				t.Errorf("SetConfig = %v", err)
			}
			return errors.New("broken")
		}
		b1 := mustBorrow(t, p, "b")
		a1 := mustBorrow(t, p, "a")
		x1 := mustBorrow(t, p, "x")
		wb := borrowAsync(ctx, p, "b") // t1, at b's limit
		synctest.Wait()
		wa1 := borrowAsync(ctx, p, "a") // t2, at a's limit
		synctest.Wait()
		wc := borrowAsync(ctx, p, "c") // t3
		synctest.Wait()
		we := borrowAsync(ctx, p, "e") // t4
		synctest.Wait()
		wa2 := borrowAsync(ctx, p, "a") // t5
		synctest.Wait()
		failing.Store(a1.Value())
		mustReturn(t, p, a1)
		synctest.Wait()
		rb, waiting := pending(wb)
		if waiting || rb.err != nil {
			t.Fatalf("b after the failed hand-off: waiting %v, err %v", waiting, rb.err)
		}
		if got := p.Stats().Waiters; got != 4 {
			t.Fatalf("Waiters = %d, want 4 (a1 again, c, e, a2)", got)
		}
		// Room frees: wa1 (t2) first, then c (t3), e (t4), wa2 (t5).
		if err := p.Invalidate(x1); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		r1, w1 := pending(wa1)
		if w1 || r1.err != nil {
			_, cw := pending(wc)
			t.Fatalf("requeued a (ticket 2) not served first: waiting %v, err %v; c (ticket 3) served %v", w1, r1.err, !cw)
		}
		mustReturn(t, p, rb.h) // its room goes to c
		synctest.Wait()
		rc, cw := pending(wc)
		if cw || rc.err != nil {
			t.Fatalf("c not served next: waiting %v, err %v", cw, rc.err)
		}
		mustReturn(t, p, r1.h) // its room goes to e (older than a2)
		synctest.Wait()
		re, ew := pending(we)
		if ew || re.err != nil {
			_, w2 := pending(wa2)
			t.Fatalf("e not served next: waiting %v, err %v; a2 served %v", ew, re.err, !w2)
		}
		mustReturn(t, p, rc.h)
		synctest.Wait()
		r2, w2 := pending(wa2)
		if w2 || r2.err != nil {
			t.Fatalf("a2 not served last: waiting %v, err %v", w2, r2.err)
		}
		mustReturn(t, p, b1)
		mustReturn(t, p, re.h)
		mustReturn(t, p, r2.h)
	})
}

// SetConfig raising MaxTotalPerKey unparks keys that were at the old limit,
// in ticket order, even when their waiters are older than the waiters that
// the pool-wide room serves.
func TestRaisedPerKeyLimitLetsParkedKeysInOldestFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 4, MaxTotalPerKey: 1})
		a, b := mustBorrow(t, p, "a"), mustBorrow(t, p, "b")
		x := mustBorrow(t, p, "x")
		wa := borrowAsync(ctx, p, "a") // 1: a at its limit
		synctest.Wait()
		wb := borrowAsync(ctx, p, "b") // 2: b at its limit
		synctest.Wait()
		// Room frees in x: the dispatch finds a and b at their limits and
		// parks them.
		if err := p.Invalidate(x); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if _, aw := pending(wa); !aw {
			t.Fatal("a served at its limit")
		}
		// Make room for one more key-limited waiter than the pool has room
		// for after the change: MaxTotal 3 leaves one object's room.
		setConfig(t, p, keyedpool.Config{MaxTotal: 3, MaxTotalPerKey: 2})
		synctest.Wait()
		ra, aw := pending(wa)
		_, bw := pending(wb)
		if aw || ra.err != nil || !bw {
			t.Fatalf("after raising MaxTotalPerKey: a (older) served %v err %v, b served %v; want only a", !aw, ra.err, !bw)
		}
		mustReturn(t, p, ra.h)
		synctest.Wait()
		rb, bw := pending(wb)
		if bw || rb.err != nil {
			t.Fatalf("b after a's object went idle: waiting %v, err %v", bw, rb.err)
		}
		for _, h := range []*handle{a, b, rb.h} {
			mustReturn(t, p, h)
		}
	})
}

// Shared leases with SetConfig switching to Fail: waiters that no object
// on its way will serve fail at once, as new ones would. Here the key is at
// MaxTotalPerKey 1 with one object being made that will take one more
// borrower: the first waiter waits for it, the second would fail if it
// came now, and must fail at the switch.
func TestSwitchToFailFailsSharedWaitersBeyondObjectsOnTheirWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := &testfactory.Factory{}
		gate := make(chan struct{})
		f.MakeHook = func(context.Context, string) error { <-gate; return nil }
		cfg := keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 1}
		p := testfactory.NewPool(t, f, cfg)
		m := borrowAsync(ctx, p, "k") // makes the key's one object
		synctest.Wait()
		w1 := borrowAsync(ctx, p, "k") // the object's second share
		synctest.Wait()
		w2 := borrowAsync(ctx, p, "k") // nothing on its way for it
		synctest.Wait()
		if got := p.Stats().Waiters; got != 2 {
			t.Fatalf("Waiters = %d, want 2", got)
		}
		cfg.WhenExhausted = keyedpool.Fail
		setConfig(t, p, cfg)
		synctest.Wait()
		// A new borrower fails at once:
		if _, err := p.Borrow(ctx, "k"); !errors.Is(err, keyedpool.ErrExhausted) {
			t.Errorf("new Borrow after the switch = %v, want ErrExhausted", err)
		}
		r2, waiting := pending(w2)
		close(gate)
		synctest.Wait()
		var hs []*handle
		for _, ch := range []<-chan result{m, w1} {
			if r := <-ch; r.err == nil {
				hs = append(hs, r.h)
			} else {
				t.Errorf("borrower served by the make: %v", r.err)
			}
		}
		if waiting {
			for _, h := range hs {
				mustReturn(t, p, h)
			}
			r2 = <-w2
			if r2.err == nil {
				mustReturn(t, p, r2.h)
			}
			t.Fatalf("second waiter, beyond what the make will serve, still waited after the switch to Fail (a new borrower fails at once); later got %v", r2.err)
		}
		if !errors.Is(r2.err, keyedpool.ErrExhausted) {
			t.Errorf("second waiter = %v, want ErrExhausted", r2.err)
		}
		for _, h := range hs {
			mustReturn(t, p, h)
		}
	})
}

// Shared leases with SetConfig lowering MaxTotalPerKey while objects of the
// key are being activated: once activated, objects over the new limit must
// take no new lease (README: "lent objects over the limit take no new lease
// and go when their last comes back"). retireSurplusLocked only sees lent
// objects, and ready() lends the newly activated ones without checking.
func TestLoweredPerKeyLimitHoldsForObjectsBeingActivated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := &testfactory.Factory{}
		gate := make(chan struct{})
		f.ActivateHook = func(context.Context, *testfactory.Obj) error { <-gate; return nil }
		cfg := keyedpool.Config{MaxSharesPerObject: 2, MaxTotalPerKey: 2}
		p := testfactory.NewPool(t, f, cfg)
		// Two borrowers, each making an object (the second is beyond what
		// the first object will take), both held in Activate.
		var chs []<-chan result
		chs = append(chs, borrowAsync(ctx, p, "k"))
		synctest.Wait()
		chs = append(chs, borrowAsync(ctx, p, "k")) // soon: 1 share of the first
		synctest.Wait()
		chs = append(chs, borrowAsync(ctx, p, "k")) // makes a second object
		synctest.Wait()
		if got := f.Made.Load(); got != 2 {
			t.Fatalf("made %d objects, want 2", got)
		}
		cfg.MaxTotalPerKey = 1
		setConfig(t, p, cfg)
		close(gate)
		synctest.Wait()
		var hs []*handle
		for _, ch := range chs {
			if r := <-ch; r.err == nil {
				hs = append(hs, r.h)
			} else {
				t.Errorf("Borrow() = %v", r.err)
			}
		}
		defer func() {
			for _, h := range hs {
				mustReturn(t, p, h)
			}
		}()
		// The key holds 2 objects against a limit of 1: one of them must take
		// no new lease. Both have room under the share cap (2 and 1 leases
		// of 2: the second has one free share).
		lendable := 0
		for _, o := range p.ListObjects("k") {
			if o.State == keyedpool.ObjectLent && o.Shares < 2 {
				lendable++
			}
		}
		bctx, cancel := context.WithTimeout(ctx, time.Second) // fake time: waits are bounded
		defer cancel()
		h, err := p.Borrow(bctx, "k")
		if err == nil {
			hs = append(hs, h)
		}
		objs := p.ListObjects("k")
		retiring := 0
		for _, o := range objs {
			if o.State == keyedpool.ObjectRetiring {
				retiring++
			}
		}
		if len(objs)-retiring > 1 {
			t.Errorf("after lowering MaxTotalPerKey to 1 during activation: %d objects of the key still take leases (%d lendable under the cap; a new Borrow got a share: %v); want at most 1. Objects: %s",
				len(objs)-retiring, lendable, err == nil, fmtObjs(objs))
		}
	})
}

// Grants racing with MaxWait: a waiter whose deadline passes at the very
// instant an object is given back either gets the object or ErrExhausted,
// and in both cases nothing is lost: no waiter left, every lease back, the
// object idle or lent, never both or neither. Run many times so that both
// orders come up.
func TestGrantRacingMaxWaitLosesNothing(t *testing.T) {
	got, exhausted := 0, 0
	for range 50 {
		synctest.Test(t, func(t *testing.T) {
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotal: 1, MaxWait: time.Second})
			h := mustBorrow(t, p, "a")
			w := borrowAsync(context.Background(), p, "b") // needs a's room
			synctest.Wait()
			time.Sleep(time.Second) // the deadline and the Return at once
			mustReturn(t, p, h)
			r := <-w
			synctest.Wait()
			switch {
			case r.err == nil:
				got++
				mustReturn(t, p, r.h)
			case errors.Is(r.err, keyedpool.ErrExhausted):
				exhausted++
			default:
				t.Fatalf("Borrow(b) = %v", r.err)
			}
			synctest.Wait()
			s := p.Stats()
			if s.Waiters != 0 || s.Active != 0 || s.Making != 0 || s.Borrowed != s.Returned || s.Idle != f.LiveAll() || s.Idle > 1 {
				t.Fatalf("after the race (served %v): Stats = %+v, live %d", r.err == nil, s, f.LiveAll())
			}
			// The pool still works for both keys.
			for _, k := range []string{"a", "b"} {
				mustReturn(t, p, mustBorrow(t, p, k))
			}
		})
	}
	t.Logf("served %d, exhausted %d", got, exhausted)
}

// Close racing with grants: waiters granted room, an idle object, or a
// share just before Close, and woken after it, get ErrClosed or an object
// they then give back; nothing is left lent, made or waiting, and Close
// drains.
func TestCloseRacingGrantsLeavesNothing(t *testing.T) {
	for _, shares := range []int{1, 3} {
		t.Run(fmt.Sprint("shares=", shares), func(t *testing.T) {
			for range 30 {
				synctest.Test(t, func(t *testing.T) {
					f := &testfactory.Factory{}
					p, err := keyedpool.New(f, keyedpool.Config{MaxTotal: 2, MaxTotalPerKey: 1, MaxSharesPerObject: shares})
					if err != nil {
						t.Fatal(err)
					}
					ctx := context.Background()
					a, b := mustBorrow(t, p, "a"), mustBorrow(t, p, "b")
					var chs []<-chan result
					for _, k := range []string{"a", "b", "c", "a", "c"} {
						chs = append(chs, borrowAsync(ctx, p, k))
						synctest.Wait()
					}
					// Give back and invalidate at the same moment as Close.
					go func() { _ = p.Return(a) }()
					go func() { _ = p.Invalidate(b) }()
					cctx, cancel := context.WithTimeout(ctx, time.Minute)
					defer cancel()
					done := make(chan error, 1)
					go func() { done <- p.Close(cctx) }()
					for _, ch := range chs {
						if r := <-ch; r.err == nil {
							if err := p.Return(r.h); err != nil {
								t.Errorf("Return after Close = %v", err)
							}
						} else if !errors.Is(r.err, keyedpool.ErrClosed) {
							t.Errorf("waiter = %v, want ErrClosed or an object", r.err)
						}
					}
					if err := <-done; err != nil {
						t.Errorf("Close() = %v", err)
					}
					s := p.Stats()
					if s.Waiters != 0 || s.Active != 0 || s.Idle != 0 || s.Making != 0 || f.LiveAll() != 0 || s.Borrowed != s.Returned {
						t.Errorf("after Close: Stats = %+v, live %d", s, f.LiveAll())
					}
					if err := f.Problems(); err != nil {
						t.Error(err)
					}
				})
			}
		})
	}
}

// Stress: many borrowers over a few keys, under MaxTotal and
// MaxTotalPerKey, giving up at random (ctx or MaxWait) while others return
// or invalidate. Every Borrow must end (bounded), and at the end no waiter
// is left, every lease is back, and objects are only idle. Then every key
// can still borrow (no key left parked with room free). Runs on the real
// clock, bounded at 30s.
func TestStressGrantsAndGiveUps(t *testing.T) {
	for _, shares := range []int{1, 2} {
		t.Run(fmt.Sprint("shares=", shares), func(t *testing.T) {
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotal: 6, MaxTotalPerKey: 3, MaxSharesPerObject: shares,
				MaxWait: 20 * time.Millisecond, TestOnBorrow: true})
			f.ActivateHook = func(context.Context, *testfactory.Obj) error {
				if rand.IntN(20) == 0 {
					return errors.New("activate")
				}
				return nil
			}
			keys := []string{"a", "b", "c", "d", "e"}
			var wg sync.WaitGroup
			var served, failed atomic.Int64
			stop := time.Now().Add(2 * time.Second)
			for g := range 24 {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(g), 7))
					for time.Now().Before(stop) {
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(5000))*time.Microsecond)
						h, err := p.Borrow(ctx, keys[r.IntN(len(keys))])
						cancel()
						if err != nil {
							failed.Add(1)
							continue
						}
						served.Add(1)
						if r.IntN(10) == 0 {
							_ = p.Invalidate(h)
						} else {
							_ = p.Return(h)
						}
					}
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("borrowers still running 30s in: a Borrow hangs; Stats = %+v", p.Stats())
			}
			// Makes of borrowers that gave up go on in the background and
			// their objects join the pool: wait for them (bounded).
			for deadline := time.Now().Add(5 * time.Second); p.Stats().Making != 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			s := p.Stats()
			if s.Waiters != 0 || s.Active != 0 || s.Making != 0 || s.Borrowed != s.Returned || s.Idle != f.LiveAll() {
				t.Fatalf("after the run: Stats = %+v, live %d", s, f.LiveAll())
			}
			if f.MaxLiveAll() > 6 || f.MaxLivePerKey() > 3 {
				t.Errorf("limits broken: most alive %d (MaxTotal 6), per key %d (3)", f.MaxLiveAll(), f.MaxLivePerKey())
			}
			f.ActivateHook = nil
			for _, k := range keys {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				h, err := p.Borrow(ctx, k)
				cancel()
				if err != nil {
					t.Fatalf("Borrow(%q) on a quiet pool = %v; Stats = %+v", k, err, p.Stats())
				}
				mustReturn(t, p, h)
			}
			t.Logf("served %d, failed %d", served.Load(), failed.Load())
		})
	}
}

// Shared leases with SetConfig lowering MaxTotal or MaxTotalPerKey: idle
// objects over the new limit are destroyed at once, and lent objects are
// retired only while the key (or pool) is still over it. Here the key holds
// two lent objects (4 and 1 leases of 4) and two idle ones; the new limit
// is 2: destroying the two idle objects brings it down to the limit, so
// both lent objects must go on lending, and a new borrower gets a share of
// the one with room. SetConfig counts the idle objects it has just doomed
// (still in total and sp.count until destroyed after unlock) as if they
// stayed, and retires lent objects for them too.
func TestLoweredLimitRetiresOnlyWhatIsOver(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  keyedpool.Config
	}{
		{"MaxTotal", keyedpool.Config{MaxSharesPerObject: 4, MaxTotal: 2, WhenExhausted: keyedpool.Fail}},
		{"MaxTotalPerKey", keyedpool.Config{MaxSharesPerObject: 4, MaxTotalPerKey: 2, WhenExhausted: keyedpool.Fail}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p, f := newPool(t, keyedpool.Config{MaxSharesPerObject: 4})
			var hs []*handle
			for range 5 {
				hs = append(hs, mustBorrow(t, p, "k")) // object 1: 4 leases, object 2: 1
			}
			defer returnAll(t, p, hs)
			for range 2 {
				if err := p.AddObject(ctx, "k"); err != nil {
					t.Fatal(err)
				}
			}
			if s := p.Stats(); f.Live("k") != 4 || s.Idle != 2 {
				t.Fatalf("live %d, idle %d; want 4 objects, 2 idle", f.Live("k"), s.Idle)
			}
			setConfig(t, p, tc.cfg)
			if got := f.Live("k"); got != 2 {
				t.Fatalf("live after SetConfig = %d, want 2 (the idle ones destroyed)", got)
			}
			h, err := p.Borrow(ctx, "k")
			if err != nil {
				t.Errorf("Borrow after lowering %s to 2 with 2 objects left = %v, want a share of the object with room; objects: %v",
					tc.name, err, fmtObjs(p.ListObjects("k")))
				return
			}
			hs = append(hs, h)
			if h.Value() != hs[4].Value() {
				t.Errorf("Borrow got object %d, want object %d (the one with room)", h.Value().ID, hs[4].Value().ID)
			}
		})
	}
}

// Every way a key at MaxTotalPerKey loses an object unparks it: its waiter,
// parked by an earlier dispatch (room freed in another key while the key
// was at its limit), gets the room. Exclusive use.
func TestParkedKeyUnparkedOnEveryCountDecrease(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  keyedpool.Config
		// lose makes the key's one object go, given its handle (nil when
		// the object is still being made).
		lose func(t *testing.T, p *pool, f *testfactory.Factory, h *handle, gate chan struct{})
		// making: the key's object is being made (held) when the waiter
		// queues, instead of lent.
		making bool
	}{
		{name: "Invalidate", lose: func(t *testing.T, p *pool, _ *testfactory.Factory, h *handle, _ chan struct{}) {
			if err := p.Invalidate(h); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "ReturnValidation", cfg: keyedpool.Config{TestOnReturn: true},
			lose: func(t *testing.T, p *pool, _ *testfactory.Factory, h *handle, _ chan struct{}) {
				h.Value().Dead.Store(true)
				_ = p.Return(h)
			}},
		{name: "LifetimeOnReturn", cfg: keyedpool.Config{MaxLifetime: time.Minute},
			lose: func(t *testing.T, p *pool, _ *testfactory.Factory, h *handle, _ chan struct{}) {
				time.Sleep(2 * time.Minute)
				mustReturn(t, p, h)
			}},
		{name: "Abandoned", cfg: keyedpool.Config{Abandoned: &keyedpool.AbandonedConfig{RemoveOnMaintenance: true, Timeout: time.Minute}},
			lose: func(t *testing.T, p *pool, _ *testfactory.Factory, _ *handle, _ chan struct{}) {
				time.Sleep(2 * time.Minute)
				_ = p.RunEviction(context.Background())
			}},
		{name: "MakeFails", making: true,
			lose: func(t *testing.T, p *pool, _ *testfactory.Factory, _ *handle, gate chan struct{}) {
				gate <- struct{}{} // the held make fails
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				f := &testfactory.Factory{}
				gate := make(chan struct{})
				var held atomic.Bool
				f.MakeHook = func(_ context.Context, key string) error {
					if key == "a" && held.CompareAndSwap(true, false) {
						<-gate
						return errors.New("make failed")
					}
					return nil
				}
				cfg := tc.cfg
				cfg.MaxTotal, cfg.MaxTotalPerKey = 2, 1
				p := testfactory.NewPool(t, f, cfg)
				var h *handle
				var first <-chan result
				if tc.making {
					held.Store(true)
					first = borrowAsync(ctx, p, "a")
				} else {
					h = mustBorrow(t, p, "a")
				}
				x := mustBorrow(t, p, "x")
				synctest.Wait()
				wa := borrowAsync(ctx, p, "a") // a at its limit
				synctest.Wait()
				wx := borrowAsync(ctx, p, "x") // pool full
				synctest.Wait()
				// Room frees in x: a is found at its limit and parked, x's
				// waiter gets the room.
				if err := p.Invalidate(x); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				rx, xw := pending(wx)
				if xw || rx.err != nil {
					t.Fatalf("x's waiter: waiting %v, err %v", xw, rx.err)
				}
				defer func() { _ = p.Return(rx.h) }() // Abandoned takes it back too
				if _, aw := pending(wa); !aw {
					t.Fatal("a's waiter served at a's limit")
				}
				tc.lose(t, p, f, h, gate)
				synctest.Wait()
				if first != nil {
					if r := <-first; r.err == nil {
						t.Fatal("held make succeeded")
					}
				}
				ra, aw := pending(wa)
				if aw {
					t.Fatalf("a's waiter still waits after a's object went (%s): Stats %+v", tc.name, p.Stats())
				}
				if ra.err != nil {
					t.Fatalf("a's waiter = %v", ra.err)
				}
				mustReturn(t, p, ra.h)
			})
		})
	}
}

// A waiter at the front of the queue, blocked by its own key's limit, does
// not keep room that frees from a later waiter of another key.
func TestKeyAtItsLimitDoesNotHoldRoomFromOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 2, MaxTotalPerKey: 1})
		a := mustBorrow(t, p, "a")
		x := mustBorrow(t, p, "x")
		wa := borrowAsync(context.Background(), p, "a") // blocked by a's own limit
		synctest.Wait()
		wb := borrowAsync(context.Background(), p, "b") // blocked by MaxTotal
		synctest.Wait()
		if err := p.Invalidate(x); err != nil {
			t.Fatal(err)
		}
		rb := <-wb
		if rb.err != nil {
			t.Fatalf("Borrow(b) = %v", rb.err)
		}
		mustReturn(t, p, a)
		if ra := <-wa; ra.err != nil || ra.h.Value() != a.Value() {
			t.Fatalf("Borrow(a) = %v, %v, want a's returned object", ra.h, ra.err)
		} else {
			mustReturn(t, p, ra.h)
		}
		mustReturn(t, p, rb.h)
	})
}

// An object of a key without waiters that goes idle makes room for another
// key's waiter blocked by MaxTotal.
func TestReturnedIdleObjectMakesRoomForOtherKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 1})
		h := mustBorrow(t, p, "a")
		wb := borrowAsync(context.Background(), p, "b")
		synctest.Wait()
		mustReturn(t, p, h)
		r := <-wb
		if r.err != nil || !h.Value().Destroyed() {
			t.Fatalf("Borrow(b) = %v with a's object destroyed %v, want b served in its room", r.err, h.Value().Destroyed())
		}
		mustReturn(t, p, r.h)
	})
}

// A busy key whose objects go straight to its own waiters cannot starve an
// older waiter of another key blocked by MaxTotal.
func TestOlderWaiterOfOtherKeyIsNotStarved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxTotal: 1})
		h := mustBorrow(t, p, "b")
		wa := borrowAsync(context.Background(), p, "a") // first in line
		synctest.Wait()
		wb := borrowAsync(context.Background(), p, "b") // later
		synctest.Wait()
		mustReturn(t, p, h)
		ra := <-wa
		if ra.err != nil || ra.h.Key() != "a" {
			t.Fatalf("Borrow(a) = %v, %v, want a served before the later b", ra.h, ra.err)
		}
		synctest.Wait()
		select {
		case r := <-wb:
			t.Fatalf("later Borrow(b) served before a gave back: %v, %v", r.h, r.err)
		default:
		}
		mustReturn(t, p, ra.h)
		if rb := <-wb; rb.err != nil {
			t.Fatalf("Borrow(b) = %v", rb.err)
		} else {
			mustReturn(t, p, rb.h)
		}
	})
}

// A waiter handed another key's idle object as room, that gives up before
// using it, leaves the object alive. Whether the grant or the cancellation
// wins is up to the scheduler, so the scenario runs 20 times: the order in
// which the borrower gives up after the grant then comes up with near
// certainty, and at least one run must have it.
func TestWaiterGivingUpKeepsOtherKeysObject(t *testing.T) {
	gaveUp := 0
	for range 20 {
		synctest.Test(t, func(t *testing.T) {
			f := &testfactory.Factory{}
			p := testfactory.NewPool(t, f, keyedpool.Config{MaxTotal: 1})
			a := mustBorrow(t, p, "a")
			ctx, cancel := context.WithCancel(context.Background())
			ch := borrowAsync(ctx, p, "b")
			synctest.Wait()
			// Cancel inside the Passivate of a's return: the grant of a's
			// object as room for b and the cancellation race.
			f.PassivateHook = func(context.Context, *testfactory.Obj) error { cancel(); return nil }
			mustReturn(t, p, a)
			r := <-ch
			synctest.Wait()
			if r.err == nil {
				mustReturn(t, p, r.h)
				return
			}
			gaveUp++
			if a.Value().Destroyed() {
				t.Errorf("Borrow(b) gave up (%v), yet a's object was destroyed for it", r.err)
			}
		})
	}
	if gaveUp == 0 {
		t.Error("no run had the borrower give up: the scenario no longer exercises the race")
	}
}

package keyedpool_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// A borrower whose context ends while an idle object is being activated
// (a health check that honours ctx) gives up; the object is not to blame and
// goes back, and the other idle objects are left alone.
func TestBorrowerGivingUpDuringActivationKeepsObjects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		p := newPoolWith(t, f, keyedpool.Config{})
		var hs []*handle
		for range 5 {
			hs = append(hs, mustBorrow(t, p, "a"))
		}
		for _, h := range hs {
			mustReturn(t, p, h)
		}
		f.ActivateHook = func(ctx context.Context, _ *testfactory.Obj) error {
			select {
			case <-time.After(2 * time.Second): // slow but healthy
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := p.Borrow(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Borrow() = %v, want DeadlineExceeded", err)
		}
		if s := p.Stats(); s.Destroyed != 0 || s.Idle != 5 || s.Created != 5 || s.Borrowed != 5 {
			t.Errorf("Stats() = %+v, want the 5 idle objects kept and no borrow counted", s)
		}
	})
}

// A stale handle given back while the pool is activating its object for a
// new borrower fails and does not disturb that borrower (it used to put the
// object in two lists at once).
func TestStaleReturnDuringActivationFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{}
		p := newPoolWith(t, f, keyedpool.Config{MaxSharesPerObject: 2})
		h1 := mustBorrow(t, p, "a")
		mustReturn(t, p, h1)
		f.ActivateHook = func(context.Context, *testfactory.Obj) error { time.Sleep(time.Second); return nil }
		ch := borrowAsync(context.Background(), p, "a") // reuses h1's handle
		synctest.Wait()
		if err := p.Return(h1); !errors.Is(err, keyedpool.ErrNotBorrowed) {
			t.Errorf("stale Return() during activation = %v, want ErrNotBorrowed", err)
		}
		r := <-ch
		if r.err != nil {
			t.Fatalf("Borrow() = %v", r.err)
		}
		mustReturn(t, p, r.h)
	})
}

// With shared leases a burst of borrowers on a cold key waits for the one
// object being made instead of making one each: for gRPC, one dial, not a
// storm.
func TestSharedColdBurstMakesOneObject(t *testing.T) {
	for _, action := range []keyedpool.ExhaustedAction{keyedpool.Block, keyedpool.Fail} {
		t.Run(action.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &testfactory.Factory{MakeHook: func(context.Context, string) error {
					time.Sleep(100 * time.Millisecond) // a dial
					return nil
				}}
				p := newPoolWith(t, f, keyedpool.Config{MaxSharesPerObject: 100, WhenExhausted: action})
				hs := borrowAtOnce(t, p, "k", 8)
				if got := f.Made.Load(); got != 1 {
					t.Errorf("objects made for 8 borrowers with 100 shares each = %d, want 1", got)
				}
				returnAll(t, p, hs)
			})
		})
	}
}

// With shared leases, borrowers beyond what the objects in the making can
// take still make their own.
func TestSharedBurstBeyondPendingMakesMore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &testfactory.Factory{MakeHook: func(context.Context, string) error {
			time.Sleep(100 * time.Millisecond)
			return nil
		}}
		p := newPoolWith(t, f, keyedpool.Config{MaxSharesPerObject: 2})
		hs := borrowAtOnce(t, p, "k", 6)
		if got := f.Made.Load(); got != 3 {
			t.Errorf("objects made for 6 borrowers with 2 shares each = %d, want 3", got)
		}
		returnAll(t, p, hs)
	})
}

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
// wins is up to the scheduler, so the scenario runs 20 times: the losing
// order, which used to destroy the object, then comes up with near
// certainty.
func TestWaiterGivingUpKeepsVictim(t *testing.T) {
	gaveUp := 0
	for range 20 {
		synctest.Test(t, func(t *testing.T) {
			f := &testfactory.Factory{}
			p := newPoolWith(t, f, keyedpool.Config{MaxTotal: 1})
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

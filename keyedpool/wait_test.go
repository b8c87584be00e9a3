package keyedpool_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// One MaxWait deadline covers the whole Borrow: a waiter handed an object
// that fails validation waits again only for what is left of it.
func TestMaxWaitBoundsTheWholeBorrow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p, f := newPool(t, keyedpool.Config{MaxTotalPerKey: 1, MaxWait: 600 * time.Millisecond, TestOnBorrow: true})
		a := mustBorrow(t, p, "k")
		start := time.Now()
		b := borrowAsync(ctx, p, "k")
		synctest.Wait()
		time.Sleep(400 * time.Millisecond)
		// B gets a and finds it dead; the room a's destruction frees is
		// B's, and its make takes a second: B waits for what is left of
		// its 600ms, not for 600ms more.
		f.MakeHook = func(context.Context, string) error {
			time.Sleep(time.Second)
			return nil
		}
		a.Value().Dead.Store(true)
		mustReturn(t, p, a)
		rb := <-b
		if !errors.Is(rb.err, keyedpool.ErrExhausted) {
			t.Errorf("B's Borrow() = %v, want ErrExhausted", rb.err)
		}
		if got, want := time.Since(start), 600*time.Millisecond; got != want {
			t.Errorf("B failed after %v, want %v (MaxWait counted once per Borrow)", got, want)
		}
		time.Sleep(time.Second) // the make ends; its object joins the pool
		synctest.Wait()
		if got := p.KeyStats("k").Idle; got != 1 {
			t.Errorf("Idle after the make ended = %d, want 1", got)
		}
	})
}

// The same holds for a make: a Borrow whose make outlasts MaxWait fails at
// the deadline, and the object joins the pool when it is made.
func TestMaxWaitBoundsAMake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{MaxWait: 100 * time.Millisecond})
		f.MakeHook = func(context.Context, string) error {
			time.Sleep(time.Second)
			return nil
		}
		start := time.Now()
		_, err := p.Borrow(context.Background(), "k")
		if !errors.Is(err, keyedpool.ErrExhausted) || time.Since(start) != 100*time.Millisecond {
			t.Errorf("Borrow() = %v after %v, want ErrExhausted after 100ms", err, time.Since(start))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := p.KeyStats("k").Idle; got != 1 {
			t.Errorf("Idle after the make ended = %d, want 1", got)
		}
	})
}

// A borrower whose hand-off failed goes back to its place in line: ahead
// of those who came after it.
func TestFailedHandOffKeepsPlaceInLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 2, TestOnBorrow: true})
		a1, a2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k")
		b := borrowAsync(ctx, p, "k")
		synctest.Wait()
		c := borrowAsync(ctx, p, "k")
		synctest.Wait()
		d := borrowAsync(ctx, p, "k")
		synctest.Wait()
		// B is handed a1, which is dead: the room its destruction frees is
		// B's, ahead of C and D, who came after it.
		a1.Value().Dead.Store(true)
		mustReturn(t, p, a1)
		synctest.Wait()
		var rb result
		select {
		case rb = <-b:
			if rb.err != nil {
				t.Fatalf("B's Borrow() = %v", rb.err)
			}
		default:
			_, cw := pending(c)
			t.Fatalf("B lost its place when its hand-off failed (C served: %v)", !cw)
		}
		if _, cw := pending(c); !cw {
			t.Fatal("C served too, over MaxTotalPerKey")
		}
		// The next object back is C's, then D's.
		mustReturn(t, p, a2)
		synctest.Wait()
		rc, cw := pending(c)
		if cw || rc.err != nil {
			t.Fatalf("C after a2 came back: waiting %v, err %v", cw, rc.err)
		}
		mustReturn(t, p, rb.h)
		rd := <-d
		if rd.err != nil {
			t.Fatalf("D's Borrow() = %v", rd.err)
		}
		mustReturn(t, p, rc.h)
		mustReturn(t, p, rd.h)
	})
}

// The same holds for an object past MaxLifetime when it is handed over, and
// for one lent from its key's lane (see lane.go) that fails validation
// while others queue: the room its destruction frees is its borrower's,
// ahead of those who came after.
func TestFailedHandOffKeepsPlaceInLineEveryWay(t *testing.T) {
	t.Run("MaxLifetime", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			p, f := newPool(t, keyedpool.Config{MaxTotalPerKey: 1, MaxLifetime: time.Second, TestWhileIdle: true})
			mustReturn(t, p, mustBorrow(t, p, "k"))
			// An eviction run tests the idle object for a second, over
			// which it outlives MaxLifetime; B and then C wait for it.
			f.ValidateHook = func(context.Context, *testfactory.Obj) error {
				time.Sleep(time.Second)
				return nil
			}
			time.Sleep(500 * time.Millisecond)
			evicted := make(chan error, 1)
			go func() { evicted <- p.RunEviction(ctx) }()
			synctest.Wait()
			f.ValidateHook = nil
			b := borrowAsync(ctx, p, "k")
			synctest.Wait()
			c := borrowAsync(ctx, p, "k")
			synctest.Wait()
			if err := <-evicted; err != nil {
				t.Fatalf("RunEviction() = %v", err)
			}
			synctest.Wait()
			rb, bw := pending(b)
			_, cw := pending(c)
			if bw || rb.err != nil || !cw {
				t.Fatalf("B waiting %v, err %v; C served %v: want B served, C waiting", bw, rb.err, !cw)
			}
			if got := p.Stats().DestroyedByLifetime; got != 1 {
				t.Errorf("Stats().DestroyedByLifetime = %d, want 1: B's object was past MaxLifetime", got)
			}
			mustReturn(t, p, rb.h)
			rc := <-c
			if rc.err != nil {
				t.Fatalf("C's Borrow() = %v", rc.err)
			}
			mustReturn(t, p, rc.h)
		})
	})
	t.Run("lane", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			p, f := newPool(t, keyedpool.Config{MaxTotalPerKey: 2, TestOnBorrow: true})
			a1, a2 := mustBorrow(t, p, "k"), mustBorrow(t, p, "k")
			mustReturn(t, p, a1) // nobody waits: onto k's lane
			validating, fail := make(chan struct{}), make(chan struct{})
			f.ValidateHook = func(ctx context.Context, o *testfactory.Obj) error {
				if o != a1.Value() {
					return nil
				}
				close(validating)
				<-fail
				return errors.New("broken")
			}
			b := borrowAsync(ctx, p, "k") // lent a1, validates it
			<-validating
			c := borrowAsync(ctx, p, "k") // came after B: waits
			synctest.Wait()
			close(fail)
			synctest.Wait()
			rb, bw := pending(b)
			_, cw := pending(c)
			if bw || rb.err != nil || !cw {
				t.Fatalf("B waiting %v, err %v; C served %v: want B served, C waiting", bw, rb.err, !cw)
			}
			mustReturn(t, p, a2)
			rc := <-c
			if rc.err != nil {
				t.Fatalf("C's Borrow() = %v", rc.err)
			}
			mustReturn(t, p, rb.h)
			mustReturn(t, p, rc.h)
		})
	})
}

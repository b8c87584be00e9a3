package keyedpool_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/keyedpool"
)

// One MaxWait deadline covers the whole Borrow: a waiter handed an object
// that fails validation waits again only for what is left of it.
func TestMaxWaitBoundsTheWholeBorrow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 1, MaxWait: 600 * time.Millisecond, TestOnBorrow: true})
		a := mustBorrow(t, p, "k")
		start := time.Now()
		b := borrowAsync(ctx, p, "k")
		synctest.Wait()
		c := borrowAsync(ctx, p, "k")
		synctest.Wait()
		time.Sleep(400 * time.Millisecond)
		// B gets a and finds it dead; its room goes on to C, who makes one.
		a.Value().Dead.Store(true)
		mustReturn(t, p, a)
		synctest.Wait()
		rc := <-c
		if rc.err != nil {
			t.Fatalf("C's Borrow() = %v, want the room a's destroy freed", rc.err)
		}
		rb := <-b
		if !errors.Is(rb.err, keyedpool.ErrExhausted) {
			t.Errorf("B's Borrow() = %v, want ErrExhausted", rb.err)
		}
		if got, want := time.Since(start), 600*time.Millisecond; got != want {
			t.Errorf("B failed after %v, want %v (MaxWait counted once per Borrow)", got, want)
		}
		mustReturn(t, p, rc.h)
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
		// B is handed a1, which is dead; the freed room goes to C.
		a1.Value().Dead.Store(true)
		mustReturn(t, p, a1)
		synctest.Wait()
		rc := <-c
		if rc.err != nil {
			t.Fatalf("C's Borrow() = %v", rc.err)
		}
		// The next object back is B's, not D's.
		mustReturn(t, p, a2)
		synctest.Wait()
		select {
		case rb := <-b:
			if rb.err != nil {
				t.Fatalf("B's Borrow() = %v", rb.err)
			}
			mustReturn(t, p, rb.h)
		default:
			t.Fatal("a2 went to D, who came after B: B lost its place when its hand-off failed")
		}
		mustReturn(t, p, rc.h)
		rd := <-d
		if rd.err != nil {
			t.Fatalf("D's Borrow() = %v", rd.err)
		}
		mustReturn(t, p, rd.h)
	})
}

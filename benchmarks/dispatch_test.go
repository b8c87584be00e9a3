package benchmarks_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/keyedpool"
	"vitess.io/vitess/go/pools/smartconnpool"
)

// dispatchTimeout bounds a whole Dispatch sub-benchmark: setting up its
// waiters, the timed loop and the teardown. A lost wake-up fails it instead
// of hanging it. Far more than a run takes at the usual -benchtime.
const dispatchTimeout = 2 * time.Minute

// dispatchWaiters are the queue lengths BenchmarkDispatch compares.
var dispatchWaiters = []int{1000, 10_000}

// BenchmarkDispatch measures what one event costs kpool while W borrowers
// wait in Borrow, for W of 1000 and 10,000: the two must cost about the
// same (within 1.3x), or a long queue makes every Return slower just when
// the pool is busiest. Every key has MaxTotalPerKey 1, and MaxTotal has no
// limit, so that only the per-key limit makes borrowers wait.
//
//   - event=ReturnOtherKey: W borrowers wait for key "blocked", whose one
//     object is lent for the whole run; the timed loop borrows and returns
//     the idle object of key "other". None of the waiters can take it, and
//     the Return must not look at each of them to find that out.
//   - event=InvalidateSameKey: W borrowers wait for key "k"; the timed loop
//     invalidates the key's one object, which frees room for the first
//     waiter, who makes a new object.
//   - event=ReturnSameKey: the same, but the loop returns the object, which
//     goes to the first waiter.
//
// In the last two a served waiter hands its object to the timed loop over a
// channel and borrows again, at the back of the line, so the queue stays W
// long (W-1 while the object is on its way) and every iteration is one
// event, one hand-off between goroutines and, for Invalidate, one make.
//
// Being first come first served, the line rotates: the waiter served is
// the one that last ran W events ago, whose goroutine (its g, its stack,
// its wait records) has left the CPU's caches and TLB by then, more so at
// 10,000 than at 1000. Every pool pays that, and the baselines show how
// much of a same-key event's growth with W it is:
//
//   - event=ReturnSameKeyVitess is ReturnSameKey on vitess smartconnpool,
//     capacity 1, W waiting in Get;
//   - event=ChanHandoff rotates the same W goroutines through an
//     unbuffered channel (whose receivers are served in order too), each
//     waiting in a select with its context, as a pool's waiter must, with
//     no pool at all;
//   - event=ChanHandoffBare is the same with a bare receive, no select: the
//     least a hand-off to the longest waiting of W parked goroutines costs
//     in Go.
//
// What the bare hand-off gains from W = 1000 to 10,000 every same-key row
// gains too, whatever the pool does; a pool's own growth is what it gains
// beyond that. (On the 2-core AMD EPYC VM of README's tables the bare
// hand-off gains about 0.4 µs, more on its own than the 30% that 1.3x
// leaves a Return of kpool's or vitess's at W = 1000: see README.)
//
// Setting up 10,000 waiters takes some tens of milliseconds, outside the
// timer (b.Loop runs the setup once).
func BenchmarkDispatch(b *testing.B) {
	for _, w := range dispatchWaiters {
		b.Run(fmt.Sprintf("Waiters=%d", w), func(b *testing.B) {
			b.Run("event=ReturnOtherKey", func(b *testing.B) { dispatchOtherKey(b, w) })
			b.Run("event=InvalidateSameKey", func(b *testing.B) {
				dispatchSameKey(b, w, (*keyedpool.Pool[string, *conn]).Invalidate)
			})
			b.Run("event=ReturnSameKey", func(b *testing.B) {
				dispatchSameKey(b, w, (*keyedpool.Pool[string, *conn]).Return)
			})
			b.Run("event=ReturnSameKeyVitess", func(b *testing.B) { dispatchVitess(b, w) })
			b.Run("event=ChanHandoff", func(b *testing.B) { dispatchChanBaseline(b, w) })
			b.Run("event=ChanHandoffBare", func(b *testing.B) { dispatchChanBare(b, w) })
		})
	}
}

// dispatchPool returns the pool of a Dispatch sub-benchmark, and the
// context that bounds the sub-benchmark.
func dispatchPool(b *testing.B) (*keyedpool.Pool[string, *conn], context.Context) {
	p, err := keyedpool.New(kpoolFactory, keyedpool.Config{MaxTotalPerKey: 1})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dispatchTimeout)
	b.Cleanup(func() {
		cancel()
		closeKpool(b, p)
	})
	return p, ctx
}

// startWaiters starts n goroutines running borrower, each with a context
// that stop cancels; stop then waits for them all to end. A borrower
// returns when its context ends, and may call b.Error but not b.Fatal.
func startWaiters(ctx context.Context, n int, borrower func(ctx context.Context)) (stop func()) {
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { borrower(wctx) })
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// awaitWaiters waits until p has n borrowers blocked in Borrow, or ctx
// ends, or a borrower failed.
func awaitWaiters(ctx context.Context, b *testing.B, p *keyedpool.Pool[string, *conn], n int) {
	for p.Stats().Waiters < n {
		if b.Failed() {
			b.FailNow()
		}
		select {
		case <-ctx.Done():
			b.Fatalf("Stats().Waiters = %d after %v, want %d", p.Stats().Waiters, dispatchTimeout, n)
		case <-time.After(time.Millisecond):
		}
	}
}

// endedByStop reports whether err is the error a borrower gets when the
// sub-benchmark stops its waiters; anything else is a failure.
func endedByStop(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, context.Canceled)
}

func dispatchOtherKey(b *testing.B, w int) {
	p, ctx := dispatchPool(b)
	held, err := p.Borrow(ctx, "blocked")
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := p.Return(held); err != nil {
			b.Errorf("Return(blocked) = %v, want nil", err)
		}
	}()
	// One idle object of "other", which the timed loop borrows and returns.
	h, err := p.Borrow(ctx, "other")
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Return(h); err != nil {
		b.Fatal(err)
	}

	stop := startWaiters(ctx, w, func(ctx context.Context) {
		h, err := p.Borrow(ctx, "blocked")
		switch {
		case err == nil:
			b.Error(`Borrow("blocked") lent an object held all along`)
			_ = p.Return(h)
		case !endedByStop(ctx, err):
			b.Errorf(`Borrow("blocked") = %v, want context.Canceled at the end`, err)
		}
	})
	defer stop()
	awaitWaiters(ctx, b, p, w)

	b.ReportAllocs()
	for b.Loop() {
		h, err := p.Borrow(ctx, "other")
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Return(h); err != nil {
			b.Fatal(err)
		}
	}
}

// dispatchSameKey runs event on the one object of key "k" while w
// borrowers wait for it.
func dispatchSameKey(b *testing.B, w int, event func(*keyedpool.Pool[string, *conn], *keyedpool.Pooled[string, *conn]) error) {
	p, ctx := dispatchPool(b)
	held, err := p.Borrow(ctx, "k")
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if held == nil {
			return
		}
		if err := p.Return(held); err != nil {
			b.Errorf("Return(k) = %v, want nil", err)
		}
	}()

	// Unbuffered: a served waiter holds its object until the timed loop
	// takes it, so that the object is never in two places.
	handles := make(chan *keyedpool.Pooled[string, *conn])
	stop := startWaiters(ctx, w, func(ctx context.Context) {
		for {
			h, err := p.Borrow(ctx, "k")
			if err != nil {
				if !endedByStop(ctx, err) {
					b.Errorf(`Borrow("k") = %v, want context.Canceled at the end`, err)
				}
				return
			}
			select {
			case handles <- h:
			case <-ctx.Done():
				if err := p.Return(h); err != nil {
					b.Errorf("Return(k) = %v, want nil", err)
				}
				return
			}
		}
	})
	// Runs before the deferred Return of held: the waiters are gone, so
	// that Return hands the object to nobody.
	defer stop()
	awaitWaiters(ctx, b, p, w)

	b.ReportAllocs()
	for b.Loop() {
		h := held
		held = nil
		if err := event(p, h); err != nil {
			b.Fatal(err)
		}
		select {
		case held = <-handles:
		case <-ctx.Done():
			b.Fatalf("no waiter was served within %v", dispatchTimeout)
		}
	}
}

// dispatchChanBaseline hands one value around w goroutines through an
// unbuffered channel, as dispatchSameKey hands the object of "k" around
// its waiters, without a pool.
func dispatchChanBaseline(b *testing.B, w int) {
	ctx, cancel := context.WithTimeout(context.Background(), dispatchTimeout)
	defer cancel()
	objs := make(chan *conn) // the line: receivers are served in order
	back := make(chan *conn)
	var started atomic.Int64
	stop := startWaiters(ctx, w, func(ctx context.Context) {
		started.Add(1)
		for {
			select {
			case c := <-objs:
				select {
				case back <- c:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	})
	defer stop()
	// A channel does not say how many wait on it: wait until all have
	// started, and then a little, for the last to reach their receive.
	for started.Load() < int64(w) {
		select {
		case <-ctx.Done():
			b.Fatalf("%d of %d goroutines started within %v", started.Load(), w, dispatchTimeout)
		case <-time.After(time.Millisecond):
		}
	}
	time.Sleep(10 * time.Millisecond)

	c := newConn()
	b.ReportAllocs()
	for b.Loop() {
		select {
		case objs <- c:
		case <-ctx.Done():
			b.Fatalf("no receiver took the value within %v", dispatchTimeout)
		}
		select {
		case c = <-back:
		case <-ctx.Done():
			b.Fatalf("the value did not come back within %v", dispatchTimeout)
		}
	}
}

// dispatchVitess is dispatchSameKey's ReturnSameKey on a vitess
// smartconnpool of capacity 1: w goroutines wait in Get, and each Recycle
// of the timed loop goes to one of them.
func dispatchVitess(b *testing.B, w int) {
	ctx, cancel := context.WithTimeout(context.Background(), dispatchTimeout)
	defer cancel()
	p, err := newVitess(1, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer closeVitess(b, p)
	held, err := p.Get(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	handles := make(chan *smartconnpool.Pooled[*conn])
	var started atomic.Int64
	stop := startWaiters(ctx, w, func(ctx context.Context) {
		started.Add(1)
		for {
			c, err := p.Get(ctx, nil)
			if err != nil {
				if ctx.Err() == nil {
					b.Errorf("vitess Get() = %v, want a connection or the end", err)
				}
				return
			}
			select {
			case handles <- c:
			case <-ctx.Done():
				c.Recycle()
				return
			}
		}
	})
	// vitess does not say how many wait: wait until all have started,
	// and then a while, for the last to reach their wait.
	for started.Load() < int64(w) {
		select {
		case <-ctx.Done():
			b.Fatalf("%d of %d goroutines started within %v", started.Load(), w, dispatchTimeout)
		case <-time.After(time.Millisecond):
		}
	}
	time.Sleep(100 * time.Millisecond)

	b.ReportAllocs()
	for b.Loop() {
		held.Recycle()
		select {
		case held = <-handles:
		case <-ctx.Done():
			b.Fatalf("no waiter was served within %v", dispatchTimeout)
		}
	}
	b.StopTimer()
	held.Recycle()
	stop()
}

// dispatchChanBare is dispatchChanBaseline without the select on the
// context: each of w goroutines receives on one unbuffered channel and
// sends what it got back on another, and does nothing else. It is the
// least that handing a value to the longest waiting of w parked goroutines
// costs in Go, pool or no pool: waking a goroutine that last ran w
// hand-offs ago. What it gains from 1000 to 10,000 goroutines, every
// same-key row gains too, whatever the pool does.
func dispatchChanBare(b *testing.B, w int) {
	objs := make(chan *conn) // the line: receivers are served in order
	back := make(chan *conn)
	var started atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Go(func() {
			started.Add(1)
			for c := range objs {
				back <- c
			}
		})
	}
	// Nothing here can end a lost wake-up but the watchdog.
	watchdog := time.AfterFunc(dispatchTimeout, func() {
		panic(fmt.Sprintf("event=ChanHandoffBare, %d goroutines: no hand-off within %v", w, dispatchTimeout))
	})
	defer func() {
		close(objs)
		wg.Wait()
		watchdog.Stop()
	}()
	for started.Load() < int64(w) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // for the last to reach their receive

	c := newConn()
	b.ReportAllocs()
	for b.Loop() {
		objs <- c
		c = <-back
	}
}

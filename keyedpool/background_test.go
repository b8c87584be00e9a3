package keyedpool_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

type swallowedError struct {
	key any
	op  keyedpool.Op
	err error
}

// listen returns a listener that records what it receives.
func listen() (keyedpool.SwallowedErrorListener, func() []swallowedError) {
	var mu sync.Mutex
	var got []swallowedError
	return keyedpool.SwallowedErrorFunc(func(key any, op keyedpool.Op, err error) {
			mu.Lock()
			got = append(got, swallowedError{key, op, err})
			mu.Unlock()
		}), func() []swallowedError {
			mu.Lock()
			defer mu.Unlock()
			return append([]swallowedError(nil), got...)
		}
}

// Errors of work no caller waits for are counted by operation, per pool
// and per key, and handed to the listener with their key.
func TestBackgroundErrorsCountedAndListened(t *testing.T) {
	errDestroy, errMake, errValidate := errors.New("destroy failed"), errors.New("make failed"), errors.New("dead")
	l, got := listen()
	f := &testfactory.Factory{}
	evictA := evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool { return c.Key == "a" })
	p := testfactory.NewPool(t, f, keyedpool.Config{
		MinIdlePerKey: 1, TestWhileIdle: true, NumTestsPerEvictionRun: -1,
		EvictionPolicy: evictA, SwallowedErrorListener: l,
	})
	mustReturn(t, p, mustBorrow(t, p, "a"))
	b := mustBorrow(t, p, "b")
	mustReturn(t, p, b)
	f.DestroyHook = func(context.Context, *testfactory.Obj) error { return errDestroy }
	f.MakeHook = func(context.Context, string) error { return errMake }
	f.ValidateHook = func(_ context.Context, o *testfactory.Obj) error {
		if o.Key == "b" {
			return errValidate
		}
		return nil
	}
	// The run evicts a's object (its Destroy fails), fails b's test (its
	// Destroy fails too), and makes up both keys' min idle (both fail).
	if err := p.RunEviction(context.Background()); !errors.Is(err, errDestroy) || !errors.Is(err, errMake) {
		t.Errorf("RunEviction() = %v, want the destroy and make errors joined", err)
	}
	want := keyedpool.BackgroundErrors{Destroy: 2, Make: 2, Validate: 1}
	if s := p.Stats(); s.BackgroundErrors != want {
		t.Errorf("Stats().BackgroundErrors = %+v, want %+v", s.BackgroundErrors, want)
	}
	if ks := p.KeyStats("b"); ks.BackgroundErrors != (keyedpool.BackgroundErrors{Destroy: 1, Make: 1, Validate: 1}) {
		t.Errorf(`KeyStats("b").BackgroundErrors = %+v, want one of each`, ks.BackgroundErrors)
	}
	count := map[keyedpool.Op]int{}
	for _, e := range got() {
		count[e.op]++
		wantErr := map[keyedpool.Op]error{keyedpool.OpDestroy: errDestroy, keyedpool.OpMake: errMake, keyedpool.OpValidate: errValidate}[e.op]
		if !errors.Is(e.err, wantErr) || (e.key != "a" && e.key != "b") {
			t.Errorf("listener got (%v, %v, %v), want key a or b and an error wrapping %v", e.key, e.op, e.err, wantErr)
		}
	}
	if count[keyedpool.OpDestroy] != 2 || count[keyedpool.OpMake] != 2 || count[keyedpool.OpValidate] != 1 {
		t.Errorf("listener got %v by op, want destroy 2, make 2, validate 1", count)
	}
	if got := want.Of(keyedpool.OpMake) + want.Of(keyedpool.OpDestroy); got != 4 || want.Total() != 5 {
		t.Errorf("BackgroundErrors.Of/Total disagree with the fields: %d, %d", got, want.Total())
	}
	f.DestroyHook, f.MakeHook, f.ValidateHook = nil, nil, nil
}

// A factory call no caller bounds ends after FactoryTimeout: a Passivate
// at Return that waits on its context, and a Destroy.
func TestFactoryTimeoutBoundsReturnAndDestroy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{FactoryTimeout: time.Second})
		waitCtx := func(ctx context.Context, _ *testfactory.Obj) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			<-ctx.Done()
			return ctx.Err()
		}
		h := mustBorrow(t, p, "k")
		f.PassivateHook, f.DestroyHook = waitCtx, waitCtx
		start := time.Now()
		err := p.Return(h)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Return() = %v, want the Passivate's and Destroy's DeadlineExceeded", err)
		}
		if got, want := time.Since(start), 2*time.Second; got != want {
			t.Errorf("Return took %v, want %v: 1s for Passivate, 1s for Destroy", got, want)
		}
		if s := p.Stats(); s.DestroyedByReturnValidation != 1 || s.Active+s.Idle != 0 {
			t.Errorf("Stats() = %+v, want the object destroyed", s)
		}
		// The next call on an object gets a fresh context.
		f.PassivateHook, f.DestroyHook = nil, nil
		mustReturn(t, p, mustBorrow(t, p, "k"))
		f.PassivateHook = waitCtx
		start = time.Now()
		if err := p.Return(mustBorrow(t, p, "k")); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("second Return() = %v after %v, want DeadlineExceeded after 1s", err, time.Since(start))
		}
		f.PassivateHook = nil
	})
}

// Negative FactoryTimeout: no bound, as context.Background.
func TestNegativeFactoryTimeoutLeavesCallsUnbounded(t *testing.T) {
	p, f := newPool(t, keyedpool.Config{FactoryTimeout: -1})
	f.PassivateHook = func(ctx context.Context, _ *testfactory.Obj) error {
		if _, ok := ctx.Deadline(); ok {
			return errors.New("deadline set")
		}
		return nil
	}
	mustReturn(t, p, mustBorrow(t, p, "k"))
}

// ListObjects shows every object of a key; MeanActiveTime and MeanIdleTime
// come from the pool's clock once it runs.
func TestListObjectsAndMeanTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{MaxSharesPerObject: 2})
		mustRunEviction(t, p) // starts the clock
		h1 := mustBorrow(t, p, "k")
		h2 := mustBorrow(t, p, "k") // shares h1's object
		time.Sleep(3 * time.Second)
		mustReturn(t, p, h1)
		mustReturn(t, p, h2)
		time.Sleep(time.Second)
		h3 := mustBorrow(t, p, "k")
		objs := p.ListObjects("k")
		if len(objs) != 1 {
			t.Fatalf("ListObjects = %+v, want 1 object", objs)
		}
		o := objs[0]
		if o.State != keyedpool.ObjectLent || o.Shares != 1 || o.BorrowCount != 3 || o.State.String() != "lent" {
			t.Errorf("object = %+v, want lent with 1 share, borrowed 3 times", o)
		}
		if !o.LastReturned.Equal(o.Created.Add(3*time.Second)) || !o.LastBorrowed.Equal(o.Created.Add(4*time.Second)) {
			t.Errorf("object = %+v, want returned 3s and borrowed 4s after it was made", o)
		}
		mustReturn(t, p, h3)
		if objs := p.ListObjects("k"); len(objs) != 1 || objs[0].State != keyedpool.ObjectIdle {
			t.Errorf("ListObjects after Return = %+v, want one idle object", objs)
		}
		s := p.Stats()
		if s.MeanActiveTime() != 1500*time.Millisecond || s.MeanIdleTime() != time.Second {
			t.Errorf("MeanActiveTime, MeanIdleTime = %v, %v; want 1.5s (3s, then 0s) and 1s",
				s.MeanActiveTime(), s.MeanIdleTime())
		}
		if p.ListObjects("none") != nil {
			t.Error("ListObjects of an unknown key is not nil")
		}
	})
}

// The make backoff period keeps its meaning at any value the config
// accepts: between 80% and 120% of the base doubled per failed probe,
// capped at the max, never negative, and computed at once.
func TestMakeBackoffPeriodStaysWithinBounds(t *testing.T) {
	const maxD = time.Duration(math.MaxInt64)
	for _, tt := range []struct {
		base, limit time.Duration
		doublings   int
		want        time.Duration // before jitter
	}{
		{time.Second, 30 * time.Second, 0, time.Second},
		{time.Second, 30 * time.Second, 3, 8 * time.Second},
		{time.Second, 30 * time.Second, 10, 30 * time.Second},
		{time.Second, maxD, 40, maxD},
		{time.Second, maxD, math.MaxInt, maxD},
		{maxD / 2, maxD, 1, maxD - 1},
		{maxD / 2, maxD, 2, maxD},
		{maxD, maxD, math.MaxInt, maxD},
		{1, 1, math.MaxInt, 1},
	} {
		for _, u := range []float64{0, 0.5, math.Nextafter(1, 0)} {
			got := keyedpool.BackoffPeriod(tt.base, tt.limit, tt.doublings, u)
			lo := tt.want - tt.want/5
			hi := tt.want + min(tt.want/5, maxD-tt.want)
			if got < lo || got > hi {
				t.Errorf("backoff(%v, %v, %d, %v) = %v, want in [%v, %v]", tt.base, tt.limit, tt.doublings, u, got, lo, hi)
			}
		}
	}
}

// NumTestsPerEvictionRun at its most negative still means ceil(idle/|n|):
// one test when there are idle objects.
func TestMostNegativeNumTestsPerEvictionRun(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{NumTestsPerEvictionRun: math.MinInt})
	idleObjects(t, p, "k", 3)
	mustRunEviction(t, p)
	if got := p.Stats().EvictionTests; got != 1 {
		t.Errorf("EvictionTests = %d, want 1 (ceil(3/|MinInt|))", got)
	}
}

// An eviction interval as long as a Duration holds stamps objects as late
// as it can, never wrapping round to the past: nothing is evicted early.
func TestHugeEvictionIntervalEvictsNothingEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{
			TimeBetweenEvictionRuns: math.MaxInt64, MinEvictableIdle: time.Second, NumTestsPerEvictionRun: -1,
		})
		time.Sleep(10 * time.Second)
		mustRunEviction(t, p)
		h := mustBorrow(t, p, "k") // made at 10s
		time.Sleep(5 * time.Second)
		mustReturn(t, p, h) // idle from 15s
		time.Sleep(500 * time.Millisecond)
		mustRunEviction(t, p)
		if got := p.KeyStats("k").Idle; got != 1 {
			t.Errorf("idle objects after 0.5s idle = %d, want 1 (MinEvictableIdle is 1s)", got)
		}
	})
}

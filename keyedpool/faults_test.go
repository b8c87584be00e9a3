package keyedpool_test

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// A panic in any factory method, on any path that calls it, becomes an
// error wrapping ErrFactoryPanic; the object is dropped, its room freed,
// and the pool keeps working: the key's next Borrow gets an object and
// Close completes.
func TestFactoryPanicBecomesError(t *testing.T) {
	var armed atomic.Bool
	boom := func() {
		if armed.CompareAndSwap(true, false) {
			panic("boom")
		}
	}
	hook := func(context.Context, *testfactory.Obj) error { boom(); return nil }
	mustIdle := func(t *testing.T, p *pool) { mustReturn(t, p, mustBorrow(t, p, "k")) }
	evictAll := evictor.PolicyFunc(func(evictor.Settings, evictor.Candidate) bool { boom(); return true })
	tests := []struct {
		name  string
		cfg   keyedpool.Config
		hook  func(f *testfactory.Factory)
		setup func(t *testing.T, p *pool)
		run   func(p *pool) error
		// wantErr: the call's error wraps ErrFactoryPanic; else the panic
		// was a failure the call got past.
		wantErr bool
		// swallowed: no caller waits for the work: the panic is counted and
		// listened to as a background error.
		swallowed bool
		closes    bool // run closes the pool: no Borrow after it
	}{
		{name: "Make/Borrow", wantErr: true,
			hook: func(f *testfactory.Factory) { f.MakeHook = func(context.Context, string) error { boom(); return nil } },
			run:  func(p *pool) error { return borrowReturn(context.Background(), p) }},
		{name: "Make/BorrowWithDeadline", wantErr: true,
			hook: func(f *testfactory.Factory) { f.MakeHook = func(context.Context, string) error { boom(); return nil } },
			run: func(p *pool) error {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				return borrowReturn(ctx, p)
			}},
		{name: "Make/AddObject", wantErr: true,
			hook: func(f *testfactory.Factory) { f.MakeHook = func(context.Context, string) error { boom(); return nil } },
			run:  func(p *pool) error { return p.AddObject(context.Background(), "k") }},
		{name: "Make/Upkeep", wantErr: true, swallowed: true, cfg: keyedpool.Config{MinIdlePerKey: 1},
			hook:  func(f *testfactory.Factory) { f.MakeHook = func(context.Context, string) error { boom(); return nil } },
			setup: func(t *testing.T, p *pool) { _ = p.Invalidate(mustBorrow(t, p, "k")) },
			run:   func(p *pool) error { return p.RunEviction(context.Background()) }},
		{name: "Validate/TestOnCreate", wantErr: true, cfg: keyedpool.Config{TestOnCreate: true},
			hook: func(f *testfactory.Factory) { f.ValidateHook = hook },
			run:  func(p *pool) error { return borrowReturn(context.Background(), p) }},
		{name: "Validate/TestOnBorrow", cfg: keyedpool.Config{TestOnBorrow: true}, setup: mustIdle,
			hook: func(f *testfactory.Factory) { f.ValidateHook = hook },
			run:  func(p *pool) error { return borrowReturn(context.Background(), p) }},
		{name: "Validate/TestOnReturn", wantErr: true, cfg: keyedpool.Config{TestOnReturn: true},
			hook: func(f *testfactory.Factory) { f.ValidateHook = hook },
			run:  func(p *pool) error { return borrowReturn(context.Background(), p) }},
		{name: "Validate/WhileIdle", swallowed: true, cfg: keyedpool.Config{TestWhileIdle: true}, setup: mustIdle,
			hook: func(f *testfactory.Factory) { f.ValidateHook = hook },
			run:  func(p *pool) error { return p.RunEviction(context.Background()) }},
		{name: "Activate/Borrow", setup: mustIdle,
			hook: func(f *testfactory.Factory) { f.ActivateHook = hook },
			run:  func(p *pool) error { return borrowReturn(context.Background(), p) }},
		{name: "Activate/BorrowOfNewObject", wantErr: true,
			hook: func(f *testfactory.Factory) { f.ActivateHook = hook },
			run:  func(p *pool) error { return borrowReturn(context.Background(), p) }},
		{name: "Activate/WhileIdle", swallowed: true, cfg: keyedpool.Config{TestWhileIdle: true}, setup: mustIdle,
			hook: func(f *testfactory.Factory) { f.ActivateHook = hook },
			run:  func(p *pool) error { return p.RunEviction(context.Background()) }},
		{name: "Passivate/Return", wantErr: true,
			hook: func(f *testfactory.Factory) { f.PassivateHook = hook },
			run:  func(p *pool) error { return borrowReturn(context.Background(), p) }},
		{name: "Passivate/AddObject", wantErr: true,
			hook: func(f *testfactory.Factory) { f.PassivateHook = hook },
			run:  func(p *pool) error { return p.AddObject(context.Background(), "k") }},
		{name: "Destroy/Invalidate", wantErr: true,
			hook: func(f *testfactory.Factory) { f.DestroyHook = hook },
			run: func(p *pool) error {
				h, err := p.Borrow(context.Background(), "k")
				if err != nil {
					return err
				}
				return p.Invalidate(h)
			}},
		{name: "Destroy/Evictor", wantErr: true, swallowed: true, setup: mustIdle,
			cfg:  keyedpool.Config{EvictionPolicy: evictor.PolicyFunc(func(evictor.Settings, evictor.Candidate) bool { return true })},
			hook: func(f *testfactory.Factory) { f.DestroyHook = hook },
			run:  func(p *pool) error { return p.RunEviction(context.Background()) }},
		{name: "Destroy/Clear", wantErr: true, setup: mustIdle,
			hook: func(f *testfactory.Factory) { f.DestroyHook = hook },
			run:  func(p *pool) error { return p.Clear(context.Background(), "k") }},
		{name: "Destroy/VictimForOtherKey", swallowed: true, cfg: keyedpool.Config{MaxTotal: 1},
			setup: func(t *testing.T, p *pool) { mustReturn(t, p, mustBorrow(t, p, "v")) },
			hook:  func(f *testfactory.Factory) { f.DestroyHook = hook },
			run:   func(p *pool) error { return borrowReturn(context.Background(), p) }},
		{name: "Destroy/Close", wantErr: true, closes: true, setup: mustIdle,
			hook: func(f *testfactory.Factory) { f.DestroyHook = hook },
			run:  func(p *pool) error { return p.Close(context.Background()) }},
		{name: "EvictionPolicy", swallowed: true, cfg: keyedpool.Config{EvictionPolicy: evictAll}, setup: mustIdle,
			run: func(p *pool) error { return p.RunEviction(context.Background()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.MaxTotalPerKey = 1
			var swallowed atomic.Int64
			cfg.SwallowedErrorListener = keyedpool.SwallowedErrorFunc(func(_ any, _ keyedpool.Op, err error) {
				if errors.Is(err, keyedpool.ErrFactoryPanic) {
					swallowed.Add(1)
				}
			})
			p, f := newPool(t, cfg)
			if tt.setup != nil {
				tt.setup(t, p)
			}
			if tt.hook != nil {
				tt.hook(f)
			}
			armed.Store(true)
			err := tt.run(p)
			if armed.Load() {
				t.Fatal("the armed method was never called")
			}
			if tt.wantErr {
				var pe *keyedpool.PanicError
				if !errors.Is(err, keyedpool.ErrFactoryPanic) || !errors.As(err, &pe) || pe.Value != "boom" || len(pe.Stack) == 0 {
					t.Errorf("error = %v, want a *PanicError of %q with its stack, wrapping ErrFactoryPanic", err, "boom")
				}
			} else if err != nil {
				t.Errorf("error = %v, want nil: the pool gets past a failed object", err)
			}
			s := p.Stats()
			if want := map[bool]int64{true: 1}[tt.swallowed]; swallowed.Load() != want || s.BackgroundErrors.Total() != want {
				t.Errorf("listener saw %d panics, BackgroundErrors = %+v: want %d", swallowed.Load(), s.BackgroundErrors, want)
			}
			// The room is free: the key's only slot lends again.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if tt.closes {
				if s := p.Stats(); s.Active+s.Idle+s.Making != 0 {
					t.Errorf("Stats() after Close = %+v, want nothing held", s)
				}
			} else if err := borrowReturn(ctx, p); err != nil {
				t.Errorf("Borrow after the panic = %v, want an object (MaxTotalPerKey 1: its room must be free)", err)
			}
			if err := p.Close(ctx); err != nil {
				t.Errorf("Close() = %v", err)
			}
			if got := f.LiveAll(); got != 0 {
				t.Errorf("objects alive after Close = %d, want 0", got)
			}
		})
	}
}

func borrowReturn(ctx context.Context, p *pool) error {
	h, err := p.Borrow(ctx, "k")
	if err != nil {
		return err
	}
	return p.Return(h)
}

// Keys a map cannot hold are refused with ErrInvalidKey by every method
// that takes a key, before the pool's lock is taken, and the pool keeps
// working; keys not equal to themselves leave no sub-pool behind.
func TestInvalidKeysRefused(t *testing.T) {
	ctx := context.Background()
	p, err := keyedpool.New(anyFactory{}, keyedpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	type point struct{ X, Y float64 }
	for _, key := range []any{[]int{1}, map[string]int{}, point{math.NaN(), 0}, math.NaN()} {
		_, err := p.Borrow(ctx, key)
		errs := []error{err, p.AddObject(ctx, key), p.Prepare(ctx, key), p.Clear(ctx, key)}
		for i, err := range errs {
			if !errors.Is(err, keyedpool.ErrInvalidKey) {
				t.Errorf("call %d with key %#v = %v, want ErrInvalidKey", i, key, err)
			}
		}
		if ks := p.KeyStats(key); ks != (keyedpool.KeyStats{}) {
			t.Errorf("KeyStats(%#v) = %+v, want zero", key, ks)
		}
		if objs := p.ListObjects(key); objs != nil {
			t.Errorf("ListObjects(%#v) = %v, want nil", key, objs)
		}
		p.ForgetFailures(key)
	}
	if got := p.Stats().Keys; got != 0 {
		t.Errorf("Stats().Keys = %d, want 0: refused keys leave nothing", got)
	}
	h, err := p.Borrow(ctx, "fine")
	if err != nil {
		t.Fatalf("Borrow after refused keys = %v", err)
	}
	if err := p.Return(h); err != nil {
		t.Fatal(err)
	}
}

// anyFactory makes ints for keys of any type.
type anyFactory struct{}

func (anyFactory) Make(context.Context, any) (int, error)    { return 1, nil }
func (anyFactory) Destroy(context.Context, any, int) error   { return nil }
func (anyFactory) Validate(context.Context, any, int) error  { return nil }
func (anyFactory) Activate(context.Context, any, int) error  { return nil }
func (anyFactory) Passivate(context.Context, any, int) error { return nil }

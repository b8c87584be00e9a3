package commonspool_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	pool "github.com/jolestar/go-commons-pool/v2"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/factory/commonspool"
)

// conn is the object the test factories make.
type conn struct {
	key string
	id  int
}

// call is one call a recorder saw.
type call struct {
	op  string
	obj any
}

// recorder backs a real go-commons-pool factory, made by
// pool.NewPooledObjectFactory, with funcs that record every call and return
// the configured results.
type recorder struct {
	key string

	mu           sync.Mutex // protects the fields below
	calls        []call
	made         int
	makeErr      error
	destroyErr   error
	activateErr  error
	passivateErr error
	invalid      bool
}

func newRecorder(key string) *recorder { return &recorder{key: key} }

// hook records a call and returns the result pick reads from the
// configuration, both under the lock.
func (r *recorder) hook(op string, obj any, pick func(r *recorder) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{op, obj})
	return pick(r)
}

// set changes the recorder's configuration under its lock.
func (r *recorder) set(fn func(r *recorder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r)
}

func (r *recorder) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) factory() pool.PooledObjectFactory {
	return pool.NewPooledObjectFactory(
		func(context.Context) (interface{}, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.makeErr != nil {
				r.calls = append(r.calls, call{"make", nil})
				return nil, r.makeErr
			}
			r.made++
			c := &conn{key: r.key, id: r.made}
			r.calls = append(r.calls, call{"make", c})
			return c, nil
		},
		func(_ context.Context, o *pool.PooledObject) error {
			return r.hook("destroy", o.Object, func(r *recorder) error { return r.destroyErr })
		},
		func(_ context.Context, o *pool.PooledObject) bool {
			return r.hook("validate", o.Object, func(r *recorder) error {
				if r.invalid {
					return errors.New("invalid")
				}
				return nil
			}) == nil
		},
		func(_ context.Context, o *pool.PooledObject) error {
			return r.hook("activate", o.Object, func(r *recorder) error { return r.activateErr })
		},
		func(_ context.Context, o *pool.PooledObject) error {
			return r.hook("passivate", o.Object, func(r *recorder) error { return r.passivateErr })
		},
	)
}

// wantKeyInErr fails t unless err mentions key, so a pool's log line says
// which key failed.
func wantKeyInErr(t *testing.T, method string, err error, key string) {
	t.Helper()
	if err != nil && !strings.Contains(err.Error(), key) {
		t.Errorf("%s() error %q does not name key %q", method, err, key)
	}
}

func TestMake(t *testing.T) {
	errMake := errors.New("dial refused")
	tests := []struct {
		name    string
		makeErr error
		want    any
		wantErr error
	}{
		{name: "ok", want: &conn{key: "k1", id: 1}},
		{name: "error", makeErr: errMake, want: nil, wantErr: errMake},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecorder("k1")
			r.set(func(r *recorder) { r.makeErr = tt.makeErr })
			f := commonspool.NewShared[string](r.factory())

			got, err := f.Make(context.Background(), "k1")
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Make() error = %v, want %v", err, tt.wantErr)
			}
			wantKeyInErr(t, "Make", err, "k1")
			if tt.want == nil {
				if got != nil {
					t.Errorf("Make() = %v, want nil", got)
				}
			} else if c, ok := got.(*conn); !ok || *c != *tt.want.(*conn) {
				t.Errorf("Make() = %v, want %v", got, tt.want)
			}
			if calls := r.snapshot(); len(calls) != 1 || calls[0].op != "make" {
				t.Errorf("MakeObject calls = %v, want one make", calls)
			}
		})
	}
}

func TestHooks(t *testing.T) {
	errHook := errors.New("hook failed")
	type method = func(f *commonspool.Factory[string], ctx context.Context, key string, v any) error
	hooks := []struct {
		name   string
		op     string
		method method
		fail   func(r *recorder, err error) // makes the next call fail with err
	}{
		{"Destroy", "destroy", (*commonspool.Factory[string]).Destroy, func(r *recorder, err error) { r.destroyErr = err }},
		{"Activate", "activate", (*commonspool.Factory[string]).Activate, func(r *recorder, err error) { r.activateErr = err }},
		{"Passivate", "passivate", (*commonspool.Factory[string]).Passivate, func(r *recorder, err error) { r.passivateErr = err }},
	}
	for _, h := range hooks {
		for _, wantErr := range []error{nil, errHook} {
			name := h.name + "/ok"
			if wantErr != nil {
				name = h.name + "/error"
			}
			t.Run(name, func(t *testing.T) {
				r := newRecorder("k1")
				r.set(func(r *recorder) { h.fail(r, wantErr) })
				f := commonspool.NewShared[string](r.factory())
				v := &conn{key: "k1", id: 7}

				err := h.method(f, context.Background(), "k1", v)
				if !errors.Is(err, wantErr) {
					t.Errorf("%s() = %v, want %v", h.name, err, wantErr)
				}
				wantKeyInErr(t, h.name, err, "k1")
				want := []call{{h.op, v}}
				if got := r.snapshot(); !slices.Equal(got, want) {
					t.Errorf("%s() factory calls = %v, want %v", h.name, got, want)
				}
			})
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		invalid bool
		wantErr error
	}{
		{name: "valid", invalid: false, wantErr: nil},
		{name: "invalid", invalid: true, wantErr: commonspool.ErrValidationFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecorder("k1")
			r.set(func(r *recorder) { r.invalid = tt.invalid })
			f := commonspool.NewShared[string](r.factory())
			v := &conn{key: "k1", id: 3}

			err := f.Validate(context.Background(), "k1", v)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Validate() = %v, want %v", err, tt.wantErr)
			}
			wantKeyInErr(t, "Validate", err, "k1")
			want := []call{{"validate", v}}
			if got := r.snapshot(); !slices.Equal(got, want) {
				t.Errorf("Validate() factory calls = %v, want %v", got, want)
			}
		})
	}
}

// perKey builds a New adapter with one recorder per key and counts
// the constructor calls.
type perKey struct {
	mu        sync.Mutex // protects the fields below
	recorders map[string]*recorder
	newCalls  map[string]int
	newErr    error // returned, then cleared, by the next constructor call
}

func newPerKey() *perKey {
	return &perKey{recorders: map[string]*recorder{}, newCalls: map[string]int{}}
}

func (p *perKey) newFactory(key string) (pool.PooledObjectFactory, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.newCalls[key]++
	if err := p.newErr; err != nil {
		p.newErr = nil
		return nil, err
	}
	r := newRecorder(key)
	p.recorders[key] = r
	return r.factory(), nil
}

func (p *perKey) calls(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.newCalls[key]
}

func TestPerKeyFactories(t *testing.T) {
	p := newPerKey()
	f := commonspool.New(p.newFactory)
	ctx := context.Background()

	for _, key := range []string{"a", "b", "a", "a", "b"} {
		got, err := f.Make(ctx, key)
		if err != nil {
			t.Fatalf("Make(%q) error = %v, want nil", key, err)
		}
		// Each key has its own recorder, so the object names the key
		// of the factory that made it.
		if c := got.(*conn); c.key != key {
			t.Errorf("Make(%q) = %v, made by the factory for %q", key, c, c.key)
		}
	}
	for key, want := range map[string]int{"a": 1, "b": 1} {
		if got := p.calls(key); got != want {
			t.Errorf("newFactory(%q) called %d times, want %d", key, got, want)
		}
	}

	// Hooks use the factory Make used, without building another.
	v := &conn{key: "b", id: 99}
	if err := f.Destroy(ctx, "b", v); err != nil {
		t.Fatalf("Destroy() = %v, want nil", err)
	}
	if got := p.recorders["b"].snapshot(); got[len(got)-1] != (call{"destroy", v}) {
		t.Errorf("last call on b's factory = %v, want destroy of %v", got[len(got)-1], v)
	}
	if got := p.calls("b"); got != 1 {
		t.Errorf("newFactory(%q) called %d times after Destroy, want 1", "b", got)
	}
}

func TestNewFactoryError(t *testing.T) {
	errNew := errors.New("bad config")
	p := newPerKey()
	p.newErr = errNew
	f := commonspool.New(p.newFactory)
	ctx := context.Background()

	got, err := f.Make(ctx, "k1")
	if !errors.Is(err, errNew) {
		t.Errorf("Make() error = %v, want %v", err, errNew)
	}
	wantKeyInErr(t, "Make", err, "k1")
	if got != nil {
		t.Errorf("Make() = %v, want nil", got)
	}

	// The failure is not cached: the next use of the key tries again.
	if _, err := f.Make(ctx, "k1"); err != nil {
		t.Errorf("Make() after a failed constructor: error = %v, want nil", err)
	}
	if got := p.calls("k1"); got != 2 {
		t.Errorf("newFactory called %d times, want 2", got)
	}
}

func TestNewFactoryErrorInHooks(t *testing.T) {
	errNew := errors.New("bad config")
	f := commonspool.New(func(string) (pool.PooledObjectFactory, error) { return nil, errNew })
	ctx := context.Background()
	methods := []struct {
		name string
		m    func(ctx context.Context, key string, v any) error
	}{
		{"Destroy", f.Destroy},
		{"Validate", f.Validate},
		{"Activate", f.Activate},
		{"Passivate", f.Passivate},
	}
	for _, tt := range methods {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m(ctx, "k1", "v")
			if !errors.Is(err, errNew) {
				t.Errorf("%s() = %v, want %v", tt.name, err, errNew)
			}
			wantKeyInErr(t, tt.name, err, "k1")
		})
	}
}

func TestNewFactoryNil(t *testing.T) {
	f := commonspool.New(func(string) (pool.PooledObjectFactory, error) { return nil, nil })
	got, err := f.Make(context.Background(), "k1")
	if err == nil {
		t.Fatalf("Make() = %v, nil; want an error for a nil factory", got)
	}
	wantKeyInErr(t, "Make", err, "k1")
}

func TestNewFactoryPanic(t *testing.T) {
	panicked := false
	f := commonspool.New(func(key string) (pool.PooledObjectFactory, error) {
		if !panicked {
			panicked = true
			panic("constructor bug")
		}
		return newRecorder(key).factory(), nil
	})
	ctx := context.Background()

	func() {
		defer func() {
			if r := recover(); r != "constructor bug" {
				t.Errorf("Make() panicked with %v, want %q", r, "constructor bug")
			}
		}()
		_, _ = f.Make(ctx, "k1")
	}()

	// The panic is not cached either.
	if _, err := f.Make(ctx, "k1"); err != nil {
		t.Errorf("Make() after a panicking constructor: error = %v, want nil", err)
	}
}

// nilMaker is a hand-written go-commons-pool factory whose MakeObject breaks
// the contract by returning neither an object nor an error.
type nilMaker struct{ pool.PooledObjectFactory }

func (nilMaker) MakeObject(context.Context) (*pool.PooledObject, error) { return nil, nil }

func TestNilPooledObject(t *testing.T) {
	f := commonspool.NewShared[string](nilMaker{})
	got, err := f.Make(context.Background(), "k1")
	if err == nil {
		t.Fatalf("Make() = %v, nil; want an error for a nil PooledObject", got)
	}
	wantKeyInErr(t, "Make", err, "k1")
}

func TestForget(t *testing.T) {
	p := newPerKey()
	f := commonspool.New(p.newFactory)
	ctx := context.Background()

	f.Forget("never-used") // a no-op, and must not panic
	for range 2 {
		if _, err := f.Make(ctx, "k1"); err != nil {
			t.Fatalf("Make() error = %v, want nil", err)
		}
		f.Forget("k1")
	}
	if got := p.calls("k1"); got != 2 {
		t.Errorf("newFactory called %d times with a Forget between Makes, want 2", got)
	}
}

func TestSharedForget(t *testing.T) {
	r := newRecorder("any")
	f := commonspool.NewShared[string](r.factory())
	ctx := context.Background()

	for _, key := range []string{"a", "b", "a"} {
		if _, err := f.Make(ctx, key); err != nil {
			t.Fatalf("Make(%q) error = %v, want nil", key, err)
		}
		f.Forget(key)
	}
	if got := len(r.snapshot()); got != 3 {
		t.Errorf("shared factory saw %d calls, want 3", got)
	}
}

func TestNilConstructorArgs(t *testing.T) {
	tests := map[string]func(){
		"New":       func() { commonspool.New[string](nil) },
		"NewShared": func() { commonspool.NewShared[string](nil) },
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s(nil) did not panic", name)
				}
			}()
			fn()
		})
	}
}

// Many goroutines using new keys at once must build exactly one factory per
// key, and every Make must get an object from it. Run with -race.
func TestConcurrentFirstUse(t *testing.T) {
	const (
		keys             = 8
		goroutinesPerKey = 32
	)
	p := newPerKey()
	f := commonspool.New(p.newFactory)
	ctx := context.Background()

	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, keys*goroutinesPerKey)
	for i := range keys * goroutinesPerKey {
		key := fmt.Sprintf("k%d", i%keys)
		wg.Go(func() {
			<-start
			v, err := f.Make(ctx, key)
			if err != nil {
				errs <- fmt.Errorf("Make(%q) error = %v, want nil", key, err)
				return
			}
			if err := f.Validate(ctx, key, v); err != nil {
				errs <- fmt.Errorf("Validate(%q) = %v, want nil", key, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	for i := range keys {
		key := fmt.Sprintf("k%d", i)
		if got := p.calls(key); got != 1 {
			t.Errorf("newFactory(%q) called %d times, want 1", key, got)
		}
		if got := p.recorders[key].made; got != goroutinesPerKey {
			t.Errorf("factory for %q made %d objects, want %d", key, got, goroutinesPerKey)
		}
	}
}

// A factory written for go-commons-pool keeps working there and works
// unchanged through the adapter, calling the same funcs in the same order
// for the same lifecycle, so users can move over one pool at a time.
func TestSameFactoryInObjectPool(t *testing.T) {
	ctx := context.Background()
	r := newRecorder("db")
	cf := r.factory()

	// go-commons-pool: borrow (make, activate, validate on borrow),
	// return (passivate), close (destroy the idle object).
	cfg := pool.NewDefaultPoolConfig()
	cfg.TestOnBorrow = true
	op := pool.NewObjectPool(ctx, cf, cfg)
	obj, err := op.BorrowObject(ctx)
	if err != nil {
		t.Fatalf("BorrowObject() error = %v, want nil", err)
	}
	if err := op.ReturnObject(ctx, obj); err != nil {
		t.Fatalf("ReturnObject() error = %v, want nil", err)
	}
	op.Close(ctx)
	inPool := r.snapshot()

	// The same factory through the adapter, driven through the same
	// lifecycle as a kpool pool would.
	f := commonspool.NewShared[string](cf)
	v, err := f.Make(ctx, "db")
	if err != nil {
		t.Fatalf("Make() error = %v, want nil", err)
	}
	steps := []struct {
		name string
		m    func(context.Context, string, any) error
	}{
		{"Activate", f.Activate},
		{"Validate", f.Validate},
		{"Passivate", f.Passivate},
		{"Destroy", f.Destroy},
	}
	for _, s := range steps {
		if err := s.m(ctx, "db", v); err != nil {
			t.Fatalf("%s() = %v, want nil", s.name, err)
		}
	}
	viaAdapter := r.snapshot()[len(inPool):]

	ops := func(calls []call, want any) []string {
		var out []string
		for _, c := range calls {
			if c.obj != want {
				t.Errorf("%s saw object %v, want %v", c.op, c.obj, want)
			}
			out = append(out, c.op)
		}
		return out
	}
	wantOps := []string{"make", "activate", "validate", "passivate", "destroy"}
	if got := ops(inPool, obj); !slices.Equal(got, wantOps) {
		t.Errorf("ObjectPool factory calls = %v, want %v", got, wantOps)
	}
	if got := ops(viaAdapter, v); !slices.Equal(got, wantOps) {
		t.Errorf("adapter factory calls = %v, want %v", got, wantOps)
	}
}

func ExampleNew() {
	// An existing go-commons-pool factory, one per address.
	newFactory := func(addr string) (pool.PooledObjectFactory, error) {
		return pool.NewPooledObjectFactory(
			func(context.Context) (interface{}, error) {
				return "conn to " + addr, nil
			},
			func(_ context.Context, o *pool.PooledObject) error {
				fmt.Println("closing", o.Object)
				return nil
			},
			func(_ context.Context, o *pool.PooledObject) bool {
				return addr != "down:5432"
			},
			nil, nil,
		), nil
	}

	var f factory.KeyedFactory[string, any] = commonspool.New(newFactory)
	ctx := context.Background()

	v, err := f.Make(ctx, "db1:5432")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(v)
	fmt.Println(f.Destroy(ctx, "db1:5432", v))

	v, _ = f.Make(ctx, "down:5432")
	err = f.Validate(ctx, "down:5432", v)
	fmt.Println(errors.Is(err, commonspool.ErrValidationFailed), err)

	// Output:
	// conn to db1:5432
	// closing conn to db1:5432
	// <nil>
	// true commonspool: ValidateObject for key down:5432: commonspool: validation failed
}

package factory_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kpool-go/kpool/factory"
)

type ctxKey struct{}

// hookFunc is the shape shared by DestroyFunc, ValidateFunc, ActivateFunc
// and PassivateFunc.
type hookFunc = func(ctx context.Context, key string, v int) error

// hooks lists the optional Funcs fields with a setter and the method that
// calls them, so each test below covers all four.
var hooks = []struct {
	name string
	set  func(f *factory.Funcs[string, int], fn hookFunc)
	call func(f factory.Funcs[string, int], ctx context.Context, key string, v int) error
}{
	{
		name: "Destroy",
		set:  func(f *factory.Funcs[string, int], fn hookFunc) { f.DestroyFunc = fn },
		call: factory.Funcs[string, int].Destroy,
	},
	{
		name: "Validate",
		set:  func(f *factory.Funcs[string, int], fn hookFunc) { f.ValidateFunc = fn },
		call: factory.Funcs[string, int].Validate,
	},
	{
		name: "Activate",
		set:  func(f *factory.Funcs[string, int], fn hookFunc) { f.ActivateFunc = fn },
		call: factory.Funcs[string, int].Activate,
	},
	{
		name: "Passivate",
		set:  func(f *factory.Funcs[string, int], fn hookFunc) { f.PassivateFunc = fn },
		call: factory.Funcs[string, int].Passivate,
	},
}

func TestFuncsHooks(t *testing.T) {
	errHook := errors.New("hook failed")
	tests := []struct {
		name    string
		set     bool  // whether the func field is set
		ret     error // what the set func returns
		wantErr error
	}{
		{name: "nil", set: false, wantErr: nil},
		{name: "set/ok", set: true, ret: nil, wantErr: nil},
		{name: "set/error", set: true, ret: errHook, wantErr: errHook},
	}
	for _, h := range hooks {
		for _, tt := range tests {
			t.Run(h.name+"/"+tt.name, func(t *testing.T) {
				ctx := context.WithValue(context.Background(), ctxKey{}, "caller")
				var (
					called  int
					gotKey  string
					gotV    int
					gotCtxV any
				)
				f := factory.Funcs[string, int]{
					MakeFunc: func(context.Context, string) (int, error) { return 0, nil },
				}
				if tt.set {
					h.set(&f, func(ctx context.Context, key string, v int) error {
						called++
						gotKey, gotV, gotCtxV = key, v, ctx.Value(ctxKey{})
						return tt.ret
					})
				}

				err := h.call(f, ctx, "k", 42)
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("%s() = %v, want %v", h.name, err, tt.wantErr)
				}
				wantCalled := 0 // a nil func does nothing
				if tt.set {
					wantCalled = 1
				}
				if called != wantCalled {
					t.Fatalf("%s() called the func %d times, want %d", h.name, called, wantCalled)
				}
				if !tt.set {
					return
				}
				if gotKey != "k" || gotV != 42 {
					t.Errorf("%s() called func with (%q, %d), want (%q, %d)", h.name, gotKey, gotV, "k", 42)
				}
				if gotCtxV != "caller" {
					t.Errorf("%s() ctx value = %v, want %v", h.name, gotCtxV, "caller")
				}
			})
		}
	}
}

func TestFuncsMake(t *testing.T) {
	errMake := errors.New("make failed")
	tests := []struct {
		name    string
		make    func(ctx context.Context, key string) (int, error)
		want    int
		wantErr error
	}{
		{
			name:    "nil MakeFunc",
			make:    nil,
			want:    0,
			wantErr: factory.ErrNoMakeFunc,
		},
		{
			name: "ok",
			make: func(ctx context.Context, key string) (int, error) {
				if ctx.Value(ctxKey{}) != "caller" {
					return 0, errors.New("ctx not passed through")
				}
				return len(key), nil
			},
			want: len("key"),
		},
		{
			name: "error",
			make: func(context.Context, string) (int, error) {
				return 0, errMake
			},
			want:    0,
			wantErr: errMake,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.WithValue(context.Background(), ctxKey{}, "caller")
			f := factory.Funcs[string, int]{MakeFunc: tt.make}
			got, err := f.Make(ctx, "key")
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Make() error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Make() = %d, want %d", got, tt.want)
			}
		})
	}
}

// The zero Funcs is a usable value whose only failure is the missing
// MakeFunc; the optional hooks must not panic on it.
func TestFuncsZero(t *testing.T) {
	var f factory.Funcs[string, int]
	ctx := context.Background()
	if _, err := f.Make(ctx, "k"); !errors.Is(err, factory.ErrNoMakeFunc) {
		t.Errorf("Make() error = %v, want %v", err, factory.ErrNoMakeFunc)
	}
	for _, h := range hooks {
		if err := h.call(f, ctx, "k", 1); err != nil {
			t.Errorf("%s() = %v, want nil", h.name, err)
		}
	}
}

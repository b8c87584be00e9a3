package factory

import (
	"context"
	"errors"
)

// Funcs builds a KeyedFactory from functions. Only MakeFunc is required; a
// nil DestroyFunc, ValidateFunc, ActivateFunc or PassivateFunc does nothing
// and succeeds. Use it as a value:
//
//	f := factory.Funcs[string, *Conn]{
//		MakeFunc:    func(ctx context.Context, addr string) (*Conn, error) { return Dial(ctx, addr) },
//		DestroyFunc: func(_ context.Context, _ string, c *Conn) error { return c.Close() },
//	}
type Funcs[K comparable, V any] struct {
	// MakeFunc creates an object for a key. Required.
	MakeFunc func(ctx context.Context, key K) (V, error)
	// DestroyFunc releases an object. Nil: nothing to release.
	DestroyFunc func(ctx context.Context, key K, v V) error
	// ValidateFunc reports whether an object is usable. Nil: always usable.
	ValidateFunc func(ctx context.Context, key K, v V) error
	// ActivateFunc readies an idle object before it is lent. Nil: no-op.
	ActivateFunc func(ctx context.Context, key K, v V) error
	// PassivateFunc resets an object returning to the idle set. Nil: no-op.
	PassivateFunc func(ctx context.Context, key K, v V) error
}

// ErrNoMakeFunc is returned by Funcs.Make when MakeFunc is nil.
var ErrNoMakeFunc = errors.New("factory: Funcs.MakeFunc is nil")

// Make calls MakeFunc, or fails with ErrNoMakeFunc when it is nil.
func (f Funcs[K, V]) Make(ctx context.Context, key K) (V, error) {
	if f.MakeFunc == nil {
		var zero V
		return zero, ErrNoMakeFunc
	}
	return f.MakeFunc(ctx, key)
}

// Destroy calls DestroyFunc if it is set.
func (f Funcs[K, V]) Destroy(ctx context.Context, key K, v V) error {
	if f.DestroyFunc == nil {
		return nil
	}
	return f.DestroyFunc(ctx, key, v)
}

// Validate calls ValidateFunc if it is set.
func (f Funcs[K, V]) Validate(ctx context.Context, key K, v V) error {
	if f.ValidateFunc == nil {
		return nil
	}
	return f.ValidateFunc(ctx, key, v)
}

// Activate calls ActivateFunc if it is set.
func (f Funcs[K, V]) Activate(ctx context.Context, key K, v V) error {
	if f.ActivateFunc == nil {
		return nil
	}
	return f.ActivateFunc(ctx, key, v)
}

// Passivate calls PassivateFunc if it is set.
func (f Funcs[K, V]) Passivate(ctx context.Context, key K, v V) error {
	if f.PassivateFunc == nil {
		return nil
	}
	return f.PassivateFunc(ctx, key, v)
}

var _ KeyedFactory[string, int] = Funcs[string, int]{}

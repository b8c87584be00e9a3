package keyedpool

import (
	"context"
	"fmt"
	"reflect"
	"runtime/debug"

	"github.com/kpool-go/kpool/factory"
)

// PanicError is the error a panic in user code becomes: a factory method,
// or the EvictionPolicy. It wraps ErrFactoryPanic and, when the panic value
// is an error, that error too, so errors.Is finds both. The pool drops the
// object the call was about and frees its room, as for any other failure
// of that call.
type PanicError struct {
	// Method is what panicked: "Make", "Destroy", "Validate", "Activate",
	// "Passivate" or "EvictionPolicy".
	Method string
	// Value is what was passed to panic.
	Value any
	// Stack is the panicking goroutine's stack, as runtime/debug.Stack
	// formats it.
	Stack []byte
}

// Error returns a one-line message naming the method and the panic value;
// the stack is in Stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("keyedpool: %s panicked: %v", e.Method, e.Value)
}

// Unwrap returns ErrFactoryPanic and, if the panic value is an error, that
// error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrFactoryPanic, err}
	}
	return []error{ErrFactoryPanic}
}

// panicError is the error for a panic with value v in method, with the
// stack of the panicking goroutine, called from the deferred function that
// recovered it. (Each wrapper below recovers in a closure of its own: an
// open-coded deferred closure costs less than a call that takes the error's
// address, and this runs twice per Borrow and Return.)
func panicError(method string, v any) error {
	return &PanicError{Method: method, Value: v, Stack: debug.Stack()}
}

// safeFactory calls a user's factory, turning a panic in any method into an
// error, so that no panic unwinds through the pool's bookkeeping: the pool
// treats it as that method's failure (the object is dropped, its room
// freed, waiters woken). Every factory call of the pool goes through it.
type safeFactory[K comparable, V any] struct{ f factory.KeyedFactory[K, V] }

// Each method calls recover only when the factory's call did not return:
// on the normal path the deferred check is a flag test, which is what keeps
// the containment cheap on every Borrow and Return.

func (s safeFactory[K, V]) Make(ctx context.Context, key K) (v V, err error) {
	returned := false
	defer func() {
		if !returned {
			err = caught("Make", recover(), err)
		}
	}()
	v, err = s.f.Make(ctx, key)
	returned = true
	return v, err
}

func (s safeFactory[K, V]) Destroy(ctx context.Context, key K, v V) (err error) {
	returned := false
	defer func() {
		if !returned {
			err = caught("Destroy", recover(), err)
		}
	}()
	err = s.f.Destroy(ctx, key, v)
	returned = true
	return err
}

func (s safeFactory[K, V]) Validate(ctx context.Context, key K, v V) (err error) {
	returned := false
	defer func() {
		if !returned {
			err = caught("Validate", recover(), err)
		}
	}()
	err = s.f.Validate(ctx, key, v)
	returned = true
	return err
}

func (s safeFactory[K, V]) Activate(ctx context.Context, key K, v V) (err error) {
	returned := false
	defer func() {
		if !returned {
			err = caught("Activate", recover(), err)
		}
	}()
	err = s.f.Activate(ctx, key, v)
	returned = true
	return err
}

func (s safeFactory[K, V]) Passivate(ctx context.Context, key K, v V) (err error) {
	returned := false
	defer func() {
		if !returned {
			err = caught("Passivate", recover(), err)
		}
	}()
	err = s.f.Passivate(ctx, key, v)
	returned = true
	return err
}

// caught turns what a deferred recover returned in method into its error.
// nil means the goroutine is exiting (runtime.Goexit), not panicking: err
// is left as it was and the exit goes on.
func caught(method string, v any, err error) error {
	if v == nil {
		return err
	}
	return panicError(method, v)
}

// oddKeys reports whether values of type t can be keys that a map cannot
// hold usefully: unhashable (an interface holding a slice, map or func
// panics when hashed) or not equal to themselves (a float NaN, which a map
// can store but never find or delete). Keys of other types need no check,
// so their pools pay nothing for it.
func oddKeys(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Interface, reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return oddKeys(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if oddKeys(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}

// checkKey returns an error wrapping ErrInvalidKey for a key the pool cannot
// keep a sub-pool for, before any lock is taken: one that cannot be hashed,
// or one not equal to itself. It costs nothing for key types that cannot
// hold such values (see oddKeys).
func (p *Pool[K, V]) checkKey(key K) error {
	if !p.oddKeys {
		return nil
	}
	eq, ok := selfEqual(key)
	switch {
	case !ok:
		return fmt.Errorf("%w: %v of type %T cannot be hashed", ErrInvalidKey, key, key)
	case !eq:
		return fmt.Errorf("%w: %v is not equal to itself (it holds a NaN)", ErrInvalidKey, key)
	}
	return nil
}

// selfEqual compares k with itself; ok is false if the comparison panics,
// which for a map key means hashing it would panic too.
func selfEqual[K comparable](k K) (eq, ok bool) {
	defer func() {
		if recover() != nil {
			eq, ok = false, false
		}
	}()
	return k == k, true
}

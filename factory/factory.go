// Package factory defines how a keyed pool makes, checks and destroys the
// objects it holds (KeyedFactory), and Funcs, which builds one from plain
// functions.
//
// The package imports the standard library alone, so that keyedpool, which
// imports it, does too. Adapters that need a third-party library live in
// subpackages, which import this one: commonspool adapts go-commons-pool
// factories.
//
// A factory is the pool's only contact with the outside world (dials, RPCs,
// file handles). The pool never calls a factory method while it holds one of
// its own locks, so a factory may block, and may call back into the pool.
package factory

import "context"

// KeyedFactory makes and manages the objects a keyed pool lends for a key. It
// is the Go form of commons-pool2's KeyedPooledObjectFactory: values instead
// of wrapper objects, and a context on every call.
//
// A pool may call the methods of one factory from many goroutines at once,
// for the same key and for different keys, so implementations must be safe
// for concurrent use. A pool calls Activate, Validate, Passivate and Destroy
// on one object from one goroutine at a time.
//
// Contexts: calls made for a borrower (Activate and Validate in Borrow) get
// the borrower's context. Every other call (Make, which may outlive the
// borrower who caused it; Passivate and Validate at Return; Destroy; every
// call of an eviction run) gets a context that keyedpool bounds with
// keyedpool.Config.FactoryTimeout (default 30 seconds); see that field for
// when each one starts. A context is for its call only. A method that
// panics is treated as failing with an error wrapping
// keyedpool.ErrFactoryPanic.
type KeyedFactory[K comparable, V any] interface {
	// Make creates a new object for key. The context carries the values of
	// the borrower that caused the make; the pool cancels it when the pool
	// closes, not when that borrower gives up, so that a slow make is not
	// wasted (the object joins the idle set). Make should bound its own work.
	Make(ctx context.Context, key K) (V, error)

	// Destroy releases an object the pool no longer holds. It is called
	// exactly once for every object Make returned.
	Destroy(ctx context.Context, key K, v V) error

	// Validate reports whether v is still usable; nil means usable. The pool
	// destroys an object that fails validation.
	Validate(ctx context.Context, key K, v V) error

	// Activate readies an idle object before it is lent. An error destroys
	// the object.
	Activate(ctx context.Context, key K, v V) error

	// Passivate resets an object that is going back to the idle set: a
	// returned one, and a newly made one before it first goes idle
	// (AddObject, Prepare, MinIdlePerKey upkeep), so that every idle object
	// is in the same state. An error destroys the object.
	Passivate(ctx context.Context, key K, v V) error
}

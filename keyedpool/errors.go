package keyedpool

import "errors"

// Errors returned by a Pool. Match them with errors.Is: some are wrapped with
// detail (the field of an invalid Config, the factory error of a failed
// validation).
var (
	// ErrClosed is returned by Borrow, AddObject and Prepare on a closed
	// pool, and to every borrower still waiting when Close is called.
	ErrClosed = errors.New("keyedpool: pool closed")

	// ErrExhausted is returned by Borrow when no object can be lent: at once
	// with WhenExhausted set to Fail, after MaxWait with Block. AddObject and
	// Prepare return it when the limits leave no room for another object.
	ErrExhausted = errors.New("keyedpool: pool exhausted")

	// ErrNotBorrowed is returned by Return and Invalidate for a handle that
	// is not lent at the moment: returned or invalidated already, taken back
	// as abandoned, or nil.
	// Handles are reused, so a handle given back twice is caught only until
	// the pool lends it again (see Pooled).
	ErrNotBorrowed = errors.New("keyedpool: object not borrowed")

	// ErrForeignObject is returned by Return and Invalidate for a handle that
	// another pool lent.
	ErrForeignObject = errors.New("keyedpool: object belongs to another pool")

	// ErrInvalidConfig is wrapped by the error New and SetConfig return for
	// a Config they refuse; the message names the field.
	ErrInvalidConfig = errors.New("keyedpool: invalid config")

	// ErrValidation is wrapped, together with the factory's error, by the
	// error Borrow returns when a newly made object fails activation or
	// validation (TestOnCreate, TestOnBorrow). An idle object that fails is
	// destroyed and Borrow goes on to the next, or makes one: the error
	// comes only when the object Borrow made fails too.
	ErrValidation = errors.New("keyedpool: object failed validation")

	// ErrBackoff is wrapped, together with the last make error of the key,
	// by the error Borrow, AddObject and Prepare return for a key whose
	// makes keep failing (Config.MakeFailureThreshold) while its backoff
	// period runs.
	ErrBackoff = errors.New("keyedpool: key in make backoff")

	// ErrFactoryPanic is wrapped by the error a panic in a factory method
	// (or in the EvictionPolicy) becomes; errors.As with a *PanicError gives
	// the panic value and its stack. The pool treats the panic as a failure
	// of that call: a Borrow whose Make or Activate panicked gets it, and
	// the object, if any, is destroyed and its room freed.
	ErrFactoryPanic = errors.New("keyedpool: factory panicked")

	// ErrInvalidKey is wrapped by the error every method that takes a key
	// returns for a key the pool cannot hold: one whose dynamic type cannot
	// be hashed (a slice in an interface key), or one not equal to itself (a
	// float NaN). The message names the key.
	ErrInvalidKey = errors.New("keyedpool: invalid key")
)

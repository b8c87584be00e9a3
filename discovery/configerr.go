package discovery

import (
	"errors"
	"fmt"
)

// Validate reports every invalid field of c, each as a *FieldError, and
// those of c.Pool as keyedpool's *FieldErrors (whose Field does not say
// Pool), joined with errors.Join; nil when NewRouter would accept c.
func (c RouterConfig[T]) Validate() error {
	var errs []error
	if c.Resolver == nil {
		errs = append(errs, &FieldError{Field: "Resolver", Want: "a Resolver, such as static.New's"})
	}
	if c.Factory == nil {
		errs = append(errs, &FieldError{Field: "Factory", Want: "a factory of clients keyed by address, such as grpcpool.New's"})
	}
	if c.WarmInterval < 0 {
		errs = append(errs, &FieldError{Field: "WarmInterval", Value: c.WarmInterval, Want: "0 (on arrival and Warm only) or more"})
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, &FieldError{Field: "IdleTimeout", Value: c.IdleTimeout, Want: "0 (watch until Forget or Close) or more"})
	}
	if err := c.Pool.Validate(); err != nil {
		errs = append(errs, err.(interface{ Unwrap() []error }).Unwrap()...) // one list, not a join in a join
	}
	return errors.Join(errs...)
}

// FieldError is one invalid field of a RouterConfig: a required one left
// nil, or a negative duration. errors.Is(err, ErrInvalidConfig) holds for
// it.
type FieldError struct {
	// Field is the field's name as in Go: "Resolver".
	Field string
	// Value is the field's value; nil for a required field left nil.
	Value any
	// Want says what Field needs.
	Want string
}

// Error reads "discovery: invalid config: Resolver is nil, want a
// Resolver, such as static.New's", or "discovery: invalid config:
// IdleTimeout is -1s, want 0 (watch until Forget or Close) or more".
func (e *FieldError) Error() string {
	if e.Value == nil {
		return fmt.Sprintf("%v: %s is nil, want %s", ErrInvalidConfig, e.Field, e.Want)
	}
	return fmt.Sprintf("%v: %s is %v, want %s", ErrInvalidConfig, e.Field, e.Value, e.Want)
}

// Is reports whether target is ErrInvalidConfig.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

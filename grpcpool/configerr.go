package grpcpool

import (
	"fmt"
	"reflect"
)

// FieldError is one invalid field of a Config. Validate and New return one
// per invalid field, joined with errors.Join: errors.Is(err,
// ErrInvalidConfig) holds for the whole and for each, errors.As finds the
// first, and the joined error's Unwrap() []error lists them all.
type FieldError struct {
	// Field is the field's name as in Go; a field of a nested struct
	// follows its parent's name and a dot, an element of a slice its
	// index: "IdleTimeout", "Keepalive.Time",
	// "Retry.RetryableStatusCodes[0]".
	Field string
	// Value is the field's value.
	Value any
	// Want says what Field accepts: "0 (default 30s) or more".
	Want string
}

// Error reads "grpcpool: invalid config: IdleTimeout is -1s, want 0
// (gRPC's default) or more". A pointer, func, interface or struct value
// shows as nil or set.
func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s is %s, want %s", ErrInvalidConfig, e.Field, showValue(e.Value), e.Want)
}

// Is reports whether target is ErrInvalidConfig.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

// showValue prints a field's value: a pointer, func, interface or struct
// as nil or set (its address or fields would say nothing), anything else
// as itself.
func showValue(v any) string {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Invalid:
		return "nil"
	case reflect.Pointer, reflect.Func, reflect.Interface, reflect.Map, reflect.Chan:
		if rv.IsNil() {
			return "nil"
		}
		return "set"
	case reflect.Struct:
		return "set"
	}
	return fmt.Sprint(v)
}

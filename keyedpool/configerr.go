package keyedpool

import "fmt"

// FieldError is one invalid field of a Config. Validate, New and SetConfig
// return one per invalid field, joined with errors.Join: errors.Is(err,
// ErrInvalidConfig) holds for the whole and for each, errors.As finds the
// first, and the joined error's Unwrap() []error lists them all, in the
// order of Config's fields.
type FieldError struct {
	// Field is the field's name as in Go; a field of a nested struct
	// follows its parent's name and a dot: "MaxWait", "Abandoned.Timeout".
	Field string
	// Value is the field's value, once zero values that stand for a
	// default have been replaced by it (a MakeBackoffMax of 0 is 30s).
	Value any
	// Want says what Field accepts: "0 or more", "Block or Fail". When
	// Value is refused only beside another field, Want is "at most" or
	// "at least", and Limit names that field.
	Want string
	// Limit names the field that Value is measured against when it is
	// valid alone but not beside it: MaxIdlePerKey for a MinIdlePerKey
	// above it. Empty otherwise.
	Limit string
	// LimitValue is Limit's value, defaults applied as for Value.
	LimitValue any
}

// Error reads "keyedpool: invalid config: MaxWait is -1s, want 0 (bounded
// by the context only) or more", or, with a Limit, "keyedpool: invalid
// config: MinIdlePerKey 9 exceeds MaxIdlePerKey 8".
func (e *FieldError) Error() string {
	var problem string
	switch {
	case e.Limit != "" && e.Want == "at most":
		problem = fmt.Sprintf("%s %v exceeds %s %v", e.Field, e.Value, e.Limit, e.LimitValue)
	case e.Limit != "" && e.Want == "at least":
		problem = fmt.Sprintf("%s %v is below %s %v", e.Field, e.Value, e.Limit, e.LimitValue)
	case e.Limit != "":
		problem = fmt.Sprintf("%s is %v, want %s %s (%v)", e.Field, e.Value, e.Want, e.Limit, e.LimitValue)
	default:
		problem = fmt.Sprintf("%s is %v, want %s", e.Field, e.Value, e.Want)
	}
	return ErrInvalidConfig.Error() + ": " + problem
}

// Is reports whether target is ErrInvalidConfig.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

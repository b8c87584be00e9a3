package keyedpool_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

// fieldErrors returns the *FieldErrors that err joins, in order.
func fieldErrors(t *testing.T, err error) []keyedpool.FieldError {
	t.Helper()
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %v (%T) does not join errors", err, err)
	}
	var fes []keyedpool.FieldError
	for _, e := range j.Unwrap() {
		var fe *keyedpool.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("joined error %v (%T) is not a *FieldError", e, e)
		}
		if !errors.Is(e, keyedpool.ErrInvalidConfig) {
			t.Errorf("errors.Is(%v, ErrInvalidConfig) = false", e)
		}
		fes = append(fes, *fe)
	}
	return fes
}

// TestConfigValidateReportsEveryField checks that every invalid field is
// reported, each as data, by Validate, New and SetConfig alike.
func TestConfigValidateReportsEveryField(t *testing.T) {
	cfg := keyedpool.Config{
		MaxTotalPerKey:       2,
		MinIdlePerKey:        5,
		MaxWait:              -1,
		MakeFailureThreshold: -5,
		Abandoned:            &keyedpool.AbandonedConfig{Timeout: -time.Second},
		MakeBackoffBase:      time.Minute,
	}
	want := []keyedpool.FieldError{
		{Field: "MinIdlePerKey", Value: 5, Want: "at most", Limit: "MaxTotalPerKey", LimitValue: 2},
		{Field: "MaxWait", Value: time.Duration(-1), Want: "0 (bounded by the context only) or more"},
		{Field: "Abandoned.Timeout", Value: -time.Second, Want: "0 (5m) or more"},
		{Field: "MakeFailureThreshold", Value: -5, Want: "0 (off) or more"},
		{Field: "MakeBackoffMax", Value: 30 * time.Second, Want: "at least", Limit: "MakeBackoffBase", LimitValue: time.Minute},
	}
	wantText := "keyedpool: invalid config: MinIdlePerKey 5 exceeds MaxTotalPerKey 2\n" +
		"keyedpool: invalid config: MaxWait is -1ns, want 0 (bounded by the context only) or more\n" +
		"keyedpool: invalid config: Abandoned.Timeout is -1s, want 0 (5m) or more\n" +
		"keyedpool: invalid config: MakeFailureThreshold is -5, want 0 (off) or more\n" +
		"keyedpool: invalid config: MakeBackoffMax 30s is below MakeBackoffBase 1m0s"

	p, _ := newPool(t, keyedpool.Config{})
	_, newErr := keyedpool.New(&testfactory.Factory{}, cfg)
	for name, err := range map[string]error{
		"Validate()":  cfg.Validate(),
		"New()":       newErr,
		"SetConfig()": p.SetConfig(cfg),
	} {
		if !errors.Is(err, keyedpool.ErrInvalidConfig) {
			t.Errorf("%s = %v, want ErrInvalidConfig", name, err)
			continue
		}
		if got := fieldErrors(t, err); !reflect.DeepEqual(got, want) {
			t.Errorf("%s field errors =\n%+v\nwant\n%+v", name, got, want)
		}
		if got := err.Error(); got != wantText {
			t.Errorf("%s = %q\nwant %q", name, got, wantText)
		}
	}
}

func TestConfigValidateBothLimitsOfMinIdle(t *testing.T) {
	err := keyedpool.Config{MinIdlePerKey: 9}.Validate()
	var limits []string
	for _, fe := range fieldErrors(t, err) {
		if fe.Field != "MinIdlePerKey" || fe.Want != "at most" {
			t.Errorf("field error %+v, want MinIdlePerKey at most a limit", fe)
		}
		limits = append(limits, fmt.Sprintf("%s %v", fe.Limit, fe.LimitValue))
	}
	if want := []string{"MaxIdlePerKey 8", "MaxTotalPerKey 8"}; !reflect.DeepEqual(limits, want) {
		t.Errorf("limits of MinIdlePerKey 9 = %q, want %q (the defaults of both)", limits, want)
	}
}

func TestConfigValidateAcceptsValid(t *testing.T) {
	for _, cfg := range []keyedpool.Config{
		{},
		keyedpool.DefaultConfig(),
		{MaxTotalPerKey: -1, MaxIdlePerKey: -1, MinIdlePerKey: 100},
		{MakeBackoffBase: time.Minute, MakeBackoffMax: time.Minute},
		{Abandoned: &keyedpool.AbandonedConfig{}, WhenExhausted: keyedpool.Fail, MaxSharesPerObject: 100},
	} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", cfg, err)
		}
	}
}

func TestConfigValidateLeavesConfigAlone(t *testing.T) {
	a := &keyedpool.AbandonedConfig{}
	cfg := keyedpool.Config{Abandoned: a}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxTotalPerKey != 0 || a.Timeout != 0 {
		t.Errorf("Validate() changed its Config: MaxTotalPerKey %d, Abandoned.Timeout %v; want both 0", cfg.MaxTotalPerKey, a.Timeout)
	}
}

func ExampleConfig_Validate() {
	cfg := keyedpool.Config{MaxTotalPerKey: 2, MinIdlePerKey: 5, MaxWait: -time.Second}
	err := cfg.Validate()
	fmt.Println(errors.Is(err, keyedpool.ErrInvalidConfig))
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *keyedpool.FieldError
		if errors.As(e, &fe) {
			fmt.Printf("%s = %v: want %s %s\n", fe.Field, fe.Value, fe.Want, fe.Limit)
		}
	}
	// Output:
	// true
	// MinIdlePerKey = 5: want at most MaxTotalPerKey
	// MaxWait = -1s: want 0 (bounded by the context only) or more
}

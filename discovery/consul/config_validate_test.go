package consul_test

import (
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kpool-go/kpool/discovery/consul"
)

// TestValidateReportsEveryField checks that Validate and New name every
// invalid field at once, each as a *FieldError.
func TestValidateReportsEveryField(t *testing.T) {
	cfg := consul.Config{
		WaitTime:    -time.Second,
		BackoffBase: time.Minute,
		Tags:        []string{"a", "", "b", ""},
		TLS:         &api.TLSConfig{},
		HTTPClient:  http.DefaultClient,
	}
	want := []string{
		"consul: invalid config: WaitTime is -1s, want 0 (default 5m0s) or more",
		"consul: invalid config: TLS is set, want nil with HTTPClient set (put TLS in HTTPClient's transport)",
		"consul: invalid config: BackoffMax 30s is below BackoffBase 1m0s",
		`consul: invalid config: Tags[1] is "", want a tag`,
		`consul: invalid config: Tags[3] is "", want a tag`,
	}
	_, newErr := consul.New(cfg)
	for name, err := range map[string]error{"Validate()": cfg.Validate(), "New()": newErr} {
		if !errors.Is(err, consul.ErrInvalidConfig) {
			t.Fatalf("%s = %v, want ErrInvalidConfig", name, err)
		}
		var got []string
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var fe *consul.FieldError
			if !errors.As(e, &fe) || !errors.Is(e, consul.ErrInvalidConfig) {
				t.Errorf("%s joins %v (%T), want a *FieldError matching ErrInvalidConfig", name, e, e)
			}
			got = append(got, e.Error())
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s =\n%q\nwant\n%q", name, got, want)
		}
	}
	if err := (consul.Config{}).Validate(); err != nil {
		t.Errorf("Validate(zero Config) = %v, want nil", err)
	}
}

package discovery_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/keyedpool"
)

// TestRouterConfigValidateReportsEveryField checks that the Router's own
// fields and its pool's are reported together, as one flat list.
func TestRouterConfigValidateReportsEveryField(t *testing.T) {
	cfg := discovery.RouterConfig[stub]{
		Pool:         keyedpool.Config{MaxWait: -1, MinIdlePerKey: -1},
		WarmInterval: -time.Second,
		IdleTimeout:  -time.Minute,
	}
	want := []string{
		"discovery: invalid config: Resolver is nil, want a Resolver, such as static.New's",
		"discovery: invalid config: Factory is nil, want a factory of clients keyed by address, such as grpcpool.New's",
		"discovery: invalid config: WarmInterval is -1s, want 0 (on arrival and Warm only) or more",
		"discovery: invalid config: IdleTimeout is -1m0s, want 0 (watch until Forget or Close) or more",
		"keyedpool: invalid config: MinIdlePerKey is -1, want 0 or more",
		"keyedpool: invalid config: MaxWait is -1ns, want 0 (bounded by the context only) or more",
	}
	_, newErr := discovery.NewRouter(cfg)
	for name, err := range map[string]error{"Validate()": cfg.Validate(), "NewRouter()": newErr} {
		if !errors.Is(err, discovery.ErrInvalidConfig) || !errors.Is(err, keyedpool.ErrInvalidConfig) {
			t.Fatalf("%s = %v, want discovery's and keyedpool's ErrInvalidConfig", name, err)
		}
		var got []string
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var de *discovery.FieldError
			var ke *keyedpool.FieldError
			if !errors.As(e, &de) && !errors.As(e, &ke) {
				t.Errorf("%s joins %v (%T), want a field error", name, e, e)
			}
			got = append(got, e.Error())
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s =\n%q\nwant\n%q", name, got, want)
		}
	}
}

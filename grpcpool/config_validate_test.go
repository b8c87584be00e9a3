package grpcpool_test

import (
	"crypto/tls"
	"errors"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/grpcpool"
)

// TestValidateReportsEveryField checks that Validate and New name every
// invalid field at once, each as a *FieldError.
func TestValidateReportsEveryField(t *testing.T) {
	cfg := config{
		TLS:                  &tls.Config{},
		TransportCredentials: insecure.NewCredentials(),
		Keepalive:            grpcpool.Keepalive{Time: -time.Second},
		IdleTimeout:          -1,
		Retry:                grpcpool.RetryPolicy{MaxAttempts: -1, RetryableStatusCodes: []codes.Code{codes.Unavailable, codes.OK}},
		HealthCheck:          &grpcpool.HealthCheck{Interval: -time.Second},
	}
	want := []string{
		"grpcpool: invalid config: NewStub is nil, want the generated stub constructor (pb.NewFooClient)",
		"grpcpool: invalid config: TransportCredentials is set, want nil with TLS set: exactly one of TLS, TransportCredentials and Insecure",
		"grpcpool: invalid config: Keepalive.Time is -1s, want 0 (default 5m0s) or more",
		"grpcpool: invalid config: IdleTimeout is -1ns, want 0 (gRPC's default) or more",
		"grpcpool: invalid config: Retry.MaxAttempts is -1, want 0 (no retries) or more",
		"grpcpool: invalid config: Retry.RetryableStatusCodes[1] is OK, want an error code",
		"grpcpool: invalid config: HealthCheck.Interval is -1s, want 0 (default 5s) or more",
	}
	wantFields := []string{"NewStub", "TransportCredentials", "Keepalive.Time", "IdleTimeout", "Retry.MaxAttempts", "Retry.RetryableStatusCodes[1]", "HealthCheck.Interval"}
	_, newErr := grpcpool.New(cfg)
	for name, err := range map[string]error{"Validate()": cfg.Validate(), "New()": newErr} {
		if !errors.Is(err, grpcpool.ErrInvalidConfig) {
			t.Fatalf("%s = %v, want ErrInvalidConfig", name, err)
		}
		var got, fields []string
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var fe *grpcpool.FieldError
			if !errors.As(e, &fe) || !errors.Is(e, grpcpool.ErrInvalidConfig) {
				t.Errorf("%s joins %v (%T), want a *FieldError matching ErrInvalidConfig", name, e, e)
				continue
			}
			got = append(got, e.Error())
			fields = append(fields, fe.Field)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s =\n%q\nwant\n%q", name, got, want)
		}
		if !reflect.DeepEqual(fields, wantFields) {
			t.Errorf("%s fields = %q, want %q", name, fields, wantFields)
		}
	}
	if err := (config{NewStub: testpb.NewBenchmarkServiceClient, Insecure: true}).Validate(); err != nil {
		t.Errorf("Validate(insecure, with a stub) = %v, want nil", err)
	}
}

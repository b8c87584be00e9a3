package grpcpool_test

import (
	"crypto/tls"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

func TestNewRefusesInvalidConfig(t *testing.T) {
	ok := config{NewStub: testpb.NewBenchmarkServiceClient, Insecure: true}
	with := func(change func(*config)) config {
		c := ok
		change(&c)
		return c
	}
	for _, tt := range []struct {
		name  string
		cfg   config
		field string
	}{
		{"NoStub", with(func(c *config) { c.NewStub = nil }), "NewStub"},
		{"NoSecurity", with(func(c *config) { c.Insecure = false }), "Insecure"},
		{"TLSAndInsecure", with(func(c *config) { c.TLS = &tls.Config{} }), "TLS"},
		{"CredentialsAndInsecure", with(func(c *config) { c.TransportCredentials = insecure.NewCredentials() }), "TransportCredentials"},
		{"NegativeConnectTimeout", with(func(c *config) { c.ConnectTimeout = -time.Second }), "ConnectTimeout"},
		{"NegativeIdleTimeout", with(func(c *config) { c.IdleTimeout = -1 }), "IdleTimeout"},
		{"NegativeKeepaliveTime", with(func(c *config) { c.Keepalive.Time = -1 }), "Keepalive.Time"},
		{"NegativeKeepaliveTimeout", with(func(c *config) { c.Keepalive.Timeout = -1 }), "Keepalive.Timeout"},
		{"NegativeHealthTimeout", with(func(c *config) { c.HealthCheck = &grpcpool.HealthCheck{Timeout: -1} }), "HealthCheck.Timeout"},
		{"NegativeMaxAttempts", with(func(c *config) { c.Retry.MaxAttempts = -1 }), "Retry.MaxAttempts"},
		{"NegativeInitialBackoff", with(func(c *config) { c.Retry.InitialBackoff = -1 }), "Retry.InitialBackoff"},
		{"NegativeMaxBackoff", with(func(c *config) { c.Retry.MaxBackoff = -1 }), "Retry.MaxBackoff"},
		{"NegativeMultiplier", with(func(c *config) { c.Retry.BackoffMultiplier = -1 }), "Retry.BackoffMultiplier"},
		{"RetryOK", with(func(c *config) { c.Retry.RetryableStatusCodes = []codes.Code{codes.OK} }), "Retry.RetryableStatusCodes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := grpcpool.New(tt.cfg)
			if !errors.Is(err, grpcpool.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("New() = %v, %v; want ErrInvalidConfig naming %s", f, err, tt.field)
			}
		})
	}
}

type addr struct{ host, port string }

func (a addr) String() string { return a.host + ":" + a.port }

type hostPort string

type route struct{ shard int }

// The key is the target by default, which New allows only for keys that
// read as one.
func TestNewDefaultTarget(t *testing.T) {
	if _, err := grpcpool.New(grpcpool.Config[hostPort, stub]{NewStub: testpb.NewBenchmarkServiceClient, Insecure: true}); err != nil {
		t.Errorf("New() with a string-kind key = %v, want nil", err)
	}
	if _, err := grpcpool.New(grpcpool.Config[addr, stub]{NewStub: testpb.NewBenchmarkServiceClient, Insecure: true}); err != nil {
		t.Errorf("New() with a fmt.Stringer key = %v, want nil", err)
	}
	_, err := grpcpool.New(grpcpool.Config[route, stub]{NewStub: testpb.NewBenchmarkServiceClient, Insecure: true})
	if !errors.Is(err, grpcpool.ErrInvalidConfig) || !strings.Contains(err.Error(), "Target") {
		t.Errorf("New() with a struct key and no Target = %v, want ErrInvalidConfig naming Target", err)
	}

	srv := grpctest.Start(t, grpctest.Options{})
	host, port, _ := strings.Cut(srv.Addr, ":")
	for name, mk := range map[string]func() (*grpcpool.Client[stub], error){
		"Stringer": func() (*grpcpool.Client[stub], error) {
			f, _ := grpcpool.New(grpcpool.Config[addr, stub]{NewStub: testpb.NewBenchmarkServiceClient, Insecure: true})
			return f.Make(grpctest.Context(t, testTimeout), addr{host, port})
		},
		"Target": func() (*grpcpool.Client[stub], error) {
			f, _ := grpcpool.New(grpcpool.Config[route, stub]{
				NewStub:  testpb.NewBenchmarkServiceClient,
				Insecure: true,
				Target:   func(route) (string, error) { return srv.Addr, nil },
			})
			return f.Make(grpctest.Context(t, testTimeout), route{shard: 3})
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := mk()
			if err != nil {
				t.Fatalf("Make() error = %v", err)
			}
			defer c.ClientConn().Close()
			if got := c.Target(); got != srv.Addr {
				t.Errorf("Target() = %q, want %q", got, srv.Addr)
			}
			if _, err := c.Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x")); err != nil {
				t.Errorf("UnaryCall() error = %v", err)
			}
		})
	}
}

// The retry policy reaches gRPC: RPCs failing with Unavailable are tried
// again on the same connection, up to MaxAttempts.
func TestRetryPolicy(t *testing.T) {
	for _, tt := range []struct {
		name      string
		retry     grpcpool.RetryPolicy
		fail      int
		wantCode  codes.Code
		wantCalls int64
	}{
		{"Off", grpcpool.RetryPolicy{}, 2, codes.Unavailable, 1},
		{"ThreeAttempts", grpcpool.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond}, 2, codes.OK, 3},
		{"TooFew", grpcpool.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond}, 2, codes.Unavailable, 2},
		{"NotRetryable", grpcpool.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, RetryableStatusCodes: []codes.Code{codes.Internal}}, 2, codes.Unavailable, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := grpctest.Start(t, grpctest.Options{})
			p := newPool(t, config{Retry: tt.retry, ConnectTimeout: testTimeout}, keyedpool.Config{})
			h, err := p.Borrow(grpctest.Context(t, testTimeout), srv.Addr)
			if err != nil {
				t.Fatalf("Borrow() error = %v", err)
			}
			srv.FailNext(tt.fail)
			_, err = h.Value().Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x"))
			grpcpool.Release(p, h, err)
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("UnaryCall() = %v, want code %v", err, tt.wantCode)
			}
			if got := srv.UnaryCalls(); got != tt.wantCalls {
				t.Errorf("server saw %d attempts, want %d", got, tt.wantCalls)
			}
		})
	}
}

// New refuses a NaN or infinite Retry.BackoffMultiplier with an error that
// wraps ErrInvalidConfig and names the field, as for any invalid value (a
// < 0 check lets both through).
func TestNewRefusesNonFiniteBackoffMultiplier(t *testing.T) {
	for _, m := range []float64{math.NaN(), math.Inf(1)} {
		_, err := grpcpool.New(config{
			NewStub:  testpb.NewBenchmarkServiceClient,
			Insecure: true,
			Retry:    grpcpool.RetryPolicy{MaxAttempts: 3, BackoffMultiplier: m},
		})
		if !errors.Is(err, grpcpool.ErrInvalidConfig) || !strings.Contains(err.Error(), "Retry.BackoffMultiplier") {
			t.Errorf("New() with Retry.BackoffMultiplier %v = %v; want ErrInvalidConfig naming Retry.BackoffMultiplier", m, err)
		}
	}
}

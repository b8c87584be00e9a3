package grpcpool

import (
	"cmp"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Config configures a Factory. NewStub and one transport security setting
// (TLS, TransportCredentials or Insecure) are required; every other field's
// zero value is a documented default. Validate and New refuse an invalid
// Config with an error that names every invalid field, each as a
// *FieldError matched by errors.Is(err, ErrInvalidConfig).
type Config[K comparable, T any] struct {
	// NewStub makes the generated stub for a connection, for example
	// pb.NewFooClient. Required.
	NewStub func(grpc.ClientConnInterface) T

	// Target maps a key to the gRPC target to dial ("host:port",
	// "dns:///name:port", ...). Nil, the default: the key is the target
	// (formatted with fmt.Sprint), which New allows only for keys of a
	// string kind or that implement fmt.Stringer.
	Target func(K) (string, error)

	// TLS dials with TLS using this configuration: set RootCAs to trust a
	// private CA, and Certificates to present a client certificate (mTLS).
	// Exactly one of TLS, TransportCredentials and Insecure must be set, so
	// that nobody sends plaintext by accident.
	TLS *tls.Config

	// TransportCredentials dials with these credentials (ALTS, xDS, ...).
	// See TLS.
	TransportCredentials credentials.TransportCredentials

	// Insecure dials in plaintext. See TLS.
	Insecure bool

	// Keepalive configures the client's HTTP/2 keepalive pings. The zero
	// value is what a grpc-go server with its default enforcement policy
	// accepts: while RPCs are in flight, a ping after 5 minutes without
	// anything received, and giving up on the connection after 10 s
	// without an answer; no pings on a connection without RPCs.
	Keepalive Keepalive

	// IdleTimeout is how long a connection may carry no RPC before gRPC
	// closes its transport and moves it to IDLE; the next RPC, or Activate,
	// reconnects it. Zero: gRPC's default, 30 minutes. Negative is invalid.
	IdleTimeout time.Duration

	// Retry, when its MaxAttempts is 2 or more, becomes the connections'
	// default service config, so gRPC retries failed RPCs on the same
	// connection. The zero value: no retry policy.
	Retry RetryPolicy

	// ConnectTimeout makes Make connect at once and wait up to this long
	// for the connection to be READY, so that the pool never lends a
	// connection that has not connected; Activate waits the same way for an
	// IDLE connection it reconnects. A failed first attempt (refused, TLS
	// handshake) fails Make at once with gRPC's reason, wrapped in
	// ErrConnect. Zero, the default: off, connections connect lazily on
	// their first RPC. Negative is invalid. Set it: Borrow then reports a
	// dead backend or a certificate problem instead of lending a connection
	// that cannot work.
	ConnectTimeout time.Duration

	// HealthCheck, when set, makes Validate ask the backend's
	// grpc.health.v1 service. Nil, the default: Validate checks the
	// connectivity state only. The pool calls Validate with its
	// TestOnCreate, TestOnBorrow and TestOnReturn settings.
	HealthCheck *HealthCheck

	// Classifier decides whether an RPC's error means its connection is
	// broken, so that Conn and Release invalidate the connection instead of
	// returning it. It is called with the error (never nil) and the
	// connection's state just after the RPC failed. Nil, the default:
	// DefaultClassifier. One that panics counts as broken (the connection
	// cannot be judged), and the RPC's error (Release's) gets the panic as
	// an error wrapping keyedpool.ErrFactoryPanic.
	Classifier func(err error, state connectivity.State) bool

	// Observer, when set, is told about every RPC the factory's
	// connections carry (through client interceptors on each connection),
	// for metrics: grpcmetrics.NewObserver makes one. Nil, the default:
	// nothing is observed and RPCs pay nothing for it.
	Observer Observer

	// DialOptions are passed to grpc.NewClient after the options the fields
	// above make, so they override them. Transport credentials given here
	// replace the ones grpcpool wraps to learn each server's stream cap
	// (Client.ShareCap): set them in TLS or TransportCredentials instead.
	DialOptions []grpc.DialOption
}

// Keepalive configures HTTP/2 keepalive pings from the client. The server
// must allow them: its keepalive.EnforcementPolicy's MinTime must be Time
// or less, and its PermitWithoutStream true if PermitWithoutStream is set
// here. A server that sees pings sooner than it allows answers with GOAWAY
// ENHANCE_YOUR_CALM "too_many_pings" and closes the connection, and the
// client logs an error and reconnects. A grpc-go server's default policy
// allows one ping per 5 minutes and none without streams: the zero value
// keeps to that.
//
// Without pings on idle connections, a pooled connection whose backend
// vanished without closing it (the host lost, a network partition, a
// middlebox that dropped the flow) stays READY while it idles. The first
// RPC sent on it finds it broken: gRPC closes the transport when the RPC's
// data, or the ping a new stream sends at once on a connection silent for
// Time or more, goes unanswered for Timeout; the RPC fails with
// Unavailable (or its deadline), and the connection leaves READY, so that
// Conn and Release invalidate it as DefaultClassifier says and gRPC
// reconnects it before it carries another RPC. To find such connections
// before an RPC is sent on them, set Config.HealthCheck and the pool's
// TestWhileIdle (with eviction runs) or TestOnBorrow, or set
// PermitWithoutStream with a server that permits it. A backend that closes
// its connections (a process that exits or is stopped) needs neither: the
// connection leaves READY at once.
type Keepalive struct {
	// Time is how long the connection may receive nothing before the
	// client pings. Zero: 5 minutes (DefaultKeepaliveTime), the least a
	// default server allows. gRPC raises values under 10 s to 10 s, and
	// doubles Time for a connection whose server closed it for too many
	// pings. Negative is invalid.
	Time time.Duration
	// Timeout is how long the client waits for the ping's answer before it
	// closes the connection; gRPC also uses it as the socket's
	// TCP_USER_TIMEOUT, how long sent data may stay unacknowledged. Zero:
	// 10 s. Negative is invalid.
	Timeout time.Duration
	// PermitWithoutStream pings connections that carry no RPC too (gRPC's
	// keepalive.ClientParameters.PermitWithoutStream), so that an idle
	// pooled connection to a vanished backend is found broken before an
	// RPC is sent on it, and middleboxes do not drop idle connections.
	// Set it only when the server's EnforcementPolicy has
	// PermitWithoutStream true and a MinTime of Time or less. False, the
	// default: ping only while RPCs are in flight, as a default server
	// requires.
	PermitWithoutStream bool
	// Disable turns keepalive pings off; the other fields are then ignored.
	Disable bool
}

// Keepalive defaults.
const (
	// DefaultKeepaliveTime is the default Keepalive.Time: the MinTime of a
	// grpc-go server's default enforcement policy, so that a default server
	// accepts every ping.
	DefaultKeepaliveTime    = 5 * time.Minute
	DefaultKeepaliveTimeout = 10 * time.Second
)

// RetryPolicy is gRPC's retry policy (gRFC A6) for every method of a
// connection. gRPC retries on the same connection, only RPCs that have not
// yet received response headers, and within the RPC's deadline.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts, the first included. 0 or 1:
	// no retries (the default). gRPC caps it at 5. Negative is invalid.
	MaxAttempts int
	// InitialBackoff bounds the random wait before the first retry. Zero:
	// 100 ms. Negative is invalid.
	InitialBackoff time.Duration
	// MaxBackoff caps the random wait before any retry. Zero: 1 s.
	// Negative is invalid.
	MaxBackoff time.Duration
	// BackoffMultiplier grows the wait bound after each retry. Zero: 2.
	// Negative is invalid.
	BackoffMultiplier float64
	// RetryableStatusCodes are the status codes that are retried. Empty:
	// Unavailable only. OK is invalid.
	RetryableStatusCodes []codes.Code
}

// Retry defaults, used when MaxAttempts is 2 or more.
const (
	DefaultInitialBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff        = time.Second
	DefaultBackoffMultiplier = 2.0
)

// HealthCheck configures the grpc.health.v1 Check that Validate makes, and
// that Conn repeats on connections it keeps using. A connection has at most
// one Check in flight; callers that want an answer meanwhile share it.
type HealthCheck struct {
	// Service is the service name to ask about. Empty: the server as a
	// whole.
	Service string
	// Timeout bounds each Check, and only it decides when a Check has
	// failed: a Check runs on a context of its own (the values of the
	// caller that started it, not its cancellation), so a caller whose
	// context ends first stops waiting but does not end the Check. Zero:
	// 1 s. Negative is invalid.
	Timeout time.Duration
	// Interval is how long a Check's answer holds for a Conn. With shared
	// leases a busy connection may never go idle, where the pool validates
	// it; so before an RPC, Conn starts a Check when none is in flight and
	// the last one began this long ago or more, and waits for its answer
	// (other RPCs meanwhile use the last answer). Conn's Checks of a
	// connection thus begin at most once per Interval, however many RPCs
	// it carries and however many of them give up; Validate's Checks, which
	// the pool's Test settings ask for, are not held back. While the
	// backend's last answer is not SERVING, Conn fails the RPC at once with
	// Unavailable (wrapping ErrNotServing) without sending it. Zero: 5 s.
	// Negative is invalid.
	Interval time.Duration
}

// Health check defaults, used when the HealthCheck fields are zero.
const (
	DefaultHealthCheckTimeout  = time.Second
	DefaultHealthCheckInterval = 5 * time.Second
)

// resolved is a checked Config turned into what the factory uses.
type resolved[K comparable] struct {
	target         func(K) (string, error)
	creds          credentials.TransportCredentials
	dialOpts       []grpc.DialOption // after the credentials
	classify       func(error, connectivity.State) bool
	healthService  string
	healthTimeout  time.Duration // 0: no health check
	healthInterval time.Duration
	connect        time.Duration
	observer       Observer
}

// Validate reports every invalid field of c, each as a *FieldError,
// joined with errors.Join; nil when New would accept c. It dials nothing.
func (c Config[K, T]) Validate() error {
	_, err := c.resolve()
	return err
}

// check returns the problems of c, one *FieldError per field, joined.
func (c Config[K, T]) check() error {
	var errs []error
	bad := func(field string, value any, want string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Want: want})
	}
	if c.NewStub == nil {
		bad("NewStub", nil, "the generated stub constructor (pb.NewFooClient)")
	}
	if c.Target == nil {
		if kt := reflect.TypeFor[K](); kt.Kind() != reflect.String && !kt.Implements(reflect.TypeFor[fmt.Stringer]()) {
			bad("Target", nil, fmt.Sprintf("a func, as key type %v is neither a string nor a fmt.Stringer", kt))
		}
	}
	const one = "exactly one of TLS, TransportCredentials and Insecure"
	switch {
	case c.TLS == nil && c.TransportCredentials == nil && !c.Insecure:
		bad("Insecure", false, "true for plaintext, or TLS or TransportCredentials set: "+one)
	case c.Insecure && c.TLS != nil:
		bad("Insecure", true, "false with TLS set: "+one)
	case c.Insecure && c.TransportCredentials != nil:
		bad("Insecure", true, "false with TransportCredentials set: "+one)
	case c.TLS != nil && c.TransportCredentials != nil:
		bad("TransportCredentials", c.TransportCredentials, "nil with TLS set: "+one)
	}
	if c.Keepalive.Time < 0 {
		bad("Keepalive.Time", c.Keepalive.Time, fmt.Sprintf("0 (default %v) or more", DefaultKeepaliveTime))
	}
	if c.Keepalive.Timeout < 0 {
		bad("Keepalive.Timeout", c.Keepalive.Timeout, fmt.Sprintf("0 (default %v) or more", DefaultKeepaliveTimeout))
	}
	if c.IdleTimeout < 0 {
		bad("IdleTimeout", c.IdleTimeout, "0 (gRPC's default) or more")
	}
	p := c.Retry
	if p.MaxAttempts < 0 {
		bad("Retry.MaxAttempts", p.MaxAttempts, "0 (no retries) or more")
	}
	if p.InitialBackoff < 0 {
		bad("Retry.InitialBackoff", p.InitialBackoff, fmt.Sprintf("0 (default %v) or more", DefaultInitialBackoff))
	}
	if p.MaxBackoff < 0 {
		bad("Retry.MaxBackoff", p.MaxBackoff, fmt.Sprintf("0 (default %v) or more", DefaultMaxBackoff))
	}
	if m := p.BackoffMultiplier; m < 0 || math.IsNaN(m) || math.IsInf(m, 0) {
		bad("Retry.BackoffMultiplier", m, fmt.Sprintf("0 (default %v) or more", DefaultBackoffMultiplier))
	}
	for i, code := range p.RetryableStatusCodes {
		if code == codes.OK || code > codes.Unauthenticated {
			bad(fmt.Sprintf("Retry.RetryableStatusCodes[%d]", i), code, "an error code")
		}
	}
	if c.ConnectTimeout < 0 {
		bad("ConnectTimeout", c.ConnectTimeout, "0 (lazy connect) or more")
	}
	if hc := c.HealthCheck; hc != nil {
		if hc.Timeout < 0 {
			bad("HealthCheck.Timeout", hc.Timeout, fmt.Sprintf("0 (default %v) or more", DefaultHealthCheckTimeout))
		}
		if hc.Interval < 0 {
			bad("HealthCheck.Interval", hc.Interval, fmt.Sprintf("0 (default %v) or more", DefaultHealthCheckInterval))
		}
	}
	return errors.Join(errs...)
}

// resolve checks every field of c and fills in the defaults.
func (c Config[K, T]) resolve() (resolved[K], error) {
	var r resolved[K]
	if err := c.check(); err != nil {
		return r, err
	}
	r.target = c.Target
	if r.target == nil {
		r.target = func(k K) (string, error) { return fmt.Sprint(k), nil }
	}

	var creds credentials.TransportCredentials
	switch {
	case c.TLS != nil:
		creds = credentials.NewTLS(c.TLS)
	case c.TransportCredentials != nil:
		creds = c.TransportCredentials
	default:
		creds = insecure.NewCredentials()
	}
	r.creds = creds // wrapped per Client: see capCreds

	if ka := c.Keepalive; !ka.Disable {
		if ka.Time == 0 {
			ka.Time = DefaultKeepaliveTime
		}
		if ka.Timeout == 0 {
			ka.Timeout = DefaultKeepaliveTimeout
		}
		r.dialOpts = append(r.dialOpts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                ka.Time,
			Timeout:             ka.Timeout,
			PermitWithoutStream: ka.PermitWithoutStream,
		}))
	}

	if c.IdleTimeout > 0 {
		r.dialOpts = append(r.dialOpts, grpc.WithIdleTimeout(c.IdleTimeout))
	}

	sc, err := c.Retry.serviceConfig()
	if err != nil {
		return r, err
	}
	if sc != "" {
		r.dialOpts = append(r.dialOpts, grpc.WithDefaultServiceConfig(sc))
	}

	r.connect = c.ConnectTimeout

	if hc := c.HealthCheck; hc != nil {
		r.healthService = hc.Service
		r.healthTimeout = cmp.Or(hc.Timeout, DefaultHealthCheckTimeout)
		r.healthInterval = cmp.Or(hc.Interval, DefaultHealthCheckInterval)
	}

	r.classify = c.Classifier
	if r.classify == nil {
		r.classify = DefaultClassifier
	}
	r.observer = c.Observer
	r.dialOpts = append(r.dialOpts, c.DialOptions...)
	return r, nil
}

// serviceConfig returns the policy, which check has accepted, as a gRPC
// service config in JSON, or "" when it asks for no retries.
func (p RetryPolicy) serviceConfig() (string, error) {
	// Codes go out as numbers, which gRPC's parser takes, so that no table
	// of their upper-case names is needed here.
	codeList := []int{int(codes.Unavailable)}
	if len(p.RetryableStatusCodes) > 0 {
		codeList = codeList[:0]
		for _, c := range p.RetryableStatusCodes {
			codeList = append(codeList, int(c))
		}
	}
	if p.MaxAttempts < 2 {
		return "", nil
	}
	initial, maxB, mult := p.InitialBackoff, p.MaxBackoff, p.BackoffMultiplier
	if initial == 0 {
		initial = DefaultInitialBackoff
	}
	if maxB == 0 {
		maxB = DefaultMaxBackoff
	}
	if mult == 0 {
		mult = DefaultBackoffMultiplier
	}
	seconds := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }
	type retryPolicy struct {
		MaxAttempts          int     `json:"maxAttempts"`
		InitialBackoff       string  `json:"initialBackoff"`
		MaxBackoff           string  `json:"maxBackoff"`
		BackoffMultiplier    float64 `json:"backoffMultiplier"`
		RetryableStatusCodes []int   `json:"retryableStatusCodes"`
	}
	type methodConfig struct {
		Name        []struct{}  `json:"name"` // one empty name: every method
		RetryPolicy retryPolicy `json:"retryPolicy"`
	}
	b, err := json.Marshal(struct {
		MethodConfig []methodConfig `json:"methodConfig"`
	}{[]methodConfig{{
		Name: []struct{}{{}},
		RetryPolicy: retryPolicy{
			MaxAttempts:          p.MaxAttempts,
			InitialBackoff:       seconds(initial),
			MaxBackoff:           seconds(maxB),
			BackoffMultiplier:    mult,
			RetryableStatusCodes: codeList,
		},
	}}})
	if err != nil {
		return "", fmt.Errorf("grpcpool: retry service config: %w", err)
	}
	return string(b), nil
}

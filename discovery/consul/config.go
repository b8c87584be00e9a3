package consul

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
)

// Defaults of Config.
const (
	DefaultWaitTime    = 5 * time.Minute
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
)

// ErrInvalidConfig is matched by the error Validate and New return for a
// Config they refuse: one *FieldError per invalid field.
var ErrInvalidConfig = errors.New("consul: invalid config")

// Config configures a Resolver. The zero value asks the agent that
// api.DefaultConfig finds (CONSUL_HTTP_ADDR, else 127.0.0.1:8500) for the
// passing instances of each service.
type Config struct {
	// Address is the Consul agent's HTTP API: "host:port", or a URL such as
	// "https://host:8501" (https turns TLS on). Empty: CONSUL_HTTP_ADDR,
	// else 127.0.0.1:8500 (api.DefaultConfig).
	Address string

	// Datacenter to ask. Empty: the agent's own.
	Datacenter string

	// Token is the ACL token sent with each query. Empty:
	// CONSUL_HTTP_TOKEN (or CONSUL_HTTP_TOKEN_FILE), else the agent's
	// default token.
	Token string

	// TLS, when set, talks to Consul over HTTPS with these settings: CA
	// (CAFile, CAPath or CAPem), client certificate for mTLS
	// (CertFile/KeyFile or CertPEM/KeyPEM), server name (Address).
	// Nil: HTTPS only when Address says https (or CONSUL_HTTP_SSL), with
	// the CONSUL_CACERT, CONSUL_CLIENT_CERT... environment settings.
	TLS *api.TLSConfig

	// HTTPClient, when set, carries the queries instead of a client of the
	// Resolver's own; its transport then holds any TLS settings, and TLS
	// must be nil.
	HTTPClient *http.Client

	// Tags an instance must all carry to be an endpoint. Empty: any.
	Tags []string

	// FallbackToAll makes every instance an endpoint, whatever its checks
	// say, when none passes, rather than leaving the service without
	// endpoints: better a backend that fails its checks than none. False
	// (the default): only instances whose checks all pass.
	FallbackToAll bool

	// AllowStale lets any Consul server answer, not only the leader:
	// lighter on the servers, possibly a little behind. False: the leader.
	AllowStale bool

	// WaitTime bounds how long one blocking query waits in Consul for a
	// change before it returns unchanged and the next begins. Zero means
	// the default, 5 minutes (Consul caps it at 10). Negative is invalid.
	WaitTime time.Duration

	// BackoffBase is the wait before the first retry after a failed query;
	// each further failure in a row doubles it, up to BackoffMax, and each
	// wait is drawn at random between half and all of it (jitter), so that
	// many clients do not retry together. Zero means the default, 500 ms.
	// Negative is invalid.
	BackoffBase time.Duration

	// BackoffMax caps the wait between retries. Zero means the default, 30
	// seconds. Negative or below BackoffBase is invalid.
	BackoffMax time.Duration
}

// Validate reports every invalid field of c, each as a *FieldError, joined
// with errors.Join; nil when New would accept c. It contacts nothing.
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, value any, want string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Want: want})
	}
	if c.WaitTime < 0 {
		bad("WaitTime", c.WaitTime, fmt.Sprintf("0 (default %v) or more", DefaultWaitTime))
	}
	if c.BackoffBase < 0 {
		bad("BackoffBase", c.BackoffBase, fmt.Sprintf("0 (default %v) or more", DefaultBackoffBase))
	}
	if c.TLS != nil && c.HTTPClient != nil {
		bad("TLS", c.TLS, "nil with HTTPClient set (put TLS in HTTPClient's transport)")
	}
	d := c.withDefaults()
	switch {
	case c.BackoffMax < 0:
		bad("BackoffMax", c.BackoffMax, fmt.Sprintf("0 (default %v) or more", DefaultBackoffMax))
	case d.BackoffBase >= 0 && d.BackoffMax < d.BackoffBase:
		errs = append(errs, &FieldError{Field: "BackoffMax", Value: d.BackoffMax, Want: "at least", Limit: "BackoffBase", LimitValue: d.BackoffBase})
	}
	for i, t := range c.Tags {
		if t == "" {
			bad(fmt.Sprintf("Tags[%d]", i), t, "a tag")
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns c with its zero durations set to their defaults.
func (c Config) withDefaults() Config {
	if c.WaitTime == 0 {
		c.WaitTime = DefaultWaitTime
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	return c
}

// FieldError is one invalid field of a Config. Validate and New return one
// per invalid field, joined with errors.Join: errors.Is(err,
// ErrInvalidConfig) holds for the whole and for each, errors.As finds the
// first, and the joined error's Unwrap() []error lists them all.
type FieldError struct {
	// Field is the field's name as in Go; an element of a slice follows
	// it with its index: "WaitTime", "Tags[1]".
	Field string
	// Value is the field's value, once zero durations that stand for a
	// default have been replaced by it where Limit is set.
	Value any
	// Want says what Field accepts: "0 (default 5m0s) or more". When
	// Value is refused only beside another field, Want is "at least" and
	// Limit names that field.
	Want string
	// Limit names the field that Value is measured against when it is
	// valid alone but not beside it: BackoffBase for a BackoffMax below
	// it. Empty otherwise.
	Limit string
	// LimitValue is Limit's value, its default if zero.
	LimitValue any
}

// Error reads "consul: invalid config: WaitTime is -1s, want 0 (default
// 5m0s) or more", or, with a Limit, "consul: invalid config: BackoffMax 1s
// is below BackoffBase 1m0s". A pointer shows as nil or set.
func (e *FieldError) Error() string {
	v := fmt.Sprintf("%v", e.Value)
	switch x := e.Value.(type) {
	case string:
		v = fmt.Sprintf("%q", x)
	case *api.TLSConfig:
		v = "set"
		if x == nil {
			v = "nil"
		}
	}
	if e.Limit != "" {
		return fmt.Sprintf("%v: %s %s is below %s %v", ErrInvalidConfig, e.Field, v, e.Limit, e.LimitValue)
	}
	return fmt.Sprintf("%v: %s is %s, want %s", ErrInvalidConfig, e.Field, v, e.Want)
}

// Is reports whether target is ErrInvalidConfig.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

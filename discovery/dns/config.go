package dns

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Defaults of Config.
const (
	// DefaultInterval is the wait between lookups of a name: short enough
	// that a Kubernetes pod that stops being ready leaves the list well
	// within its default 30 s termination grace period, long enough to
	// cost a DNS server nothing.
	DefaultInterval = 10 * time.Second
	// DefaultJitter is the largest share of the interval a wait is
	// shortened by at random.
	DefaultJitter = 0.1
	// DefaultTimeout bounds one query, as resolv.conf's default does.
	DefaultTimeout = 5 * time.Second
)

// Errors of this package. Match them with errors.Is: they are wrapped with
// detail (the field, the name, why).
var (
	// ErrInvalidConfig is matched by the error Validate and New return for
	// a Config they refuse: one *FieldError per invalid field.
	ErrInvalidConfig = errors.New("dns: invalid config")
	// ErrInvalidName is wrapped by the error Watch and Config.CheckName
	// return for a name that no lookup can serve; the message says why.
	ErrInvalidName = errors.New("dns: invalid name")
)

// resolvConf is the file whose nameservers an empty Config.Servers means; a
// variable for the tests.
var resolvConf = "/etc/resolv.conf"

// Config configures a Resolver. The zero value asks the nameservers of
// /etc/resolv.conf every 10 s, and needs names with ports or SRV names.
type Config struct {
	// Servers are the DNS servers to ask, each "host:port", or an IP
	// address alone for port 53. Each lookup asks them in order until one
	// answers. Empty: the nameservers of /etc/resolv.conf, read once by
	// New (without its search list: names are taken as written).
	Servers []string
	// Port is the endpoints' port for a name that gives none ("name"
	// rather than "name:port"). Zero: such names are invalid; SRV names
	// never use it. Must be 0 to 65535.
	Port int
	// Interval is the wait between the end of one lookup of a name and the
	// start of the next, whether it failed or not; a change in DNS is seen
	// within about Interval plus the records' time to live in any cache
	// between. Zero means DefaultInterval (10 s). Negative is invalid.
	Interval time.Duration
	// Jitter is the largest share of Interval by which each wait is
	// shortened at random: each wait lies between (1-Jitter)·Interval and
	// Interval. Zero means DefaultJitter (0.1); there is no way to turn
	// jitter off, since many clients asking together is what it prevents.
	// Must be below 1; negative is invalid.
	Jitter float64
	// Timeout bounds one query to one server, and again its repeat over TCP
	// when the UDP answer was truncated. A lookup asks up to two queries
	// (A and AAAA), more for SRV targets the answer gives no addresses of,
	// of each server in turn. Zero means DefaultTimeout (5 s). Negative is
	// invalid.
	Timeout time.Duration
}

// Validate reports every invalid field of c, each as a *FieldError, in the
// order of Config's fields, joined with errors.Join; nil when New would
// accept c (New may still fail to read /etc/resolv.conf for empty
// Servers). It reads and contacts nothing.
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, value any, want string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Want: want})
	}
	for i, s := range c.Servers {
		if _, why := serverAddr(s); why != "" {
			bad(fmt.Sprintf("Servers[%d]", i), s, why)
		}
	}
	if c.Port < 0 || c.Port > 65535 {
		bad("Port", c.Port, "0 (names carry their port) to 65535")
	}
	if c.Interval < 0 {
		bad("Interval", c.Interval, fmt.Sprintf("0 (default %v) or more", DefaultInterval))
	}
	// Written so that NaN is refused too.
	if !(c.Jitter >= 0 && c.Jitter < 1) {
		bad("Jitter", c.Jitter, fmt.Sprintf("0 (default %v) or more, below 1", DefaultJitter))
	}
	if c.Timeout < 0 {
		bad("Timeout", c.Timeout, fmt.Sprintf("0 (default %v) or more", DefaultTimeout))
	}
	return errors.Join(errs...)
}

// CheckName returns nil if the Watch of a Resolver made from c accepts
// name, else the error that Watch would return at once, wrapping
// ErrInvalidName and saying why. Only c.Port matters: a name without a
// port needs one there. A configuration loader calls it to refuse a bad
// name before anything runs. It reads and contacts nothing.
func (c Config) CheckName(name string) error {
	_, err := parseName(name, c.Port)
	return err
}

// withDefaults returns c with its zero fields that stand for a default set
// to it.
func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Jitter == 0 {
		c.Jitter = DefaultJitter
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// serverAddr returns s as host:port, with port 53 when s is an IP address
// alone, or why s is no server address.
func serverAddr(s string) (addr, why string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if net.ParseIP(s) == nil {
			return "", "host:port or an IP address"
		}
		return net.JoinHostPort(s, "53"), ""
	}
	if host == "" {
		return "", "host:port with a host"
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", "host:port with a port from 1 to 65535"
	}
	return s, ""
}

// FieldError is one invalid field of a Config. Validate and New return one
// per invalid field, joined with errors.Join: errors.Is(err,
// ErrInvalidConfig) holds for the whole and for each, errors.As finds the
// first, and the joined error's Unwrap() []error lists them all.
type FieldError struct {
	// Field is the field's name as in Go; an element of a slice follows
	// it with its index: "Interval", "Servers[1]".
	Field string
	// Value is the field's value.
	Value any
	// Want says what Field accepts: "0 (default 10s) or more".
	Want string
}

// Error reads "dns: invalid config: Interval is -1s, want 0 (default 10s)
// or more"; a string Value is quoted.
func (e *FieldError) Error() string {
	v := fmt.Sprintf("%v", e.Value)
	if s, ok := e.Value.(string); ok {
		v = strconv.Quote(s)
	}
	return fmt.Sprintf("%v: %s is %s, want %s", ErrInvalidConfig, e.Field, v, e.Want)
}

// Is reports whether target is ErrInvalidConfig.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

package consul

import (
	"errors"
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

// ErrInvalidConfig is wrapped by the error New returns for a Config it
// refuses; the message names the field.
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

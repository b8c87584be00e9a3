package config

import (
	"crypto/tls"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/keyedpool"
)

// File is a configuration file, decoded and checked. Load and Parse return
// it; its fields hold what the file says, with defaults filled in where the
// field's comment says so.
type File struct {
	// Path is the file's name as given to Load.
	Path string `yaml:"-"`
	// Name names this kpool instance: the pool label of its metrics and
	// its pool's name in /stats. Default DefaultName.
	Name string `yaml:"name"`
	// Balancer picks the endpoint of each borrow, for every service:
	// round_robin (the default), weighted_round_robin (by the endpoints'
	// weights, Consul's service weights) or least_loaded (the less loaded
	// of two endpoints drawn at random). One for the whole file: a
	// discovery.Router makes its balancers without knowing the service.
	Balancer Balancer `yaml:"balancer"`
	// Pool is the keyedpool configuration of the pool that holds every
	// service's connections, keyed by endpoint address.
	Pool Pool `yaml:"pool"`
	// GRPC says how connections are made.
	GRPC GRPC `yaml:"grpc"`
	// Services are the services whose endpoints the pool connects to. At
	// least one is required.
	Services []Service `yaml:"services"`
	// HTTP configures the HTTP endpoints.
	HTTP HTTP `yaml:"http"`
	// Metrics configures the Prometheus metrics.
	Metrics Metrics `yaml:"metrics"`

	tls   *tls.Config    // built from GRPC.TLS by Load
	lines map[string]int // field path -> its line; see ErrorAt
}

// Pool mirrors keyedpool.Config field for field (the Go field names are
// the same), with durations as Go duration strings ("500ms", "30s",
// "1h30m"). Zero or absent values mean what they mean in keyedpool.Config.
// EvictionPolicy and SwallowedErrorListener are code, not settings: the
// eviction policy is keyedpool's default, and background errors are
// counted in the metrics.
type Pool struct {
	MaxTotal                int        `yaml:"max_total"`
	MaxTotalPerKey          int        `yaml:"max_total_per_key"`
	MaxIdlePerKey           int        `yaml:"max_idle_per_key"`
	MinIdlePerKey           int        `yaml:"min_idle_per_key"`
	WhenExhausted           Exhausted  `yaml:"when_exhausted"`
	MaxWait                 Duration   `yaml:"max_wait"`
	FIFO                    bool       `yaml:"fifo"`
	TestOnCreate            bool       `yaml:"test_on_create"`
	TestOnBorrow            bool       `yaml:"test_on_borrow"`
	TestOnReturn            bool       `yaml:"test_on_return"`
	TestWhileIdle           bool       `yaml:"test_while_idle"`
	MaxSharesPerObject      Shares     `yaml:"max_shares_per_object"`
	TimeBetweenEvictionRuns Duration   `yaml:"time_between_eviction_runs"`
	NumTestsPerEvictionRun  int        `yaml:"num_tests_per_eviction_run"`
	MinEvictableIdle        Duration   `yaml:"min_evictable_idle"`
	SoftMinEvictableIdle    Duration   `yaml:"soft_min_evictable_idle"`
	MaxLifetime             Duration   `yaml:"max_lifetime"`
	MaxLifetimeJitter       Duration   `yaml:"max_lifetime_jitter"`
	Abandoned               *Abandoned `yaml:"abandoned"`
	MakeFailureThreshold    int        `yaml:"make_failure_threshold"`
	MakeBackoffBase         Duration   `yaml:"make_backoff_base"`
	MakeBackoffMax          Duration   `yaml:"make_backoff_max"`
	FactoryTimeout          Duration   `yaml:"factory_timeout"`
}

// Abandoned mirrors keyedpool.AbandonedConfig. Present (even empty, "{}"),
// abandoned-object tracking is on; absent or null, off. Its records go to
// the program's logger.
type Abandoned struct {
	RemoveOnBorrow      bool     `yaml:"remove_on_borrow"`
	RemoveOnMaintenance bool     `yaml:"remove_on_maintenance"`
	Timeout             Duration `yaml:"timeout"`
	LogAbandoned        bool     `yaml:"log_abandoned"`
}

// GRPC maps onto grpcpool.Config: the Go field names are the same where
// the field is. Exactly one of Insecure and TLS must be set.
type GRPC struct {
	// Insecure dials in plaintext.
	Insecure bool `yaml:"insecure"`
	// TLS dials with TLS; present (even empty), TLS is on.
	TLS *TLS `yaml:"tls"`
	// Keepalive is grpcpool.Keepalive.
	Keepalive Keepalive `yaml:"keepalive"`
	// IdleTimeout: zero, gRPC's default (30m).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ConnectTimeout: zero, connections connect lazily.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// HealthCheck: present (even empty), Validate asks grpc.health.v1.
	HealthCheck *HealthCheck `yaml:"health_check"`
	// Retry is grpcpool.RetryPolicy.
	Retry Retry `yaml:"retry"`
}

// TLS names the PEM files of a TLS client configuration. Load reads them.
type TLS struct {
	// CAFile holds the certificates that sign the servers'. Empty: the
	// system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's certificate and key, for
	// mTLS. Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the servers' certificates.
	// Empty: the host of each address.
	ServerName string `yaml:"server_name"`
}

// Keepalive mirrors grpcpool.Keepalive.
type Keepalive struct {
	Time                Duration `yaml:"time"`
	Timeout             Duration `yaml:"timeout"`
	PermitWithoutStream bool     `yaml:"permit_without_stream"`
	Disable             bool     `yaml:"disable"`
}

// HealthCheck mirrors grpcpool.HealthCheck.
type HealthCheck struct {
	Service  string   `yaml:"service"`
	Timeout  Duration `yaml:"timeout"`
	Interval Duration `yaml:"interval"`
}

// Retry mirrors grpcpool.RetryPolicy; status codes are named as gRPC
// spells them (UNAVAILABLE, RESOURCE_EXHAUSTED, ...).
type Retry struct {
	MaxAttempts          int      `yaml:"max_attempts"`
	InitialBackoff       Duration `yaml:"initial_backoff"`
	MaxBackoff           Duration `yaml:"max_backoff"`
	BackoffMultiplier    float64  `yaml:"backoff_multiplier"`
	RetryableStatusCodes []string `yaml:"retryable_status_codes"`
}

// Service is one service: a name and how its endpoints are found.
type Service struct {
	// Name identifies the service; unique in the file. Required.
	Name string `yaml:"name"`
	// Discovery says where the endpoints come from: exactly one of
	// Static, Consul and DNS.
	Discovery Discovery `yaml:"discovery"`
}

// Discovery holds exactly one way of finding a service's endpoints.
type Discovery struct {
	Static *Static `yaml:"static"`
	Consul *Consul `yaml:"consul"`
	DNS    *DNS    `yaml:"dns"`
}

// Static is a fixed list of endpoints.
type Static struct {
	// Addresses are host:port endpoints; at least one, no repeats.
	Addresses []string `yaml:"addresses"`
}

// Consul finds endpoints in Consul's catalog, with health. Its keys are
// those of consul.Config (see File.ConsulConfig); services whose settings
// differ only in Service share one consul.Resolver.
type Consul struct {
	// Address is the Consul agent's HTTP API: host:port, or a URL such
	// as https://host:8501 (https turns TLS on). Default
	// DefaultConsulAddress.
	Address string `yaml:"address"`
	// Service is the name registered in Consul. Default: the service's
	// Name.
	Service string `yaml:"service"`
	// Datacenter to ask. Empty: the agent's.
	Datacenter string `yaml:"datacenter"`
	// Token is the ACL token. Empty: CONSUL_HTTP_TOKEN, else the agent's
	// default.
	Token string `yaml:"token"`
	// Tags must all be on an instance for it to be used. Empty: any.
	Tags []string `yaml:"tags"`
	// FallbackToAll uses every instance, whatever its checks say, when
	// none passes, rather than none. False: passing instances only.
	FallbackToAll bool `yaml:"fallback_to_all"`
	// AllowStale lets any Consul server answer, not only the leader.
	AllowStale bool `yaml:"allow_stale"`
	// WaitTime bounds one blocking query. Zero: consul.DefaultWaitTime
	// (5m); Consul caps it at 10m. Negative is invalid.
	WaitTime Duration `yaml:"wait_time"`
	// TLS talks to Consul over HTTPS; present (even empty), TLS is on.
	TLS *ConsulTLS `yaml:"tls"`
}

// ConsulTLS is the part of api.TLSConfig a file can set. Relative file
// names are taken from the configuration file's directory.
type ConsulTLS struct {
	// CAFile holds the certificates that sign Consul's. Empty: the
	// system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's certificate and key, for
	// mTLS. Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in Consul's certificate.
	// Empty: the host of Address.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify skips the check of Consul's certificate. For
	// tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// DNS finds endpoints in DNS: the A and AAAA records of a name (a
// Kubernetes headless service), or its SRV records. Its keys other than
// Name are those of dns.Config (see File.DNSConfig); services whose
// settings differ only in Name share one dns.Resolver.
type DNS struct {
	// Name is what to look up, as discovery/dns takes it: "name:port",
	// "name" (with Port), or an SRV name "_service._proto.name". Written
	// whole: no search list applies. Required.
	Name string `yaml:"name"`
	// Port is the endpoints' port for a Name without one. Zero: Name must
	// carry its port, or be an SRV name.
	Port int `yaml:"port"`
	// Servers are the DNS servers to ask, host:port or an IP address
	// alone for port 53. Empty: the nameservers of /etc/resolv.conf.
	Servers []string `yaml:"servers"`
	// Interval between lookups. Zero: dns.DefaultInterval (10s).
	Interval Duration `yaml:"interval"`
	// Jitter is the largest share of Interval a wait is shortened by at
	// random, below 1. Zero: dns.DefaultJitter (0.1).
	Jitter float64 `yaml:"jitter"`
	// Timeout bounds one query to one server. Zero: dns.DefaultTimeout
	// (5s).
	Timeout Duration `yaml:"timeout"`
}

// DefaultConsulAddress is the address of a local Consul agent.
const DefaultConsulAddress = "127.0.0.1:8500"

// HTTP configures the HTTP endpoints (/metrics, /health, /stats).
type HTTP struct {
	// Listen is the host:port to listen on. Default DefaultListen, which
	// only this machine reaches. Port 0: any free port (logged at start).
	Listen string `yaml:"listen"`
}

// DefaultListen is HTTP.Listen's default.
const DefaultListen = "127.0.0.1:9090"

// DefaultName is File.Name's default.
const DefaultName = "kpool"

// Metrics configures the Prometheus metrics.
type Metrics struct {
	// Namespace prefixes every metric name. Default "kpool".
	Namespace string `yaml:"namespace"`
	// PerKey adds per-endpoint series beside the pool-wide ones.
	PerKey bool `yaml:"per_key"`
	// MaxKeySeries caps the endpoints that get their own series, so that a
	// pool of many keys cannot blow up the metrics. Zero: the default,
	// DefaultMaxKeySeries. Negative is invalid.
	MaxKeySeries int `yaml:"max_key_series"`
}

// Metrics defaults.
const (
	DefaultNamespace    = "kpool"
	DefaultMaxKeySeries = 1000
)

// Duration is a time.Duration written as a Go duration string ("0",
// "250ms", "30s", "1h30m"); a bare number other than 0 is refused, as it
// names no unit.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d *Duration) decodeNode(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errWant("a duration such as 30s", n)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return errWant("a Go duration such as 500ms, 30s or 1h30m", n)
	}
	*d = Duration(v)
	return nil
}

// Shares is keyedpool.Config.MaxSharesPerObject written as an integer, or
// as "auto" for keyedpool.MaxShares: no bound of kpool's own, each
// connection taking as many RPCs as its server's stream cap allows, which
// it learns.
type Shares int

func (s *Shares) decodeNode(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Value == "auto" {
		*s = Shares(keyedpool.MaxShares)
		return nil
	}
	i, err := strconv.ParseInt(n.Value, 0, strconv.IntSize)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil {
		return errWant("an integer or auto", n)
	}
	*s = Shares(i)
	return nil
}

// Exhausted is keyedpool.ExhaustedAction written as "block" (the default)
// or "fail".
type Exhausted string

func (e *Exhausted) decodeNode(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.Value != "block" && n.Value != "fail") {
		return errWant("block or fail", n)
	}
	*e = Exhausted(n.Value)
	return nil
}

// Balancer names a discovery.Balancer: "round_robin" (the default),
// "weighted_round_robin" or "least_loaded".
type Balancer string

// Balancer names.
const (
	RoundRobin         Balancer = "round_robin"
	WeightedRoundRobin Balancer = "weighted_round_robin"
	LeastLoaded        Balancer = "least_loaded"
)

func (b *Balancer) decodeNode(n *yaml.Node) error {
	v := Balancer(n.Value)
	if n.Kind != yaml.ScalarNode || (v != RoundRobin && v != WeightedRoundRobin && v != LeastLoaded) {
		return errWant("round_robin, weighted_round_robin or least_loaded", n)
	}
	*b = v
	return nil
}

// New returns a new balancer of the kind b names; the zero Balancer is
// round_robin.
func (b Balancer) New() discovery.Balancer {
	switch b {
	case WeightedRoundRobin:
		return new(discovery.WeightedRoundRobin)
	case LeastLoaded:
		return discovery.LeastLoaded{}
	}
	return new(discovery.RoundRobin)
}

package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// minimal is the smallest valid file; tests add lines to it.
const minimal = `grpc:
  insecure: true
services:
  - name: backend
    discovery:
      static:
        addresses: [127.0.0.1:50051]
`

// grpcLast is minimal with the grpc section last, for tests that add to it.
const grpcLast = `services:
  - name: backend
    discovery:
      static:
        addresses: [127.0.0.1:50051]
grpc:
  insecure: true
`

func TestLoadExample(t *testing.T) {
	f, err := config.Load(filepath.Join("..", "..", "..", "..", "examples", "kpool.yaml"))
	if err != nil {
		t.Fatalf("Load(examples/kpool.yaml) = %v", err)
	}
	pc := f.KeyedPool()
	if pc.MaxTotal != 256 || pc.MaxTotalPerKey != 16 || pc.MinIdlePerKey != 2 || pc.MaxSharesPerObject != 100 {
		t.Errorf("KeyedPool() limits = %d/%d/%d/%d, want 256/16/2/100", pc.MaxTotal, pc.MaxTotalPerKey, pc.MinIdlePerKey, pc.MaxSharesPerObject)
	}
	if pc.TimeBetweenEvictionRuns != 30*time.Second || pc.MaxLifetime != time.Hour || pc.MaxWait != 2*time.Second {
		t.Errorf("KeyedPool() durations = %v/%v/%v, want 30s/1h/2s", pc.TimeBetweenEvictionRuns, pc.MaxLifetime, pc.MaxWait)
	}
	if pc.Abandoned == nil || pc.Abandoned.Timeout != 5*time.Minute || !pc.Abandoned.RemoveOnMaintenance {
		t.Errorf("KeyedPool().Abandoned = %+v, want on with a 5m timeout", pc.Abandoned)
	}
	gc := config.FactoryConfig(f, func(grpc.ClientConnInterface) int { return 0 })
	if !gc.Insecure || gc.ConnectTimeout != 5*time.Second || gc.HealthCheck == nil || gc.HealthCheck.Interval != 5*time.Second {
		t.Errorf("FactoryConfig() = insecure %v, connect %v, health %+v; want true, 5s, interval 5s", gc.Insecure, gc.ConnectTimeout, gc.HealthCheck)
	}
	if got, want := f.StaticAddresses(), []string{"127.0.0.1:50051", "127.0.0.1:50052"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("StaticAddresses() = %v, want %v", got, want)
	}
	if f.HTTP.Listen != "127.0.0.1:9090" || f.Metrics.Namespace != "kpool" || f.Metrics.MaxKeySeries != 1000 {
		t.Errorf("http, metrics = %+v, %+v", f.HTTP, f.Metrics)
	}
}

func TestParseDefaults(t *testing.T) {
	f, err := config.Parse("kpool.yaml", []byte(minimal+`  - name: users
    discovery:
      consul: {tags: [grpc]}
`))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if f.HTTP.Listen != config.DefaultListen || f.Metrics.Namespace != config.DefaultNamespace || f.Metrics.MaxKeySeries != config.DefaultMaxKeySeries {
		t.Errorf("defaults: http %+v, metrics %+v", f.HTTP, f.Metrics)
	}
	c := f.Services[1].Discovery.Consul
	if c.Address != config.DefaultConsulAddress || c.Service != "users" || c.FallbackToAll {
		t.Errorf("consul defaults = %+v; want %s, users, no fallback", c, config.DefaultConsulAddress)
	}
	if f.Name != config.DefaultName || f.Balancer != config.RoundRobin {
		t.Errorf("name, balancer = %q, %q; want %q, %q", f.Name, f.Balancer, config.DefaultName, config.RoundRobin)
	}
	if got := f.KeyedPool(); got != (keyedpool.Config{}) {
		t.Errorf("KeyedPool() = %+v, want the zero Config", got)
	}
}

// TestParseErrorsNameFileLineAndField checks each kind of problem gives
// the line and the field as written in the file.
// max_shares_per_object: auto is keyedpool.MaxShares, so that each
// connection takes what its server's stream cap allows; an integer is
// itself.
func TestParseSharesAuto(t *testing.T) {
	for in, want := range map[string]int{"auto": keyedpool.MaxShares, "10": 10, "0x10": 16} {
		f, err := config.Parse("kpool.yaml", []byte(minimal+"pool:\n  max_shares_per_object: "+in+"\n"))
		if err != nil {
			t.Fatalf("Parse(max_shares_per_object: %s) = %v", in, err)
		}
		if got := f.KeyedPool().MaxSharesPerObject; got != want {
			t.Errorf("max_shares_per_object: %s gives MaxSharesPerObject %d, want %d", in, got, want)
		}
	}
}

func TestParseErrorsNameFileLineAndField(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // the whole message
	}{
		{"unknown field", minimal + "pool:\n  max_totl: 3\n",
			"kpool.yaml:9: pool.max_totl: unknown field; did you mean max_total?"},
		{"unknown top-level", minimal + "pools: {}\n",
			"kpool.yaml:8: pools: unknown field; did you mean pool?"},
		{"unknown nested", minimal + "pool:\n  abandoned:\n    deadline: 1s\n",
			"kpool.yaml:10: pool.abandoned.deadline: unknown field; want one of remove_on_borrow, remove_on_maintenance, timeout, log_abandoned"},
		{"repeated key", minimal + "pool:\n  max_total: 1\n  max_total: 2\n",
			"kpool.yaml:10: pool.max_total: repeated; first set on line 9"},
		{"not an integer", minimal + "pool:\n  max_total: lots\n",
			`kpool.yaml:9: pool.max_total: want an integer, got "lots"`},
		{"shares neither integer nor auto", minimal + "pool:\n  max_shares_per_object: many\n",
			`kpool.yaml:9: pool.max_shares_per_object: want an integer or auto, got "many"`},
		{"duration without unit", minimal + "pool:\n  max_wait: 30\n",
			`kpool.yaml:9: pool.max_wait: want a Go duration such as 500ms, 30s or 1h30m, got "30"`},
		{"bad enum", minimal + "pool:\n  when_exhausted: wait\n",
			`kpool.yaml:9: pool.when_exhausted: want block or fail, got "wait"`},
		{"bool", minimal + "pool:\n  fifo: maybe\n",
			`kpool.yaml:9: pool.fifo: want true or false, got "maybe"`},
		{"mapping for a list", minimal + "pool: [1, 2]\n",
			"kpool.yaml:8: pool: want a mapping of keys to values, got a list"},
		{"list for a string", minimal + "http:\n  listen: [a]\n",
			"kpool.yaml:9: http.listen: want a string, got a list"},
		{"keyedpool refuses", minimal + "pool:\n  min_idle_per_key: -3\n",
			"kpool.yaml:9: pool.min_idle_per_key: min_idle_per_key is -3, want 0 or more"},
		{"keyedpool refuses two fields", minimal + "pool:\n  max_idle_per_key: 2\n  min_idle_per_key: 3\n",
			"kpool.yaml:10: pool.min_idle_per_key: min_idle_per_key 3 exceeds max_idle_per_key 2"},
		{"keyedpool nested", minimal + "pool:\n  abandoned:\n    timeout: -1s\n",
			"kpool.yaml:10: pool.abandoned.timeout: abandoned.timeout is -1s, want 0 (5m) or more"},
		{"grpcpool refuses", grpcLast + "  keepalive:\n    time: -5s\n",
			"kpool.yaml:9: grpc.keepalive.time: keepalive.time is -5s, want 0 (default 5m0s) or more"},
		{"grpcpool retry", grpcLast + "  retry:\n    backoff_multiplier: -2\n",
			"kpool.yaml:9: grpc.retry.backoff_multiplier: retry.backoff_multiplier is -2, want 0 (default 2) or more"},
		{"status code", grpcLast + "  retry:\n    retryable_status_codes: [UNAVAILABLE, NOPE]\n",
			`kpool.yaml:9: grpc.retry.retryable_status_codes[1]: unknown status code "NOPE", want a name such as UNAVAILABLE`},
		{"insecure and tls", grpcLast + "  tls: {}\n",
			"kpool.yaml:6: grpc: set only one of insecure: true and tls"},
		{"static address", strings.Replace(minimal, "127.0.0.1:50051", "127.0.0.1:50051, localhost", 1),
			`kpool.yaml:7: services[0].discovery.static.addresses[1]: want host:port, got "localhost"`},
		{"duplicate service", minimal + "  - name: backend\n    discovery: {static: {addresses: ['[::1]:1']}}\n",
			`kpool.yaml:8: services[1].name: service "backend" is already defined at services[0]`},
		{"no discovery", minimal + "  - name: other\n",
			`kpool.yaml:8: services[1].discovery: set one of static, consul and dns`},
		{"two discoveries", minimal + "  - name: other\n    discovery:\n      static: {addresses: ['h:1']}\n      consul: {}\n",
			`kpool.yaml:9: services[1].discovery: set only one of static, consul and dns`},
		{"consul address", minimal + "  - name: users\n    discovery:\n      consul: {address: 'ftp://h:1'}\n",
			`kpool.yaml:10: services[1].discovery.consul.address: want host:port or an http:// or https:// URL, got "ftp://h:1"`},
		{"consul old key", minimal + "  - name: users\n    discovery:\n      consul:\n        fallback: true\n",
			`kpool.yaml:11: services[1].discovery.consul.fallback: unknown field; want one of address, service, datacenter, token, tags, fallback_to_all, allow_stale, wait_time, tls`},
		{"consul wait time", minimal + "  - name: users\n    discovery:\n      consul:\n        wait_time: -1s\n",
			`kpool.yaml:11: services[1].discovery.consul.wait_time: is -1s, want 0 (default 5m0s) or more`},
		{"consul tls files", minimal + "  - name: users\n    discovery:\n      consul:\n        tls: {ca_file: /nonexistent/ca.pem}\n",
			`kpool.yaml:11: services[1].discovery.consul.tls.ca_file: stat /nonexistent/ca.pem: no such file or directory`},
		{"consul tls pair", minimal + "  - name: users\n    discovery:\n      consul:\n        tls:\n          cert_file: c.pem\n",
			`kpool.yaml:11: services[1].discovery.consul.tls: set both cert_file and key_file, or neither`},
		{"consul empty tag", minimal + "  - name: users\n    discovery:\n      consul:\n        tags: [a, '']\n",
			`kpool.yaml:11: services[1].discovery.consul.tags[1]: a tag may not be empty`},
		{"balancer", minimal + "balancer: random\n",
			`kpool.yaml:8: balancer: want round_robin, weighted_round_robin or least_loaded, got "random"`},
		{"listen", minimal + "http:\n  listen: 9090\n",
			`kpool.yaml:9: http.listen: want host:port, got "9090"`},
		{"namespace", minimal + "metrics:\n  namespace: kpool-prod\n",
			`kpool.yaml:9: metrics.namespace: want letters, digits and underscores, not starting with a digit, got "kpool-prod"`},
		{"max key series", minimal + "metrics:\n  max_key_series: -1\n",
			`kpool.yaml:9: metrics.max_key_series: is -1, want 0 (default 1000) or more`},
		{"no services", "grpc: {insecure: true}\n",
			`kpool.yaml: services: at least one service is required`},
		{"syntax", minimal + "pool:\n max_total: 1\n  max_wait: 1s\n",
			`kpool.yaml:10: invalid YAML: mapping values are not allowed in this context`},
		{"two documents", minimal + "---\npool: {}\n",
			`kpool.yaml:8: want one YAML document, found another`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := config.Parse("kpool.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse() = %+v, nil; want error %q", f, tt.want)
			}
			if f != nil {
				t.Errorf("Parse() gave a File with error %v", err)
			}
			if got := firstLine(err); got != tt.want {
				t.Errorf("Parse() error = %q\nwant            %q", got, tt.want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Errorf("Parse() error %v is not a *config.Error", err)
			}
		})
	}
}

func TestParseConsulAndBalancer(t *testing.T) {
	f, err := config.Parse(filepath.Join("conf", "kpool.yaml"), []byte(minimal+`  - name: users
    discovery:
      consul:
        address: https://consul.internal:8501
        service: users-grpc
        datacenter: dc2
        token: secret
        tags: [grpc, v2]
        fallback_to_all: true
        allow_stale: true
        wait_time: 30s
        tls: {server_name: consul.internal, insecure_skip_verify: true}
balancer: least_loaded
name: edge
http: {listen: "127.0.0.1:0"}
`))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	cc := f.ConsulConfig(f.Services[1].Discovery.Consul)
	if cc.Address != "https://consul.internal:8501" || cc.Datacenter != "dc2" || cc.Token != "secret" ||
		strings.Join(cc.Tags, ",") != "grpc,v2" || !cc.FallbackToAll || !cc.AllowStale || cc.WaitTime != 30*time.Second {
		t.Errorf("ConsulConfig() = %+v", cc)
	}
	if cc.TLS == nil || cc.TLS.Address != "consul.internal" || !cc.TLS.InsecureSkipVerify {
		t.Errorf("ConsulConfig().TLS = %+v, want server name consul.internal, skip verify", cc.TLS)
	}
	if f.Services[1].Discovery.Consul.Service != "users-grpc" {
		t.Errorf("consul service = %q, want users-grpc", f.Services[1].Discovery.Consul.Service)
	}
	if f.Name != "edge" || f.Balancer != config.LeastLoaded || f.HTTP.Listen != "127.0.0.1:0" {
		t.Errorf("name, balancer, listen = %q, %q, %q", f.Name, f.Balancer, f.HTTP.Listen)
	}
	for _, tt := range []struct {
		b    config.Balancer
		want string
	}{{config.RoundRobin, "*discovery.RoundRobin"}, {"", "*discovery.RoundRobin"},
		{config.WeightedRoundRobin, "*discovery.WeightedRoundRobin"}, {config.LeastLoaded, "discovery.LeastLoaded"}} {
		if got := fmt.Sprintf("%T", tt.b.New()); got != tt.want {
			t.Errorf("Balancer(%q).New() = %s, want %s", tt.b, got, tt.want)
		}
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := config.Parse("kpool.yaml", []byte(minimal+"pool:\n  max_wait: x\n  fifo: 3\nhttp:\n  lisen: x\n"))
	want := []string{
		`kpool.yaml:9: pool.max_wait: want a Go duration such as 500ms, 30s or 1h30m, got "x"`,
		`kpool.yaml:10: pool.fifo: want true or false, got "3"`,
		`kpool.yaml:12: http.lisen: unknown field; did you mean listen?`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("Parse() error =\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "none.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

// TestLoadTLSFiles reads real certificates, relative to the file's
// directory, and names the field of a missing one.
func TestLoadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := grpctest.NewCA(t, "kpool test CA")
	certPEM, keyPEM := grpctest.LeafPEM(t, ca.Leaf(t, "client"))
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", ca.PEM())
	write("client.pem", certPEM)
	write("client-key.pem", keyPEM)
	tlsYAML := strings.Replace(minimal, "insecure: true", "tls:\n    ca_file: ca.pem\n    cert_file: client.pem\n    key_file: client-key.pem\n    server_name: localhost", 1)
	write("kpool.yaml", []byte(tlsYAML))
	f, err := config.Load(filepath.Join(dir, "kpool.yaml"))
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	gc := config.FactoryConfig(f, func(grpc.ClientConnInterface) int { return 0 })
	if gc.TLS == nil || gc.TLS.RootCAs == nil || len(gc.TLS.Certificates) != 1 || gc.TLS.ServerName != "localhost" || gc.Insecure {
		t.Errorf("FactoryConfig().TLS = %+v, insecure %v; want roots, one certificate, localhost", gc.TLS, gc.Insecure)
	}

	write("kpool.yaml", []byte(strings.Replace(tlsYAML, "ca.pem", "nope.pem", 1)))
	_, err = config.Load(filepath.Join(dir, "kpool.yaml"))
	if err == nil || !strings.Contains(err.Error(), "kpool.yaml:3: grpc.tls.ca_file: open ") {
		t.Errorf("Load(missing CA) = %v, want an error at grpc.tls.ca_file, line 3", err)
	}
	write("kpool.yaml", []byte(strings.Replace(tlsYAML, "    key_file: client-key.pem\n", "", 1)))
	_, err = config.Load(filepath.Join(dir, "kpool.yaml"))
	if err == nil || firstLine(err) != filepath.Join(dir, "kpool.yaml")+":2: grpc.tls: set both cert_file and key_file, or neither" {
		t.Errorf("Load(cert without key) = %v", err)
	}
}

package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
	"github.com/kpool-go/kpool/discovery/dns"
)

func TestParseDNS(t *testing.T) {
	f, err := config.Parse("kpool.yaml", []byte(minimal+`  - name: users
    discovery:
      dns:
        name: users.prod.svc.cluster.local
        port: 50051
        servers: [10.96.0.10:53, 10.96.0.11]
        interval: 5s
        jitter: 0.2
        timeout: 2s
  - name: orders
    discovery:
      dns: {name: _grpc._tcp.orders.prod.svc.cluster.local}
`))
	if err != nil {
		t.Fatal(err)
	}
	d := f.Services[1].Discovery.DNS
	if d == nil || d.Name != "users.prod.svc.cluster.local" {
		t.Fatalf("services[1].discovery.dns = %+v, want the name", d)
	}
	want := dns.Config{Servers: []string{"10.96.0.10:53", "10.96.0.11"}, Port: 50051, Interval: 5 * time.Second, Jitter: 0.2, Timeout: 2 * time.Second}
	if got := f.DNSConfig(d); !reflect.DeepEqual(got, want) {
		t.Errorf("DNSConfig() = %+v, want %+v", got, want)
	}
	if got := f.DNSConfig(f.Services[2].Discovery.DNS); !reflect.DeepEqual(got, dns.Config{}) {
		t.Errorf("DNSConfig() of a section with only a name = %+v, want the zero Config (its defaults)", got)
	}
}

// TestParseDNSReportsEveryProblem checks that what dns.Config.Validate and
// CheckName refuse is reported at the key's line, every problem at once.
func TestParseDNSReportsEveryProblem(t *testing.T) {
	_, err := config.Parse("kpool.yaml", []byte(minimal+`  - name: users
    discovery:
      dns:
        name: users.prod.svc.cluster.local
        servers: [10.96.0.10:53, "dns.internal"]
        interval: -1s
        jitter: 1.5
        timeout: -2s
  - name: orders
    discovery:
      dns:
        port: 70000
  - name: billing
    discovery:
      dns: {name: "billing..svc:1"}
`))
	sameProblems(t, err, []string{
		`kpool.yaml:11: services[1].discovery.dns.name: invalid name "users.prod.svc.cluster.local": no port: write name:port, or set port`,
		`kpool.yaml:12: services[1].discovery.dns.servers[1]: servers[1] is "dns.internal", want host:port or an IP address`,
		`kpool.yaml:13: services[1].discovery.dns.interval: interval is -1s, want 0 (default 10s) or more`,
		`kpool.yaml:14: services[1].discovery.dns.jitter: jitter is 1.5, want 0 (default 0.1) or more, below 1`,
		`kpool.yaml:15: services[1].discovery.dns.timeout: timeout is -2s, want 0 (default 5s) or more`,
		`kpool.yaml:18: services[2].discovery.dns.name: a name to look up is required: name:port, a name with port set, or an SRV name such as _grpc._tcp.name`,
		`kpool.yaml:19: services[2].discovery.dns.port: port is 70000, want 0 (names carry their port) to 65535`,
		`kpool.yaml:22: services[3].discovery.dns.name: invalid name "billing..svc:1": label "", want 1 to 63 characters`,
	})
}

// TestExampleDNSSectionParses uncomments the dns service of
// examples/kpool.yaml and checks that a file accepts it as shown.
func TestExampleDNSSectionParses(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "examples", "kpool.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var section []string
	in := false
	for line := range strings.SplitSeq(string(data), "\n") {
		switch {
		case strings.Contains(line, "# A service found in DNS"):
			in = true
		case in && strings.HasPrefix(line, "  # "):
			section = append(section, "  "+strings.TrimPrefix(line, "  # "))
		case in:
			in = false
		}
	}
	if len(section) == 0 {
		t.Fatal("examples/kpool.yaml shows no dns service")
	}
	f, err := config.Parse("kpool.yaml", []byte(minimal+strings.Join(section, "\n")+"\n"))
	if err != nil {
		t.Fatalf("Parse(example's dns service) = %v\n%s", err, strings.Join(section, "\n"))
	}
	d := f.Services[1].Discovery.DNS
	want := dns.Config{Servers: []string{"10.96.0.10:53"}, Port: 50051, Interval: 10 * time.Second, Jitter: 0.1, Timeout: 5 * time.Second}
	if got := f.DNSConfig(d); d.Name != "orders.prod.svc.cluster.local" || !reflect.DeepEqual(got, want) {
		t.Errorf("example's dns service = %q, %+v; want orders.prod.svc.cluster.local, %+v", d.Name, got, want)
	}
}

// TestEqualSettingsBuildEqualConfigs: two services whose Consul (or DNS)
// sections differ only in the service's name build equal configurations,
// TLS pointers and empty lists included, so that they share one resolver
// (discovery.RouteConfig compares values).
func TestEqualSettingsBuildEqualConfigs(t *testing.T) {
	f, err := config.Parse("kpool.yaml", []byte(minimal+`  - name: users
    discovery:
      consul: {tls: {server_name: consul.internal}, tags: []}
  - name: orders
    discovery:
      consul: {tls: {server_name: consul.internal}}
  - name: a
    discovery:
      dns: {name: "a.test:1", servers: []}
  - name: b
    discovery:
      dns: {name: "b.test:1"}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Services
	if a, b := f.ConsulConfig(s[1].Discovery.Consul), f.ConsulConfig(s[2].Discovery.Consul); a.TLS == b.TLS || !reflect.DeepEqual(a, b) {
		t.Errorf("ConsulConfig() = %+v and %+v, want equal values, apart", a, b)
	}
	if a, b := f.DNSConfig(s[3].Discovery.DNS), f.DNSConfig(s[4].Discovery.DNS); !reflect.DeepEqual(a, b) {
		t.Errorf("DNSConfig() = %+v and %+v, want equal", a, b)
	}
}

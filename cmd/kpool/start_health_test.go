package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/metrics"
)

// getHealth asks /health; code is 0 while nothing listens yet.
func getHealth(url string) (code int, rep metrics.HealthReport, body string) {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(url + "/health")
	if err != nil {
		return 0, rep, err.Error()
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return resp.StatusCode, rep, "undecodable: " + err.Error()
	}
	raw, _ := json.Marshal(rep)
	return resp.StatusCode, rep, string(raw)
}

// writeFile writes data to a new file in the test's directory and returns
// its path.
func writeFile(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kpool.yaml")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestStartProcessHealthFailsAtOnceWhenEveryEndpointRefuses runs kpool
// start over a service whose every endpoint refuses connections: /health
// must answer 503 naming the service within 3 s of the start, and never
// 200 while they refuse, whatever the make backoff (none at all with
// make_failure_threshold 0); once the backends come up, it turns 200.
func TestStartProcessHealthFailsAtOnceWhenEveryEndpointRefuses(t *testing.T) {
	for _, tc := range []struct{ name, pool string }{
		{"no backoff", "  make_failure_threshold: 0"},
		{"backoff", "  make_failure_threshold: 2\n  make_backoff_base: 100ms\n  make_backoff_max: 200ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
			a.Stop()
			b.Stop()
			path := writeFile(t, fmt.Sprintf(`pool:
  min_idle_per_key: 1
%s
grpc:
  insecure: true
  connect_timeout: 5s
services:
  - name: backend
    discovery:
      static:
        addresses: [%s, %s]
`, tc.pool, a.Addr, b.Addr))
			addr := freeAddr(t)
			base := "http://" + addr
			started := time.Now()
			p := startBinary(t, "start", "--config", path, "--http", addr, "--warm-interval", "100ms")

			const within = 3 * time.Second
			var first time.Duration // when /health first said 503 naming the service
			for time.Since(started) < within {
				code, rep, body := getHealth(base)
				switch {
				case code == http.StatusOK:
					t.Fatalf("GET /health %v after start = 200 %s, want 503 while every endpoint refuses\nlogs:\n%s", time.Since(started), body, &p.stderr)
				case code == http.StatusServiceUnavailable && first == 0 &&
					len(rep.Reasons) == 1 && strings.Contains(rep.Reasons[0], `service "backend" has no usable endpoint`):
					first = time.Since(started)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if first == 0 {
				code, _, body := getHealth(base)
				t.Fatalf("GET /health gave no 503 naming service \"backend\" within %v of start; now %d %s\nlogs:\n%s", within, code, body, &p.stderr)
			}
			t.Logf("/health said 503 naming the service %v after start", first)

			a.Restart()
			b.Restart()
			var rep metrics.HealthReport
			grpctest.WaitFor(t, waitTimeout, "/health is 200 with both endpoints usable once the backends are up", func() bool {
				var code int
				code, rep, _ = getHealth(base)
				return code == http.StatusOK && len(rep.Services) == 1 && rep.Services[0].Usable == 2
			})
			if s := rep.Services[0]; s.Service != "backend" || s.Watch != "kept" {
				t.Errorf("/health services = %+v, want backend, kept", rep.Services)
			}
			p.stop(syscall.SIGTERM)
		})
	}
}

// dnsServer answers A and SRV queries on 127.0.0.1 from records a test
// sets.
type dnsServer struct {
	addr string
	srv  *mdns.Server
	done chan struct{}

	mu      sync.Mutex // protects records
	records map[string][]mdns.RR
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{addr: pc.LocalAddr().String(), done: make(chan struct{}), records: map[string][]mdns.RR{}}
	started := make(chan struct{})
	s.srv = &mdns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	go func() { defer close(s.done); _ = s.srv.ActivateAndServe() }()
	select {
	case <-started:
	case <-time.After(waitTimeout):
		t.Fatal("DNS server not serving")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_ = s.srv.ShutdownContext(ctx)
		<-s.done
	})
	return s
}

// set makes rdata ("A 127.0.0.1", "SRV 0 0 50051 b.test.") name's records.
func (s *dnsServer) set(name string, rdata ...string) {
	var rrs []mdns.RR
	for _, d := range rdata {
		rr, err := mdns.NewRR(mdns.Fqdn(name) + " 1 IN " + d)
		if err != nil {
			panic(err)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[mdns.Fqdn(name)] = rrs
}

func (s *dnsServer) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	m := new(mdns.Msg)
	m.SetReply(req)
	if len(req.Question) == 1 {
		q := req.Question[0]
		s.mu.Lock()
		recs, ok := s.records[q.Name]
		for _, rr := range recs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, mdns.Copy(rr))
			}
		}
		s.mu.Unlock()
		if !ok {
			m.Rcode = mdns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m)
}

// TestStartProcessDNS runs kpool start on services found in a real DNS
// server on 127.0.0.1: an A name with the file's port and an SRV name,
// both warmed; a changed SRV record moves the service to another backend,
// and the one left drains.
func TestStartProcessDNS(t *testing.T) {
	a, b, c := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	srv := startDNS(t)
	srv.set("users.test", "A 127.0.0.1")
	srv.set("_grpc._tcp.orders.test", fmt.Sprintf("SRV 0 0 %d b.test.", port(b.Addr)))
	srv.set("b.test", "A 127.0.0.1")
	srv.set("c.test", "A 127.0.0.1")
	path := writeFile(t, fmt.Sprintf(`pool:
  min_idle_per_key: 1
grpc:
  insecure: true
  connect_timeout: 5s
services:
  - name: users
    discovery:
      dns:
        name: users.test
        port: %d
        servers: [%s]
        interval: 50ms
  - name: orders
    discovery:
      dns:
        name: _grpc._tcp.orders.test
        servers: [%s]
        interval: 50ms
`, port(a.Addr), srv.addr, srv.addr))
	addr := freeAddr(t)
	base := "http://" + addr
	started := time.Now()
	p := startBinary(t, "start", "--config", path, "--http", addr)
	grpctest.WaitFor(t, waitTimeout, "both endpoints are warmed", func() bool { return a.Open() == 1 && b.Open() == 1 })
	t.Logf("warmed %v after start", time.Since(started))
	var rep metrics.HealthReport
	grpctest.WaitFor(t, waitTimeout, "/health is 200", func() bool {
		var code int
		code, rep, _ = getHealth(base)
		return code == http.StatusOK
	})
	if len(rep.Services) != 2 || rep.Services[0].Service != "orders" || rep.Services[1].Service != "users" {
		t.Errorf("/health services = %+v, want orders and users", rep.Services)
	}

	srv.set("_grpc._tcp.orders.test", fmt.Sprintf("SRV 0 0 %d c.test.", port(c.Addr)))
	grpctest.WaitFor(t, waitTimeout, "orders moves to c, b drains", func() bool { return c.Open() == 1 && b.Open() == 0 })
	if l := p.stderr.String(); !strings.Contains(l, `msg="endpoint removed" addr=`+b.Addr+" service=orders") ||
		!strings.Contains(l, `msg="endpoint added" addr=`+c.Addr+" service=orders") {
		t.Errorf("logs do not show orders moving from b to c:\n%s", l)
	}
	p.stop(syscall.SIGTERM)
}

// port returns the port of a host:port address.
func port(addr string) int {
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		panic(err)
	}
	var n int
	fmt.Sscan(ps, &n)
	return n
}

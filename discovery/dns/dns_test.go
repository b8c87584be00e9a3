package dns_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/dns"
	"github.com/kpool-go/kpool/internal/grpctest"
)

// testTimeout bounds every wait of these tests: a bug shows up as a failure
// naming what did not happen, never as a hang.
const testTimeout = 10 * time.Second

// quick is a resolver config for tests: s only, lookups every 20 ms, a
// query given up after 200 ms.
func quick(s *dnsServer) dns.Config {
	return dns.Config{Servers: []string{s.Addr}, Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond}
}

func newResolver(t *testing.T, cfg dns.Config) *dns.Resolver {
	t.Helper()
	res, err := dns.New(cfg)
	if err != nil {
		t.Fatalf("dns.New() error = %v", err)
	}
	return res
}

// recorder is a discovery.Watcher that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	updates [][]discovery.Endpoint
	errs    []error
}

func (r *recorder) Update(eps []discovery.Endpoint) {
	r.mu.Lock()
	r.updates = append(r.updates, eps)
	r.mu.Unlock()
}

func (r *recorder) Error(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *recorder) got() (updates [][]discovery.Endpoint, errs []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.updates), slices.Clone(r.errs)
}

// last returns the addresses of the last update, and whether there is one.
func (r *recorder) last() ([]string, bool) {
	u, _ := r.got()
	if len(u) == 0 {
		return nil, false
	}
	return addrs(u[len(u)-1]), true
}

func addrs(eps []discovery.Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Addr()
	}
	return out
}

// watch runs res.Watch(name, w) in a goroutine until the returned stop is
// called; stop waits for Watch to return and gives its error.
func watch(res discovery.Resolver, name string, w discovery.Watcher) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- res.Watch(ctx, name, w) }()
	return func() error {
		cancel()
		return <-done
	}
}

// waitAddrs waits until w's last update lists exactly want (in address
// order, as the resolver delivers them).
func waitAddrs(t *testing.T, w *recorder, want ...string) {
	t.Helper()
	grpctest.WaitFor(t, testTimeout, fmt.Sprintf("watcher never saw %q", want), func() bool {
		got, ok := w.last()
		return ok && slices.Equal(got, want)
	})
}

// New and Validate refuse each invalid field with a *FieldError that names
// it, says what it is and what it may be.
func TestNewNamesInvalidFields(t *testing.T) {
	srv := []string{"127.0.0.1:53"}
	tests := []struct {
		cfg   dns.Config
		field string
		want  string
	}{
		{dns.Config{Servers: srv, Port: -1}, "Port", "Port is -1, want 0 (names carry their port) to 65535"},
		{dns.Config{Servers: srv, Port: 65536}, "Port", "Port is 65536, want 0"},
		{dns.Config{Servers: srv, Interval: -time.Second}, "Interval", "Interval is -1s, want 0 (default 10s) or more"},
		{dns.Config{Servers: srv, Jitter: -0.1}, "Jitter", "Jitter is -0.1, want 0 (default 0.1) or more, below 1"},
		{dns.Config{Servers: srv, Jitter: 1}, "Jitter", "Jitter is 1, want"},
		{dns.Config{Servers: srv, Jitter: math.NaN()}, "Jitter", "Jitter is NaN, want"},
		{dns.Config{Servers: srv, Timeout: -1}, "Timeout", "Timeout is -1ns, want 0 (default 5s) or more"},
		{dns.Config{Servers: []string{"127.0.0.1:53", "dns.internal"}}, "Servers[1]", `Servers[1] is "dns.internal", want host:port or an IP address`},
		{dns.Config{Servers: []string{":53"}}, "Servers[0]", `Servers[0] is ":53", want host:port with a host`},
		{dns.Config{Servers: []string{"127.0.0.1:0"}}, "Servers[0]", `Servers[0] is "127.0.0.1:0", want host:port with a port from 1 to 65535`},
		{dns.Config{Servers: []string{"127.0.0.1:dns"}}, "Servers[0]", `Servers[0] is "127.0.0.1:dns", want host:port with a port`},
	}
	for _, tt := range tests {
		_, newErr := dns.New(tt.cfg)
		for name, err := range map[string]error{"New": newErr, "Validate": tt.cfg.Validate()} {
			var fe *dns.FieldError
			if !errors.Is(err, dns.ErrInvalidConfig) || !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(err.Error(), "dns: invalid config: "+tt.want) {
				t.Errorf("%s(%+v) error = %v, want a *FieldError for %s saying %q", name, tt.cfg, err, tt.field, tt.want)
			}
		}
	}
	// Every bad field is named, in the order of Config's fields.
	err := dns.Config{Servers: []string{"x"}, Port: -1, Interval: -1, Timeout: -1}.Validate()
	var got []string
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range u.Unwrap() {
			var fe *dns.FieldError
			if errors.As(e, &fe) && errors.Is(e, dns.ErrInvalidConfig) {
				got = append(got, fe.Field)
			}
		}
	}
	if want := []string{"Servers[0]", "Port", "Interval", "Timeout"}; !slices.Equal(got, want) {
		t.Errorf("Validate(four bad fields) = %v: fields %q, want %q", err, got, want)
	}
	if err := (dns.Config{Servers: srv}).Validate(); err != nil {
		t.Errorf("Validate(Config with Servers alone) = %v, want nil", err)
	}
	if err := (dns.Config{}).Validate(); err != nil {
		t.Errorf("Validate(zero Config) = %v, want nil (the system's servers are New's to read)", err)
	}
}

// With no Servers, New asks the nameservers of /etc/resolv.conf, at port
// 53; without a readable file, or with no nameserver in it, it fails
// naming Servers.
func TestNewWithoutServersReadsResolvConf(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("search prod.svc.cluster.local\nnameserver 10.96.0.10\nnameserver ::1\noptions ndots:5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer dns.SetResolvConf(conf)()
	res, err := dns.New(dns.Config{})
	if err != nil {
		t.Fatalf("New(zero Config) error = %v", err)
	}
	if got, want := res.Servers(), []string{"10.96.0.10:53", "[::1]:53"}; !slices.Equal(got, want) {
		t.Errorf("servers = %q, want %q", got, want)
	}

	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("search x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{empty, filepath.Join(dir, "missing.conf")} {
		defer dns.SetResolvConf(path)()
		if _, err := dns.New(dns.Config{}); !errors.Is(err, dns.ErrInvalidConfig) || !strings.Contains(err.Error(), "Servers is empty") {
			t.Errorf("New(zero Config) with %s error = %v, want ErrInvalidConfig naming Servers", filepath.Base(path), err)
		}
	}
}

// A name no lookup can serve is refused at once, by Config.CheckName and
// by Watch, saying why; good names pass.
func TestWatchRefusesBadNames(t *testing.T) {
	s := startDNS(t)
	cfg := quick(s) // Port 0: names need their own
	withPort := quick(s)
	withPort.Port = 8080
	tests := []struct {
		cfg  dns.Config
		name string
		want string // "" for a good name
	}{
		{cfg, "", "empty"},
		{cfg, "web.test", "no port"},
		{withPort, "web.test", ""},
		{cfg, "web.test:8080", ""},
		{cfg, "web.test.:8080", ""},
		{cfg, "web.test:0", `port "0"`},
		{cfg, "web.test:70000", `port "70000"`},
		{cfg, "web.test:http", `port "http"`},
		{cfg, "10.0.0.1:8080", "an IP address"},
		{cfg, "[::1]:8080", "an IP address"},
		{cfg, "_grpc._tcp.web.test", ""},
		{cfg, "_grpc._tcp.web.test:8080", "an SRV name takes its ports from its records"},
		{cfg, "web..test:8080", `label ""`},
		{cfg, "web test:8080", `holds ' '`},
		{cfg, strings.Repeat("a", 64) + ".test:80", "want 1 to 63 characters"},
		{cfg, strings.Repeat("abcdefg.", 32) + "test:80", "want at most 253"},
		{cfg, ".:80", "the root"},
	}
	for _, tt := range tests {
		err := tt.cfg.CheckName(tt.name)
		if tt.want == "" {
			if err != nil {
				t.Errorf("CheckName(%q) = %v, want nil", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, dns.ErrInvalidName) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.name)) {
			t.Errorf("CheckName(%q) = %v, want ErrInvalidName naming it and saying %q", tt.name, err, tt.want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		werr := newResolver(t, tt.cfg).Watch(ctx, tt.name, &recorder{})
		cancel()
		if werr == nil || werr.Error() != err.Error() {
			t.Errorf("Watch(%q) = %v, want at once the error CheckName gives", tt.name, werr)
		}
	}
	if n := len(s.Queries()); n != 0 {
		t.Errorf("server got %d queries for bad names, want 0", n)
	}
}

// An address name yields each address of its A and AAAA records at the
// name's port (or Config.Port), in address order; IPv6 hosts bracketed.
func TestWatchAddressRecords(t *testing.T) {
	s := startDNS(t)
	s.Set("v4.test", "A 10.0.0.2", "A 10.0.0.1")
	s.Set("v6.test", "AAAA fd00::2", "AAAA fd00::1")
	s.Set("both.test", "A 10.0.0.1", "AAAA fd00::1")
	s.Set("nodata.test", "TXT \"no address here\"")
	cfg := quick(s)
	cfg.Port = 9000
	res := newResolver(t, cfg)
	tests := []struct {
		name string
		want []string
	}{
		{"v4.test:8080", []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{"v4.test", []string{"10.0.0.1:9000", "10.0.0.2:9000"}},
		{"V4.Test.:8080", []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{"v6.test:8080", []string{"[fd00::1]:8080", "[fd00::2]:8080"}},
		{"both.test:8080", []string{"10.0.0.1:8080", "[fd00::1]:8080"}},
		{"nodata.test:8080", []string{}},
		{"missing.test:8080", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &recorder{}
			stop := watch(res, tt.name, w)
			defer stop()
			waitAddrs(t, w, tt.want...)
			if _, errs := w.got(); len(errs) != 0 {
				t.Errorf("errors = %v, want none", errs)
			}
		})
	}
}

// An SRV name yields each address of each target of its lowest priority
// records, at the record's port, weighted by its weight: from the
// additional section when the server gives it, else by asking the target's
// A and AAAA records. Target "." is left out.
func TestWatchSRVRecords(t *testing.T) {
	for _, glue := range []bool{true, false} {
		t.Run(fmt.Sprintf("glue=%v", glue), func(t *testing.T) {
			s := startDNS(t)
			s.NoGlue(!glue)
			s.Set("_grpc._tcp.web.test",
				"SRV 10 60 8081 b1.web.test.",
				"SRV 10 30 8082 b2.web.test.",
				"SRV 10 10 8083 .",
				"SRV 20 10 8084 backup.web.test.")
			s.Set("b1.web.test", "A 10.0.0.1")
			s.Set("b2.web.test", "A 10.0.0.2", "AAAA fd00::2")
			s.Set("backup.web.test", "A 10.0.0.9")
			w := &recorder{}
			stop := watch(newResolver(t, quick(s)), "_grpc._tcp.web.test", w)
			defer stop()
			waitAddrs(t, w, "10.0.0.1:8081", "10.0.0.2:8082", "[fd00::2]:8082")
			u, errs := w.got()
			if len(errs) != 0 {
				t.Errorf("errors = %v, want none", errs)
			}
			for _, e := range u[len(u)-1] {
				want := map[int]int{8081: 60, 8082: 30}[e.Port]
				if e.Weight != want || e.Health != discovery.HealthUnknown {
					t.Errorf("%s Weight = %d, Health = %v; want the record's weight %d, unknown health", e.Addr(), e.Weight, e.Health, want)
				}
			}
			asked := s.Count("b1.web.test", "A", "") > 0
			if asked == glue {
				t.Errorf("asked the target's A records = %v with glue = %v; want a query only without glue", asked, glue)
			}
			if n := s.Count("backup.web.test", "A", ""); n != 0 {
				t.Errorf("asked the backup target's records %d times, want 0 (a higher priority is unused)", n)
			}
		})
	}
}

// The list follows the records as they change; an answer with the same
// endpoints in another order is no change; a name that ceases to exist
// leaves the service with no endpoints.
func TestWatchFollowsChanges(t *testing.T) {
	s := startDNS(t)
	s.Set("web.test", "A 10.0.0.1")
	w := &recorder{}
	stop := watch(newResolver(t, quick(s)), "web.test:80", w)
	defer stop()
	waitAddrs(t, w, "10.0.0.1:80")
	s.Set("web.test", "A 10.0.0.1", "A 10.0.0.2")
	waitAddrs(t, w, "10.0.0.1:80", "10.0.0.2:80")
	before, _ := w.got()
	asked := s.Count("web.test", "A", "")
	s.Set("web.test", "A 10.0.0.2", "A 10.0.0.1")
	grpctest.WaitFor(t, testTimeout, "no lookups after the reorder", func() bool { return s.Count("web.test", "A", "") >= asked+3 })
	if after, _ := w.got(); len(after) != len(before) {
		t.Errorf("updates = %d after the same records in another order, want %d (no change)", len(after), len(before))
	}
	s.Set("web.test", "A 10.0.0.2")
	waitAddrs(t, w, "10.0.0.2:80")
	s.Set("web.test")
	waitAddrs(t, w)
	if _, errs := w.got(); len(errs) != 0 {
		t.Errorf("errors = %v, want none: a name that does not exist is an answer", errs)
	}
}

// An answer too big for UDP comes truncated and is fetched again over TCP.
func TestWatchTruncatedAnswerOverTCP(t *testing.T) {
	s := startDNS(t)
	var recs, want []string
	for i := range 200 {
		ip := fmt.Sprintf("10.0.%d.%d", i/100, i%100+1)
		recs = append(recs, "A "+ip)
		want = append(want, ip+":80")
	}
	slices.Sort(want)
	s.Set("big.test", recs...)
	w := &recorder{}
	stop := watch(newResolver(t, quick(s)), "big.test:80", w)
	defer stop()
	waitAddrs(t, w, want...)
	if s.Count("big.test", "A", "udp") == 0 || s.Count("big.test", "A", "tcp") == 0 {
		t.Errorf("queries = %v, want A over UDP, then over TCP", s.Queries())
	}
	if n := s.Count("big.test", "AAAA", "tcp"); n != 0 {
		t.Errorf("AAAA asked over TCP %d times; want UDP alone for an answer that fits", n)
	}
}

// A server that stops answering, or answers with an error code, fails each
// lookup: every failure is reported, naming the name and why, and no list
// is delivered until it answers again, so that the last good one stands.
func TestWatchKeepsLastGoodListOnErrors(t *testing.T) {
	tests := []struct {
		name string
		fail func(s *dnsServer)
		want string
	}{
		{"silent", func(s *dnsServer) { s.Silent(true) }, "i/o timeout"},
		{"servfail", func(s *dnsServer) { s.Rcode(mdns.RcodeServerFailure) }, "SERVFAIL"},
		{"refused", func(s *dnsServer) { s.Rcode(mdns.RcodeRefused) }, "REFUSED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startDNS(t)
			s.Set("web.test", "A 10.0.0.1")
			w := &recorder{}
			stop := watch(newResolver(t, quick(s)), "web.test:80", w)
			defer stop()
			waitAddrs(t, w, "10.0.0.1:80")
			before, _ := w.got()

			tt.fail(s)
			s.Set("web.test", "A 10.0.0.2") // not seen while failing
			grpctest.WaitFor(t, testTimeout, "failed lookups never reported", func() bool {
				_, errs := w.got()
				return len(errs) >= 3
			})
			u, errs := w.got()
			if len(u) != len(before) {
				t.Errorf("updates while failing = %v, want none after the last good list", u[len(before):])
			}
			if msg := errs[0].Error(); !strings.Contains(msg, `"web.test:80"`) || !strings.Contains(msg, s.Addr) || !strings.Contains(msg, tt.want) {
				t.Errorf("error = %q, want it to name the name, the server and %q", msg, tt.want)
			}

			s.Silent(false)
			s.Rcode(0)
			waitAddrs(t, w, "10.0.0.2:80")
		})
	}
}

// A stopped server fails lookups too, and the list stands.
func TestWatchServerGoneKeepsLastGoodList(t *testing.T) {
	s := startDNS(t)
	s.Set("web.test", "A 10.0.0.1")
	w := &recorder{}
	stop := watch(newResolver(t, quick(s)), "web.test:80", w)
	defer stop()
	waitAddrs(t, w, "10.0.0.1:80")
	s.Stop()
	grpctest.WaitFor(t, testTimeout, "failed lookups never reported", func() bool {
		_, errs := w.got()
		return len(errs) >= 3
	})
	if u, _ := w.got(); len(u) != 1 {
		t.Errorf("updates = %v, want the one list, kept", u)
	}
}

// Each lookup asks the servers in order until one answers; when none
// does, the error names each.
func TestWatchAsksServersInOrder(t *testing.T) {
	dead, good := startDNS(t), startDNS(t)
	dead.Silent(true)
	good.Set("web.test", "A 10.0.0.1")
	cfg := quick(good)
	cfg.Servers = []string{dead.Addr, good.Addr}
	w := &recorder{}
	stop := watch(newResolver(t, cfg), "web.test:80", w)
	defer stop()
	waitAddrs(t, w, "10.0.0.1:80")
	if _, errs := w.got(); len(errs) != 0 {
		t.Errorf("errors = %v, want none while a server answers", errs)
	}
	good.Silent(true)
	grpctest.WaitFor(t, testTimeout, "no error with every server silent", func() bool {
		_, errs := w.got()
		return len(errs) > 0
	})
	_, errs := w.got()
	if msg := errs[0].Error(); !strings.Contains(msg, dead.Addr) || !strings.Contains(msg, good.Addr) || strings.Contains(msg, "\n") {
		t.Errorf("error = %q, want one line naming both servers", msg)
	}
}

// All the watches of a name share one lookup loop: one A and one AAAA
// query per interval whatever their number; a late watcher gets the list
// at once; the loop stops with the last watch, and a new watch starts a
// new one.
func TestWatchOneLookupPerName(t *testing.T) {
	s := startDNS(t)
	s.Set("web.test", "A 10.0.0.1")
	cfg := quick(s)
	cfg.Interval = time.Hour
	res := newResolver(t, cfg)
	var stops []func() error
	var ws []*recorder
	for range 5 {
		w := &recorder{}
		ws = append(ws, w)
		stops = append(stops, watch(res, "web.test:80", w))
	}
	for _, w := range ws {
		waitAddrs(t, w, "10.0.0.1:80")
	}
	late := &recorder{}
	stops = append(stops, watch(res, "web.test:80", late))
	waitAddrs(t, late, "10.0.0.1:80")
	if a, aaaa := s.Count("web.test", "A", ""), s.Count("web.test", "AAAA", ""); a != 1 || aaaa != 1 {
		t.Errorf("queries: A %d, AAAA %d; want 1 each for 6 watches", a, aaaa)
	}
	for _, stop := range stops {
		if err := stop(); err != context.Canceled {
			t.Errorf("Watch() = %v after its context ended, want context.Canceled", err)
		}
	}
	w := &recorder{}
	stop := watch(res, "web.test:80", w)
	defer stop()
	waitAddrs(t, w, "10.0.0.1:80")
	if a := s.Count("web.test", "A", ""); a != 2 {
		t.Errorf("A queries after a new watch = %d, want 2 (a new loop)", a)
	}
}

// Every wait lies in ((1-jitter)·d, d] and is positive, for any interval
// and jitter New accepts, whatever the draw: no extreme setting wraps round
// to a negative or zero wait (a hot lookup loop).
func TestJitteredStaysWithinBounds(t *testing.T) {
	const maxDur = time.Duration(math.MaxInt64)
	for _, d := range []time.Duration{1, time.Millisecond, dns.DefaultInterval, maxDur} {
		for _, j := range []float64{dns.DefaultJitter, 0.5, math.Nextafter(1, 0)} {
			for _, u := range []float64{0, 0.5, math.Nextafter(1, 0)} {
				got := dns.Jittered(d, j, u)
				// The bound in floating point, less its rounding error.
				lo := float64(d) * (1 - j) * (1 - 1e-12)
				if got > d || float64(got) < lo || got <= 0 {
					t.Errorf("Jittered(%d, %v, %v) = %d, want in (%.0f, %d]", d, j, u, got, lo, d)
				}
			}
		}
	}
	if got := dns.Jittered(time.Second, 0.1, 0); got != time.Second {
		t.Errorf("Jittered(1s, 0.1, 0) = %v, want 1s", got)
	}
	if got := dns.Jittered(time.Second, 0.1, 0.5); got != 950*time.Millisecond {
		t.Errorf("Jittered(1s, 0.1, 0.5) = %v, want 950ms", got)
	}
}

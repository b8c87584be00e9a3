package consul_test

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/consul"
	"github.com/kpool-go/kpool/internal/consultest"
	"github.com/kpool-go/kpool/internal/grpctest"
)

// agentTimeout bounds each wait on a real agent: a change shows up in
// milliseconds, a restart in seconds.
const agentTimeout = 30 * time.Second

// quick is a resolver config for tests on a real agent: short blocking
// queries and retries, so that an outage and a recovery show quickly.
func quick(a *consultest.Agent) consul.Config {
	return consul.Config{Address: a.Addr, WaitTime: 2 * time.Second, BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
}

func newResolver(t *testing.T, cfg consul.Config) *consul.Resolver {
	t.Helper()
	res, err := consul.New(cfg)
	if err != nil {
		t.Fatalf("consul.New() error = %v", err)
	}
	return res
}

// waitAddrs waits until w's last update lists exactly want.
func waitAddrs(t *testing.T, w *recorder, want ...string) {
	t.Helper()
	slices.Sort(want)
	grpctest.WaitFor(t, agentTimeout, "watcher never saw "+join(want), func() bool {
		got := addrs(w.last())
		return w.last() != nil && slices.Equal(got, want)
	})
}

func join(s []string) string {
	if len(s) == 0 {
		return "no endpoints"
	}
	out := s[0]
	for _, x := range s[1:] {
		out += ", " + x
	}
	return out
}

func register(a *consultest.Agent, id string, port int, tags ...string) {
	a.Register(&api.AgentServiceRegistration{ID: id, Name: "web", Address: "127.0.0.1", Port: port, Tags: tags})
}

// Instances registered through the agent appear, those missing a tag do
// not, and deregistered ones leave.
func TestAgentRegisterDeregister(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	w := newRecorder()
	cfg := quick(a)
	cfg.Tags = []string{"blue", "v2"}
	defer watch(newResolver(t, cfg), "web", w)()

	register(a, "web-1", 9001, "blue", "v2")
	register(a, "web-2", 9002, "v2", "blue", "extra")
	register(a, "web-3", 9003, "blue") // lacks v2
	waitAddrs(t, w, "127.0.0.1:9001", "127.0.0.1:9002")
	a.Deregister("web-1")
	waitAddrs(t, w, "127.0.0.1:9002")
	a.Deregister("web-2")
	waitAddrs(t, w)
	if _, errs := w.got(); len(errs) != 0 {
		t.Errorf("errors = %v, want none from a running agent", errs)
	}
}

// A TTL check turning critical removes the instance (kept with
// FallbackToAll, marked critical); passing again brings it back.
func TestAgentTTLCriticalRemovesEndpoint(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	passing, all := newRecorder(), newRecorder()
	defer watch(newResolver(t, quick(a)), "web", passing)()
	fb := quick(a)
	fb.FallbackToAll = true
	defer watch(newResolver(t, fb), "web", all)()

	a.Register(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 9001,
		Check: &api.AgentServiceCheck{CheckID: "ttl-1", TTL: "1m", Status: api.HealthPassing}})
	waitAddrs(t, passing, "127.0.0.1:9001")
	if err := a.Client().Agent().UpdateTTL("ttl-1", "down", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, passing)
	grpctest.WaitFor(t, agentTimeout, "fallback watcher never saw the instance critical", func() bool {
		l := all.last()
		return len(l) == 1 && l[0].Health == discovery.HealthCritical
	})
	if err := a.Client().Agent().UpdateTTL("ttl-1", "up", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, passing, "127.0.0.1:9001")
	if l := passing.last(); l[0].Health != discovery.HealthPassing {
		t.Errorf("Health = %v, want passing", l[0].Health)
	}
}

// With ACLs on and default deny, the token is what lets the resolver see
// the service.
func TestAgentACLToken(t *testing.T) {
	t.Parallel()
	a := consultest.StartWith(t, consultest.Options{Token: "kpool-root"})
	register(a, "web-1", 9001)
	with, without := newRecorder(), newRecorder()
	cfg := quick(a)
	cfg.Token = "kpool-root"
	defer watch(newResolver(t, cfg), "web", with)()
	defer watch(newResolver(t, quick(a)), "web", without)()
	waitAddrs(t, with, "127.0.0.1:9001")
	grpctest.WaitFor(t, agentTimeout, "watcher without token got no answer", func() bool {
		u, errs := without.got()
		return len(u) > 0 || len(errs) > 0
	})
	if u, _ := without.got(); len(u) > 0 && len(u[len(u)-1]) != 0 {
		t.Errorf("without the token the watcher saw %v, want nothing (ACL deny)", addrs(u[len(u)-1]))
	}
}

// TLS to Consul: the agent behind an HTTPS proxy whose certificate the
// resolver trusts through TLS.CAPem.
func TestAgentOverTLS(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	register(a, "web-1", 9001)
	target, err := url.Parse("http://" + a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = tr
	proxy.FlushInterval = -1
	srv := httptest.NewUnstartedServer(proxy)
	srv.StartTLS()
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	cfg := quick(a)
	cfg.Address = srv.Listener.Addr().String()
	cfg.TLS = &api.TLSConfig{CAPem: ca}
	w := newRecorder()
	stop := watch(newResolver(t, cfg), "web", w)
	waitAddrs(t, w, "127.0.0.1:9001")
	stop()

	// Without the CA the handshake fails: errors, no endpoints.
	cfg.TLS = &api.TLSConfig{}
	bad := newRecorder()
	defer watch(newResolver(t, cfg), "web", bad)()
	grpctest.WaitFor(t, agentTimeout, "no error without the CA", func() bool {
		_, errs := bad.got()
		return len(errs) > 0
	})
	if u, errs := bad.got(); len(u) != 0 {
		t.Errorf("untrusted server gave updates %v, want none (errors: %v)", u, errs[0])
	}
}

// restartNotice bounds how long after a restarted agent answers again a
// change may take to reach the watch: far below the 5-minute WaitTime the
// test sets, so that a query held in Consul for its WaitTime fails it.
const restartNotice = 10 * time.Second

// After the agent restarts (its index starts over, lower than the one the
// watch last saw), an instance registered then is seen within seconds,
// not after a blocking query with the old index has waited out WaitTime.
func TestAgentRestartSeesNewInstanceAtOnce(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	register(a, "web-1", 9001)
	cfg := quick(a)
	cfg.WaitTime = 5 * time.Minute
	w := newRecorder()
	defer watch(newResolver(t, cfg), "web", w)()
	waitAddrs(t, w, "127.0.0.1:9001")

	// Raise the service's index well above what the restarted agent will
	// reach with the registrations below, as a long-lived agent's is.
	const padIndex = 200
	var index uint64
	for i := 0; i < 2*padIndex && index < padIndex; i++ {
		register(a, "web-1", 9001, "pad"+strconv.Itoa(i%2))
		_, meta, err := a.Client().Health().Service("web", "", false, nil)
		if err != nil {
			t.Fatalf("Health().Service() error = %v", err)
		}
		index = meta.LastIndex
	}
	if index < padIndex {
		t.Fatalf("service index = %d after %d registrations, want %d or more", index, 2*padIndex, padIndex)
	}
	register(a, "web-1", 9001)
	waitAddrs(t, w, "127.0.0.1:9001")

	a.Stop()
	grpctest.WaitFor(t, agentTimeout, "no failed query reported while the agent was down", func() bool {
		_, errs := w.got()
		return len(errs) > 0
	})
	a.Restart()
	// Register the old instance again (a dev agent's catalog lives in
	// memory; what it restores from its data directory is beside the
	// point), then a new one.
	register(a, "web-1", 9001)
	register(a, "web-2", 9002)
	_, meta, err := a.Client().Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatalf("Health().Service() after the restart error = %v", err)
	}
	if meta.LastIndex >= index {
		t.Fatalf("service index after the restart = %d, want below %d (the index before it), as a restarted agent's is", meta.LastIndex, index)
	}
	t.Logf("service index %d before the restart, %d after", index, meta.LastIndex)
	start := time.Now()
	want := []string{"127.0.0.1:9001", "127.0.0.1:9002"}
	grpctest.WaitFor(t, restartNotice, "watch never saw the instance registered after the restart (a query held with the old index?)", func() bool {
		return strings.Join(addrs(w.last()), ",") == strings.Join(want, ",")
	})
	t.Logf("new instance seen %v after its registration", time.Since(start).Round(time.Millisecond))
}

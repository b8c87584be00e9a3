package consul_test

import (
	"net"
	"strconv"
	"testing"

	"github.com/hashicorp/consul/api"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/consultest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

type stub = testpb.BenchmarkServiceClient

// warmShared is clienttest.SharedLeases keeping a connection to every
// backend open (MinIdlePerKey 1), as these rolling releases run.
var warmShared = keyedpool.Config{MaxSharesPerObject: 100, MaxTotalPerKey: 4, MinIdlePerKey: 1}

// registerServer registers a backend as an instance of "web" named id.
func registerServer(a *consultest.Agent, id string, s *grpctest.Server) {
	_, port, _ := net.SplitHostPort(s.Addr)
	p, _ := strconv.Atoi(port)
	a.Register(&api.AgentServiceRegistration{ID: id, Name: "web", Address: "127.0.0.1", Port: p})
}

// The rolling release of the issue, with Consul: three backends replaced
// one by one under continuous traffic. Each new backend registers; the old
// one deregisters (the first by its check going critical) and, once its
// clients have closed their connections, stops gracefully. No RPC fails.
func TestAgentRollingReleaseZeroFailures(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	old := []*grpctest.Server{grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})}
	for i, s := range old {
		registerServer(a, "old-"+strconv.Itoa(i), s)
	}
	r := clienttest.NewRouter(t, agentTimeout, discovery.RouterConfig[stub]{Resolver: newResolver(t, quick(a)), Pool: warmShared})
	grpctest.WaitFor(t, agentTimeout, "router never saw the 3 backends", func() bool {
		eps, err := r.Endpoints(grpctest.Context(t, agentTimeout), "web")
		return err == nil && len(eps) == 3
	})
	l := clienttest.UnaryTraffic(t, agentTimeout, r.Conn("web"), 8)
	l.More(t, 300)

	var fresh []*grpctest.Server
	for i, o := range old {
		n := grpctest.Start(t, grpctest.Options{})
		fresh = append(fresh, n)
		registerServer(a, "new-"+strconv.Itoa(i), n)
		grpctest.WaitFor(t, agentTimeout, "traffic never reached the new backend", func() bool { return n.UnaryCalls() > 0 })
		l.More(t, 200)

		id := "old-" + strconv.Itoa(i)
		if i == 0 {
			// Its check turns critical first, as a backend that starts
			// shutting down and fails its health check would.
			a.Register(&api.AgentServiceRegistration{ID: id, Name: "web", Address: "127.0.0.1", Port: port(o),
				Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "1m", Status: api.HealthCritical}})
			grpctest.WaitFor(t, agentTimeout, "critical backend never left the router's list", func() bool {
				return clienttest.ServiceStats(r, "web").Endpoints == 3
			})
		}
		a.Deregister(id)
		grpctest.WaitFor(t, agentTimeout, "clients never let go of the old backend", func() bool { return o.Open() == 0 })
		o.GracefulStop()
		l.More(t, 200)
		t.Logf("step %d: replaced %s by %s", i+1, o.Addr, n.Addr)
	}
	calls := clienttest.CheckRolledOver(t, r, l, old, fresh)
	st := clienttest.ServiceStats(r, "web")
	t.Logf("%d RPCs, none failed; service %+v", calls, st)
	if st.Endpoints != 3 || st.Errors != 0 {
		t.Errorf("Services() = %+v, want 3 endpoints and no errors", st)
	}
}

func port(s *grpctest.Server) int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Stopping the agent keeps the last known endpoints serving while the
// failed lookups are counted; restarting it resumes the watch.
func TestAgentStopKeepsEndpointsRestartResumes(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	b1, b2 := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	registerServer(a, "web-1", b1)
	registerServer(a, "web-2", b2)
	r := clienttest.NewRouter(t, agentTimeout, discovery.RouterConfig[stub]{Resolver: newResolver(t, quick(a)), Pool: warmShared})
	grpctest.WaitFor(t, agentTimeout, "router never saw the 2 backends", func() bool {
		eps, err := r.Endpoints(grpctest.Context(t, agentTimeout), "web")
		return err == nil && len(eps) == 2
	})
	l := clienttest.UnaryTraffic(t, agentTimeout, r.Conn("web"), 4)
	l.More(t, 100)

	a.Stop()
	grpctest.WaitFor(t, agentTimeout, "failed lookups never counted", func() bool { return clienttest.ServiceStats(r, "web").Errors >= 3 })
	before1, before2 := b1.UnaryCalls(), b2.UnaryCalls()
	l.More(t, 200)
	if b1.UnaryCalls() == before1 || b2.UnaryCalls() == before2 {
		t.Errorf("while the agent was down, backends got %d and %d more RPCs, want both some", b1.UnaryCalls()-before1, b2.UnaryCalls()-before2)
	}
	down := clienttest.ServiceStats(r, "web")
	if down.Endpoints != 2 || down.Usable != 2 || down.LastError == "" {
		t.Errorf("Services() with the agent down = %+v, want the 2 endpoints kept, usable, and the last error", down)
	}
	t.Logf("agent down: %+v", down)
	calls, errs := l.Stop()
	if len(errs) > 0 {
		t.Errorf("%d of %d RPCs failed while the agent was down, want 0; first: %v", len(errs), calls, errs[0])
	}

	// The restarted agent (its index starts over, lower than the watch's)
	// restores the instances registered through its API from its data
	// directory; one of them leaves and a new one comes, and the watch
	// follows.
	a.Restart()
	b3 := grpctest.Start(t, grpctest.Options{})
	registerServer(a, "web-3", b3)
	a.Deregister("web-1")
	grpctest.WaitFor(t, agentTimeout, "watch never resumed with the new registrations", func() bool {
		eps, err := r.Endpoints(grpctest.Context(t, agentTimeout), "web")
		if err != nil || len(eps) != 2 {
			return false
		}
		got := []string{eps[0].Addr(), eps[1].Addr()}
		return (got[0] == b2.Addr && got[1] == b3.Addr) || (got[0] == b3.Addr && got[1] == b2.Addr)
	})
	up := clienttest.ServiceStats(r, "web")
	if up.LastError != "" || up.Updates <= down.Updates || up.Errors < down.Errors {
		t.Errorf("Services() after the restart = %+v, want LastError cleared, more updates than %d, errors kept (%d)", up, down.Updates, down.Errors)
	}
	foo := testpb.NewBenchmarkServiceClient(r.Conn("web"))
	for i := range 10 {
		if _, err := foo.UnaryCall(grpctest.Context(t, agentTimeout), &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("RPC %d after the restart: %v", i, err)
		}
	}
	if b3.UnaryCalls() == 0 {
		t.Error("the backend registered after the restart got no RPC")
	}
	grpctest.WaitFor(t, agentTimeout, "the backend left out after the restart kept its connections", func() bool {
		return !clienttest.HasKey(r, b1.Addr) && b1.Open() == 0
	})
}

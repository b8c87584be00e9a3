package dns_test

import (
	"fmt"
	"strings"
	"testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

type stub = testpb.BenchmarkServiceClient

// warmShared is clienttest.SharedLeases keeping a connection to every
// backend open (MinIdlePerKey 1), as these rolling releases run.
var warmShared = keyedpool.Config{MaxSharesPerObject: 100, MaxTotalPerKey: 4, MinIdlePerKey: 1}

// srvName is the SRV name the router tests serve their backends under.
const srvName = "_grpc._tcp.web.test"

// publish makes backends the SRV records of srvName, each a target of its
// own whose address (127.0.0.1) the answer carries.
func publish(s *dnsServer, backends ...*grpctest.Server) {
	var recs []string
	for _, b := range backends {
		target := fmt.Sprintf("b%d.web.test.", port(b.Addr))
		s.Set(target, "A 127.0.0.1")
		recs = append(recs, fmt.Sprintf("SRV 0 10 %d %s", port(b.Addr), target))
	}
	s.Set(srvName, recs...)
}

// The rolling release of the issue, with DNS: three backends replaced one
// by one under continuous traffic. Each new backend's SRV record appears;
// the old one's goes and, once its clients have closed their connections,
// the old backend stops gracefully. No RPC fails.
func TestRollingReleaseDNSZeroFailures(t *testing.T) {
	s := startDNS(t)
	old := []*grpctest.Server{grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})}
	live := append([]*grpctest.Server(nil), old...)
	publish(s, live...)
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: newResolver(t, quick(s)), Pool: warmShared})
	grpctest.WaitFor(t, testTimeout, "router never saw the 3 backends", func() bool {
		eps, err := r.Endpoints(grpctest.Context(t, testTimeout), srvName)
		return err == nil && len(eps) == 3
	})
	l := clienttest.UnaryTraffic(t, testTimeout, r.Conn(srvName), 8)
	l.More(t, 300)

	var fresh []*grpctest.Server
	for i, o := range old {
		n := grpctest.Start(t, grpctest.Options{})
		fresh = append(fresh, n)
		live = append(live, n)
		publish(s, live...)
		grpctest.WaitFor(t, testTimeout, "traffic never reached the new backend", func() bool { return n.UnaryCalls() > 0 })
		l.More(t, 200)

		live = live[1:]
		publish(s, live...)
		grpctest.WaitFor(t, testTimeout, "clients never let go of the old backend", func() bool { return o.Open() == 0 })
		o.GracefulStop()
		l.More(t, 200)
		t.Logf("step %d: replaced %s by %s", i+1, o.Addr, n.Addr)
	}
	calls := clienttest.CheckRolledOver(t, r, l, old, fresh)
	st := clienttest.ServiceStats(r, srvName)
	t.Logf("%d RPCs, none failed; service %+v", calls, st)
	if st.Endpoints != 3 || st.Errors != 0 {
		t.Errorf("Services() = %+v, want 3 endpoints and no errors", st)
	}
}

// A DNS server that stops answering keeps the last known endpoints serving
// while the failed lookups are counted; when it answers again, the watch
// follows the records.
func TestServerSilentKeepsEndpointsServing(t *testing.T) {
	s := startDNS(t)
	b1, b2 := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
	publish(s, b1, b2)
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: newResolver(t, quick(s)), Pool: warmShared})
	grpctest.WaitFor(t, testTimeout, "router never saw the 2 backends", func() bool {
		eps, err := r.Endpoints(grpctest.Context(t, testTimeout), srvName)
		return err == nil && len(eps) == 2
	})
	l := clienttest.UnaryTraffic(t, testTimeout, r.Conn(srvName), 4)
	l.More(t, 100)

	s.Silent(true)
	grpctest.WaitFor(t, testTimeout, "failed lookups never counted", func() bool { return clienttest.ServiceStats(r, srvName).Errors >= 3 })
	before1, before2 := b1.UnaryCalls(), b2.UnaryCalls()
	l.More(t, 200)
	if b1.UnaryCalls() == before1 || b2.UnaryCalls() == before2 {
		t.Errorf("while DNS was silent, backends got %d and %d more RPCs, want both some", b1.UnaryCalls()-before1, b2.UnaryCalls()-before2)
	}
	down := clienttest.ServiceStats(r, srvName)
	if down.Endpoints != 2 || down.Usable != 2 || !strings.Contains(down.LastError, "i/o timeout") {
		t.Errorf("Services() with DNS silent = %+v, want the 2 endpoints kept, usable, and the last error", down)
	}
	t.Logf("DNS silent: %+v", down)
	calls, errs := l.Stop()
	if len(errs) > 0 {
		t.Errorf("%d of %d RPCs failed while DNS was silent, want 0; first: %v", len(errs), calls, errs[0])
	}

	b3 := grpctest.Start(t, grpctest.Options{})
	publish(s, b2, b3)
	s.Silent(false)
	grpctest.WaitFor(t, testTimeout, "watch never followed the records once DNS answered", func() bool {
		eps, err := r.Endpoints(grpctest.Context(t, testTimeout), srvName)
		return err == nil && len(eps) == 2 && (eps[0].Port == port(b3.Addr) || eps[1].Port == port(b3.Addr))
	})
	up := clienttest.ServiceStats(r, srvName)
	if up.LastError != "" || up.Updates <= down.Updates || up.Errors < down.Errors {
		t.Errorf("Services() once DNS answered = %+v, want LastError cleared, more updates than %d, errors kept (%d)", up, down.Updates, down.Errors)
	}
	foo := testpb.NewBenchmarkServiceClient(r.Conn(srvName))
	for i := range 10 {
		if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("RPC %d once DNS answered: %v", i, err)
		}
	}
	if b3.UnaryCalls() == 0 {
		t.Error("the backend published once DNS answered got no RPC")
	}
	grpctest.WaitFor(t, testTimeout, "the backend left out kept its connections", func() bool {
		return !clienttest.HasKey(r, b1.Addr) && b1.Open() == 0
	})
}

// An address name routes RPCs to its A record's address at the configured
// port.
func TestAddressNameRoutesRPCs(t *testing.T) {
	s := startDNS(t)
	b := grpctest.Start(t, grpctest.Options{})
	s.Set("web.test", "A 127.0.0.1")
	cfg := quick(s)
	cfg.Port = port(b.Addr)
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: newResolver(t, cfg), Pool: warmShared})
	foo := testpb.NewBenchmarkServiceClient(r.Conn("web.test"))
	for i := range 5 {
		if _, err := foo.UnaryCall(grpctest.Context(t, testTimeout), &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	if got := b.UnaryCalls(); got != 5 {
		t.Errorf("backend UnaryCalls() = %d, want 5", got)
	}
}

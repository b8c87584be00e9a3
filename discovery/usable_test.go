package discovery_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/syncbuf"
	"github.com/kpool-go/kpool/keyedpool"
)

// stopped returns n backends, stopped: their ports refuse connections
// until Restart.
func stopped(t *testing.T, n int) []*grpctest.Server {
	var out []*grpctest.Server
	for range n {
		s := grpctest.Start(t, grpctest.Options{})
		s.Stop()
		out = append(out, s)
	}
	return out
}

// An endpoint whose connects fail is not usable from the first failure,
// whatever the make backoff (here none: MakeFailureThreshold 0), and never
// counted usable while its first warm-up runs; it is usable again once a
// warm-up connects after its backend comes up.
func TestUsableCountsRefusingEndpointsAsDown(t *testing.T) {
	backends := stopped(t, 2)
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(backends...)})
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 1
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg, WarmInterval: 20 * time.Millisecond})
	if err := r.Watch("svc"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < time.Second {
		if got := clienttest.ServiceStats(r, "svc"); got.Usable != 0 {
			t.Fatalf("stats after %v = %+v, want no usable endpoint: every connect is refused", time.Since(start), got)
		}
		time.Sleep(time.Millisecond)
	}
	if got := clienttest.ServiceStats(r, "svc"); got.Endpoints != 2 {
		t.Fatalf("stats = %+v, want 2 endpoints known", got)
	}
	for _, b := range backends {
		b.Restart()
	}
	grpctest.WaitFor(t, testTimeout, "both endpoints usable once up", func() bool { return clienttest.ServiceStats(r, "svc").Usable == 2 })
}

// Without warm-ups (MinIdlePerKey 0), an endpoint counts as usable until a
// connect to it fails, here a borrow's.
func TestUsableAfterFailedBorrow(t *testing.T) {
	backends := stopped(t, 2)
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(backends...)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: clienttest.SharedLeases()})
	if _, err := r.Borrow(grpctest.Context(t, testTimeout), "svc"); err == nil || errors.Is(err, keyedpool.ErrBackoff) {
		t.Fatalf("Borrow() error = %v, want the refused connect", err)
	}
	if got := clienttest.ServiceStats(r, "svc"); got.Endpoints != 2 || got.Usable != 0 {
		t.Errorf("stats after a borrow failed on both = %+v, want 2 endpoints, none usable", got)
	}
}

// When every backend of a service stops while nothing sends RPCs, its
// endpoints stop counting as usable within two warm intervals and stay so
// while the backends are down, although their connections, having lost
// their transport, sit IDLE: the warm-ups reconnect them, warm connections
// and those left by past RPCs alike, and an endpoint is logged warm again
// only once a connection to it is READY. Once the backends are back, the
// endpoints are usable again.
func TestUsableFollowsAnOutageWithoutTraffic(t *testing.T) {
	const warm = 200 * time.Millisecond
	for _, tc := range []struct {
		name    string
		minIdle int
	}{
		{"warm connections", 1},
		{"connections of past RPCs", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := grpctest.Start(t, grpctest.Options{}), grpctest.Start(t, grpctest.Options{})
			res := static.New(map[string][]discovery.Endpoint{"svc": eps(a, b)})
			logs := &syncbuf.Buffer{}
			pcfg := clienttest.SharedLeases()
			pcfg.MinIdlePerKey = tc.minIdle
			r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{
				Resolver: res, Pool: pcfg, WarmInterval: warm,
				Logger: slog.New(slog.NewTextHandler(logs, nil)),
			})
			if err := r.Watch("svc"); err != nil {
				t.Fatal(err)
			}
			conn := r.Conn("svc")
			for range 4 { // round robin: both endpoints get connections
				if err := unary(grpctest.Context(t, testTimeout), conn); err != nil {
					t.Fatal(err)
				}
			}
			grpctest.WaitFor(t, testTimeout, "both endpoints connected and usable", func() bool {
				return a.Open() >= 1 && b.Open() >= 1 && clienttest.ServiceStats(r, "svc").Usable == 2
			})
			logged := len(logs.String())

			a.Stop()
			b.Stop()
			stopped := time.Now()
			grpctest.WaitFor(t, 2*warm, "no endpoint usable within 2 warm intervals of the outage", func() bool { return clienttest.ServiceStats(r, "svc").Usable == 0 })
			t.Logf("no endpoint usable %v after the outage", time.Since(stopped))
			for end := time.Now().Add(3 * warm); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
				if got := clienttest.ServiceStats(r, "svc"); got.Usable != 0 {
					t.Fatalf("stats %v after every backend stopped = %+v, want none usable while they are down", time.Since(stopped), got)
				}
			}
			if l := logs.String()[logged:]; strings.Contains(l, "endpoint warm again") {
				t.Errorf("an endpoint was logged warm again while every backend was down:\n%s", l)
			}

			a.Restart()
			b.Restart()
			grpctest.WaitFor(t, testTimeout, "both endpoints usable once their backends are back", func() bool { return clienttest.ServiceStats(r, "svc").Usable == 2 })
			if tc.minIdle == 0 {
				return // no top-up: nothing logged
			}
			grpctest.WaitFor(t, testTimeout, "both endpoints logged warm again", func() bool {
				l := logs.String()[logged:]
				return strings.Contains(l, `msg="endpoint warm again" addr=`+a.Addr) && strings.Contains(l, `msg="endpoint warm again" addr=`+b.Addr)
			})
		})
	}
}

// A connect that failed after the last one that succeeded makes an
// endpoint unusable, even while a connection of it that lost its
// transport, lent when its backend went away, is still IDLE; without
// warm-ups, nothing else finds out.
func TestUsableNotAfterAFailedConnectDespiteAnIdleConnection(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(srv)})
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: keyedpool.Config{MaxTotalPerKey: 4}})
	held, err := r.Borrow(grpctest.Context(t, testTimeout), "svc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Release(held, nil) }) // before the Router closes
	srv.Stop()
	grpctest.WaitFor(t, testTimeout, "the lent connection goes IDLE", func() bool {
		return held.Value().ClientConn().GetState() == connectivity.Idle
	})
	if _, err := r.Borrow(grpctest.Context(t, testTimeout), "svc"); err == nil {
		t.Fatal("Borrow() = nil error, want the refused connect")
	}
	if got := clienttest.ServiceStats(r, "svc"); got.Endpoints != 1 || got.Usable != 0 {
		t.Errorf("stats after a refused connect = %+v, want 1 endpoint, none usable", got)
	}
}

package discovery_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/syncbuf"
)

// slowFactory is a real factory whose makes take delay longer, so that
// warm-ups overlap.
type slowFactory struct {
	*grpcpool.Factory[string, stub]
	delay time.Duration
}

func (f slowFactory) Make(ctx context.Context, key string) (*client, error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return f.Factory.Make(ctx, key)
}

// Warm-ups asked for while one runs (an arriving endpoint, Warm calls in a
// row) count the connections being made: the endpoint gets MinIdlePerKey
// connections, not one warm-up's worth per call.
func TestWarmCountsMakesInFlight(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(srv)})
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 3
	f := slowFactory{clienttest.NewFactory(t, config{ConnectTimeout: testTimeout}), 50 * time.Millisecond}
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Factory: f, Pool: pcfg})
	if err := r.Watch("svc"); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		r.Warm()
		time.Sleep(5 * time.Millisecond)
	}
	grpctest.WaitFor(t, testTimeout, "the endpoint is warm", func() bool { return r.Pool().KeyStats(srv.Addr).Idle >= 3 })
	r.Warm()
	time.Sleep(200 * time.Millisecond) // long enough for surplus makes to land
	if ks := r.Pool().KeyStats(srv.Addr); ks.Created != 3 || ks.Idle != 3 {
		t.Errorf("KeyStats = created %d, idle %d; want 3 and 3", ks.Created, ks.Idle)
	}
}

// With WarmInterval, an endpoint that was down when it arrived is warmed
// once it is up; the failure is logged once, the recovery once.
func TestWarmIntervalWarmsEndpointThatWasDown(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	srv.Stop()
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(srv)})
	logs := &syncbuf.Buffer{}
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 1
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{
		Resolver: res, Pool: pcfg, WarmInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err := r.Watch("svc"); err != nil {
		t.Fatal(err)
	}
	grpctest.WaitFor(t, testTimeout, "the failure is logged", func() bool { return strings.Contains(logs.String(), "cannot warm endpoint") })
	time.Sleep(100 * time.Millisecond) // several warm intervals
	if n := strings.Count(logs.String(), "cannot warm endpoint"); n != 1 {
		t.Errorf("failure logged %d times, want once until the endpoint recovers:\n%s", n, logs)
	}
	srv.Restart()
	grpctest.WaitFor(t, testTimeout, "the endpoint is warmed after its restart", func() bool { return r.Pool().KeyStats(srv.Addr).Idle == 1 })
	grpctest.WaitFor(t, testTimeout, "the recovery is logged", func() bool { return strings.Contains(logs.String(), "endpoint warm again") })

	res.Set("svc", nil)
	grpctest.WaitFor(t, testTimeout, "the removal is logged", func() bool {
		return strings.Contains(logs.String(), `msg="endpoint removed" addr=`+srv.Addr+" service=svc")
	})
	if l := logs.String(); !strings.Contains(l, `msg="endpoint added" addr=`+srv.Addr+" service=svc") {
		t.Errorf("logs do not show the endpoint added:\n%s", l)
	}
}

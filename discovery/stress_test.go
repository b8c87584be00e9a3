package discovery_test

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
)

// Endpoints join and leave a service hundreds of times while RPCs, streams
// and exclusive borrows run. With every backend up, no RPC may fail, and
// once the churn ends the pool holds connections only to the endpoints
// still listed: none was left behind by a race between a leaving endpoint
// and a warm-up, a return or a make.
func TestRouterStressChurn(t *testing.T) {
	servers := make([]*grpctest.Server, 5)
	for i := range servers {
		servers[i] = grpctest.Start(t, grpctest.Options{})
	}
	res := static.New(map[string][]discovery.Endpoint{"svc": eps(servers...)})
	pcfg := clienttest.SharedLeases()
	pcfg.MinIdlePerKey = 1
	pcfg.MaxSharesPerObject = 4 // several connections per endpoint
	r := clienttest.NewRouter(t, testTimeout, discovery.RouterConfig[stub]{Resolver: res, Pool: pcfg})
	conn := r.Conn("svc")
	l := clienttest.UnaryTraffic(t, testTimeout, conn, 6)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var borrowErrs []error
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				h, err := r.Borrow(grpctest.Context(t, testTimeout), "svc")
				if err == nil {
					_, err = h.Value().Stub().UnaryCall(grpctest.Context(t, testTimeout), req("x"))
					if rerr := r.Release(h, err); rerr != nil && err == nil {
						err = rerr
					}
				}
				if err != nil {
					mu.Lock()
					borrowErrs = append(borrowErrs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Go(func() { // a stream now and then
		for {
			select {
			case <-stop:
				return
			default:
			}
			st, err := newStub(conn).StreamingCall(grpctest.Context(t, testTimeout))
			if err == nil {
				if err = st.Send(req("s")); err == nil {
					_, err = st.Recv()
				}
				st.CloseSend()
				for err == nil {
					_, err = st.Recv()
				}
				if err.Error() == "EOF" {
					err = nil
				}
			}
			if err != nil {
				mu.Lock()
				borrowErrs = append(borrowErrs, err)
				mu.Unlock()
			}
		}
	})

	rng := rand.New(rand.NewPCG(1, 2))
	const changes = 300
	for i := range changes {
		var pick []*grpctest.Server
		for _, s := range servers {
			if rng.IntN(2) == 0 {
				pick = append(pick, s)
			}
		}
		if len(pick) == 0 {
			pick = servers[i%len(servers) : i%len(servers)+1]
		}
		res.Set("svc", eps(pick...))
		if i%10 == 0 {
			l.More(t, 5)
		}
	}
	res.Set("svc", eps(servers[0], servers[1]))
	l.More(t, 100)
	close(stop)
	wg.Wait()
	calls, errs := l.Stop()
	if len(errs) > 0 {
		t.Errorf("%d of %d RPCs failed under churn, want 0; first: %v", len(errs), calls, errs[0])
	}
	if len(borrowErrs) > 0 {
		t.Errorf("%d borrows or streams failed under churn, want 0; first: %v", len(borrowErrs), borrowErrs[0])
	}
	want := []string{servers[0].Addr, servers[1].Addr}
	slices.Sort(want)
	grpctest.WaitFor(t, testTimeout, "connections to endpoints no longer listed were left in the pool", func() bool {
		keys := r.Pool().Keys()
		slices.Sort(keys)
		return slices.Equal(keys, want)
	})
	for _, s := range servers[2:] {
		grpctest.WaitFor(t, testTimeout, "a backend no longer listed kept connections", func() bool { return s.Open() == 0 })
	}
	t.Logf("%d RPCs, %d endpoint list changes; pool %+v", calls, changes, r.Pool().Stats().Counters)
}

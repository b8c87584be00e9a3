package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/internal/clienttest"
)

// refusing is a factory whose every make fails at once, so that borrows
// and RPCs end without a network, inside a synctest bubble.
type refusing struct{}

var errRefused = errors.New("refusing: no backend in a bubble")

func (refusing) Make(context.Context, string) (*client, error)    { return nil, errRefused }
func (refusing) Destroy(context.Context, string, *client) error   { return nil }
func (refusing) Validate(context.Context, string, *client) error  { return nil }
func (refusing) Activate(context.Context, string, *client) error  { return nil }
func (refusing) Passivate(context.Context, string, *client) error { return nil }

// A service unused for IdleTimeout is dropped between IdleTimeout and 1.25
// IdleTimeout after its last use: whichever call used it last, wherever
// that use falls between two looks of the sweep, and whatever IdleTimeout,
// one that is no multiple of the sweep's period included.
func TestIdleTimeoutDropsWithinAQuarterAfterTheLastUse(t *testing.T) {
	uses := []struct {
		name string
		use  func(context.Context, *router, *discovery.Conn[stub])
	}{
		{"Endpoints", func(c context.Context, r *router, _ *discovery.Conn[stub]) { _, _ = r.Endpoints(c, "svc") }},
		{"Borrow", func(c context.Context, r *router, _ *discovery.Conn[stub]) {
			if h, err := r.Borrow(c, "svc"); err == nil {
				_ = r.Release(h, nil)
			}
		}},
		// The Conn is made at the start: its RPC stamps the service
		// without the Router's lock.
		{"Conn RPC", func(c context.Context, _ *router, conn *discovery.Conn[stub]) { _ = unary(c, conn) }},
	}
	for _, idle := range []time.Duration{time.Second, time.Second + time.Nanosecond, 7*time.Millisecond + 3} {
		for _, at := range []time.Duration{0, 1, idle / 10, idle/5 - 1, idle / 4, idle/2 + 1} {
			for _, u := range uses {
				t.Run(fmt.Sprintf("IdleTimeout=%v/use=%v/%s", idle, at, u.name), func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						res := static.New(map[string][]discovery.Endpoint{"svc": {{Address: "127.0.0.1", Port: 1}}})
						r, err := discovery.NewRouter(discovery.RouterConfig[stub]{Resolver: res, Factory: refusing{}, Pool: clienttest.SharedLeases(), IdleTimeout: idle})
						if err != nil {
							t.Fatal(err)
						}
						defer r.Close(context.Background())
						conn := r.Conn("svc")
						time.Sleep(at)
						u.use(t.Context(), r, conn)
						last := time.Now()

						time.Sleep(idle)
						synctest.Wait()
						if !isWatched(r) {
							t.Fatalf("svc dropped within IdleTimeout %v of its last use, want it watched", idle)
						}
						upTo := idle + idle/4
						time.Sleep(upTo - time.Since(last))
						synctest.Wait()
						if isWatched(r) {
							for isWatched(r) && time.Since(last) < 3*idle {
								time.Sleep(idle / 100)
								synctest.Wait()
							}
							t.Fatalf("svc still watched %v (1.25 IdleTimeout) after its last use; dropped about %v (%.2f IdleTimeout) after it",
								upTo, time.Since(last), float64(time.Since(last))/float64(idle))
						}
					})
				})
			}
		}
	}
}

// isWatched reports whether r watches svc.
func isWatched(r *router) bool { return slices.Contains(names(r), "svc") }

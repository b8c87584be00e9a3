package discovery_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/consul"
	"github.com/kpool-go/kpool/discovery/dns"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/internal/grpctest"
)

// firstUpdate takes a watch's first list, then ends the watch.
type firstUpdate struct {
	got    chan []discovery.Endpoint
	cancel context.CancelFunc
}

func (w *firstUpdate) Update(eps []discovery.Endpoint) {
	select {
	case w.got <- eps:
	default:
	}
	w.cancel()
}

func (w *firstUpdate) Error(error) {}

// Each service is watched at the resolver its route names, under its name
// there; a service without a route is an error at once, naming it.
func TestMuxWatchesEachServiceAtItsRoute(t *testing.T) {
	a := static.New(map[string][]discovery.Endpoint{"users-v2": {{Address: "10.0.0.1:1"}}})
	b := static.New(map[string][]discovery.Endpoint{"orders": {{Address: "10.0.0.2:1"}, {Address: "10.0.0.3:1"}}})
	var m discovery.Mux
	m.Route("users", a, "users-v2")
	m.Route("orders", b, "orders")
	for _, tt := range []struct {
		service string
		want    int
	}{{"users", 1}, {"orders", 2}} {
		c, cancel := context.WithCancel(grpctest.Context(t, testTimeout))
		w := &firstUpdate{got: make(chan []discovery.Endpoint, 1), cancel: cancel}
		if err := m.Watch(c, tt.service, w); !errors.Is(err, context.Canceled) {
			t.Errorf("Watch(%s) = %v, want context.Canceled", tt.service, err)
		}
		if eps := <-w.got; len(eps) != tt.want {
			t.Errorf("Watch(%s) delivered %v, want %d endpoints", tt.service, eps, tt.want)
		}
	}
	err := m.Watch(grpctest.Context(t, testTimeout), "billing", &firstUpdate{})
	if err == nil || !strings.Contains(err.Error(), `"billing"`) {
		t.Errorf("Watch(billing) = %v, want an error naming the service", err)
	}
}

// Services whose resolver configurations are equal in value share one
// resolver, even when their pointers and slices are apart; different ones
// get their own.
func TestRouteConfigSharesEqualConfigs(t *testing.T) {
	var m discovery.Mux
	ca, otherCA := grpctest.NewCA(t, "consul CA"), grpctest.NewCA(t, "another CA")
	settings := func(pem []byte) consul.Config { // a new TLS pointer and slices each time
		return consul.Config{Address: "127.0.0.1:8501", Tags: []string{"grpc"}, TLS: &api.TLSConfig{CAPem: pem, Address: "consul.internal"}}
	}
	tlsA, tlsB, other := settings(ca.PEM()), settings(ca.PEM()), settings(otherCA.PEM())
	made := 0
	newConsul := func(c consul.Config) (*consul.Resolver, error) { made++; return consul.New(c) }
	ra, err := discovery.RouteConfig(&m, "users", "users", tlsA, newConsul)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := discovery.RouteConfig(&m, "orders", "orders-grpc", tlsB, newConsul)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := discovery.RouteConfig(&m, "billing", "billing", other, newConsul)
	if err != nil {
		t.Fatal(err)
	}
	if ra != rb || ra == ro || made != 2 {
		t.Errorf("consul resolvers: users %p, orders %p, billing %p, %d made; want users and orders to share, billing its own, 2 made", ra, rb, ro, made)
	}

	da, err := discovery.RouteConfig(&m, "a", "a.svc:1", dns.Config{Servers: []string{"127.0.0.1:53"}, Port: 50051}, dns.New)
	if err != nil {
		t.Fatal(err)
	}
	db, err := discovery.RouteConfig(&m, "b", "b.svc:1", dns.Config{Servers: []string{"127.0.0.1:53"}, Port: 50051}, dns.New)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.RouteConfig(&m, "c", "c.svc:1", dns.Config{Servers: []string{"127.0.0.1:53"}, Port: 50052}, dns.New)
	if err != nil {
		t.Fatal(err)
	}
	if da != db || da == dc {
		t.Errorf("dns resolvers: a %p, b %p, c %p; want a and b to share, c its own", da, db, dc)
	}

	// A configuration newResolver refuses sets no route.
	_, err = discovery.RouteConfig(&m, "bad", "bad", dns.Config{Interval: -1}, dns.New)
	if !errors.Is(err, dns.ErrInvalidConfig) {
		t.Errorf("RouteConfig(invalid) = %v, want dns.ErrInvalidConfig", err)
	}
	if err := m.Watch(grpctest.Context(t, testTimeout), "bad", &firstUpdate{}); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("Watch(bad) = %v, want no route", err)
	}
}

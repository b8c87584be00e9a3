package discovery

import (
	"context"
	"fmt"
	"reflect"
	"sync"
)

// Mux is a Resolver that watches each service at the resolver its route
// names, under the name that resolver knows it by, so that one Router
// serves services found in different places: some from static lists, some
// from Consul, some from DNS, and a service registered in Consul under
// another name than the one its callers use.
//
// RouteConfig makes those resolvers from their configurations, one per
// distinct configuration, so that services whose settings are equal share
// one resolver (and, for Consul, one HTTP client and its connections).
//
// The zero Mux routes nothing; it is ready to use. Its methods are safe for
// concurrent use.
type Mux struct {
	mu     sync.Mutex // protects the fields below; held for no I/O
	routes map[string]muxRoute
	made   []madeResolver // RouteConfig's, in the order made
}

// muxRoute is where one service's endpoints come from.
type muxRoute struct {
	res  Resolver
	name string // the service's name at res
}

// madeResolver is a resolver RouteConfig made, with what it was made from.
type madeResolver struct {
	kind reflect.Type // the resolver's type: configurations of different kinds never match
	cfg  any
	res  Resolver
}

var _ Resolver = (*Mux)(nil)

// Route makes res the source of service's endpoints, asked for under name.
// It applies to watches that start after it; a running watch keeps its
// resolver until it ends (Router.Forget ends it).
func (m *Mux) Route(service string, res Resolver, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.routeLocked(service, res, name)
}

// Watch watches service at the resolver of its route, until ctx ends. A
// service with no route is an error at once, naming it: no retry can find
// it.
func (m *Mux) Watch(ctx context.Context, service string, w Watcher) error {
	m.mu.Lock()
	rt, ok := m.routes[service]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("discovery: no route for service %q", service)
	}
	return rt.res.Watch(ctx, rt.name, w)
}

// RouteConfig routes service to the resolver of type R that newResolver
// makes from cfg, asked for it under name, and returns that resolver. If a
// configuration equal to cfg made a resolver of type R already, that one
// is shared, and newResolver is not called. Configurations are equal when
// their values are, not their addresses: through pointers, slices and
// maps, as reflect.DeepEqual compares, so two consul.Configs whose TLS
// settings are equal but apart are equal (a nil slice and an empty one are
// not). Functions are unequal unless nil. newResolver's error is returned
// as is, and the route is not set.
func RouteConfig[C any, R Resolver](m *Mux, service, name string, cfg C, newResolver func(C) (R, error)) (R, error) {
	kind := reflect.TypeFor[R]()
	if res, ok := m.routeMade(service, name, kind, cfg); ok {
		return res.(R), nil
	}
	// Made without the lock: newResolver is the caller's code.
	res, err := newResolver(cfg)
	if err != nil {
		return res, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if mr, ok := m.findLocked(kind, cfg); ok {
		// Another call made one meanwhile: share it. Ours has watched
		// nothing, so it holds nothing to release.
		m.routeLocked(service, mr, name)
		return mr.(R), nil
	}
	m.made = append(m.made, madeResolver{kind: kind, cfg: cfg, res: res})
	m.routeLocked(service, res, name)
	return res, nil
}

// routeMade routes service to the resolver made for a configuration equal
// to cfg, if there is one.
func (m *Mux) routeMade(service, name string, kind reflect.Type, cfg any) (Resolver, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	res, ok := m.findLocked(kind, cfg)
	if ok {
		m.routeLocked(service, res, name)
	}
	return res, ok
}

// findLocked returns the resolver of type kind made for a configuration
// equal to cfg.
func (m *Mux) findLocked(kind reflect.Type, cfg any) (Resolver, bool) {
	for _, mr := range m.made {
		if mr.kind == kind && reflect.DeepEqual(cfg, mr.cfg) {
			return mr.res, true
		}
	}
	return nil, false
}

func (m *Mux) routeLocked(service string, res Resolver, name string) {
	if m.routes == nil {
		m.routes = make(map[string]muxRoute)
	}
	m.routes[service] = muxRoute{res: res, name: name}
}

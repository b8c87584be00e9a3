package manager

import (
	"context"
	"fmt"
	"sync"

	"github.com/kpool-go/kpool/discovery"
)

// Resolver serves a configuration file's services, each from the resolver
// its discovery section names (the static resolver, or the consul.Resolver
// of its Consul settings), under the name that resolver knows it by (a
// Consul service may be registered under another name). Its methods are
// safe for concurrent use.
type Resolver struct {
	// seen, if set, is given every list a service's resolver delivers,
	// after the watcher has it.
	seen func(service string, eps []discovery.Endpoint)

	mu     sync.Mutex // protects routes
	routes map[string]route
}

// route is where one service's endpoints come from.
type route struct {
	res  discovery.Resolver
	name string // the service's name at res
}

var _ discovery.Resolver = (*Resolver)(nil)

// Route makes res the source of service's endpoints, asked for them under
// name. It affects watches that start after it.
func (r *Resolver) Route(service string, res discovery.Resolver, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.routes == nil {
		r.routes = make(map[string]route)
	}
	r.routes[service] = route{res: res, name: name}
}

// Watch watches service at its resolver, until ctx ends. A service with no
// route is an error at once, naming it: no retry can find it.
func (r *Resolver) Watch(ctx context.Context, service string, w discovery.Watcher) error {
	r.mu.Lock()
	rt, ok := r.routes[service]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("manager: unknown service %q: the configuration file does not define it", service)
	}
	if r.seen != nil {
		w = &seenWatcher{Watcher: w, service: service, seen: r.seen}
	}
	return rt.res.Watch(ctx, rt.name, w)
}

// seenWatcher passes a service's lists on to seen once its watcher has
// them.
type seenWatcher struct {
	discovery.Watcher
	service string
	seen    func(string, []discovery.Endpoint)
}

func (w *seenWatcher) Update(eps []discovery.Endpoint) {
	w.Watcher.Update(eps)
	w.seen(w.service, eps)
}

package static

import (
	"context"
	"slices"
	"sync"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/internal/broadcast"
)

// Resolver serves the endpoints set for each service. A service never set
// has no endpoints: its watches get an empty list at once. The zero
// Resolver is ready to use; its methods are safe for concurrent use.
type Resolver struct {
	mu       sync.Mutex // protects services
	services map[string]*broadcast.Hub[[]discovery.Endpoint]
}

var _ discovery.Resolver = (*Resolver)(nil)

// New returns a Resolver serving the given lists, by service name.
func New(services map[string][]discovery.Endpoint) *Resolver {
	r := &Resolver{}
	for name, eps := range services {
		r.Set(name, eps)
	}
	return r
}

func (r *Resolver) hub(service string) *broadcast.Hub[[]discovery.Endpoint] {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.services[service]
	if h == nil {
		if r.services == nil {
			r.services = make(map[string]*broadcast.Hub[[]discovery.Endpoint])
		}
		h = new(broadcast.Hub[[]discovery.Endpoint])
		h.Publish(nil)
		r.services[service] = h
	}
	return h
}

// Set replaces the endpoints of service, and every watch of it gets the new
// list. eps is copied; nil or empty: the service has no endpoints.
func (r *Resolver) Set(service string, eps []discovery.Endpoint) {
	r.hub(service).Publish(slices.Clone(eps))
}

// Fail reports err to every watch of service as a failed lookup, as a
// resolver that could not reach its registry would; the endpoints stay as
// they are. For tests and demos.
func (r *Resolver) Fail(service string, err error) {
	r.hub(service).Fail(err)
}

// Endpoints returns a copy of the endpoints set for service.
func (r *Resolver) Endpoints(service string) []discovery.Endpoint {
	eps, _ := r.hub(service).Last()
	return slices.Clone(eps)
}

// Watch delivers service's endpoints to w, and each list Set after, until
// ctx ends; then it returns ctx.Err().
func (r *Resolver) Watch(ctx context.Context, service string, w discovery.Watcher) error {
	return r.hub(service).Serve(ctx, w.Update, w.Error)
}

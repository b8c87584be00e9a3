package discovery

import (
	"context"
	"fmt"
	"net"
	"strconv"
)

// Health is an endpoint's health as its resolver knows it.
type Health int

const (
	// HealthUnknown: the resolver does not check health (static lists). It
	// is the zero value, and such endpoints are routed to.
	HealthUnknown Health = iota
	// HealthPassing: every check of the endpoint passes.
	HealthPassing
	// HealthWarning: a check warns, none is critical.
	HealthWarning
	// HealthCritical: a check is critical. Resolvers leave such endpoints
	// out unless told to fall back to them (consul.Config.FallbackToAll).
	HealthCritical
	// HealthMaintenance: the endpoint or its node is in maintenance mode.
	HealthMaintenance
)

// String returns "unknown", "passing", "warning", "critical" or
// "maintenance".
func (h Health) String() string {
	switch h {
	case HealthUnknown:
		return "unknown"
	case HealthPassing:
		return "passing"
	case HealthWarning:
		return "warning"
	case HealthCritical:
		return "critical"
	case HealthMaintenance:
		return "maintenance"
	}
	return fmt.Sprintf("Health(%d)", int(h))
}

// Endpoint is one instance of a service.
type Endpoint struct {
	// Address is the instance's host name or IP address. With Port zero it
	// is used as it is, so it may be "host:port" already.
	Address string
	// Port is the instance's port; zero: Address holds the whole address.
	Port int
	// Weight is the instance's share of traffic relative to the service's
	// other instances, for WeightedRoundRobin. Zero or negative counts as 1.
	Weight int
	// Tags are the instance's tags (Consul's service tags).
	Tags []string
	// Meta is the instance's metadata (Consul's service meta).
	Meta map[string]string
	// Health is the instance's health as the resolver knows it.
	Health Health
}

// Addr returns the endpoint's address as the Router keys its pool by and
// dials it: "host:port" (IPv6 hosts bracketed), or Address alone when Port
// is zero.
func (e Endpoint) Addr() string {
	if e.Port == 0 {
		return e.Address
	}
	return net.JoinHostPort(e.Address, strconv.Itoa(e.Port))
}

// weight returns Weight, or 1 when it is not positive.
func (e Endpoint) weight() int {
	if e.Weight <= 0 {
		return 1
	}
	return e.Weight
}

// A Watcher receives what a Resolver learns of one service. A Resolver calls
// a Watcher's methods from one goroutine at a time, in order.
type Watcher interface {
	// Update delivers the service's endpoints: the full current list, not a
	// change. An empty list means the service has no endpoints now. The
	// slice and what it holds are shared: the Watcher must not modify them.
	Update(eps []Endpoint)
	// Error reports a lookup that failed; it is called once per failed
	// lookup. The endpoints last delivered stay the best known.
	Error(err error)
}

// A Resolver finds the endpoints of services by name.
type Resolver interface {
	// Watch delivers the endpoints of service to w, first what the resolver
	// knows now (or as soon as its first lookup ends) and then every change,
	// until ctx ends; then it returns ctx.Err(). It returns early only with
	// an error that no retry can cure (an invalid service name). Watch is
	// safe for concurrent use: several watches of one service may run at
	// once, and a resolver should share one lookup among them.
	Watch(ctx context.Context, service string, w Watcher) error
}

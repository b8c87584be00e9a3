package consul

import (
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/kpool-go/kpool/discovery"
)

// endpoints turns Consul's answer into endpoints: the instances whose checks
// all pass, or every instance when none does and all is set.
func endpoints(entries []*api.ServiceEntry, all bool) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, 0, len(entries))
	var rest []discovery.Endpoint
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		ep := endpoint(e)
		if ep.Health == discovery.HealthPassing {
			eps = append(eps, ep)
		} else if all {
			rest = append(rest, ep)
		}
	}
	if len(eps) == 0 && all {
		eps = rest
	}
	// In address order, so that an answer listing the same instances in
	// another order is no change.
	slices.SortFunc(eps, func(a, b discovery.Endpoint) int { return strings.Compare(a.Addr(), b.Addr()) })
	return eps
}

func endpoint(e *api.ServiceEntry) discovery.Endpoint {
	s := e.Service
	addr := s.Address
	if addr == "" && e.Node != nil {
		addr = e.Node.Address // Consul's rule: the node's address when the service has none
	}
	ep := discovery.Endpoint{
		Address: addr,
		Port:    s.Port,
		Tags:    slices.Clone(s.Tags),
		Meta:    s.Meta,
		Weight:  s.Weights.Passing,
	}
	switch e.Checks.AggregatedStatus() {
	case api.HealthPassing:
		ep.Health = discovery.HealthPassing
	case api.HealthWarning:
		ep.Health = discovery.HealthWarning
		ep.Weight = s.Weights.Warning
	case api.HealthMaint:
		ep.Health = discovery.HealthMaintenance
	default:
		ep.Health = discovery.HealthCritical
	}
	return ep
}

// equal reports whether two lists hold the same endpoints in the same order.
func equal(a, b []discovery.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y discovery.Endpoint) bool {
		return x.Address == y.Address && x.Port == y.Port && x.Weight == y.Weight &&
			x.Health == y.Health && slices.Equal(x.Tags, y.Tags) && maps.Equal(x.Meta, y.Meta)
	})
}

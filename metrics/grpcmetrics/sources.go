package grpcmetrics

import (
	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/metrics"
)

// Factory is what FactoryHealth reads; *grpcpool.Factory is one.
type Factory interface {
	HealthStats() grpcpool.HealthStats
}

// FactoryHealth returns the health checks of f, a *grpcpool.Factory, as
// the metrics.HealthSource of metrics.AddPool: the grpc_health_checks_total
// and grpc_unhealthy_nodes families, and the pool's health in /stats and
// /health. A nil f gives nil: no health families.
func FactoryHealth(f Factory) metrics.HealthSource {
	if f == nil {
		return nil
	}
	return factoryHealth{f}
}

type factoryHealth struct{ f Factory }

func (h factoryHealth) HealthStats() metrics.HealthStats {
	// A conversion, not a copy field by field: a field added to one type
	// and not the other stops the build here.
	return metrics.HealthStats(h.f.HealthStats())
}

// Router is what RouterServices reads; *discovery.Router is one.
type Router interface {
	Services() []discovery.ServiceStats
}

// RouterServices returns the services r, a *discovery.Router, watches as
// the metrics.ServiceSource of metrics.Metrics.AddServices: the
// grpc_service_discovery_* families, and the services /stats lists and
// /health judges.
func RouterServices(r Router) metrics.ServiceSource {
	return routerServices{r}
}

type routerServices struct{ r Router }

func (s routerServices) Services() []metrics.ServiceStats {
	all := s.r.Services()
	out := make([]metrics.ServiceStats, len(all))
	for i, st := range all {
		out[i] = metrics.ServiceStats(st)
	}
	return out
}

package metrics

// HealthSource reports the health checks of a pool's factory, for AddPool.
// grpcmetrics.FactoryHealth adapts a *grpcpool.Factory; metrics itself
// knows no factory, so that a plain pool's metrics do not link gRPC.
type HealthSource interface {
	HealthStats() HealthStats
}

// HealthStats is a snapshot of a factory's health checks: the
// grpc_health_checks_total and grpc_unhealthy_nodes families, and a pool's
// health in /stats and /health.
type HealthStats struct {
	// Serving, NotServing and Failed count health Checks by answer:
	// SERVING, another status, or no answer.
	Serving, NotServing, Failed int64
	// Targets is the number of targets the factory has live clients for.
	Targets int
	// Unhealthy lists, sorted, the targets with live clients whose latest
	// health Check was not SERVING.
	Unhealthy []string
}

// ServiceSource reports the services a router follows, for AddServices.
// grpcmetrics.RouterServices adapts a *discovery.Router.
type ServiceSource interface {
	Services() []ServiceStats
}

// ServiceStats is a snapshot of one service a router follows: the
// grpc_service_discovery_* families, and a service in /stats and /health.
type ServiceStats struct {
	Service string
	// Kept is true for a service the router keeps watching until told to
	// forget it (one a program is configured with), false for one watched
	// since it was used, whose watch ends after an idle time.
	Kept      bool
	Endpoints int    // endpoints in the service's latest snapshot
	Usable    int    // of those, how many can lend a connection as far as the router knows
	Updates   int64  // snapshots received since the service was first used
	Errors    int64  // failed lookups since then
	LastError string // "" when the latest lookup succeeded
}

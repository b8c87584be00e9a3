// Package discovery finds the endpoints of named services and routes gRPC
// traffic over them through one keyedpool.Pool, following each service as
// its endpoints come and go.
//
// The package holds the interfaces, the Router and Mux; implementations
// live in subpackages, as grpc-go's resolvers do: discovery/static serves
// fixed lists that can be replaced at run time, discovery/consul watches
// Consul's health API with blocking queries, discovery/dns looks names up
// in DNS (A/AAAA or SRV records) on an interval. A Mux serves each service
// from the resolver its route names, and RouteConfig shares one resolver
// among services whose resolver configurations are equal.
//
// A Resolver delivers full snapshots of a service's endpoints (never deltas)
// to a Watcher, and errors of lookups that failed, until the watch's context
// ends. A Balancer picks the endpoint of each borrow among a service's
// endpoints: RoundRobin, WeightedRoundRobin (smooth, by Endpoint.Weight) or
// LeastLoaded (power of two choices on leases in use).
//
// A Router owns one pool of *grpcpool.Client[T] keyed by endpoint address
// ("host:port") and serves any number of services from it. Router.Borrow
// lends a client of a service for a caller's own use; Router.Conn returns a
// grpc.ClientConnInterface that routes each RPC of a service to one of its
// endpoints, holding a share of a pooled connection while the RPC runs.
// Endpoints whose connections are all in TRANSIENT_FAILURE, or whose make
// backoff (keyedpool.Config.MakeFailureThreshold) is open, are skipped while
// others remain; a borrow whose endpoint cannot give a connection tries the
// service's other endpoints before it fails. A service with no endpoints
// fails at once with an error wrapping ErrNoEndpoints that names it.
//
// Rolling releases: an endpoint that leaves a service's snapshot gets no new
// borrows from then on, its idle connections are closed at once, and its
// lent connections are closed when they come back, never under an RPC in
// flight; its key then leaves the pool. An endpoint that arrives takes
// traffic at once while it is warmed to keyedpool.Config.MinIdlePerKey idle
// connections in the background.
//
// Watches: a service is watched from its first use (Borrow, Conn,
// Endpoints) or from Router.Watch, until Router.Forget, until
// RouterConfig.IdleTimeout passes without a use (for services not named to
// Watch), or until Close; Services reports the services watched now, so
// that a health check judges the services a program is configured with or
// used recently, not every name ever asked for.
//
// Warming: an arriving endpoint is warmed to keyedpool.Config.MinIdlePerKey
// spare connections, one warm-up per endpoint at a time, counting the
// connections being made, so that warm-ups asked for together do not
// overshoot; RouterConfig.WarmInterval and Router.Warm top endpoints up
// again (an endpoint that was down when it arrived, a raised
// MinIdlePerKey), besides the pool's own upkeep in its eviction runs, and
// reconnect the pooled connections that are not connected, so that a warm
// endpoint is a connected one and a backend that went away is found out
// without any RPC.
//
// All exported methods are safe for concurrent use.
package discovery

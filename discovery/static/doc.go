// Package static is a discovery.Resolver over lists of endpoints that the
// program gives, for fixed deployments, tests and demos. The lists can be
// replaced while watches run (Set), which a Router follows as it follows
// Consul: a rolling release can be driven by hand.
package static

// Package evictor holds what keeps idle pooled objects healthy over time:
// the Policy that decides whether an idle object is evicted, with
// DefaultPolicy (commons-pool2's rule), and the Scheduler that runs every
// pool's eviction at its interval.
//
// The package knows nothing of any pool type: a pool registers itself with
// the Scheduler as a Runner. Pools with the same interval share one
// goroutine; there is no goroutine at all while nothing is registered.
package evictor

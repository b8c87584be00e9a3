// Package evictor holds what a user chooses about eviction: the Policy that
// decides whether an idle object is evicted, with DefaultPolicy
// (commons-pool2's rule), PolicyFunc, and KeyedPolicyFunc for a policy that
// reads the candidate's key with its type. A pool's keyedpool.Config takes
// one as EvictionPolicy.
//
// The package imports the standard library alone and knows nothing of any
// pool type; keyedpool imports it, never the reverse. When a pool's
// eviction runs is keyedpool's business (Config.TimeBetweenEvictionRuns):
// pools with the same interval share one goroutine.
package evictor

// Package evictsched runs the eviction of every keyed pool at its interval
// (TimeBetweenEvictionRuns), as commons-pool2's EvictionTimer: pools with
// the same interval share one goroutine, and there is no goroutine at all
// while no pool has an evictor.
//
// It is internal to keyedpool, its only importer, because no user chooses
// a scheduler: keyedpool registers each pool with Default through an
// unexported type of its own, so that what the scheduler calls (a run, and
// a tick that moves the pool's clock) stays out of the pool's API. The
// package knows nothing of any pool type and imports the standard library
// alone; package evictor holds what users do choose, the policies.
package evictsched

// Package keyedpool is a keyed object pool modelled on Apache commons-pool2's
// GenericKeyedObjectPool: a sub-pool per key, limits per key and overall,
// idle objects kept warm, block-or-fail when full, and validation hooks.
//
// It differs from commons-pool2 where Go or experience says so: Borrow takes
// a context that bounds its wait; borrowers of all keys are served first come
// first served when capacity frees, so no key starves; the zero Config is a
// valid default; Borrow returns a *Pooled handle that Return takes back, so
// the hot path needs no identity map and allocates nothing; and with
// MaxSharesPerObject above 1 one object is lent to several borrowers at once
// (shared leases), which keeps HTTP/2 multiplexing when the objects are gRPC
// connections.
//
// A background evictor (Config.TimeBetweenEvictionRuns, and RunEviction)
// keeps a long-running pool healthy: it destroys idle objects that have
// been idle too long (EvictionPolicy), outlived MaxLifetime or fail
// validation (TestWhileIdle), makes idle objects up to MinIdlePerKey, and
// takes back leaked leases (Abandoned). Keys whose makes keep failing back
// off (MakeFailureThreshold) so that their borrowers fail fast.
//
// All methods of Pool are safe for concurrent use. The pool never calls its
// factory while it holds its lock.
//
// # Costs
//
// A pool keeps its bookkeeping under one mutex, held for a few list and
// counter updates at a time and never for a factory call, I/O or a blocking
// send, plus a small mutex per key for its lane (below). In exclusive mode
// a Borrow of an idle object and its Return allocate nothing. Blocked
// borrowers wait in a queue kept per key in arrival order, beside a heap
// of the keys that can take room, so the event that frees an object or
// room finds the borrower it belongs to in O(log k) for k keys with
// waiters, whatever the number of waiters; the borrower is woken after the
// lock is released.
//
// Keys do not contend with each other while they need nothing of the pool
// as a whole. In exclusive mode, while no borrower waits and the pool is
// below MaxTotal, a Return puts its object on its key's lane, a stack of
// idle objects under the key's own mutex, and a Borrow of the key takes
// it from there: neither takes the pool's mutex (except a Borrow that
// leaves its key short of MinIdlePerKey, which takes it once to queue the
// key for upkeep, until the next eviction run). The pool-wide lists and
// counters catch up whenever something reads them (Stats, an eviction
// run, a waiter, the pool filling up), so every promise about order,
// limits and fairness holds as if every object had gone through them. A
// lane's Borrow+Return writes one word all keys share, the sequence
// number that orders idle objects across keys (an atomic add, not a lock
// held across list updates), and reads three read-mostly ones; everything
// else it touches is the key's own. So throughput over many keys grows
// with cores the way a map of single-key pools does, until the shared
// counter's cache line, some tens of millions of Returns a second, is
// the limit; on two cores, Borrow+Return over 1000 keys in parallel
// costs less than in a map of 1000 puddle pools (BenchmarkKeyed in the
// benchmarks module). Shared leases, abandoned-object tracking, a full
// pool and waiting borrowers go the pool-wide way, under the one mutex.
package keyedpool

package discovery

import (
	"sync/atomic"
	"time"
)

// clock returns the time since the Router was made, in nanoseconds, plus
// one, so that 0 can mean never. It is monotonic.
func (r *Router[T]) clock() int64 { return int64(time.Since(r.epoch)) + 1 }

// storeMax stores x in v unless v holds more.
func storeMax(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

package e2e

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// subBuckets is the number of buckets per power of two: a recorded latency
// is known to within 1/subBuckets (under 0.8%) of its value.
const (
	subBits    = 7
	subBuckets = 1 << subBits
	// Values below subBuckets ns have a bucket each; above, each power of
	// two from 2^subBits to 2^63 has subBuckets of them.
	numBuckets = (64 - subBits) * subBuckets
)

// Histogram counts latencies in log-linear buckets, as HdrHistogram does:
// fixed memory (64 KiB) whatever the number of samples, and quantiles within
// 0.8% of the true value. Record is safe for concurrent use and does not
// allocate; read quantiles after the recording ends.
type Histogram struct {
	count   atomic.Int64
	buckets [numBuckets]atomic.Int64
}

// bucketOf returns the bucket of d: exact below 128 ns, then the top
// subBits+1 bits of the value.
func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1 // keeps v>>shift in [128, 256)
	return (shift+1)*subBuckets + int(v>>shift) - subBuckets
}

// valueOf returns the middle of bucket b.
func valueOf(b int) time.Duration {
	if b < subBuckets {
		return time.Duration(b)
	}
	shift := b/subBuckets - 1
	low := uint64(subBuckets+b%subBuckets) << shift
	return time.Duration(min(low+(uint64(1)<<shift)/2, math.MaxInt64))
}

// Record counts one latency.
func (h *Histogram) Record(d time.Duration) {
	h.buckets[bucketOf(d)].Add(1)
	h.count.Add(1)
}

// Count returns the number of latencies recorded.
func (h *Histogram) Count() int64 { return h.count.Load() }

// Quantile returns the latency that a fraction q (0 to 1) of the recorded
// ones do not exceed, within the histogram's precision; 0 when nothing was
// recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(n))), 1)
	var seen int64
	for b := range h.buckets {
		seen += h.buckets[b].Load()
		if seen >= rank {
			return valueOf(b)
		}
	}
	return valueOf(numBuckets - 1)
}

package benchmarks_test

import (
	"math"
	"math/bits"
	"sync"
	"testing"
	"time"
)

// Wait times go into log-linear buckets, as HdrHistogram's: exact below
// waitSub ns, then waitSub buckets per power of two, so that a quantile is
// known to within 1/waitSub (6%) of its value. That is coarser than
// internal/e2e's histogram, and so 8 KiB rather than 64 KiB per borrower
// goroutine, which keeps the borrowers' histograms out of each other's
// cache lines and the caches small.
const (
	waitSubBits = 4
	waitSub     = 1 << waitSubBits
	waitBuckets = (64 - waitSubBits) * waitSub
)

// waitBucket returns the bucket of d.
func waitBucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < waitSub {
		return int(v)
	}
	shift := bits.Len64(v) - waitSubBits - 1 // keeps v>>shift in [waitSub, 2*waitSub)
	return (shift+1)*waitSub + int(v>>shift) - waitSub
}

// waitBucketValue returns the middle of bucket b.
func waitBucketValue(b int) time.Duration {
	if b < waitSub {
		return time.Duration(b)
	}
	shift := b/waitSub - 1
	low := uint64(waitSub+b%waitSub) << shift
	return time.Duration(min(low+(uint64(1)<<shift)/2, math.MaxInt64))
}

// waitLog holds the waits of one borrower goroutine. It is not safe for
// concurrent use: each goroutine of a RunParallel records into its own,
// with no atomics and no sharing, and the logs are merged after.
type waitLog struct {
	n       int64
	max     time.Duration
	buckets [waitBuckets]int64
}

// add records one wait. It does not allocate.
func (l *waitLog) add(d time.Duration) {
	l.buckets[waitBucket(d)]++
	l.n++
	l.max = max(l.max, d)
}

// waitRecorder hands a waitLog to each goroutine of a RunParallel and
// reports the merged waits.
type waitRecorder struct {
	mu   sync.Mutex // protects the fields below
	logs []*waitLog // made up front, so that the timed run makes none
	used int        // logs handed out
}

// newWaitRecorder returns a recorder with logs made for RunParallel's
// goroutines at the given parallelism (parallelism * GOMAXPROCS of them).
// Make it before b.ResetTimer, so that the logs' memory is not counted.
func newWaitRecorder(goroutines int) *waitRecorder {
	r := &waitRecorder{logs: make([]*waitLog, goroutines)}
	for i := range r.logs {
		r.logs[i] = new(waitLog)
	}
	return r
}

// log returns a log for one goroutine; call it once, before the loop. If
// RunParallel starts more goroutines than foreseen, it makes another.
func (r *waitRecorder) log() *waitLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.used == len(r.logs) {
		r.logs = append(r.logs, new(waitLog))
	}
	l := r.logs[r.used]
	r.used++
	return l
}

// report merges the logs and reports the longest wait and the 99th
// percentile, in ns, as max-wait-ns and p99-wait-ns. Call it after
// RunParallel has returned, when no goroutine records any more.
func (r *waitRecorder) report(b *testing.B) {
	all := r.merged()
	b.ReportMetric(float64(all.max), "max-wait-ns")
	b.ReportMetric(float64(all.quantile(0.99)), "p99-wait-ns")
}

// merged returns the waits of all the logs handed out.
func (r *waitRecorder) merged() *waitLog {
	all := new(waitLog)
	for _, l := range r.logs[:r.used] {
		all.n += l.n
		all.max = max(all.max, l.max)
		for i, c := range l.buckets {
			all.buckets[i] += c
		}
	}
	return all
}

// quantile returns the wait that a fraction q (0 to 1) of the recorded
// ones do not exceed, within the buckets' precision and never above the
// longest; 0 when nothing was recorded.
func (l *waitLog) quantile(q float64) time.Duration {
	if l.n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(l.n))), 1)
	var seen int64
	for b, c := range l.buckets {
		if seen += c; seen >= rank {
			return min(waitBucketValue(b), l.max)
		}
	}
	return l.max
}

// The Contended row's fairness figures are only as good as the histogram
// behind them.
func TestWaitLogQuantileWithinPrecision(t *testing.T) {
	tests := []struct {
		name  string
		waits []time.Duration
		q     float64
		want  time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"small values are exact", []time.Duration{3, 5, 7, 9}, 0.5, 5},
		{"one value", []time.Duration{1234567}, 0.99, 1234567},
		{"p99 of 1..1000 µs", microseconds(1000), 0.99, 990 * time.Microsecond},
		{"p50 of 1..1000 µs", microseconds(1000), 0.5, 500 * time.Microsecond},
		{"p100 is the longest", microseconds(1000), 1, 1000 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l waitLog
			for _, d := range tt.waits {
				l.add(d)
			}
			got := l.quantile(tt.q)
			if diff := (got - tt.want).Abs(); float64(diff) > float64(tt.want)/waitSub {
				t.Errorf("quantile(%v) = %v, want %v within 1/%d", tt.q, got, tt.want, waitSub)
			}
			if got > l.max {
				t.Errorf("quantile(%v) = %v, above the longest wait %v", tt.q, got, l.max)
			}
		})
	}
}

func TestWaitRecorderMergesLogs(t *testing.T) {
	r := newWaitRecorder(2)
	for i := range 3 { // one more log than foreseen
		l := r.log()
		l.add(time.Duration(i+1) * time.Millisecond)
	}
	all := r.merged()
	if all.n != 3 || all.max != 3*time.Millisecond {
		t.Errorf("merged() holds %d waits, longest %v; want 3, 3ms", all.n, all.max)
	}
	if got, want := all.quantile(0.5), 2*time.Millisecond; (got - want).Abs() > want/waitSub {
		t.Errorf("merged().quantile(0.5) = %v, want %v within 1/%d", got, want, waitSub)
	}
}

func microseconds(n int) []time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = time.Duration(i+1) * time.Microsecond
	}
	return ds
}

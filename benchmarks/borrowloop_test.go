package benchmarks_test

import (
	"runtime"
	"testing"
	"time"
)

// parallelBorrows is the body every parallel borrow/return benchmark shares,
// whatever the pool: b.RunParallel, each goroutine borrowing with borrow and
// giving the object back with giveBack until pb ends. The first error fails
// the benchmark and ends that goroutine, so a broken pool cannot spin. Each
// goroutine has an rng of its own, which borrow may use to pick a key.
//
// With waits non-nil (BenchmarkContended), each goroutine records every
// borrow's wait, from just before borrow to just after it returned, into a
// log of its own, and yields while it holds the object, so that more
// objects are out at once than there are Ps and borrowers do wait. With
// waits nil the loop is bare: borrow and give back.
//
// T is the pool's handle, or a small struct of it and the pool it came from
// where giving back needs both (a map of peer pools); a value, so passing it
// allocates nothing.
func parallelBorrows[T any](b *testing.B, waits *waitRecorder, borrow func(r *rng) (T, error), giveBack func(T) error) {
	b.RunParallel(func(pb *testing.PB) {
		// Each goroutine's generator on cache lines of its own: as a bare
		// 8-byte allocation, two goroutines' generators may share a line,
		// and every draw of a key would move it between cores, in every
		// row alike and more in some runs than others.
		pr := &struct {
			_ [64]byte
			r rng
			_ [64]byte
		}{r: newRNG()}
		r := &pr.r
		if waits == nil {
			for pb.Next() {
				v, err := borrow(r)
				if err != nil {
					b.Error(err)
					return
				}
				if err := giveBack(v); err != nil {
					b.Error(err)
					return
				}
			}
			return
		}
		log := waits.log()
		for pb.Next() {
			start := time.Now()
			v, err := borrow(r)
			log.add(time.Since(start))
			if err != nil {
				b.Error(err)
				return
			}
			runtime.Gosched()
			if err := giveBack(v); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

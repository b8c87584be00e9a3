package broadcast_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/kpool-go/kpool/internal/broadcast"
)

// The callers serving one name share one loop, which starts with the
// first, stops with the last (Serve waits for it), and starts again for
// a later caller; each name has its own.
func TestLoopsShareOneLoopPerName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l broadcast.Loops[int]
		var started, running atomic.Int32
		run := func(ctx context.Context, hub *broadcast.Hub[int]) {
			started.Add(1)
			running.Add(1)
			defer running.Add(-1)
			hub.Publish(7)
			<-ctx.Done()
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		got := make([]int, 4)
		lasts := make([]bool, 4)
		for i := range 4 {
			name := "a"
			if i == 3 {
				name = "b"
			}
			wg.Go(func() {
				lasts[i], _ = l.Serve(ctx, name, run, func(s int) { got[i] = s }, func(error) {})
			})
		}
		synctest.Wait()
		if n := started.Load(); n != 2 {
			t.Errorf("loops started for 3 callers of a and 1 of b = %d, want 2", n)
		}
		for i, s := range got {
			if s != 7 {
				t.Errorf("caller %d got %d, want 7", i, s)
			}
		}
		cancel()
		wg.Wait()
		if n := running.Load(); n != 0 {
			t.Errorf("loops running after every caller left = %d, want 0", n)
		}
		nLast := 0
		for _, b := range lasts {
			if b {
				nLast++
			}
		}
		if nLast != 2 {
			t.Errorf("callers told they were last = %d, want 2 (one per name)", nLast)
		}
		// A later caller starts the loop again.
		ctx2, cancel2 := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			_, _ = l.Serve(ctx2, "a", run, func(int) {}, func(error) {})
			close(done)
		}()
		synctest.Wait()
		if n := started.Load(); n != 3 {
			t.Errorf("loops started after a new caller = %d, want 3", n)
		}
		cancel2()
		<-done
	})
}

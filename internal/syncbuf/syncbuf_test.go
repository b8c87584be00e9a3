package syncbuf_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kpool-go/kpool/internal/syncbuf"
)

func TestConcurrentWritesAllKept(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := strings.Count(b.String(), "\n"); got != 800 {
		t.Errorf("lines = %d, want 800", got)
	}
	b.Reset()
	if got := b.String(); got != "" {
		t.Errorf("after Reset: %q, want empty", got)
	}
}

package keyedpool_test

import (
	"context"
	"testing"

	"github.com/kpool-go/kpool/keyedpool"
)

func TestAllKeyStatsMatchesKeyStats(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 4})
	a1, a2 := mustBorrow(t, p, "a"), mustBorrow(t, p, "a")
	mustReturn(t, p, a2)
	b := mustBorrow(t, p, "b")
	mustReturn(t, p, b)
	if err := p.Invalidate(a1); err != nil {
		t.Fatalf("Invalidate() = %v", err)
	}
	mustBorrow(t, p, "c") // stays lent

	all := p.AllKeyStats()
	if len(all) != 3 {
		t.Fatalf("AllKeyStats() has %d keys, want 3: %+v", len(all), all)
	}
	for _, k := range p.Keys() {
		if got, want := all[k], p.KeyStats(k); got != want {
			t.Errorf("AllKeyStats()[%q] = %+v, want KeyStats(%q) = %+v", k, got, k, want)
		}
	}
	if got := all["a"]; got.Idle != 1 || got.Active != 0 || got.Created != 2 || got.DestroyedByInvalidate != 1 {
		t.Errorf("AllKeyStats()[a] = %+v, want 1 idle, 0 active, 2 created, 1 invalidated", got)
	}
	if got := all["c"]; got.Active != 1 || got.SharesInUse != 1 {
		t.Errorf("AllKeyStats()[c] = %+v, want 1 active, 1 share", got)
	}
}

func TestStatsClosed(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	if p.Stats().Closed {
		t.Fatalf("Stats().Closed = true before Close")
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if !p.Stats().Closed {
		t.Errorf("Stats().Closed = false after Close")
	}
	if got := p.AllKeyStats(); len(got) != 0 {
		t.Errorf("AllKeyStats() after Close = %+v, want empty", got)
	}
}

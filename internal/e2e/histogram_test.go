package e2e_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/e2e"
)

func TestHistogramQuantilesWithinPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h e2e.Histogram
	var exact []time.Duration
	for range 100_000 {
		// Log-uniform from 1 µs to about 1 s, as latencies spread.
		d := time.Duration(float64(time.Microsecond) * float64(uint64(1)<<r.IntN(20)) * (1 + r.Float64()))
		h.Record(d)
		exact = append(exact, d)
	}
	slices.Sort(exact)
	if got, want := h.Count(), int64(len(exact)); got != want {
		t.Fatalf("Count() = %d, want %d", got, want)
	}
	for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		want := exact[max(int(q*float64(len(exact)))-1, 0)]
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.01 || diff < -0.01 {
			t.Errorf("Quantile(%v) = %v, want %v within 1%%", q, got, want)
		}
	}
}

func TestHistogramSmallAndEdgeValues(t *testing.T) {
	var h e2e.Histogram
	if got := h.Quantile(0.5); got != 0 {
		t.Errorf("empty Quantile(0.5) = %v, want 0", got)
	}
	for _, d := range []time.Duration{-5, 0, 1, 127} {
		var h e2e.Histogram
		h.Record(d)
		want := max(d, 0)
		if got := h.Quantile(0.5); got != want {
			t.Errorf("after Record(%d): Quantile(0.5) = %d, want %d (exact below 128ns)", d, got, want)
		}
	}
	var big e2e.Histogram
	big.Record(time.Duration(1<<63 - 1))
	if got := big.Quantile(1); got < time.Duration(1<<62) {
		t.Errorf("after Record(max): Quantile(1) = %v, want about %v", got, time.Duration(1<<63-1))
	}
}

package typo_test

import (
	"strings"
	"testing"

	"github.com/kpool-go/kpool/cmd/kpool/internal/typo"
)

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"addr", "addr", 0}, {"adr", "addr", 1}, {"addr", "adr", 1},
		{"max_totl", "max_total", 1}, {"kitten", "sitting", 3}, {"", "abc", 3},
	} {
		if got := typo.Distance(tc.a, tc.b); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNearest(t *testing.T) {
	names := []string{"addr", "timeout", "service", "key"}
	for _, tc := range []struct {
		name string
		max  int
		want string
	}{
		{"adr", 1, "addr"},
		{"timout", 2, "timeout"},
		{"servce", 2, "service"},
		{"kez", 1, "key"},
		{"xyz", 2, ""}, // 3 edits from "key", more from the rest
		{"zzzzzz", 2, ""},
		{strings.Repeat("a", 1<<16), 2, ""}, // not compared: too long
	} {
		if got := typo.Nearest(tc.name, names, tc.max); got != tc.want {
			t.Errorf("Nearest(%.10q, %d) = %q, want %q", tc.name, tc.max, got, tc.want)
		}
	}
}

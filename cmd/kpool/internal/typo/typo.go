// Package typo finds the name a mistyped one was meant to be, for the
// command's "did you mean" hints: its flags and its configuration file's
// keys.
package typo

// Nearest returns the name among names fewest edits away from name
// (Levenshtein distance, in bytes: flag names and keys are ASCII), if it
// is at most maxEdits away; the first such on a tie; "" if none is that
// near. A name longer than a candidate by more than maxEdits is not
// compared with it: it cannot be near, and long input costs nothing.
func Nearest(name string, names []string, maxEdits int) string {
	best, bestD := "", maxEdits+1
	for _, n := range names {
		if len(name) > len(n)+maxEdits {
			continue
		}
		if d := Distance(name, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// Distance is the Levenshtein distance of a and b, in bytes.
func Distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

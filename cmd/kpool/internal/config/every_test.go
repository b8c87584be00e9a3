package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
)

// problems returns the messages of err, one per problem.
func problems(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

func sameProblems(t *testing.T, err error, want []string) {
	t.Helper()
	got := problems(err)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Parse() problems =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var each []*config.Error
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *config.Error
		if !errors.As(e, &ce) {
			t.Errorf("problem %v (%T) is not a *config.Error", e, e)
		}
		each = append(each, ce)
	}
	if len(each) != len(want) {
		t.Errorf("Parse() joins %d errors, want %d", len(each), len(want))
	}
}

// TestParseReportsEveryInvalidField checks that every field the libraries
// refuse is reported, each at its own line, not only the first.
func TestParseReportsEveryInvalidField(t *testing.T) {
	_, err := config.Parse("kpool.yaml", []byte(`pool:
  min_idle_per_key: -3
  max_wait: -1s
  make_failure_threshold: -5
grpc:
  insecure: true
  keepalive: {time: -5s}
  retry:
    max_attempts: -1
    retryable_status_codes: [UNAVAILABLE, OK]
services:
  - name: backend
    discovery: {static: {addresses: ['127.0.0.1:1']}}
`))
	sameProblems(t, err, []string{
		"kpool.yaml:2: pool.min_idle_per_key: min_idle_per_key is -3, want 0 or more",
		"kpool.yaml:3: pool.max_wait: max_wait is -1s, want 0 (bounded by the context only) or more",
		"kpool.yaml:4: pool.make_failure_threshold: make_failure_threshold is -5, want 0 (off) or more",
		"kpool.yaml:7: grpc.keepalive.time: keepalive.time is -5s, want 0 (default 5m0s) or more",
		"kpool.yaml:9: grpc.retry.max_attempts: retry.max_attempts is -1, want 0 (no retries) or more",
		"kpool.yaml:10: grpc.retry.retryable_status_codes[1]: retry.retryable_status_codes[1] is OK, want an error code",
	})
}

// TestParseReportsDecodeAndCheckProblemsTogether checks that a file with
// values of the wrong type and values the library refuses gets both,
// and that a value that could not be decoded does not also give the
// problems of the zero left in its place.
func TestParseReportsDecodeAndCheckProblemsTogether(t *testing.T) {
	t.Run("README's example", func(t *testing.T) {
		_, err := config.Parse("kpool.yaml", []byte(minimal+`pool:
  min_idle_per_key: -3
  max_wait: "30"
  max_totl: 3
`))
		sameProblems(t, err, []string{
			"kpool.yaml:9: pool.min_idle_per_key: min_idle_per_key is -3, want 0 or more",
			`kpool.yaml:10: pool.max_wait: want a Go duration such as 500ms, 30s or 1h30m, got "30"`,
			"kpool.yaml:11: pool.max_totl: unknown field; did you mean max_total?",
		})
	})
	t.Run("no problem of a zero left by a failed value", func(t *testing.T) {
		_, err := config.Parse("kpool.yaml", []byte(`pool:
  max_idle_per_key: lots
  min_idle_per_key: 9
  max_total_per_key: 20
grpc:
  insecure: maybe
services: 3
http: {listen: [a]}
`))
		sameProblems(t, err, []string{
			`kpool.yaml:2: pool.max_idle_per_key: want an integer, got "lots"`,
			`kpool.yaml:6: grpc.insecure: want true or false, got "maybe"`,
			`kpool.yaml:7: services: want a list, got "3"`,
			"kpool.yaml:8: http.listen: want a string, got a list",
		})
	})
	t.Run("a limit that decoded is still checked", func(t *testing.T) {
		_, err := config.Parse("kpool.yaml", []byte(minimal+`pool:
  max_idle_per_key: 2
  min_idle_per_key: 3
  fifo: maybe
`))
		sameProblems(t, err, []string{
			"kpool.yaml:10: pool.min_idle_per_key: min_idle_per_key 3 exceeds max_idle_per_key 2",
			`kpool.yaml:11: pool.fifo: want true or false, got "maybe"`,
		})
	})
}

// TestParseCapsProblems checks a file with thousands of problems gets
// the first ones and a count of the rest, not thousands of lines.
func TestParseCapsProblems(t *testing.T) {
	_, err := config.Parse("kpool.yaml", []byte(minimal+"pool:\n"+strings.Repeat("  nope: 1\n", 500)))
	got := problems(err)
	if len(got) != 101 {
		t.Fatalf("Parse() gave %d problems, want 100 and a count", len(got))
	}
	if want := "kpool.yaml:109: 400 more problems from this line on; fix those above first"; got[100] != want {
		t.Errorf("last problem = %q, want %q", got[100], want)
	}
}

func TestLoadMissingFileCannotRead(t *testing.T) {
	path := t.TempDir() + "/none.yaml"
	_, err := config.Load(path)
	if want := "cannot read " + path + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Load(missing) = %v, want %q", err, want)
	}
}

func TestErrorAtNamesTheLine(t *testing.T) {
	f, err := config.Parse("kpool.yaml", []byte(minimal+"pool:\n  max_wait: 1s\n  max_shares_per_object: 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{"pool.max_shares_per_object", "kpool.yaml:10: pool.max_shares_per_object: cannot change"},
		{"pool.max_total", "kpool.yaml:8: pool.max_total: cannot change"}, // not in the file: its section
		{"metrics.per_key", "kpool.yaml: metrics.per_key: cannot change"}, // nor its section
	} {
		if got := f.ErrorAt(tt.path, "cannot %s", "change").Error(); got != tt.want {
			t.Errorf("ErrorAt(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

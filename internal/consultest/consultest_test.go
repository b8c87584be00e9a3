package consultest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kpool-go/kpool/internal/consultest"
)

// recordingTB records Fatal and Skip instead of ending the test.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

type stopped struct{}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	panic(stopped{})
}
func (r *recordingTB) Skip(args ...any) {
	r.skip = fmt.Sprint(args...)
	panic(stopped{})
}

func binary(tb *recordingTB) (path string) {
	defer func() {
		if p := recover(); p != nil && p != (stopped{}) {
			panic(p)
		}
	}()
	return consultest.Binary(tb)
}

// Without a consul binary the tests skip, saying how to build one; under
// CI=true they fail instead.
func TestBinaryMissing(t *testing.T) {
	t.Setenv(consultest.EnvBinary, "/nonexistent/consul")
	t.Setenv("PATH", "")
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		tb := &recordingTB{TB: t}
		binary(tb)
		msg := tb.skip
		if ci == "true" {
			msg = tb.fatal
			if tb.skip != "" {
				t.Errorf("CI=true: skipped (%q), want a failure", tb.skip)
			}
		} else if tb.fatal != "" {
			t.Errorf("CI unset: failed (%q), want a skip", tb.fatal)
		}
		for _, want := range []string{"go build -C tools/consul -o", "github.com/hashicorp/consul", consultest.EnvBinary} {
			if !strings.Contains(msg, want) {
				t.Errorf("CI=%q: message %q lacks %q", ci, msg, want)
			}
		}
	}
}

func TestBinaryFromEnv(t *testing.T) {
	t.Setenv(consultest.EnvBinary, "/bin/sh") // any file that exists
	if got := binary(&recordingTB{TB: t}); got != "/bin/sh" {
		t.Errorf("Binary() = %q, want the %s path", got, consultest.EnvBinary)
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// envRunMain makes the test binary run kpool's main instead of the tests,
// so that tests can start kpool as a real process without building it.
const envRunMain = "KPOOL_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

// runKpool runs the command line args in process.
func runKpool(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // a part of it; "" for none
		wantStderr string
	}{
		{"no command", nil, 2, "", "usage: kpool <command>"},
		{"help", []string{"help"}, 0, "bench     compare", ""},
		{"--help", []string{"--help"}, 0, "start     keep the pools of a configuration file warm", ""},
		{"help bench", []string{"help", "bench"}, 0, "usage: kpool bench [flags]", ""},
		{"unknown command", []string{"dmeo"}, 2, "", "kpool: unknown command \"dmeo\"; did you mean demo?\nrun \"kpool help\" for the commands\n"},
		{"mistyped command", []string{"stat"}, 2, "", `kpool: unknown command "stat"; did you mean stats?`},
		{"far from every command", []string{"frobnicate"}, 2, "", "kpool: unknown command \"frobnicate\"\nrun \"kpool help\" for the commands\n"},
		{"bench --help", []string{"bench", "--help"}, 0, "-max-streams uint", ""},
		{"start -h", []string{"start", "-h"}, 0, "usage: kpool start --config FILE [flags]", ""},
		{"bad flag", []string{"bench", "--modes", "x"}, 2, "", "kpool bench: unknown flag --modes; did you mean --mode?\nrun \"kpool bench -h\" for help\n"},
		{"stray argument", []string{"bench", "now"}, 2, "", `kpool bench: unexpected argument "now"`},
		{"bad mode", []string{"bench", "--mode", "single,pooled"}, 2, "", `kpool bench: --mode: unknown mode "pooled"`},
		{"bad duration", []string{"bench", "--duration", "1h"}, 2, "", "kpool bench: --duration is 1h0m0s, want more than 0 and at most 10m0s"},
		{"bad callers", []string{"bench", "--callers", "0"}, 2, "", "kpool bench: --callers is 0, want 1 or more"},
		{"bad payload", []string{"bench", "--payload", "-1"}, 2, "", "kpool bench: --payload is -1"},
		{"bad flag value", []string{"bench", "--delay", "soon"}, 2, "", `invalid value "soon" for flag -delay`},
		{"start without config", []string{"start"}, 2, "", "kpool start: --config is required"},
		{"start bad timeout", []string{"start", "--config", "x", "--shutdown-timeout", "0s"}, 2, "", "--shutdown-timeout is 0s, want more than 0"},
		{"start bad level", []string{"start", "--config", "x", "--log-level", "loud"}, 2, "", `invalid value "loud" for flag -log-level`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runKpool(context.Background(), tt.args...)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, stdout, stderr)
			}
			if tt.wantStdout != "" && !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("run(%q) stdout = %q, want it to contain %q", tt.args, stdout, tt.wantStdout)
			}
			if tt.wantStdout == "" && stdout != "" {
				t.Errorf("run(%q) stdout = %q, want nothing", tt.args, stdout)
			}
			if tt.wantStderr != "" && !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr, tt.wantStderr)
			}
			if tt.wantStderr == "" && stderr != "" {
				t.Errorf("run(%q) stderr = %q, want nothing", tt.args, stderr)
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/syncbuf"
)

// runProcess runs kpool as a process with args until it exits, and
// returns its status, its standard error and its peak resident memory in
// bytes (0 where the system does not say).
func runProcess(t *testing.T, args ...string) (code int, stderr string, maxRSS int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("kpool %q still ran after %v\nstderr:\n%s", args, waitTimeout, errOut.String())
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		maxRSS = ru.Maxrss << 10 // kilobytes on Linux
	}
	return cmd.ProcessState.ExitCode(), errOut.String(), maxRSS
}

// logLines returns the lines of logs whose message is msg.
func logLines(logs, msg string) []string {
	var lines []string
	for l := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(l, `msg="`+msg+`"`) {
			lines = append(lines, l)
		}
	}
	return lines
}

// checkProblemLines checks that lines are one problem each, as want
// says, on lines of their own and without a package's prefix.
func checkProblemLines(t *testing.T, lines, want []string, logs string) {
	t.Helper()
	if len(lines) != len(want) {
		t.Fatalf("%d records of problems, want %d:\n%s", len(lines), len(want), logs)
	}
	for i, l := range lines {
		if !strings.Contains(l, want[i]) {
			t.Errorf("record %d = %s\nwant it to hold %s", i, l, want[i])
		}
		for _, bad := range []string{`\n`, "config:", "reload:", "manager:", "internal/"} {
			if strings.Contains(l, bad) {
				t.Errorf("record %d holds %q: %s", i, bad, l)
			}
		}
	}
}

// TestStartProcessExplainsConfigErrors runs kpool start on files it must
// refuse: a missing one is "cannot read", an invalid one gives each of
// its problems on a line of its own, naming the file and line, and a
// hostile one is refused at once in little memory.
func TestStartProcessExplainsConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	missing := filepath.Join(dir, "missing.yaml")
	code, logs, baseRSS := runProcess(t, "start", "--config", missing)
	if code != 1 {
		t.Errorf("start with a missing file = %d, want 1", code)
	}
	checkProblemLines(t, logLines(logs, "cannot start"), []string{
		`err="cannot read ` + missing + `: no such file or directory"`,
	}, logs)
	if strings.Contains(logs, "invalid configuration") {
		t.Errorf("a missing file is logged as an invalid configuration:\n%s", logs)
	}

	invalid := write("invalid.yaml", `grpc: {insecure: true}
services:
  - name: backend
    discovery: {static: {addresses: ['127.0.0.1:1']}}
pool:
  min_idle_per_key: -3
  max_wait: "30"
  max_totl: 3
`)
	code, logs, _ = runProcess(t, "start", "--config", invalid)
	if code != 1 {
		t.Errorf("start with an invalid file = %d, want 1", code)
	}
	checkProblemLines(t, logLines(logs, "cannot start: invalid configuration"), []string{
		`err="` + invalid + `:6: pool.min_idle_per_key: min_idle_per_key is -3, want 0 or more"`,
		`err="` + invalid + `:7: pool.max_wait: want a Go duration such as 500ms, 30s or 1h30m, got \"30\""`,
		`err="` + invalid + `:8: pool.max_totl: unknown field; did you mean max_total?"`,
	}, logs)

	// 1000 services, each an alias of the first and its 1000 addresses:
	// 12 KB that a decoder following aliases without a bound reads as a
	// million addresses.
	var bomb strings.Builder
	bomb.WriteString("grpc: {insecure: true}\nservices:\n  - &s\n    name: a\n    discovery:\n      static:\n        addresses: [h:1")
	bomb.WriteString(strings.Repeat(", h:1", 999) + "]\n")
	bomb.WriteString(strings.Repeat("  - *s\n", 999))
	hostile := write("bomb.yaml", bomb.String())
	code, logs, rss := runProcess(t, "start", "--config", hostile)
	if code != 1 {
		t.Errorf("start with an alias bomb = %d, want 1", code)
	}
	lines := logLines(logs, "cannot start: invalid configuration")
	checkProblemLines(t, lines, []string{`err="` + hostile + `:`}, logs)
	if len(lines) == 1 && !strings.Contains(lines[0], "aliases expand the file past") {
		t.Errorf("alias bomb refused with %s, want the alias bound named", lines[0])
	}
	if rss > 0 && baseRSS > 0 && rss-baseRSS > 50<<20 {
		t.Errorf("start with an alias bomb peaked at %d MiB, %d MiB more than with a missing file; want at most 50 more", rss>>20, (rss-baseRSS)>>20)
	}
}

// TestStartProcessRefusedReloadNamesLine runs kpool start and edits its
// file: a version with several problems is logged one problem per line,
// each naming the file and line, and so is a change that can only apply
// at a restart.
func TestStartProcessRefusedReloadNamesLine(t *testing.T) {
	srv := grpctest.Start(t, grpctest.Options{})
	path := writeConfig(t, "", srv.Addr, "  max_total_per_key: 4")
	cmd := exec.Command(os.Args[0], "start", "--config", path, "--reload-interval", "20ms", "--http", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	const refused = "configuration not reloaded; the running one stays"
	waitLines := func(what string, n int) []string {
		t.Helper()
		grpctest.WaitFor(t, waitTimeout, what, func() bool { return len(logLines(stderr.String(), refused)) >= n })
		time.Sleep(50 * time.Millisecond) // the records of one reload are written together
		return logLines(stderr.String(), refused)
	}
	grpctest.WaitFor(t, waitTimeout, "kpool starts", func() bool { return strings.Contains(stderr.String(), "kpool started") })

	// writeConfig's file: pool: on line 1, the pool lines from line 2.
	writeConfig(t, path, srv.Addr, "  max_total_per_key: 4\n  min_idle_per_key: -1\n  make_failure_threshold: -5")
	lines := waitLines("the invalid version is refused", 2)
	checkProblemLines(t, lines, []string{
		fmt.Sprintf(`problem="%s:3: pool.min_idle_per_key: min_idle_per_key is -1, want 0 or more" reloads_failed=1`, path),
		fmt.Sprintf(`problem="%s:4: pool.make_failure_threshold: make_failure_threshold is -5, want 0 (off) or more" reloads_failed=1`, path),
	}, stderr.String())

	writeConfig(t, path, srv.Addr, "  max_total_per_key: 4")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// writeConfig's max_shares_per_object: 10, on line 3, made 20.
	data = bytes.Replace(data, []byte("max_shares_per_object: 10"), []byte("max_shares_per_object: 20"), 1)
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	lines = waitLines("the change of max_shares_per_object is refused", 3)
	checkProblemLines(t, lines[2:], []string{
		fmt.Sprintf(`problem="%s:3: pool.max_shares_per_object: cannot change while kpool runs (running 10, file 20); restart to change it" reloads_failed=2`, path),
	}, stderr.String())
}

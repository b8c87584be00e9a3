package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/consultest"
	"github.com/kpool-go/kpool/internal/syncbuf"
)

// endpointsLine finds the address the demo serves its endpoints on.
var endpointsLine = regexp.MustCompile(`endpoints: http://(127\.0\.0\.1:\d+)/metrics`)

// summaryLine finds the totals row of the demo's summary: requests and
// failures.
var summaryLine = regexp.MustCompile(`(?m)^\s+(\d+)\s+(\d+)\s+\d+\s+\S+\s+\S+\s+\d+\s+\d+\s*$`)

// runDemoTest runs the demo in process with extra flags, and, while it
// runs, the stats and health commands against it. It returns the demo's
// exit code and output.
func runDemoTest(t *testing.T, extra ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut syncbuf.Buffer
	args := append([]string{"demo", "--duration", "5s", "--http", "127.0.0.1:0"}, extra...)
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &out, &errOut) }()

	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for addr == "" && time.Now().Before(deadline) {
		if m := endpointsLine.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if addr == "" {
		cancel()
		<-done
		t.Fatalf("the demo never printed its endpoints; stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	// Read the instance as an operator would: health until the service has
	// a usable endpoint (traffic flows by then), then the stats.
	var code int
	var health, herr string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, health, herr = runKpool(ctx, "health", "--addr", addr, "--service", demoService)
		if code == 0 || time.Now().After(deadline) {
			break
		}
	}
	if code != 0 || !strings.Contains(health, "status: ok") {
		t.Errorf("health against the demo = %d %q (stderr %q), want ok", code, health, herr)
	}
	code, stats, serr := runKpool(ctx, "stats", "--addr", addr)
	if code != 0 || !strings.Contains(stats, "demo") || !strings.Contains(stats, demoService) {
		t.Errorf("stats against the demo = %d %q (stderr %q), want its pool and service", code, stats, serr)
	}
	code = <-done
	return code, out.String(), errOut.String()
}

func checkDemoSummary(t *testing.T, code int, out, errOut string) {
	t.Helper()
	if code != 0 {
		t.Errorf("demo exit code = %d, want 0; stderr:\n%s", code, errOut)
	}
	m := summaryLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in the demo's output:\n%s", out)
	}
	requests, _ := strconv.Atoi(m[1])
	failures, _ := strconv.Atoi(m[2])
	if requests < 1000 || failures != 0 {
		t.Errorf("summary: %d requests, %d failures; want many requests and no failure:\n%s", requests, failures, out)
	}
	for _, role := range []string{"retired", "new", "original"} {
		if !strings.Contains(out, role) {
			t.Errorf("summary has no %q backend: the rolling release did not happen:\n%s", role, out)
		}
	}
	if strings.Contains(out, "rolling release did not complete") {
		t.Errorf("the rolling release did not complete:\n%s", out)
	}
}

func TestDemo(t *testing.T) {
	code, out, errOut := runDemoTest(t)
	checkDemoSummary(t, code, out, errOut)
}

func TestDemoWithConsul(t *testing.T) {
	agent := consultest.Start(t)
	code, out, errOut := runDemoTest(t, "--consul", agent.Addr)
	checkDemoSummary(t, code, out, errOut)
	if !strings.Contains(out, "Consul at "+agent.Addr) {
		t.Errorf("the demo did not say it used Consul:\n%s", out)
	}
	// The demo deregistered what it registered.
	svcs, _, err := agent.Client().Catalog().Service(demoService, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 0 {
		t.Errorf("after the demo, Consul still lists %d instances of %s", len(svcs), demoService)
	}
}

func TestDemoRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--duration", "0s"},
		{"demo", "--backends", "0"},
		{"demo", "--callers", "-1"},
	} {
		code, _, errOut := runKpool(context.Background(), args...)
		if code != 2 || !strings.Contains(errOut, strings.TrimPrefix(args[1], "--")) {
			t.Errorf("%v = %d, stderr %q; want 2 naming the flag", args, code, errOut)
		}
	}
}

// TestDemoProcessSIGTERM stops a real demo process with SIGTERM while its
// traffic runs: it finishes the RPCs in flight, prints its summary and exits
// 0 with no failure.
func TestDemoProcessSIGTERM(t *testing.T) {
	cmd := exec.Command(os.Args[0], "demo", "--duration", "1m", "--http", "127.0.0.1:0", "--delay", "20ms", "--log-level", "info")
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	var out, errOut syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "rps") { // the first progress line: traffic runs
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("no progress from the demo in 30s; stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("demo after SIGTERM: %v, want exit status 0\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("the demo still ran 30s after SIGTERM")
	}
	m := summaryLine.FindStringSubmatch(out.String())
	if m == nil || m[2] != "0" {
		t.Errorf("summary after SIGTERM = %v, want one with 0 failures:\n%s", m, out.String())
	}
	if !strings.Contains(errOut.String(), "stopped by a signal") {
		t.Errorf("no shutdown log line:\n%s", errOut.String())
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/syncbuf"
)

// kpoolCommand returns kpool as a real process: the test binary, which
// runs kpool's main when envRunMain is set (see TestMain).
func kpoolCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	return cmd
}

// runBinary runs kpool with args as a process to its end, within
// waitTimeout, and returns its exit status and output.
func runBinary(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := kpoolCommand(ctx, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("kpool %q still ran after %v", args, waitTimeout)
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("kpool %q: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// process is a kpool process that runs until signalled.
type process struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr syncbuf.Buffer
	exited         chan struct{} // closed when the process has ended
	waitErr        error         // its end, once exited is closed
}

// startBinary starts kpool with args as a process; it is killed when the
// test ends if it still runs.
func startBinary(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{t: t, cmd: kpoolCommand(context.Background(), args...), exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// waitOutput waits until the process's stdout or stderr contains s.
func (p *process) waitOutput(s string) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(p.stdout.String(), s) && !strings.Contains(p.stderr.String(), s) {
		select {
		case <-p.exited:
			p.t.Fatalf("kpool %q exited (%v) before printing %q\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], p.waitErr, s, &p.stdout, &p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("kpool %q did not print %q within %v\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], s, waitTimeout, &p.stdout, &p.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop sends sig and waits, within waitTimeout, for the process to exit
// with status 0.
func (p *process) stop(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			p.t.Errorf("kpool %q after %v: %v, want exit status 0\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], sig, p.waitErr, &p.stdout, &p.stderr)
		}
	case <-time.After(waitTimeout):
		p.t.Fatalf("kpool %q still runs %v after %v\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], waitTimeout, sig, &p.stdout, &p.stderr)
	}
}

// A bad flag or flag value gets one short message that names the flag
// and says what is wanted, with a pointer to -h instead of the whole help,
// and exit status 2; nothing is asked of an instance.
func TestBinaryUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // all of stderr
	}{
		{[]string{"stats", "--adr", "127.0.0.1:9090"}, "kpool stats: unknown flag --adr; did you mean --addr?\nrun \"kpool stats -h\" for help\n"},
		{[]string{"health", "-tiemout=1s"}, "kpool health: unknown flag --tiemout; did you mean --timeout?\nrun \"kpool health -h\" for help\n"},
		{[]string{"stats", "--serv", "x"}, "kpool stats: unknown flag --serv; did you mean --service?\nrun \"kpool stats -h\" for help\n"},
		{[]string{"start", "--config", "x", "--shutdown-timout", "1s"}, "kpool start: unknown flag --shutdown-timout; did you mean --shutdown-timeout?\nrun \"kpool start -h\" for help\n"},
		{[]string{"stats", "--frobnicate"}, "kpool stats: unknown flag --frobnicate\nrun \"kpool stats -h\" for help\n"},
		{[]string{"stats", "--timeout", "-1s"}, "kpool stats: --timeout is -1s, want more than 0\n"},
		{[]string{"health", "--timeout", "0s"}, "kpool health: --timeout is 0s, want more than 0\n"},
		{[]string{"stats", "--addr", "127.0.0.1"}, "kpool stats: --addr is \"127.0.0.1\", want host:port or http://host:port\n"},
		{[]string{"stats", "--addr", "ftp://127.0.0.1:9090"}, "kpool stats: --addr is \"ftp://127.0.0.1:9090\", want host:port or http://host:port\n"},
		{[]string{"health", "--addr", "http://127.0.0.1:9090/?service=x"}, "kpool health: --addr is \"http://127.0.0.1:9090/?service=x\", want host:port or http://host:port\n"},
		{[]string{"health", "--addr", "127.0.0.1:http"}, "kpool health: --addr is \"127.0.0.1:http\", want host:port or http://host:port\n"},
		{[]string{"backends"}, "kpool backends: --config is required\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runBinary(t, tt.args...)
			if code != 2 || stdout != "" || stderr != tt.want {
				t.Errorf("kpool %q = %d, stdout %q, stderr %q; want 2, nothing, %q", tt.args, code, stdout, stderr, tt.want)
			}
		})
	}
}

// --addr takes what demo and start print, http://host:port with or
// without a path, as well as host:port.
func TestBinaryInspectAcceptsURLs(t *testing.T) {
	addr, _ := serveInstance(t)
	for _, a := range []string{
		addr,
		"http://" + addr,
		"http://" + addr + "/",
		"http://" + addr + "/metrics",
		"http://" + addr + "/stats/",
		"HTTP://" + addr + "/health",
	} {
		code, stdout, stderr := runBinary(t, "stats", "--addr", a)
		if code != 0 || !strings.Contains(stdout, "(2 keys)") {
			t.Errorf("kpool stats --addr %s = %d, stdout %q, stderr %q; want 0 and the pool's table", a, code, stdout, stderr)
		}
		code, stdout, stderr = runBinary(t, "health", "--addr", a)
		if code != 0 || !strings.Contains(stdout, "status: ok") {
			t.Errorf("kpool health --addr %s = %d, stdout %q, stderr %q; want 0 and ok", a, code, stdout, stderr)
		}
	}
}

func TestInstanceURL(t *testing.T) {
	tests := []struct {
		addr, want string // want "": refused
	}{
		{"127.0.0.1:9090", "http://127.0.0.1:9090"},
		{"localhost:9090", "http://localhost:9090"},
		{"[::1]:9090", "http://[::1]:9090"},
		{"http://127.0.0.1:9090", "http://127.0.0.1:9090"},
		{"http://127.0.0.1:9090/", "http://127.0.0.1:9090"},
		{"http://127.0.0.1:9090/stats", "http://127.0.0.1:9090"},
		{"https://kpool.internal/", "https://kpool.internal"},
		{"http://proxy:8080/kpool/a/health", "http://proxy:8080/kpool/a"},
		{"http://proxy:8080/kpool/", "http://proxy:8080/kpool"},
		{"127.0.0.1", ""},
		{"127.0.0.1:0", ""},
		{"127.0.0.1:99999", ""},
		{"127.0.0.1:9090/stats", ""},
		{"127.0.0.1:", ""},
		{"http://127.0.0.1:", ""},
		{"http://127.0.0.1:/stats", ""},
		{"http://", ""},
		{"http://user@127.0.0.1:9090", ""},
		{"http://127.0.0.1:9090#x", ""},
		{"unix:///run/kpool.sock", ""},
		{"", ""},
	}
	for _, tt := range tests {
		u, err := instanceURL(tt.addr)
		got := ""
		if err == nil {
			got = u.String()
		}
		if got != tt.want {
			t.Errorf("instanceURL(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}

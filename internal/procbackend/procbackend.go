package procbackend

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpool-go/kpool/internal/backend"
	"github.com/kpool-go/kpool/internal/syncbuf"
)

// The child's settings travel in its environment.
const (
	envAddr  = "KPOOL_PROCBACKEND_ADDR"  // host:port; its presence makes Main serve
	envDelay = "KPOOL_PROCBACKEND_DELAY" // backend.Options.Delay, as time.ParseDuration reads it
)

// startTimeout bounds how long Start and Restart wait for a child to
// listen, retries on a busy port included.
const startTimeout = 10 * time.Second

// Main serves a backend and exits if this process is a child that Start
// made; otherwise it returns at once. Call it first in TestMain, before
// anything that a backend process must not do (running the tests, goleak).
func Main() {
	addr, ok := os.LookupEnv(envAddr)
	if !ok {
		return
	}
	if err := serve(addr, os.Getenv(envDelay)); err != nil {
		fmt.Fprintln(os.Stderr, "procbackend:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// serve runs the backend until standard input ends, writing "listening
// ADDR" and then "conns N" at every change of its open connections.
func serve(addr, delay string) error {
	var opts backend.Options
	opts.Addr = addr
	if delay != "" {
		d, err := time.ParseDuration(delay)
		if err != nil {
			return fmt.Errorf("%s: %w", envDelay, err)
		}
		opts.Delay = d
	}
	s, err := backend.Listen(opts)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", s.Addr)
	parentGone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(parentGone)
	}()
	// Polled rather than hooked: the backend counts its connections, and a
	// few milliseconds of lag do not matter to a test that waits for zero.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	last := int64(-1)
	for {
		select {
		case <-parentGone:
			s.Stop()
			return nil
		case <-tick.C:
			if n := s.Open(); n != last {
				last = n
				fmt.Printf("conns %d\n", n)
			}
		}
	}
}

// Backend is a backend in a child process. Its methods are safe for
// concurrent use.
type Backend struct {
	// Addr is the host:port it listens on, the same across Restart.
	Addr string

	tb    testing.TB
	delay time.Duration
	conns atomic.Int64 // open connections, as the running child last said; 0 when none runs

	mu   sync.Mutex // protects the fields below; held across a start or a kill
	proc *proc      // the running child; nil: none
}

// proc is one child process.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	stderr *syncbuf.Buffer
	done   chan struct{} // closed when its standard output has ended
}

// Options configure a Backend. The zero value serves on 127.0.0.1 at a
// free port, with no handler delay.
type Options struct {
	// Delay is how long each UnaryCall takes: backend.Options.Delay.
	Delay time.Duration
}

// Start runs a backend in a child process and kills it when the test ends.
// It fails the test if the child does not listen within 10 seconds.
func Start(tb testing.TB, opts Options) *Backend {
	tb.Helper()
	b := &Backend{tb: tb, delay: opts.Delay}
	tb.Cleanup(b.Kill)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.startLocked("127.0.0.1:0", time.Now().Add(startTimeout)); err != nil {
		tb.Fatalf("procbackend: %v", err)
	}
	return b
}

// Kill kills the child with SIGKILL, if one runs, and waits until it has
// exited: its sockets are closed then, by the kernel, without a word to
// its clients.
func (b *Backend) Kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.killLocked()
}

// Restart kills the child if one runs and starts another on the same
// address. It fails the test if that one does not listen within 10
// seconds.
func (b *Backend) Restart() {
	b.tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.killLocked()
	if err := b.startLocked(b.Addr, time.Now().Add(startTimeout)); err != nil {
		b.tb.Fatalf("procbackend: restart on %s: %v", b.Addr, err)
	}
}

// Conns returns the TCP connections the running child holds open, as it
// last reported them (every 2 ms at most); 0 when no child runs.
func (b *Backend) Conns() int64 { return b.conns.Load() }

func (b *Backend) killLocked() {
	p := b.proc
	if p == nil {
		return
	}
	b.proc = nil
	_ = p.cmd.Process.Kill()
	<-p.done // the pipe's end: read all there is before Wait closes it
	_ = p.cmd.Wait()
	_ = p.stdin.Close()
	b.conns.Store(0)
}

// startLocked starts a child on addr and waits until it listens, trying
// again while the child fails (the port is still held, say) until
// deadline.
func (b *Backend) startLocked(addr string, deadline time.Time) error {
	for {
		err := b.tryLocked(addr, deadline)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tryLocked starts one child on addr and waits until it listens or exits.
func (b *Backend) tryLocked(addr string, deadline time.Time) error {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envAddr+"="+addr, envDelay+"="+b.delay.String())
	p := &proc{cmd: cmd, stderr: new(syncbuf.Buffer), done: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	p.stdin = stdin
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	listening := make(chan string, 1)
	go b.read(stdout, listening, p.done)
	select {
	case got := <-listening:
		b.Addr = got
		b.proc = p
		return nil
	case <-p.done:
		_ = cmd.Wait()
		_ = stdin.Close()
		return fmt.Errorf("backend on %s exited before it listened: %s", addr, strings.TrimSpace(p.stderr.String()))
	case <-time.After(time.Until(deadline)):
		_ = cmd.Process.Kill()
		<-p.done
		_ = cmd.Wait()
		_ = stdin.Close()
		return errors.New("backend on " + addr + " did not listen in time")
	}
}

// read follows a child's reports until its standard output ends.
func (b *Backend) read(stdout io.Reader, listening chan<- string, done chan<- struct{}) {
	defer close(done)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		switch f := strings.Fields(sc.Text()); {
		case len(f) == 2 && f[0] == "listening":
			listening <- f[1]
		case len(f) == 2 && f[0] == "conns":
			if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				b.conns.Store(n)
			}
		}
	}
}

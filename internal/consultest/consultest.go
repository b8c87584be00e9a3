package consultest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kpool-go/kpool/internal/syncbuf"
)

// EnvBinary names the environment variable that holds the consul binary's
// path.
const EnvBinary = "KPOOL_CONSUL"

// startTimeout bounds how long an agent may take to elect itself leader.
const startTimeout = 60 * time.Second

// Binary returns the path of the consul binary, or skips the test (fails
// it when CI is "true") with a message saying how to build one.
func Binary(tb testing.TB) string {
	tb.Helper()
	path := os.Getenv(EnvBinary)
	if path == "" {
		if p, err := exec.LookPath("consul"); err == nil {
			path = p
		}
	}
	if path != "" {
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("no consul binary (%s=%q, none in PATH): build one with "+
		"`go build -C tools/consul -o /some/dir/consul github.com/hashicorp/consul` "+
		"and set %s=/some/dir/consul", EnvBinary, os.Getenv(EnvBinary), EnvBinary)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// Agent is a running `consul agent -dev`. Its methods are safe for
// concurrent use.
type Agent struct {
	// Addr is the agent's HTTP API address, host:port. It stays the same
	// across Restart.
	Addr string

	tb    testing.TB
	bin   string
	dir   string
	opts  Options
	args  []string
	token string
	log   syncbuf.Buffer

	mu   sync.Mutex // protects the fields below
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Options configure an agent. The zero value is a dev agent without ACLs.
type Options struct {
	// Token, when set, turns ACLs on with default policy deny and makes
	// Token the management token (and the agent's own): queries without
	// it see no services. Client and Register use it.
	Token string
}

// Start starts an agent and waits until it has elected itself leader. The
// agent is stopped when the test ends; if the test failed, the agent's log
// is written to the test log.
func Start(tb testing.TB) *Agent {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is Start with options.
func StartWith(tb testing.TB, opts Options) *Agent {
	tb.Helper()
	bin := Binary(tb)
	dir := tb.TempDir()
	a := &Agent{tb: tb, bin: bin, token: opts.Token}
	tb.Cleanup(func() {
		a.Stop()
		if tb.Failed() {
			tb.Logf("consul agent log:\n%s", a.log.String())
		}
	})
	// The ports are free when chosen but not held: another process may take
	// one before the agent binds it. Then try again with others.
	a.dir, a.opts = dir, opts
	a.startOn(0)
	return a
}

// startOn starts the agent with its HTTP API on httpPort (0: any free
// port) and its other ports free ones. The ports are free when chosen but
// not held: another process (or an outgoing connection's source port) may
// take one before the agent binds it; then it tries again with others.
func (a *Agent) startOn(httpPort int) {
	a.tb.Helper()
	for attempt := 1; ; attempt++ {
		ports := freePorts(a.tb, 6)
		if httpPort != 0 {
			ports[0] = httpPort
		}
		a.setPorts(ports, a.dir, a.opts)
		err := a.start()
		if err == nil {
			return
		}
		if attempt == 5 || !strings.Contains(a.log.String(), "address already in use") {
			a.tb.Fatal(err)
		}
		a.tb.Logf("consultest: attempt %d: a port was taken, trying others", attempt)
		a.log.Reset()
	}
}

// setPorts sets the agent's command line for the given ports.
func (a *Agent) setPorts(ports []int, dir string, opts Options) {
	a.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	a.args = []string{
		"agent", "-dev",
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-data-dir", dir,
		"-node", "kpool-test",
		"-http-port", strconv.Itoa(ports[0]),
		"-dns-port", strconv.Itoa(ports[1]),
		"-serf-lan-port", strconv.Itoa(ports[2]),
		"-serf-wan-port", strconv.Itoa(ports[3]),
		"-server-port", strconv.Itoa(ports[4]),
		"-grpc-port", strconv.Itoa(ports[5]),
		"-grpc-tls-port", "-1",
		"-https-port", "-1",
		"-log-level", "warn",
	}
	if opts.Token != "" {
		a.args = append(a.args, "-hcl", fmt.Sprintf(
			`acl { enabled = true, default_policy = "deny", tokens { initial_management = %q, agent = %q } }`, opts.Token, opts.Token))
	}
}

// start starts the agent process and waits for its leader. It fails the
// test on a timeout, and returns an error if the agent exits while
// starting.
func (a *Agent) start() error {
	a.tb.Helper()
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout = &a.log
	cmd.Stderr = &a.log
	if err := cmd.Start(); err != nil {
		a.tb.Fatalf("consultest: start %s: %v", a.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()

	c := a.Client()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			a.Stop()
			return fmt.Errorf("consultest: agent exited while starting:\n%s", a.log.String())
		default:
		}
		if leader, err := c.Status().Leader(); err == nil && leader != "" && a.aclReady(c) {
			return nil
		}
		if time.Now().After(deadline) {
			a.tb.Fatalf("consultest: no leader (or, with a Token, no ACL system) after %v:\n%s", startTimeout, a.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// aclReady reports whether the agent takes its token: with ACLs on, the
// leader bootstraps the ACL system only after it is elected, and until
// then every request that needs a token is refused ("ACL system must be
// bootstrapped"). Without a token it is ready at once.
func (a *Agent) aclReady(c *api.Client) bool {
	if a.token == "" {
		return true
	}
	_, _, err := c.ACL().TokenReadSelf(nil)
	return err == nil
}

// Client returns an API client of the agent, with the management token if
// ACLs are on.
func (a *Agent) Client() *api.Client {
	// Without keep-alive: no idle connection outlives a request, so none is
	// left behind as goroutines when the test ends.
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.Addr
	cfg.Token = a.token
	c, err := api.NewClient(cfg)
	if err != nil {
		a.tb.Fatalf("consultest: api client: %v", err)
	}
	return c
}

// Stop stops the agent (SIGTERM, then SIGKILL after 10 s) and waits for it
// to exit. Stopping a stopped agent does nothing.
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops the agent if it runs and starts it again with the same
// HTTP address and data directory (its other ports may change), and waits
// for its leader. The new agent's catalog starts over (its index too), but
// the agent restores the services registered through its API from the data
// directory and syncs them.
func (a *Agent) Restart() {
	a.tb.Helper()
	a.Stop()
	_, port, _ := net.SplitHostPort(a.Addr)
	p, _ := strconv.Atoi(port)
	a.startOn(p)
}

// Register registers a service instance with the agent.
func (a *Agent) Register(reg *api.AgentServiceRegistration) {
	a.tb.Helper()
	if err := a.Client().Agent().ServiceRegister(reg); err != nil {
		a.tb.Fatalf("consultest: register %s: %v", reg.ID, err)
	}
}

// Deregister removes a service instance from the agent.
func (a *Agent) Deregister(id string) {
	a.tb.Helper()
	if err := a.Client().Agent().ServiceDeregister(id); err != nil {
		a.tb.Fatalf("consultest: deregister %s: %v", id, err)
	}
}

// freePorts returns n distinct loopback ports free for TCP and UDP (serf
// uses both) at the time of the call.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	var held []interface{ Close() error }
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100 {
			tb.Fatalf("consultest: no %d free ports after %d tries", n, tries)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("consultest: listen: %v", err)
		}
		held = append(held, lis)
		port := lis.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // UDP side taken: try another
		}
		held = append(held, pc)
		ports = append(ports, port)
	}
	return ports
}

// Command kpool runs kpool's tools: a demo, an end-to-end gRPC benchmark
// of kpool's ways of connecting, and a pool manager driven by a
// configuration file (hot reload, graceful shutdown) that keeps warm pools
// of gRPC connections and shows them, with local backends to try it on.
//
// Usage:
//
//	kpool <command> [flags]
//
// The commands are:
//
//	demo      route traffic to local gRPC backends through kpool, through a rolling release
//	bench     compare one ClientConn, round-robin ClientConns and kpool (exclusive, shared) over gRPC
//	start     keep the pools of a configuration file warm and serve /metrics, /health, /stats; carries no RPCs
//	backends  serve the static addresses of a configuration file on loopback, for start to try
//	stats     print a running instance's pools, keys and services
//	health    print whether a running instance is healthy, and why not
//
// "kpool <command> --help" describes a command's flags. Flags take one or
// two dashes. Logs go to standard error through log/slog; results to
// standard output.
//
// Exit status: 0 on success, 1 when a command fails, 2 for a usage error
// (unknown command or flag), 128+n when a second signal n ends the process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/kpool-go/kpool/cmd/kpool/internal/shutdown"
	"github.com/kpool-go/kpool/cmd/kpool/internal/typo"
)

// command is one subcommand. Its run parses its own flags from args.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands are the subcommands, in the order usage lists them. A new
// command is one line here and its own file.
var commands = []command{
	{"demo", "route traffic to local gRPC backends through kpool, through a rolling release", runDemo},
	{"bench", "compare one ClientConn, round-robin ClientConns and kpool (exclusive, shared) over gRPC", runBench},
	{"start", "keep the pools of a configuration file warm and serve /metrics, /health, /stats; carries no RPCs", runStart},
	{"backends", "serve the static addresses of a configuration file on loopback, for start to try", runBackends},
	{"stats", "print a running instance's pools, keys and services", runStats},
	{"health", "print whether a running instance is healthy, and why not", runHealth},
}

func main() {
	// The first signal cancels ctx: the command finishes its work and
	// returns; a second one exits at once.
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := shutdown.Notify(context.Background(), log, os.Exit, os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command args name with the rest of args, and returns the
// exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if args[0] == "help" && len(args) > 1 {
			return run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	// One line and a pointer to the list, as for a bad flag: the whole
	// usage would scroll the error away.
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	msg := fmt.Sprintf("unknown command %q", args[0])
	near := typo.Nearest(args[0], names, 2)
	for _, n := range names {
		// A command the input begins is the better guess on a tie ("stat":
		// stats, not start).
		if len(args[0]) >= 3 && strings.HasPrefix(n, args[0]) && typo.Distance(args[0], n) <= 2 {
			near = n
			break
		}
	}
	if near != "" {
		msg += "; did you mean " + near + "?"
	}
	fmt.Fprintf(stderr, "kpool: %s\nrun \"kpool help\" for the commands\n", msg)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: kpool <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s  %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun \"kpool <command> --help\" for a command's flags.\n")
}

// newFlags returns the flag set of a command; about is the text its --help
// shows above the flags.
func newFlags(name, args, about string) *flag.FlagSet {
	fs := flag.NewFlagSet("kpool "+name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: kpool %s %s\n\n%s\n\nflags:\n", name, args, strings.TrimSpace(about))
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args with fs. It returns ok when the command should
// run; otherwise the exit status: 0 after --help (usage on stdout), 2 after
// a bad flag or a stray argument. The error goes to stderr in one short
// message, an unknown flag with the nearest known one, and a pointer to
// --help rather than the whole usage, which would scroll the error away.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard) // Parse would print usage on its own
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return 0, false
	}
	msg := err.Error()
	// The flag package has no error type for an unknown flag; its message
	// has been this one since Go 1.
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + name
		if near := nearestFlag(fs, name); near != "" {
			msg += "; did you mean --" + near + "?"
		}
	}
	fmt.Fprintf(stderr, "%s: %s\nrun \"%s -h\" for help\n", fs.Name(), msg, fs.Name())
	return 2, false
}

// nearestFlag returns the flag of fs nearest to name: at most two edits
// away (one for names of up to four letters), else the first that starts
// with name when name has three letters or more; "" if none.
func nearestFlag(fs *flag.FlagSet, name string) string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	maxEdits := 2
	if len(name) <= 4 {
		maxEdits = 1
	}
	if best := typo.Nearest(name, names, maxEdits); best != "" {
		return best
	}
	if len(name) >= 3 {
		for _, n := range names {
			if strings.HasPrefix(n, name) {
				return n
			}
		}
	}
	return ""
}

// usageError reports a flag value that parsed but is not acceptable.
func usageError(fs *flag.FlagSet, stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	return 2
}

// logLevel is a flag.Value for a slog level: debug, info, warn, error.
type logLevel struct{ slog.LevelVar }

func (l *logLevel) Set(s string) error { return l.UnmarshalText([]byte(s)) }

func (l *logLevel) String() string { return strings.ToLower(l.Level().String()) }

// Package shutdown turns termination signals into a graceful shutdown: the
// first SIGINT or SIGTERM cancels a context, so that the program stops
// taking work and finishes what it has; a second one ends the process at
// once, for an operator who will not wait.
package shutdown

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// ExitCode is the status a shell reports for a process killed by sig:
// 128 plus the signal's number (130 for SIGINT, 143 for SIGTERM), and 1 for
// a signal without a number.
func ExitCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

// Notify returns a context that is cancelled, with the signal as its
// cause, by the first of sigs the process receives; the second one is
// logged and ends the process through exit (os.Exit in a program) with
// ExitCode of it. stop stops listening; call it when the program is done.
func Notify(parent context.Context, log *slog.Logger, exit func(code int), sigs ...os.Signal) (ctx context.Context, stop func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, sigs...)
	ctx, stopWatch := Watch(parent, log, exit, ch)
	return ctx, func() {
		signal.Stop(ch)
		stopWatch()
	}
}

// Watch is Notify over a channel of signals that the caller feeds, for
// tests and for programs that receive signals some other way.
func Watch(parent context.Context, log *slog.Logger, exit func(code int), signals <-chan os.Signal) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case sig := <-signals:
			log.Info("shutting down; send the signal again to exit at once", "signal", sig.String())
			cancel(fmt.Errorf("received %v", sig))
		case <-done:
			return
		}
		select {
		case sig := <-signals:
			log.Warn("second signal: exiting now, without waiting", "signal", sig.String())
			exit(ExitCode(sig))
		case <-done:
		}
	}()
	return ctx, func() {
		close(done)
		<-finished
		cancel(context.Canceled)
	}
}

// Command keyed shows kpool's keyed pool at work: a pool of pretend backend
// connections, borrowed and returned across several keys by many
// goroutines, then driven into exhaustion to show blocking and fail-fast
// borrowing, and finally the per-key statistics.
//
//	go run ./examples/keyed
package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/kpool-go/kpool/factory"
	"github.com/kpool-go/kpool/keyedpool"
)

// conn stands in for a connection to one backend.
type conn struct {
	backend string
	id      int64
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keyed:", err)
		os.Exit(1)
	}
}

func run() error {
	var ids atomic.Int64
	f := factory.Funcs[string, *conn]{
		MakeFunc: func(ctx context.Context, backend string) (*conn, error) {
			time.Sleep(2 * time.Millisecond) // a dial
			return &conn{backend: backend, id: ids.Add(1)}, nil
		},
	}
	cfg := keyedpool.DefaultConfig()
	cfg.MaxTotal = 16
	cfg.MaxTotalPerKey = 4
	cfg.MinIdlePerKey = 2
	p, err := keyedpool.New(f, cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	backends := []string{"db-1:5432", "db-2:5432", "cache:6379", "search:9200"}

	// Warm every key to MinIdlePerKey so the first requests find
	// connections ready.
	for _, b := range backends {
		if err := p.Prepare(ctx, b); err != nil {
			return err
		}
	}
	fmt.Printf("warmed %d keys: %d idle connections\n\n", len(backends), p.Stats().Idle)

	// 32 goroutines, 200 requests each, spread over the keys.
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 0))
			for range 200 {
				h, err := p.Borrow(ctx, backends[rng.IntN(len(backends))])
				if err != nil {
					fmt.Fprintln(os.Stderr, "borrow:", err)
					return
				}
				time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond) // use it
				if err := p.Return(h); err != nil {
					fmt.Fprintln(os.Stderr, "return:", err)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("6400 requests from 32 goroutines in %v\n\n", time.Since(start).Round(time.Millisecond))

	// Exhaustion: take every connection of one key, then borrow once more.
	key := backends[0]
	var held []*keyedpool.Pooled[string, *conn]
	for range cfg.MaxTotalPerKey {
		h, err := p.Borrow(ctx, key)
		if err != nil {
			return err
		}
		held = append(held, h)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = p.Borrow(waitCtx, key)
	cancel()
	fmt.Printf("Block, %s exhausted, 50ms deadline: %v\n", key, err)

	go func() { // return one in 10ms: a blocked borrower gets it
		time.Sleep(10 * time.Millisecond)
		p.Return(held[0])
	}()
	t0 := time.Now()
	h, err := p.Borrow(ctx, key)
	if err != nil {
		return err
	}
	fmt.Printf("Block, a connection returned after 10ms: got connection %d after %v\n",
		h.Value().id, time.Since(t0).Round(time.Millisecond))
	held[0] = h

	failCfg := cfg
	failCfg.WhenExhausted = keyedpool.Fail
	if err := p.SetConfig(failCfg); err != nil {
		return err
	}
	t0 = time.Now()
	_, err = p.Borrow(ctx, key)
	fmt.Printf("Fail, %s exhausted: %v (after %v), is ErrExhausted: %v\n\n",
		key, err, time.Since(t0).Round(time.Microsecond), errors.Is(err, keyedpool.ErrExhausted))
	for _, h := range held {
		p.Return(h)
	}

	printStats(p, backends)
	return p.Close(ctx)
}

func printStats(p *keyedpool.Pool[string, *conn], backends []string) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "key\tactive\tidle\tborrowed\tcreated\tdestroyed\twaited\tmean wait\tmax wait\t")
	slices.Sort(backends)
	row := func(name string, g keyedpool.Gauges, c keyedpool.Counters) {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%v\t%v\t\n", name, g.Active, g.Idle, c.Borrowed,
			c.Created, c.Destroyed, c.Waited, c.MeanWaitTime().Round(time.Microsecond), c.MaxWaitTime.Round(time.Microsecond))
	}
	for _, b := range backends {
		s := p.KeyStats(b)
		row(b, s.Gauges, s.Counters)
	}
	s := p.Stats()
	row("all", s.Gauges, s.Counters)
	w.Flush()
}

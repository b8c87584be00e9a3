package grpcpool_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// Many goroutines mix unary RPCs, application errors and streams that end
// every way a stream can end, over few connections with few shares each, so
// that borrowers wait and shares change hands all the time. Every share must
// come back exactly once. Run with -race.
func TestConnStress(t *testing.T) {
	const (
		goroutines = 24
		rounds     = 150 // per goroutine
		budget     = 5 * time.Second
	)
	srv := grpctest.Start(t, grpctest.Options{})
	p, foo := sharedPool(t, srv, config{ConnectTimeout: testTimeout}, keyedpool.Config{MaxSharesPerObject: 4, MaxTotalPerKey: 3})
	deadline := time.Now().Add(budget)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				if time.Now().After(deadline) {
					return
				}
				c, cancel := context.WithTimeout(context.Background(), testTimeout)
				if err := stressRound(c, cancel, foo, (g+i)%6); err != nil {
					t.Errorf("goroutine %d round %d: %v", g, i, err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	// A stream ended by its context gives its share back from the
	// context's callback goroutine, a moment after the cancel.
	grpctest.WaitFor(t, testTimeout, "shares still in use after the stress", func() bool {
		return p.Stats().SharesInUse == 0
	})
	s := p.Stats()
	if s.SharesInUse != 0 || s.Borrowed != s.Returned {
		t.Errorf("Stats() after the stress: %d shares in use, Borrowed %d, Returned %d; want 0 and equal", s.SharesInUse, s.Borrowed, s.Returned)
	}
	if s.Created > 3 {
		t.Errorf("Created = %d, want at most MaxTotalPerKey 3 (no connection was broken)", s.Created)
	}
	t.Logf("%d RPCs over %d connections", s.Borrowed, s.Created)
}

// stressRound makes one RPC of the kind given by n. Only unexpected errors
// are returned.
func stressRound(c context.Context, cancel context.CancelFunc, foo stub, n int) error {
	switch n {
	case 0: // unary
		_, err := foo.UnaryCall(c, req("x"))
		return err
	case 1: // unary with an application error
		foo.UnaryCall(c, failing(13, "app"))
		return nil
	case 2: // bidi, closed and drained to io.EOF
		s, err := foo.StreamingCall(c)
		if err != nil {
			return err
		}
		if err := s.Send(req("x")); err != nil {
			return err
		}
		if _, err := s.Recv(); err != nil {
			return err
		}
		s.CloseSend()
		if _, err := s.Recv(); err != io.EOF {
			return err
		}
		return nil
	case 3: // server stream abandoned by cancelling it
		s, err := foo.StreamingFromServer(c, req("x"))
		if err != nil {
			return err
		}
		s.Recv()
		cancel()
		return nil
	case 4: // server stream read to the end
		s, err := foo.StreamingFromServer(c, &testpb.SimpleRequest{ResponseSize: 2})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
		}
	default: // client stream
		s, err := foo.StreamingFromClient(c)
		if err != nil {
			return err
		}
		s.Send(req("x"))
		_, err = s.CloseAndRecv()
		return err
	}
}

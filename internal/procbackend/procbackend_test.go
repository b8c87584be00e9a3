package procbackend_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/internal/procbackend"
)

func TestMain(m *testing.M) {
	procbackend.Main()
	goleak.VerifyTestMain(m)
}

const testTimeout = 10 * time.Second

// A killed backend fails the RPCs sent to it; restarted, it serves on the
// same address; Conns follows the connections its clients hold.
func TestKillAndRestartOnSameAddress(t *testing.T) {
	b := procbackend.Start(t, procbackend.Options{})
	addr := b.Addr
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	foo := testpb.NewBenchmarkServiceClient(cc)
	c, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := foo.UnaryCall(c, &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall() = %v", err)
	}
	grpctest.WaitFor(t, testTimeout, "the backend never reported the client's connection", func() bool { return b.Conns() == 1 })

	b.Kill()
	if got := b.Conns(); got != 0 {
		t.Errorf("Conns() after Kill = %d, want 0", got)
	}
	if _, err := foo.UnaryCall(c, &testpb.SimpleRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("UnaryCall() to the killed backend = %v, want Unavailable", err)
	}

	b.Restart()
	if b.Addr != addr {
		t.Errorf("Addr after Restart = %s, want %s", b.Addr, addr)
	}
	if _, err := foo.UnaryCall(c, &testpb.SimpleRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Errorf("UnaryCall() to the restarted backend = %v", err)
	}
	cc.Close()
	grpctest.WaitFor(t, testTimeout, "the backend still holds the closed client's connection", func() bool { return b.Conns() == 0 })
}

package grpcpool_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

// Shared use: one grpc.ClientConnInterface per backend, backed by the pool.
// Generated stubs work unchanged, and each RPC takes a share of the least
// loaded connection, so 50 RPCs at once ride on one HTTP/2 connection.
func ExampleNewConn() {
	addr, stop := startBackend()
	defer stop()

	f, err := grpcpool.New(grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		NewStub:        testpb.NewBenchmarkServiceClient,
		Insecure:       true, // or TLS: &tls.Config{...}
		ConnectTimeout: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	p, err := keyedpool.New(f, keyedpool.Config{
		MaxSharesPerObject: keyedpool.MaxShares, // each connection learns its server's stream cap
		MaxTotalPerKey:     16,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())

	backend := testpb.NewBenchmarkServiceClient(grpcpool.NewConn(p, addr))
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := backend.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil {
				log.Print(err)
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	fmt.Println("RPCs:", s.Borrowed, "connections:", s.Created)
	// Output: RPCs: 50 connections: 1
}

// Exclusive use, as with commons-pool2: borrow a client, call its stub, give
// it back. Borrow lends no connection gRPC reports down; Release
// invalidates the client instead of returning it when the RPC's error says
// its connection broke, or the connection went down.
func ExampleRelease() {
	addr, stop := startBackend()
	defer stop()

	f, err := grpcpool.New(grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		NewStub:        testpb.NewBenchmarkServiceClient,
		Insecure:       true,
		ConnectTimeout: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	p, err := keyedpool.New(f, keyedpool.Config{MaxTotalPerKey: 4})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(context.Background())

	ctx := context.Background()
	h, err := grpcpool.Borrow(ctx, p, addr)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := h.Value().Stub().UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}})
	grpcpool.Release(p, h, err)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", resp.GetPayload().GetBody())
	// Output: hello
}

// startBackend serves an echoing BenchmarkService on a loopback port.
func startBackend() (addr string, stop func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterBenchmarkServiceServer(srv, echo{})
	go srv.Serve(lis)
	return lis.Addr().String(), srv.Stop
}

type echo struct {
	testpb.UnimplementedBenchmarkServiceServer
}

func (echo) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

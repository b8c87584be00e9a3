package discovery_test

import (
	"context"
	"net"
	"strconv"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/grpctest"
)

type (
	stub   = testpb.BenchmarkServiceClient
	client = grpcpool.Client[stub]
	router = discovery.Router[stub]
)

// testTimeout bounds every wait of these tests: a bug shows up as a failure
// naming what did not happen, never as a hang.
const testTimeout = 10 * time.Second

// ep is the endpoint of a test server.
func ep(s *grpctest.Server) discovery.Endpoint {
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		panic(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		panic(err)
	}
	return discovery.Endpoint{Address: host, Port: p}
}

func eps(servers ...*grpctest.Server) []discovery.Endpoint {
	out := make([]discovery.Endpoint, len(servers))
	for i, s := range servers {
		out[i] = ep(s)
	}
	return out
}

// unary makes one UnaryCall through c.
func unary(c context.Context, conn *discovery.Conn[stub]) error {
	_, err := testpb.NewBenchmarkServiceClient(conn).UnaryCall(c, &testpb.SimpleRequest{})
	return err
}

type config = grpcpool.Config[string, stub]

// newStub returns a BenchmarkService stub over conn.
func newStub(conn *discovery.Conn[stub]) stub { return testpb.NewBenchmarkServiceClient(conn) }

// req is a request whose payload is body.
func req(body string) *testpb.SimpleRequest {
	return &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(body)}}
}

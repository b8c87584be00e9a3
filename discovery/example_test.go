package discovery_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

// A Router serves a service's RPCs from its endpoints and follows them
// through a rolling release: here the static resolver's list is replaced by
// hand; with discovery/consul the same happens as instances register and
// deregister.
func ExampleRouter() {
	blue, stopBlue := startBackend("blue")
	defer stopBlue()
	green, stopGreen := startBackend("green")
	defer stopGreen()

	res := static.New(map[string][]discovery.Endpoint{"echo": {{Address: blue}}})
	// With Consul instead:
	//	res, err := consul.New(consul.Config{Address: "127.0.0.1:8500", Tags: []string{"v2"}})

	f, err := grpcpool.New(grpcpool.Config[string, testpb.BenchmarkServiceClient]{
		NewStub:        testpb.NewBenchmarkServiceClient,
		Insecure:       true,
		ConnectTimeout: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	r, err := discovery.NewRouter(discovery.RouterConfig[testpb.BenchmarkServiceClient]{
		Resolver: res,
		Factory:  f,
		Pool: keyedpool.Config{
			MaxSharesPerObject: 100, // RPCs per connection at once
			MinIdlePerKey:      1,   // connections an arriving endpoint is warmed to
		},
		NewBalancer: func() discovery.Balancer { return discovery.LeastLoaded{} },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close(context.Background())

	ctx := context.Background()
	echo := testpb.NewBenchmarkServiceClient(r.Conn("echo"))
	call := func() {
		resp, err := echo.UnaryCall(ctx, &testpb.SimpleRequest{})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("answered by", string(resp.GetPayload().GetBody()))
	}
	call()

	// Rolling release: green arrives, then blue leaves. Blue's connection
	// closes once no RPC uses it.
	res.Set("echo", []discovery.Endpoint{{Address: blue}, {Address: green}})
	waitFor(func() bool { eps, _ := r.Endpoints(ctx, "echo"); return len(eps) == 2 })
	res.Set("echo", []discovery.Endpoint{{Address: green}})
	waitFor(func() bool {
		eps, _ := r.Endpoints(ctx, "echo")
		return len(eps) == 1 && eps[0].Address == green
	})
	call()

	for _, s := range r.Services() {
		fmt.Printf("%s: %d endpoint, %d usable, %d updates, %d errors\n", s.Service, s.Endpoints, s.Usable, s.Updates, s.Errors)
	}
	_, err = r.Borrow(ctx, "nobody")
	fmt.Println(err)
	// Output:
	// answered by blue
	// answered by green
	// echo: 1 endpoint, 1 usable, 3 updates, 0 errors
	// discovery: no endpoints: service "nobody"
}

// startBackend serves a BenchmarkService that answers with its name, on a
// loopback port.
func startBackend(name string) (addr string, stop func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterBenchmarkServiceServer(s, namedBackend{name: name})
	go s.Serve(lis)
	return lis.Addr().String(), s.Stop
}

type namedBackend struct {
	testpb.UnimplementedBenchmarkServiceServer
	name string
}

func (b namedBackend) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(b.name)}}, nil
}

// waitFor polls cond for up to 10 seconds.
func waitFor(cond func() bool) {
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			log.Fatal("condition not met in 10s")
		}
	}
}

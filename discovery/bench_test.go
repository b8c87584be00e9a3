package discovery_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/static"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/internal/clienttest"
	"github.com/kpool-go/kpool/internal/grpctest"
	"github.com/kpool-go/kpool/keyedpool"
)

// What routing costs per RPC: unary calls to one loopback backend through
// a Router's Conn (pick, usable check, borrow, release) beside a
// grpcpool.Conn over the same kind of pool (borrow and release only).
func BenchmarkConn(b *testing.B) {
	srv := grpctest.Start(b, grpctest.Options{})
	newF := func() *grpcpool.Factory[string, stub] {
		return clienttest.NewFactory(b, config{ConnectTimeout: testTimeout})
	}
	pcfg := clienttest.SharedLeases()
	run := func(b *testing.B, conn grpc.ClientConnInterface) {
		foo := testpb.NewBenchmarkServiceClient(conn)
		in := &testpb.SimpleRequest{}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := foo.UnaryCall(context.Background(), in); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("mode=grpcpool.Conn", func(b *testing.B) {
		p, err := keyedpool.New(newF(), pcfg)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close(context.Background())
		run(b, grpcpool.NewConn(p, srv.Addr))
	})
	b.Run("mode=Router.Conn", func(b *testing.B) {
		r, err := discovery.NewRouter(discovery.RouterConfig[stub]{
			Resolver: static.New(map[string][]discovery.Endpoint{"svc": {ep(srv)}}),
			Factory:  newF(),
			Pool:     pcfg,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close(context.Background())
		run(b, r.Conn("svc"))
	})
}

// Package grpcpool pools gRPC clients with kpool's keyedpool: one
// *grpc.ClientConn (a single HTTP/2 connection to one backend) and its
// generated stub per pooled object, keyed by whatever routes traffic to a
// backend (its address by default). It is a layer above the pool (it
// imports keyedpool for Conn, Borrow and Release), beside discovery and
// metrics, where factory and its adapters sit below it.
//
// Factory implements factory.KeyedFactory for a keyedpool.Pool. It makes a
// Client with grpc.NewClient and, with ConnectTimeout, connects it before the
// pool lends it; Validate refuses connections in TRANSIENT_FAILURE or
// SHUTDOWN and, with HealthCheck, backends whose grpc.health.v1 service does
// not say SERVING; Activate reconnects an IDLE connection; Destroy closes it.
//
// There are two ways to use the pool.
//
// Shared use, the one we recommend: make the pool with MaxSharesPerObject at
// keyedpool.MaxShares, MaxTotalPerKey at the connections the load needs at
// the backends' stream cap (and MaxIdlePerKey with it), set ConnectTimeout,
// and wrap the pool, per key, in a Conn. A Conn is a
// grpc.ClientConnInterface, so generated stubs work unchanged
// (pb.NewFooClient(conn)). Every RPC takes one share of the busiest
// connection of its key that has room, for as long as it runs, so a
// connection carries many RPCs at once, as HTTP/2 intends, and the pool
// opens another only when all are full, up to MaxTotalPerKey. Each Client
// learns how many streams its server allows (Client.ShareCap) and takes no
// more RPCs than that, so none queues inside gRPC for a stream; with
// ConnectTimeout it knows before it is first lent, without it a new
// connection takes the cap its key's other connections learned (on a key
// with none yet, MaxSharesPerObject) until its server has spoken.
//
// Exclusive use, as commons-pool2 users know it: Borrow a *Client (with
// this package's Borrow, or the pool's), call its Stub, and give it back
// with Release (or Return/Invalidate). Each
// connection then carries one caller at a time, which wastes HTTP/2
// multiplexing; it suits callers that hold a client for a sequence of calls
// or need one connection to themselves.
//
// Either way, an RPC that fails because its connection is broken (by
// default: status Unavailable while the connection is not READY; see
// DefaultClassifier) invalidates that connection instead of returning it, so
// the pool makes a fresh one; application errors leave it in the pool.
//
// No RPC is sent on a connection gRPC reports down (Client.Down: in
// TRANSIENT_FAILURE or SHUTDOWN, or it lost its transport and has not been
// READY since). The pool lends more shares of a lent connection without
// asking the factory, so Borrow, which Conn uses, checks every lease and
// invalidates one whose connection is down, and Release invalidates a
// connection that went down while lent: its RPCs in flight end as gRPC
// fails them, and no later RPC is sent on it.
package grpcpool

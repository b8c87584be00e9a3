package backend

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// benchService implements grpc.testing.BenchmarkService.
type benchService struct {
	testpb.UnimplementedBenchmarkServiceServer
	s *Server
}

// UnaryCall echoes the request's payload after the server's Delay. A
// request's ResponseStatus, when set, is returned as the call's status.
func (b *benchService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s := b.s
	s.unary.Add(1)
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	if s.failNext.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "backend: failing on demand")
	}
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if s.opts.Delay > 0 {
		time.Sleep(s.opts.Delay)
	}
	if st := req.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

// StreamingCall echoes every request until the client closes its side.
func (b *benchService) StreamingCall(stream grpc.BidiStreamingServer[testpb.SimpleRequest, testpb.SimpleResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.SimpleResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// StreamingFromClient answers with the last payload once the client closes
// its side.
func (b *benchService) StreamingFromClient(stream grpc.ClientStreamingServer[testpb.SimpleRequest, testpb.SimpleResponse]) error {
	var last *testpb.Payload
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.SimpleResponse{Payload: last})
		}
		if err != nil {
			return err
		}
		last = req.GetPayload()
	}
}

// StreamingFromServer sends the request's payload ResponseSize times and
// ends the stream. With ResponseSize 0 it sends the payload once and then
// waits, without end, until the client goes away.
func (b *benchService) StreamingFromServer(req *testpb.SimpleRequest, stream grpc.ServerStreamingServer[testpb.SimpleResponse]) error {
	n := req.GetResponseSize()
	for i := int32(0); i < max(n, 1); i++ {
		if err := stream.Send(&testpb.SimpleResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
	if n == 0 {
		<-stream.Context().Done()
		return status.FromContextError(stream.Context().Err()).Err()
	}
	return nil
}

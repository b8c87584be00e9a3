package grpcpool

import (
	"context"
	"math"
	"net"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/credentials"

	"github.com/kpool-go/kpool/keyedpool"
)

// How a Client learns its stream cap.
//
// An HTTP/2 server says how many streams a client may have open at once in
// the SETTINGS_MAX_CONCURRENT_STREAMS of its SETTINGS frames: the first,
// before the connection is READY, and any later one. grpc-go keeps that
// number to itself and queues an RPC past it until a stream ends, which is
// where RPCs wait when a pool lends a connection more shares than its server
// allows. So each Client reads the number where grpc-go does: its
// connection's credentials hand grpc-go a net.Conn that watches the frames
// read from the server (headers only; payloads are skipped by length) and
// sets the Client's keyedpool.ShareCap from every SETTINGS frame. This is
// exact, costs a few comparisons per frame, and follows a server or proxy
// that changes its limit. A first SETTINGS frame without the setting means
// no limit, as in grpc-go (ShareCap.Set(0): MaxSharesPerObject alone bounds
// the connection); a limit of 0 counts as 1, so that a connection is never
// capped below one stream.
//
// It needs the credentials to be grpcpool's (Config.TLS,
// Config.TransportCredentials or the insecure default): credentials passed
// in Config.DialOptions replace them, and the cap is then not learned.

// capCreds are transport credentials whose connections report the server's
// stream limit to cap.
type capCreds struct {
	credentials.TransportCredentials
	cap *keyedpool.ShareCap
}

func (c capCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return conn, info, err
	}
	return &settingsConn{Conn: conn, scan: settingsScanner{cap: c.cap}}, info, nil
}

func (c capCreds) Clone() credentials.TransportCredentials {
	return capCreds{TransportCredentials: c.TransportCredentials.Clone(), cap: c.cap}
}

// settingsConn is a client connection whose reads from the server are
// scanned for SETTINGS frames. grpc-go reads from one goroutine.
type settingsConn struct {
	net.Conn
	scan settingsScanner
}

func (c *settingsConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.scan.feed(b[:n])
	return n, err
}

// frameHeaderLen is the length of an HTTP/2 frame header (RFC 9113 4.1).
const frameHeaderLen = 9

// settingsScanner follows the HTTP/2 frames a server sends, fed in pieces
// of any size, and sets cap from the SETTINGS_MAX_CONCURRENT_STREAMS of each
// SETTINGS frame. The server sends no preface of its own before its first
// SETTINGS frame. Not safe for concurrent use.
type settingsScanner struct {
	cap *keyedpool.ShareCap

	hdr     [frameHeaderLen]byte
	nhdr    int    // bytes of hdr read
	inFrame bool   // hdr is whole: reading its payload
	left    uint32 // payload bytes still to come
	// settings: the frame is SETTINGS (not an acknowledgement), whose
	// payload is read as 6-byte parameters.
	settings bool
	param    [6]byte
	nparam   int
	limit    int64 // the frame's MAX_CONCURRENT_STREAMS; -1: not in it
	frames   int   // SETTINGS frames read
}

func (s *settingsScanner) feed(b []byte) {
	for len(b) > 0 {
		if !s.inFrame {
			k := copy(s.hdr[s.nhdr:], b)
			s.nhdr += k
			b = b[k:]
			if s.nhdr < frameHeaderLen {
				return
			}
			s.nhdr, s.inFrame = 0, true
			s.left = uint32(s.hdr[0])<<16 | uint32(s.hdr[1])<<8 | uint32(s.hdr[2])
			s.settings = http2.FrameType(s.hdr[3]) == http2.FrameSettings && http2.Flags(s.hdr[4])&http2.FlagSettingsAck == 0
			s.nparam, s.limit = 0, -1
		} else {
			k := uint32(len(b))
			if k > s.left {
				k = s.left
			}
			if s.settings {
				s.params(b[:k])
			}
			s.left -= k
			b = b[k:]
		}
		if s.inFrame && s.left == 0 {
			s.inFrame = false
			if s.settings {
				s.settled()
			}
		}
	}
}

// params reads a piece of a SETTINGS payload.
func (s *settingsScanner) params(b []byte) {
	for len(b) > 0 {
		k := copy(s.param[s.nparam:], b)
		s.nparam += k
		b = b[k:]
		if s.nparam < len(s.param) {
			return
		}
		s.nparam = 0
		id := http2.SettingID(uint16(s.param[0])<<8 | uint16(s.param[1]))
		if id == http2.SettingMaxConcurrentStreams {
			s.limit = int64(uint32(s.param[2])<<24 | uint32(s.param[3])<<16 | uint32(s.param[4])<<8 | uint32(s.param[5]))
		}
	}
}

// settled applies a whole SETTINGS frame, as grpc-go does.
func (s *settingsScanner) settled() {
	s.frames++
	switch {
	case s.limit >= 0:
		s.cap.Set(int(min(max(s.limit, 1), math.MaxInt32)))
	case s.frames == 1:
		s.cap.Set(0) // no cap
	}
}

package grpcpool

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/http2"

	"github.com/kpool-go/kpool/keyedpool"
)

// rvFrames writes a random server byte stream and returns it with the
// offsets where frames end and the cap grpc-go would hold after each
// frame (0: none known).
func rvFrames(t *testing.T, r *rand.Rand, n int, big bool) (stream []byte, ends []int, caps []int) {
	t.Helper()
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	cur, settingsSeen := 0, 0
	// lookalike is a SETTINGS frame with MAX_CONCURRENT_STREAMS 7, to bury
	// in other frames' payloads.
	var la bytes.Buffer
	http2.NewFramer(&la, nil).WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 7})
	lookalike := la.Bytes()
	junk := func(k int) []byte {
		b := make([]byte, 0, k)
		for len(b) < k {
			if r.IntN(2) == 0 {
				b = append(b, lookalike...)
			} else {
				b = append(b, byte(r.IntN(256)))
			}
		}
		return b[:k]
	}
	for i := 0; i < n; i++ {
		var err error
		kind := r.IntN(12)
		if i == 0 {
			kind = 0 // the server's first frame is SETTINGS
		}
		switch kind {
		case 0, 1: // SETTINGS, maybe with the limit (several times), maybe empty
			var ss []http2.Setting
			limit := int64(-1)
			for range r.IntN(5) {
				switch r.IntN(3) {
				case 0:
					v := []uint32{0, 1, 2, 100, math.MaxInt32, math.MaxInt32 + 1, math.MaxUint32, r.Uint32()}[r.IntN(8)]
					ss = append(ss, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: v})
					limit = int64(v)
				default:
					ss = append(ss, http2.Setting{ID: []http2.SettingID{1, 2, 4, 5, 6, 0x99}[r.IntN(6)], Val: r.Uint32()})
				}
			}
			if r.IntN(20) == 0 { // many parameters: a long frame
				for range 1000 {
					ss = append(ss, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
				}
			}
			// WriteSettings validates values; write the frame by hand.
			payload := make([]byte, 0, 6*len(ss))
			for _, s := range ss {
				payload = append(payload, byte(s.ID>>8), byte(s.ID), byte(s.Val>>24), byte(s.Val>>16), byte(s.Val>>8), byte(s.Val))
			}
			err = fr.WriteRawFrame(http2.FrameSettings, 0, 0, payload)
			settingsSeen++
			switch {
			case limit >= 0:
				cur = int(min(max(limit, 1), math.MaxInt32))
			case settingsSeen == 1:
				cur = 0
			}
		case 2: // SETTINGS ack
			err = fr.WriteSettingsAck()
		case 3: // padded DATA whose payload and padding look like SETTINGS
			pad := junk(r.IntN(256))
			for i := range pad {
				pad[i] = 0 // padding must be zero
			}
			err = fr.WriteDataPadded(uint32(1+2*r.IntN(100)), r.IntN(2) == 0, junk(r.IntN(3000)), pad)
		case 4: // padded HEADERS with priority
			err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(1 + 2*r.IntN(100)), BlockFragment: junk(r.IntN(500)),
				EndHeaders: true, PadLength: uint8(r.IntN(256)), Priority: http2.PriorityParam{StreamDep: 0, Weight: 3}})
		case 5:
			var d [8]byte
			copy(d[:], lookalike)
			err = fr.WritePing(r.IntN(2) == 0, d)
		case 6:
			err = fr.WriteWindowUpdate(uint32(r.IntN(10)), 1+uint32(r.IntN(1000)))
		case 7:
			err = fr.WriteGoAway(uint32(2*r.IntN(100)+1), http2.ErrCodeNo, junk(r.IntN(200)))
		case 8:
			err = fr.WriteRSTStream(uint32(1+2*r.IntN(100)), http2.ErrCodeCancel)
		case 9: // an unknown frame type, and one with type SETTINGS' value in its flags
			err = fr.WriteRawFrame(http2.FrameType(0xa0+r.IntN(16)), 0x4, 0, junk(r.IntN(100)))
		case 10: // SETTINGS-typed frame flagged ACK but carrying a payload (invalid, ignored)
			err = fr.WriteRawFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, nil)
		case 11:
			if big && r.IntN(4) == 0 {
				err = fr.WriteRawFrame(http2.FrameData, 0, 1, junk(1<<24-1)) // the largest frame
			} else {
				err = fr.WritePriority(uint32(1+2*r.IntN(100)), http2.PriorityParam{Weight: 9})
			}
		}
		if err != nil {
			t.Fatalf("frame %d kind %d: %v", i, kind, err)
		}
		ends = append(ends, buf.Len())
		caps = append(caps, cur)
	}
	return buf.Bytes(), ends, caps
}

// The scanner must hold, after every read, exactly the cap of the frames
// wholly read so far, however the reads cut the stream.
func TestSettingsScannerRandomStreams(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 42))
		stream, ends, caps := rvFrames(t, r, 5+r.IntN(60), seed%25 == 0)
		var c keyedpool.ShareCap
		c.Set(12345) // known before this connection
		s := settingsScanner{cap: &c}
		off, fi := 0, 0
		for off < len(stream) {
			var k int
			switch r.IntN(4) {
			case 0:
				k = 1 + r.IntN(3)
			case 1:
				k = 1 + r.IntN(20)
			case 2:
				k = 1 + r.IntN(4096)
			default:
				k = 1 + r.IntN(70000)
			}
			k = min(k, len(stream)-off)
			s.feed(stream[off : off+k])
			off += k
			for fi < len(ends) && ends[fi] <= off {
				fi++
			}
			want := 12345
			if fi > 0 {
				want = caps[fi-1]
			}
			if got := c.Load(); got != want {
				t.Fatalf("seed %d: after %d of %d bytes (%d frames whole) cap = %d, want %d", seed, off, len(stream), fi, got, want)
			}
		}
	}
}

// Reads that return nothing (n 0), or bytes with an error, are fed as
// they come.
func TestSettingsScannerEmptyReads(t *testing.T) {
	var c keyedpool.ShareCap
	s := settingsScanner{cap: &c}
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 3})
	b := buf.Bytes()
	for i := range b {
		s.feed(nil)
		s.feed(b[i : i+1])
		s.feed(b[i+1 : i+1])
	}
	if c.Load() != 3 {
		t.Errorf("cap = %d, want 3", c.Load())
	}
}

package grpcpool

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"

	"github.com/kpool-go/kpool/keyedpool"
)

// The scanner follows the SETTINGS frames of a server's byte stream however
// the reads cut it, skips every other frame by its length, ignores
// acknowledgements, and applies each frame whole, as grpc-go does.
func TestSettingsScanner(t *testing.T) {
	type step struct {
		write func(*http2.Framer) error
		want  int // the cap after the frame
	}
	settings := func(s ...http2.Setting) func(*http2.Framer) error {
		return func(f *http2.Framer) error { return f.WriteSettings(s...) }
	}
	streams := func(n uint32) http2.Setting { return http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: n} }
	window := http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}
	cases := map[string][]step{
		"LimitThenChanges": {
			{settings(window, streams(10)), 10},
			{func(f *http2.Framer) error { return f.WriteWindowUpdate(0, 1000) }, 10},
			{func(f *http2.Framer) error { return f.WriteSettingsAck() }, 10},
			{func(f *http2.Framer) error {
				return f.WriteData(1, false, bytes.Repeat([]byte{4, 0, 0, 0, 0, 0, 3, 0}, 3000))
			}, 10},
			{settings(window), 10},                  // a later frame without the setting keeps it
			{settings(streams(200)), 200},           // raised
			{settings(streams(0)), 1},               // never below one stream
			{settings(streams(7), streams(30)), 30}, // the frame's last word counts
			{settings(streams(1 << 31)), 1<<31 - 1}, // beyond int32: the largest cap
			{func(f *http2.Framer) error { return f.WritePing(false, [8]byte{4}) }, 1<<31 - 1},
		},
		"NoLimit": {
			{settings(window), 0}, // a first frame without it: no limit
			{settings(streams(5)), 5},
		},
	}
	for name, steps := range cases {
		for _, chunk := range []int{1, 2, 5, 9, 13, 64, 1 << 20} {
			var c keyedpool.ShareCap
			c.Set(99) // whatever was known before this connection
			s := settingsScanner{cap: &c}
			for i, st := range steps {
				var buf bytes.Buffer
				if err := st.write(http2.NewFramer(&buf, nil)); err != nil {
					t.Fatal(err)
				}
				for b := buf.Bytes(); len(b) > 0; {
					k := min(chunk, len(b))
					s.feed(b[:k])
					b = b[k:]
				}
				if got := c.Load(); got != st.want {
					t.Fatalf("%s, reads of %d bytes: after frame %d the cap is %d, want %d", name, chunk, i, got, st.want)
				}
			}
		}
	}
}

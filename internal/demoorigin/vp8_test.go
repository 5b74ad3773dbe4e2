package demoorigin

import (
	"bytes"
	"image"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"golang.org/x/image/vp8"
)

func decodeVP8(t *testing.T, frame []byte) *image.YCbCr {
	t.Helper()
	d := vp8.NewDecoder()
	d.Init(bytes.NewReader(frame), len(frame))
	fh, err := d.DecodeFrameHeader()
	if err != nil {
		t.Fatalf("frame header: %v", err)
	}
	if !fh.KeyFrame {
		t.Fatal("not a key frame")
	}
	img, err := d.DecodeFrame()
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return img
}

// TestVP8EncoderDecodes encodes pictures that exercise every token size
// (neighbours far apart need large coefficients, equal ones none) and
// checks x/image/vp8 decodes each macroblock to exactly the colour the
// encoder predicted, and that colour to within a few levels of the wanted
// one.
func TestVP8EncoderDecodes(t *testing.T) {
	const w, h = 64, 48
	mbw, mbh := w/16, h/16
	fill := func(f func(x, y int) yuv) []yuv {
		out := make([]yuv, mbw*mbh)
		for y := range mbh {
			for x := range mbw {
				out[y*mbw+x] = f(x, y)
			}
		}
		return out
	}
	tests := []struct {
		name string
		mbs  []yuv
	}{
		{"flat grey (no coefficients)", fill(func(int, int) yuv { return yuv{128, 128, 128} })},
		{"black and white checkerboard", fill(func(x, y int) yuv {
			if (x+y)%2 == 0 {
				return yuv{0, 0, 255}
			}
			return yuv{255, 255, 0}
		})},
		{"ramp (every small value)", fill(func(x, y int) yuv {
			v := uint8(100 + 3*(y*mbw+x))
			return yuv{v, 255 - v, v / 2}
		})},
		{"extremes", fill(func(x, y int) yuv { return yuv{uint8(255 * (x % 2)), uint8(255 * (y % 2)), 128} })},
		{"test pattern frame 12345", testPatternFrame(12345, mbw, mbh)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := newVP8Encoder(w, h)
			if err != nil {
				t.Fatal(err)
			}
			frame, err := enc.encode(tc.mbs)
			if err != nil {
				t.Fatal(err)
			}
			img := decodeVP8(t, frame)
			if img.Rect.Dx() != w || img.Rect.Dy() != h {
				t.Fatalf("decoded %v, want %dx%d", img.Rect, w, h)
			}
			for y := range mbh {
				for x := range mbw {
					rec, want := enc.rec[y*mbw+x], tc.mbs[y*mbw+x]
					for _, p := range [][2]int{{0, 0}, {15, 15}, {7, 9}} { // corners and inside
						px, py := x*16+p[0], y*16+p[1]
						gy := img.Y[img.YOffset(px, py)]
						ci := img.COffset(px, py)
						gu, gv := img.Cb[ci], img.Cr[ci]
						if gy != rec.y || gu != rec.u || gv != rec.v {
							t.Fatalf("MB (%d,%d) pixel (%d,%d): decoded %d/%d/%d, encoder predicted %d/%d/%d",
								x, y, px, py, gy, gu, gv, rec.y, rec.u, rec.v)
						}
					}
					if d := absDiff(rec.y, want.y); d > 2 {
						t.Errorf("MB (%d,%d): luma %d, want %d", x, y, rec.y, want.y)
					}
					if d := max(absDiff(rec.u, want.u), absDiff(rec.v, want.v)); d > 3 {
						t.Errorf("MB (%d,%d): chroma %d/%d, want %d/%d", x, y, rec.u, rec.v, want.u, want.v)
					}
				}
			}
		})
	}
}

func absDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

func TestNewVP8EncoderRejectsBadSizes(t *testing.T) {
	for _, tc := range []struct {
		name string
		w, h int
	}{{"zero", 0, 16}, {"not a multiple of 16", 100, 64}, {"negative", -16, 16}, {"too large", 16384, 16}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newVP8Encoder(tc.w, tc.h); err == nil {
				t.Fatalf("newVP8Encoder(%d, %d) succeeded", tc.w, tc.h)
			}
		})
	}
}

// TestTestPatternRoundTrip packetizes test pattern frames like the origin
// does, reassembles them with VP8Frames (one packet lost in one frame) and
// decodes their frame numbers.
func TestTestPatternRoundTrip(t *testing.T) {
	enc, err := newVP8Encoder(TestPatternWidth, TestPatternHeight)
	if err != nil {
		t.Fatal(err)
	}
	pk := rtp.NewPacketizer(testPatternMTU, 96, 1, &codecs.VP8Payloader{EnablePictureID: true}, rtp.NewFixedSequencer(65530), 90000)
	var frames VP8Frames
	var got []uint16
	for n := uint32(65534); n < 65534+5; n++ { // the frame number wraps
		frame, err := enc.encode(testPatternFrame(n, enc.mbw, enc.mbh))
		if err != nil {
			t.Fatal(err)
		}
		if len(frame) > 64<<10 {
			t.Fatalf("frame %d is %d bytes", n, len(frame))
		}
		pkts := pk.Packetize(frame, 90000/TestPatternFPS)
		for i, p := range pkts {
			if n == 65535 && i == len(pkts)/2 && len(pkts) > 1 {
				continue // lost: this frame must not come out
			}
			raw, err := p.Marshal() // through the wire format, as a player sees it
			if err != nil {
				t.Fatal(err)
			}
			var q rtp.Packet
			if err := q.Unmarshal(raw); err != nil {
				t.Fatal(err)
			}
			if f := frames.Push(&q); f != nil {
				num, err := DecodeTestPattern(f)
				if err != nil {
					t.Fatalf("frame %d: %v", n, err)
				}
				got = append(got, num)
			}
		}
	}
	want := []uint16{65534, 0, 1, 2}
	if len(pkFrameCheck(got, want)) > 0 {
		t.Fatalf("decoded frame numbers %v, want %v (frame 65535 lost a packet)", got, want)
	}
}

// pkFrameCheck returns a non-empty string when got differs from want.
func pkFrameCheck(got, want []uint16) string {
	if len(got) != len(want) {
		return "length"
	}
	for i := range got {
		if got[i] != want[i] {
			return "value"
		}
	}
	return ""
}

func TestDecodeTestPatternRejects(t *testing.T) {
	enc, err := newVP8Encoder(TestPatternWidth, TestPatternHeight)
	if err != nil {
		t.Fatal(err)
	}
	grey := make([]yuv, enc.mbw*enc.mbh)
	for i := range grey {
		grey[i] = patternGrey
	}
	notPattern, err := enc.encode(grey)
	if err != nil {
		t.Fatal(err)
	}
	good, err := enc.encode(testPatternFrame(7, enc.mbw, enc.mbh))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)/2]},
		{"bad start code", append([]byte{good[0], good[1], good[2], 0, 0, 0}, good[6:]...)},
		{"a grey picture", notPattern},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n, err := DecodeTestPattern(tc.frame); err == nil {
				t.Fatalf("decoded frame number %d", n)
			}
		})
	}
	if n, err := DecodeTestPattern(good); err != nil || n != 7 {
		t.Fatalf("good frame: %d, %v", n, err)
	}
}

// BenchmarkVP8TestPattern encodes test pattern frames; it reports the
// frame size, which with TestPatternFPS gives the stream's bitrate.
func BenchmarkVP8TestPattern(b *testing.B) {
	enc, err := newVP8Encoder(TestPatternWidth, TestPatternHeight)
	if err != nil {
		b.Fatal(err)
	}
	size := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		frame, err := enc.encode(testPatternFrame(uint32(i), enc.mbw, enc.mbh))
		if err != nil {
			b.Fatal(err)
		}
		size = len(frame)
	}
	b.ReportMetric(float64(size), "bytes/frame")
	b.ReportMetric(float64(size*8*TestPatternFPS)/1000, "kbit/s")
}

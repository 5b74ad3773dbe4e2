package demoorigin

import (
	"fmt"
	"image"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// Test pattern geometry and rate.
const (
	TestPatternWidth  = 320
	TestPatternHeight = 240
	TestPatternFPS    = 15
	testPatternMTU    = 1200
	// testPatternFirstBit is the macroblock column of the frame number's
	// most significant bit in the top macroblock row; 16 bits follow.
	testPatternFirstBit = 2
)

// EBU-like colour bars (BT.601 limited range) and the marks.
var (
	testPatternBars = []yuv{
		{180, 128, 128}, // white
		{162, 44, 142},  // yellow
		{131, 156, 44},  // cyan
		{112, 72, 58},   // green
		{84, 184, 198},  // magenta
		{65, 100, 212},  // red
		{35, 212, 114},  // blue
		{16, 128, 128},  // black
	}
	patternGrey  = yuv{128, 128, 128}
	patternWhite = yuv{235, 128, 128}
	patternBlack = yuv{16, 128, 128}
)

// testPatternFrame returns the macroblock colours of frame n: the top row
// holds n's 16 low bits (white 1, black 0, most significant first, from
// column testPatternFirstBit), the rest are colour bars with a white box
// that moves one macroblock to the right every frame.
func testPatternFrame(n uint32, mbw, mbh int) []yuv {
	out := make([]yuv, mbw*mbh)
	box := int(n % uint32(mbw))
	for y := range mbh {
		for x := range mbw {
			c := testPatternBars[x*len(testPatternBars)/mbw]
			switch {
			case y == 0 && x >= testPatternFirstBit && x < testPatternFirstBit+16:
				c = patternBlack
				if n>>(15-uint(x-testPatternFirstBit))&1 == 1 {
					c = patternWhite
				}
			case y == 0:
				c = patternGrey
			case x == box && y >= mbh/2-1 && y <= mbh/2+1:
				c = patternWhite
			}
			out[y*mbw+x] = c
		}
	}
	return out
}

// TestPatternFrameNumber reads the frame number (mod 2^16) from a decoded
// test pattern frame, and false when img does not look like one (wrong
// size, or a bit macroblock that is neither white nor black).
func TestPatternFrameNumber(img *image.YCbCr) (uint16, bool) {
	if img == nil || img.Rect.Dx() != TestPatternWidth || img.Rect.Dy() != TestPatternHeight {
		return 0, false
	}
	var n uint16
	for i := range 16 {
		// The centre of the bit's macroblock.
		px := img.Rect.Min.X + (testPatternFirstBit+i)*16 + 8
		py := img.Rect.Min.Y + 8
		y := img.Y[img.YOffset(px, py)]
		switch {
		case y >= 200:
			n = n<<1 | 1
		case y <= 50:
			n <<= 1
		default:
			return 0, false
		}
	}
	return n, true
}

// PublishTestPattern makes key a live stream with one VP8 video track, a
// TestPatternWidth x TestPatternHeight test pattern at TestPatternFPS
// frames a second (every frame a key frame that any VP8 decoder decodes),
// without any WHIP client. Players get it like any other stream, and the
// inventory lists it with source type "testPattern". A WHIP publish to the
// same key replaces it, as it replaces any publisher. The pattern runs until
// it is replaced or the Origin is closed.
func (o *Origin) PublishTestPattern(key string) error {
	if !validStreamKey(key) {
		return fmt.Errorf("%w: %q: use 1-256 bytes of [A-Za-z0-9._~-] segments separated by '/'", ErrBadStreamKey, key)
	}
	enc, err := newVP8Encoder(TestPatternWidth, TestPatternHeight)
	if err != nil {
		return err
	}
	codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	local, err := webrtc.NewTrackLocalStaticRTP(codec, "video", "rtcedge-demo-"+key)
	if err != nil {
		return fmt.Errorf("demoorigin: test pattern track: %w", err)
	}
	s := o.newSyntheticSession(key)

	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		s.cancel()
		return ErrClosed
	}
	var evicted []*session
	if st := o.streams[key]; st != nil && st.publisher != nil {
		evicted = o.detachLocked(st.publisher)
	}
	st := o.streams[key]
	if st == nil {
		st = &stream{key: key, players: map[string]*session{}, tracksChanged: make(chan struct{})}
		o.streams[key] = st
	}
	st.publisher = s
	st.expectedTracks = 1
	st.tracks = []*forwardTrack{{local: local, kind: webrtc.RTPCodecTypeVideo, codec: "VP8"}}
	st.readyTime = time.Now()
	close(st.tracksChanged)
	st.tracksChanged = make(chan struct{})
	o.sessions[s.id] = s
	o.wg.Add(1)
	o.mu.Unlock()
	o.closeSessions(evicted)
	go o.runTestPattern(s, enc, local)
	o.log.Info("test pattern", "stream", key, "id", s.id, "size", fmt.Sprintf("%dx%d", TestPatternWidth, TestPatternHeight),
		"fps", TestPatternFPS)
	return nil
}

// runTestPattern encodes and sends frames until s ends.
func (o *Origin) runTestPattern(s *session, enc *vp8Encoder, local *webrtc.TrackLocalStaticRTP) {
	defer o.wg.Done()
	const samples = 90000 / TestPatternFPS
	packetizer := rtp.NewPacketizer(testPatternMTU, 96, 0, &codecs.VP8Payloader{EnablePictureID: true},
		rtp.NewRandomSequencer(), 90000)
	tick := time.NewTicker(time.Second / TestPatternFPS)
	defer tick.Stop()
	for n := uint32(0); ; n++ {
		frame, err := enc.encode(testPatternFrame(n, enc.mbw, enc.mbh))
		if err != nil {
			o.log.Error("test pattern encode", "stream", s.stream, "err", err)
			return
		}
		for _, pkt := range packetizer.Packetize(frame, samples) {
			if err := local.WriteRTP(pkt); err != nil {
				o.log.Debug("test pattern write", "stream", s.stream, "err", err)
			}
			o.forwarded.Add(1)
			s.bytesIn.Add(uint64(pkt.MarshalSize()))
		}
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

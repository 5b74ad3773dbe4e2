package demoorigin

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"golang.org/x/image/vp8"
)

// maxVP8Frame bounds a frame being reassembled (the test pattern's are a
// few KiB).
const maxVP8Frame = 1 << 20

// VP8Frames reassembles VP8 frames from RTP packets (RFC 7741), for tests
// and tools that play a stream and want to see decodable pictures. Feed it
// packets in arrival order; a frame with a gap is dropped.
type VP8Frames struct {
	buf     []byte
	ts      uint32
	nextSeq uint16
	started bool // buf holds the start of the frame with timestamp ts
}

// Push adds pkt and returns a complete frame when pkt ends one (the marker
// bit), else nil. The returned slice is valid until the next Push.
func (f *VP8Frames) Push(pkt *rtp.Packet) []byte {
	var vp codecs.VP8Packet
	payload, err := vp.Unmarshal(pkt.Payload)
	if err != nil {
		f.started = false
		return nil
	}
	switch {
	case vp.S == 1 && vp.PID == 0:
		f.buf = append(f.buf[:0], payload...)
		f.ts, f.started = pkt.Timestamp, true
	case f.started && pkt.Timestamp == f.ts && pkt.SequenceNumber == f.nextSeq && len(f.buf)+len(payload) <= maxVP8Frame:
		f.buf = append(f.buf, payload...)
	default:
		f.started = false // a gap, or the middle of a frame we missed the start of
		return nil
	}
	f.nextSeq = pkt.SequenceNumber + 1
	if !pkt.Marker {
		return nil
	}
	f.started = false
	return f.buf
}

// DecodeTestPattern decodes a VP8 key frame of the test pattern and returns
// its frame number (mod 2^16). It fails on anything a VP8 decoder cannot
// decode and on a picture that is not the test pattern.
func DecodeTestPattern(frame []byte) (uint16, error) {
	d := vp8.NewDecoder()
	d.Init(bytes.NewReader(frame), len(frame))
	fh, err := d.DecodeFrameHeader()
	if err != nil {
		return 0, fmt.Errorf("demoorigin: VP8 frame header: %w", err)
	}
	if !fh.KeyFrame {
		return 0, errors.New("demoorigin: not a VP8 key frame")
	}
	img, err := d.DecodeFrame()
	if err != nil {
		return 0, fmt.Errorf("demoorigin: VP8 frame: %w", err)
	}
	n, ok := TestPatternFrameNumber(img)
	if !ok {
		return 0, fmt.Errorf("demoorigin: a %dx%d VP8 picture that is not the test pattern", img.Rect.Dx(), img.Rect.Dy())
	}
	return n, nil
}

package mediarelay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// RFC 4571 framing of ICE-TCP (RFC 6544 section 3): every STUN, DTLS, RTP
// or RTCP packet on a TCP connection is preceded by its length, two bytes
// big-endian.

// frameHeader is the size of an RFC 4571 length prefix.
const frameHeader = 2

// maxEmptyReads bounds reads that return nothing and no error in a row
// (io.Reader allows them; a reader that only does that is broken).
const maxEmptyReads = 100

// frameReader reads RFC 4571 frames from a byte stream into one fixed
// buffer, so reading allocates nothing. Frames longer than max end the
// stream with ErrFrameTooLarge: the relay never buffers more than one
// packet's worth for a peer.
type frameReader struct {
	r          io.Reader
	buf        []byte
	start, end int // buf[start:end] is read and not yet returned
	max        int
	err        error // a read error, returned once the buffered frames are
}

// newFrameReader returns a reader of frames of at most max bytes (at most
// 65535) from r. Its buffer is the largest frame rounded up to a power of
// two (2 KiB for MaxPacketSize: memory per idle connection counts), so one
// read may take several small frames (coalesced), and a frame split across
// reads is moved to the front once, never grown.
func newFrameReader(r io.Reader, max int) *frameReader {
	size := 1
	for size < frameHeader+max && size < 1<<17 {
		size <<= 1
	}
	return &frameReader{r: r, buf: make([]byte, size), max: max}
}

// next returns the next frame's payload, valid until the next call. It
// returns ErrFrameTooLarge for a frame longer than the reader's max, the
// read error once the frames before it are returned (io.EOF at a frame
// boundary, io.ErrUnexpectedEOF inside a frame), and io.ErrNoProgress for a
// reader that returns nothing too often.
func (f *frameReader) next() ([]byte, error) {
	empty := 0
	for {
		if avail := f.end - f.start; avail >= frameHeader {
			n := int(binary.BigEndian.Uint16(f.buf[f.start:]))
			if n > f.max {
				return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
			}
			if avail >= frameHeader+n {
				p := f.buf[f.start+frameHeader : f.start+frameHeader+n]
				f.start += frameHeader + n
				return p, nil
			}
		}
		if f.err != nil {
			if f.err == io.EOF && f.end > f.start {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, f.err
		}
		// Make room for the rest of the largest frame.
		if f.start == f.end {
			f.start, f.end = 0, 0
		} else if len(f.buf)-f.start < frameHeader+f.max {
			f.end = copy(f.buf, f.buf[f.start:f.end])
			f.start = 0
		}
		m, err := f.r.Read(f.buf[f.end:])
		f.end += m
		if err != nil {
			f.err = err
			continue
		}
		if m == 0 {
			if empty++; empty >= maxEmptyReads {
				f.err = io.ErrNoProgress
			}
		}
	}
}

// isTimeout reports whether err is a deadline's.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

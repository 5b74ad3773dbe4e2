//go:build linux

package loadgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ICE-TCP clients (issue 16): with TransportTCP every session's client
// opens a TCP connection to the relay's ICE-TCP port and sends everything
// framed as RFC 4571 says (each packet after its length, two bytes
// big-endian), its STUN Binding request first. The sockets are
// non-blocking and share the UDP clients' epoll set and goroutines; what a
// read returns is split into frames in one buffer shared by every
// connection, and the start of a frame a read cut off waits in the
// connection's own carry buffer for the next read.

// frameHeader is the size of an RFC 4571 length prefix.
const frameHeader = 2

// maxFrame is the longest frame a client accepts from the target: longer
// than any packet the tool sends or the relay forwards (1500 bytes). A
// longer one means a broken stream, and the connection is dropped.
const maxFrame = 2048

// streamReadSize is the shared read buffer of the TCP connections: one
// read takes up to this much of a connection's stream (many frames).
const streamReadSize = 64 << 10

// errFrameTooLarge is a length prefix over maxFrame.
var errFrameTooLarge = errors.New("loadgen: TCP frame longer than the largest packet")

// tcpStream is one TCP client connection's framing state. The receiving
// side (carry) and the sending side (unsent) are each used by one
// goroutine at a time: setup, then the receiver and the paced sender.
type tcpStream struct {
	// carry is the start of a frame the last read cut off, at most one
	// frame's length: it goes in front of the next read's bytes.
	carry []byte
	// unsent is the rest of a frame a short write left: it goes out before
	// the next frame, so that the stream stays framed.
	unsent []byte
}

// putFrameHeader writes the RFC 4571 length prefix of an n-byte packet to
// the start of b.
func putFrameHeader(b []byte, n int) { binary.BigEndian.PutUint16(b[:frameHeader], uint16(n)) }

// frame returns p framed: the length prefix, then p.
func frame(p []byte) []byte {
	b := make([]byte, frameHeader+len(p))
	putFrameHeader(b, len(p))
	copy(b[frameHeader:], p)
	return b
}

// nextFrame returns the payload of the frame that starts at b[off:] and
// the offset after it; nil when b holds only part of it, and
// errFrameTooLarge for a length prefix over maxFrame.
func nextFrame(b []byte, off int) (payload []byte, next int, err error) {
	if len(b)-off < frameHeader {
		return nil, off, nil
	}
	n := int(binary.BigEndian.Uint16(b[off:]))
	if n > maxFrame {
		return nil, off, fmt.Errorf("%w: %d bytes", errFrameTooLarge, n)
	}
	end := off + frameHeader + n
	if end > len(b) {
		return nil, off, nil
	}
	return b[off+frameHeader : end], end, nil
}

// fill reads what fd has waiting into buf after the carried start of a
// frame, and returns how many bytes buf then holds (carry included): as
// many as the carry when nothing was waiting. open is false when the
// connection ended (the peer closed it, or an error). The caller takes
// the frames from buf[:n] and hands the rest to keep.
func (s *tcpStream) fill(fd int, buf []byte) (n int, open bool) {
	k := copy(buf, s.carry)
	for range 4 {
		r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[k])), uintptr(len(buf)-k),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			return k, true
		case errno != 0 || r == 0:
			return k, false
		}
		return k + int(r), true
	}
	return k, true
}

// keep carries rest, the start of a frame, over to the next fill.
func (s *tcpStream) keep(rest []byte) { s.carry = append(s.carry[:0], rest...) }

// send writes frame b (its length prefix included) to fd without
// waiting, after what a short write left of the previous one, and reports
// whether the kernel took it: false, and b is dropped, when the socket's
// buffer is full or the connection is broken. A short write of b keeps its
// rest for the next call.
func (s *tcpStream) send(fd int, b []byte) bool {
	if !s.flush(fd) {
		return false
	}
	n, ok := sendSome(fd, b)
	if !ok {
		return false
	}
	if n < len(b) {
		s.unsent = append(s.unsent, b[n:]...)
	}
	return true
}

// flush writes what a short write left, as much as the kernel takes, and
// reports whether nothing is left.
func (s *tcpStream) flush(fd int) bool {
	if len(s.unsent) > 0 {
		n, _ := sendSome(fd, s.unsent)
		s.unsent = s.unsent[:copy(s.unsent, s.unsent[n:])]
	}
	return len(s.unsent) == 0
}

//go:build linux

package mediarelay

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// directWriter writes to a TCP connection's socket without waiting, from
// whichever thread handles the origin's packet: one write(2) of the frame
// through the socket's syscall.RawConn (which takes the connection's
// write lock, so it is safe against Close; a closed connection or a passed
// write deadline writes nothing). It saves waking the connection's writer
// goroutine per packet. The zero directWriter writes nothing.
type directWriter struct {
	rc syscall.RawConn
	fn func(fd uintptr) bool // do, bound once: write allocates nothing
	b  []byte                // do's argument
	n  int                   // what do wrote
}

// newDirectWriter returns the direct writer of c, or the zero one when c
// has no socket (a test's pipe).
func newDirectWriter(c net.Conn) directWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return directWriter{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return directWriter{}
	}
	return directWriter{rc: rc}
}

// write writes what of b the socket takes at once and returns how much
// (0: nothing, the socket's buffer is full or the connection failed; the
// writer goroutine finds out which). The connection's wmu is held.
func (w *directWriter) write(b []byte) int {
	if w.rc == nil {
		return 0
	}
	if w.fn == nil {
		w.fn = w.do
	}
	w.b, w.n = b, 0
	_ = w.rc.Write(w.fn)
	w.b = nil
	return w.n
}

// do is one non-blocking write of w.b on fd; it never asks the runtime
// poller to wait (returns true).
func (w *directWriter) do(fd uintptr) bool {
	for range 4 { // EINTR, bounded
		n, err := unix.Write(int(fd), w.b)
		if err == unix.EINTR {
			continue
		}
		if err == nil {
			w.n = n
		}
		return true
	}
	return true
}

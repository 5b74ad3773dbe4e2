//go:build linux

package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Writer sends datagrams to many destinations from one UDP socket in
// sendmmsg(2) batches. It allocates nothing per datagram and is not safe
// for concurrent use.
type Writer struct {
	rc    syscall.RawConn // nil: fd, written without the runtime poller
	fd    int
	v6    bool // the socket is AF_INET6: IPv4 destinations are v4-mapped
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	fail  []bool // fail[i]: queued datagram i was dropped by the last Flush
	n     int    // queued

	// State of one Flush, across the runtime poller's retries.
	off, dropped int
	writeFn      func(fd uintptr) bool // built once
}

// NewWriter returns a writer of up to batch datagrams per system call on c.
func NewWriter(c *net.UDPConn, batch int) (*Writer, error) {
	if batch < 1 {
		return nil, fmt.Errorf("udpbatch: writer batch %d", batch)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("udpbatch: raw conn: %w", err)
	}
	var serr error
	var v6 bool
	if err := rc.Control(func(fd uintptr) { v6, serr = isV6(int(fd)) }); err != nil {
		return nil, fmt.Errorf("udpbatch: raw conn: %w", err)
	}
	if serr != nil {
		return nil, serr
	}
	w := newWriter(batch, v6)
	w.rc = rc
	return w, nil
}

// NewWriterFD returns a writer of up to batch datagrams per system call on
// fd, a non-blocking UDP socket the caller keeps open while it uses the
// writer (a thread poller's source). It writes without the runtime poller:
// when the socket's send buffer is full, Flush drops what is left.
func NewWriterFD(fd, batch int) (*Writer, error) {
	if batch < 1 {
		return nil, fmt.Errorf("udpbatch: writer batch %d", batch)
	}
	v6, err := isV6(fd)
	if err != nil {
		return nil, err
	}
	w := newWriter(batch, v6)
	w.fd = fd
	return w, nil
}

func isV6(fd int) (bool, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false, fmt.Errorf("udpbatch: socket address: %w", err)
	}
	_, v6 := sa.(*unix.SockaddrInet6)
	return v6, nil
}

func newWriter(batch int, v6 bool) *Writer {
	w := &Writer{
		v6:    v6,
		hdrs:  make([]unix.Mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch),
		fail:  make([]bool, batch),
	}
	for i := range w.hdrs {
		w.hdrs[i].Hdr.Iov = &w.iovs[i]
		w.hdrs[i].Hdr.SetIovlen(1)
		w.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
	}
	w.writeFn = w.send
	return w
}

// Add queues b for to and reports whether the batch is now full (call
// Flush). b must stay unchanged until Flush returns. A destination the
// socket's family cannot reach is refused (false, not queued): ok is false.
func (w *Writer) Add(b []byte, to netip.AddrPort) (full, ok bool) {
	if w.n == len(w.hdrs) || len(b) == 0 {
		return w.n == len(w.hdrs), false
	}
	a := to.Addr()
	h := &w.hdrs[w.n].Hdr
	switch {
	case w.v6:
		sa := &w.names[w.n]
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
		putPort(&sa.Port, to.Port())
		if a.Zone() != "" {
			sa.Scope_id = zoneID(a)
		}
		h.Namelen = unix.SizeofSockaddrInet6
	case a.Is4() || a.Is4In6():
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&w.names[w.n]))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Unmap().As4()}
		putPort(&sa.Port, to.Port())
		h.Namelen = unix.SizeofSockaddrInet4
	default:
		return false, false
	}
	w.fail[w.n] = false
	w.iovs[w.n].Base = &b[0]
	w.iovs[w.n].SetLen(len(b))
	w.n++
	return w.n == len(w.hdrs), true
}

// Failed reports whether datagram i of the last Flush was dropped.
func (w *Writer) Failed(i int) bool { return i < len(w.fail) && w.fail[i] }

// Queued returns the number of datagrams waiting for Flush.
func (w *Writer) Queued() int { return w.n }

// Flush sends every queued datagram, waiting for the socket to be writable
// when its buffer is full. It returns how many were sent and how many were
// dropped (a destination the kernel refused, or a closed socket).
func (w *Writer) Flush() (sent, dropped int) {
	if w.n == 0 {
		return 0, 0
	}
	w.off, w.dropped = 0, 0
	var err error
	if w.rc != nil {
		err = w.rc.Write(w.writeFn)
	} else if !w.send(uintptr(w.fd)) {
		err = unix.EAGAIN // the send buffer is full: drop the rest
	}
	n := w.n
	if err != nil {
		for i := w.off; i < w.n; i++ {
			w.fail[i] = true
		}
		w.dropped += w.n - w.off
		w.off = w.n
	}
	for i := range n {
		w.iovs[i].Base = nil // let the caller's buffers go
	}
	w.n = 0
	return n - w.dropped, w.dropped
}

// send is Flush's body under the runtime poller.
func (w *Writer) send(fd uintptr) bool {
	for w.off < w.n {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&w.hdrs[w.off])), uintptr(w.n-w.off), 0, 0, 0)
		switch errno {
		case 0:
			w.off += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // wait until writable
		default:
			// The datagram at off failed (an unreachable destination, a
			// message the kernel refuses): drop it and go on.
			w.fail[w.off] = true
			w.off++
			w.dropped++
		}
	}
	return true
}

// putPort stores p in network byte order.
func putPort(dst *uint16, p uint16) {
	b := (*[2]byte)(unsafe.Pointer(dst))
	b[0], b[1] = byte(p>>8), byte(p)
}

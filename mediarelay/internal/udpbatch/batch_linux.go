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

// batchState is the recvmmsg(2) machinery of one Reader: every header,
// iovec and address buffer is allocated once and reused.
type batchState struct {
	rc    syscall.RawConn
	msgs  []Message
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family

	// Results of the last readFn call.
	n     int
	errno syscall.Errno
	// readFn is built once so that Read does not allocate a closure.
	readFn func(fd uintptr) bool
}

func newBatchState(c *net.UDPConn, batch, size int) (*batchState, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("udpbatch: raw conn: %w", err)
	}
	b := &batchState{
		rc:    rc,
		msgs:  make([]Message, batch),
		hdrs:  make([]unix.Mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch),
	}
	for i := range b.msgs {
		b.msgs[i].Buf = make([]byte, size)
		b.iovs[i].Base = &b.msgs[i].Buf[0]
		b.iovs[i].SetLen(size)
		h := &b.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
	}
	b.readFn = func(fd uintptr) bool {
		for {
			n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
				uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), 0, 0, 0)
			switch errno {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait for the poller
			}
			b.n, b.errno = int(n), errno
			return true
		}
	}
	return b, nil
}

// read receives up to len(msgs) datagrams, blocking for the first.
func (b *batchState) read() (int, error) {
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].Hdr.Flags = 0
		b.hdrs[i].Len = 0
	}
	b.n, b.errno = 0, 0
	if err := b.rc.Read(b.readFn); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, &net.OpError{Op: "recvmmsg", Net: "udp", Err: b.errno}
	}
	for i := range b.n {
		m := &b.msgs[i]
		m.N = int(b.hdrs[i].Len)
		m.Addr = parseSockaddr(&b.names[i], b.hdrs[i].Hdr.Namelen)
	}
	return b.n, nil
}

// parseSockaddr converts a kernel socket address to a netip.AddrPort
// without allocating; the zero AddrPort for anything else.
func parseSockaddr(sa *unix.RawSockaddrInet6, n uint32) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// ntohs reads a port stored in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

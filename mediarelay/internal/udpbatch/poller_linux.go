//go:build linux

package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// Poller reads many connected UDP sockets from one goroutine. The sockets
// are raw non-blocking descriptors in a private, level-triggered epoll set;
// that epoll descriptor is itself registered with the Go runtime's poller,
// so Run parks like any network read while every socket is quiet and costs
// no thread. A ready socket is read with recvmmsg into a shared pool of
// buffers, and the handler sees a whole round of reads before EndBatch, so
// it can send what it received in batches across sockets.
//
// Compared with a goroutine per socket this saves a goroutine wake-up, a
// stack and a read system call per datagram; a socket costs one slot here
// and its kernel state.
//
// A thread poller (NewThreadPoller) instead runs on an OS thread of its
// own, blocked in epoll_wait outside the Go scheduler, and can also read
// unconnected sockets (AddSource): thread.go.
type Poller[T any] struct {
	epfd   int
	file   *os.File // owns epfd; registered with the runtime poller (nil: thread poller)
	rc     syscall.RawConn
	events []unix.EpollEvent
	thread *threadState // nil: runtime-poller mode

	// Read state, used by Run's goroutine only.
	msgs    []Message
	hdrs    []unix.Mmsghdr
	iovs    []unix.Iovec
	handler Handler[T]
	runErr  error
	runFn   func(fd uintptr) bool // built once: Run allocates nothing

	mu     sync.Mutex // guards the following; Run holds it while it reads
	slots  []*Conn[T]
	gens   []uint32
	free   []int32
	closed bool
}

// Conn is a connected UDP socket read by a Poller. Write is safe for
// concurrent use, and safe against a concurrent Close.
type Conn[T any] struct {
	// Value is the caller's, set at Dial.
	Value T
	ConnInfo

	p    *Poller[T]
	slot int32
	fd   int // -1 once closed; guarded by mu

	// mu guards fd: writers share, Close excludes. Writers may run on
	// other threads than the poller's (a relay's data-plane threads), so
	// it has a cache line of its own: the poller's reads of fd and Remote
	// do not wait for the line each write's RLock takes.
	_  cpu.CacheLinePad
	mu sync.RWMutex
	_  cpu.CacheLinePad
}

// NewPoller returns a poller reading up to batch datagrams of at most size
// bytes per round (pass one byte more than the largest datagram accepted).
func NewPoller[T any](batch, size int) (*Poller[T], error) {
	if batch < 1 || size < 1 {
		return nil, fmt.Errorf("udpbatch: poller batch %d, size %d", batch, size)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("udpbatch: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("udpbatch: epoll fd: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "udpbatch-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("udpbatch: epoll fd: %w", err)
	}
	p := newPoller[T](epfd, batch, size)
	p.file, p.rc = f, rc
	p.runFn = p.poll
	return p, nil
}

// newPoller returns a poller on epfd with its read buffers.
func newPoller[T any](epfd, batch, size int) *Poller[T] {
	p := &Poller[T]{
		epfd:   epfd,
		events: make([]unix.EpollEvent, 128),
		msgs:   make([]Message, batch),
		hdrs:   make([]unix.Mmsghdr, batch),
		iovs:   make([]unix.Iovec, batch),
	}
	for i := range p.msgs {
		p.msgs[i].Buf = make([]byte, size)
		p.iovs[i].Base = &p.msgs[i].Buf[0]
		p.iovs[i].SetLen(size)
		p.hdrs[i].Hdr.Iov = &p.iovs[i]
		p.hdrs[i].Hdr.SetIovlen(1)
	}
	return p
}

// Dial opens a socket connected to remote, bound first to local when local
// is valid (an address it had before, so the peer keeps seeing the same
// source), with SO_RCVBUF and SO_SNDBUF set to sockBuf when it is positive,
// and adds it to the poller. Once connected the socket has SO_REUSEPORT,
// so that another process of the same user can take its address over with
// DialShared; a later Dial to the same local address fails while it is
// open.
func (p *Poller[T]) Dial(remote, local netip.AddrPort, sockBuf int, v T) (*Conn[T], error) {
	return p.dial(remote, local, false, sockBuf, v)
}

// DialShared is Dial that binds to local even while a socket of another
// process of the same user holds it with SO_REUSEPORT (a relay taking over
// from the running one: both forward the same session until the old one
// closes its socket).
func (p *Poller[T]) DialShared(remote, local netip.AddrPort, sockBuf int, v T) (*Conn[T], error) {
	return p.dial(remote, local, true, sockBuf, v)
}

func (p *Poller[T]) dial(remote, local netip.AddrPort, shared bool, sockBuf int, v T) (*Conn[T], error) {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !remote.IsValid() || remote.Port() == 0 {
		return nil, fmt.Errorf("udpbatch: dial %s: invalid address", remote)
	}
	family := unix.AF_INET6
	var sa unix.Sockaddr
	if a := remote.Addr(); a.Is4() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(remote.Port()), Addr: a.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(remote.Port()), Addr: a.As16(), ZoneId: zoneID(a)}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("udpbatch: socket toward %s: %w", remote, err)
	}
	if sockBuf > 0 {
		// The FORCE variants pass net.core.rmem_max with CAP_NET_ADMIN.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, sockBuf)
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sockBuf)
		}
	}
	if local.IsValid() {
		if shared {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				_ = unix.Close(fd)
				return nil, fmt.Errorf("udpbatch: SO_REUSEPORT toward %s: %w", remote, err)
			}
		}
		if err := bindTo(fd, family, local); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("udpbatch: bind to %s toward %s: %w", local, remote, err)
		}
	}
	if err := unix.Connect(fd, sa); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("udpbatch: connect to %s: %w", remote, err)
	}
	// Set after the bind: the kernel picked a port no other socket holds,
	// and from now on a successor's DialShared may join it.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	lsa, err := unix.Getsockname(fd)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("udpbatch: local address toward %s: %w", remote, err)
	}
	c := &Conn[T]{Value: v, p: p, fd: fd, ConnInfo: ConnInfo{Local: addrPortOf(lsa), Remote: remote}}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("udpbatch: dial %s: %w", remote, net.ErrClosed)
	}
	if n := len(p.free); n > 0 {
		c.slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		c.slot = int32(len(p.slots))
		p.slots = append(p.slots, nil)
		p.gens = append(p.gens, 0)
	}
	p.gens[c.slot]++
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: c.slot, Pad: int32(p.gens[c.slot])}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.free = append(p.free, c.slot)
		_ = unix.Close(fd)
		return nil, fmt.Errorf("udpbatch: epoll_ctl: %w", err)
	}
	p.slots[c.slot] = c
	return c, nil
}

// Write sends b as one datagram. A full send buffer drops it (EAGAIN is
// returned); a closed conn returns net.ErrClosed.
func (c *Conn[T]) Write(b []byte) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return net.ErrClosed
	}
	for {
		_, err := unix.Write(c.fd, b)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

// Close removes the socket from the poller and closes it. After Close
// returns, Run delivers nothing more from it. Close is idempotent.
func (c *Conn[T]) Close() error {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	c.closeLocked()
	return nil
}

// closeLocked closes the socket; p.mu is held.
func (c *Conn[T]) closeLocked() {
	p := c.p
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return
	}
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	_ = unix.Close(c.fd)
	c.fd = -1
	if p.slots[c.slot] == c {
		p.slots[c.slot] = nil
		p.free = append(p.free, c.slot)
	}
}

// Run reads the sockets and hands what it reads to h until Close. It
// returns nil after Close, or the error that stopped it.
func (p *Poller[T]) Run(h Handler[T]) error {
	p.handler = h
	if p.thread != nil {
		return p.runThread()
	}
	err := p.rc.Read(p.runFn)
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil
	}
	if err != nil {
		return fmt.Errorf("udpbatch: poller: %w", err)
	}
	return p.runErr
}

// poll is Run's body under the runtime poller: it takes every ready event
// without blocking and returns false (park until the epoll fd is readable)
// once none is left.
func (p *Poller[T]) poll(uintptr) bool {
	for {
		n, err := unix.EpollWait(p.epfd, p.events, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			p.runErr = fmt.Errorf("udpbatch: epoll_wait: %w", err)
			return true
		case n == 0:
			return false
		}
		if !p.round(p.events[:n]) {
			return true
		}
	}
}

// round reads every socket of events, up to the buffer pool per socket,
// and reports whether the poller is still open.
func (p *Poller[T]) round(events []unix.EpollEvent) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	used := 0
	for i := range events {
		slot, gen := events[i].Fd, uint32(events[i].Pad)
		if slot < 0 || int(slot) >= len(p.slots) || p.gens[slot] != gen || p.slots[slot] == nil {
			continue // closed since epoll_wait returned
		}
		c := p.slots[slot]
		if rem := len(p.msgs) - used; rem == 0 || rem < len(p.msgs)/4 {
			p.handler.EndBatch()
			used = 0
		}
		used += p.readConn(c, used)
	}
	if used > 0 {
		p.handler.EndBatch()
	}
	return true
}

// readConn reads c into the pool from index at, delivers the datagrams
// and returns how many buffers they took. A socket with more queued than
// fits is reported again by the level-triggered epoll set.
func (p *Poller[T]) readConn(c *Conn[T], at int) int {
	hdrs := p.hdrs[at:]
	for tries := 0; tries < 4; tries++ {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(c.fd),
			uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
		case unix.EINTR, unix.ECONNREFUSED:
			// ECONNREFUSED reports an earlier ICMP port unreachable from
			// the remote once; the queued datagrams are still there.
			continue
		default:
			return 0 // EAGAIN: spurious wake-up, nothing to read
		}
		n := int(r)
		msgs := p.msgs[at : at+n]
		for i := range msgs {
			msgs[i].N = int(hdrs[i].Len)
			msgs[i].Addr = c.Remote
		}
		if n > 0 {
			p.handler.Packets(c, msgs)
		}
		return n
	}
	return 0
}

// Close closes every socket and stops Run (a thread poller's sources stay
// open: they are the caller's).
func (p *Poller[T]) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, c := range p.slots {
		if c != nil {
			c.closeLocked()
		}
	}
	p.mu.Unlock()
	if p.thread != nil {
		p.stopThread()
		return nil
	}
	return p.file.Close()
}

// Len returns the number of open sockets.
func (p *Poller[T]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.slots) - len(p.free)
}

func zoneID(a netip.Addr) uint32 {
	if a.Zone() == "" {
		return 0
	}
	ifi, err := net.InterfaceByName(a.Zone())
	if err != nil {
		return 0
	}
	return uint32(ifi.Index)
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// bindTo binds fd, a socket of family, to local.
func bindTo(fd, family int, local netip.AddrPort) error {
	a := local.Addr().Unmap()
	switch {
	case family == unix.AF_INET && a.Is4():
		return unix.Bind(fd, &unix.SockaddrInet4{Port: int(local.Port()), Addr: a.As4()})
	case family == unix.AF_INET6 && a.Is6():
		return unix.Bind(fd, &unix.SockaddrInet6{Port: int(local.Port()), Addr: a.As16(), ZoneId: zoneID(a)})
	}
	return fmt.Errorf("address family of %s does not match the peer's", local)
}

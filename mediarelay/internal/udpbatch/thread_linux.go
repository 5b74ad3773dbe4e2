//go:build linux

package udpbatch

import (
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A thread poller runs like a minimal C forwarder: one OS thread, locked to
// Run's goroutine, blocked in epoll_wait on one level-triggered epoll set
// that holds every socket it reads, connected (Dial) or not (AddSource).
// The wait is a raw system call the Go scheduler does not see, so a
// datagram wakes this thread alone: no runtime poller, no goroutine
// hand-off, no sysmon retaking the P of a thread in a blocking call. (The
// runtime-poller design costs 1.3-1.5x a C forwarder's CPU per packet; this
// one 0.9-1.0x; docs/PERFORMANCE.md.)
//
// The thread keeps its P while it waits, so the process needs GOMAXPROCS of
// at least 2 for its other goroutines to run meanwhile. A preemption request
// (a GC stop, sysmon after 10 ms) arrives as a signal that interrupts the
// wait with EINTR; Run then yields to the scheduler.
//
// Sources are the caller's sockets, read with recvmmsg including the
// sender's address and handed to their callback outside the poller's lock:
// the callback may Dial, Close or Write conns of this poller.

// wakeSlot is the epoll data of the eventfd that Close writes.
const wakeSlot = math.MinInt32

// waitMillis bounds each wait. Preemption normally interrupts the wait at
// once (a signal); the bound keeps a stop-the-world from waiting on an idle
// thread for ever where it does not (GODEBUG=asyncpreemptoff=1).
const waitMillis = 50

// threadState is a thread poller's own state.
type threadState struct {
	wakefd  int
	sources []source // fixed once Run starts
	// Source read buffers, used by Run's goroutine only.
	msgs  []Message
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6

	stopped atomic.Bool // Close was called
	// Guarded by the poller's mu.
	running   bool // Run has started
	fdsClosed bool // epfd and wakefd are closed
}

// source is an unconnected socket a thread poller reads for its caller.
type source struct {
	fd int
	fn func(msgs []Message)
}

// ErrNotThreadPoller is returned by AddSource on a runtime-poller Poller.
var ErrNotThreadPoller = errors.New("udpbatch: sources need a thread poller")

// NewThreadPoller returns a poller whose Run occupies an OS thread of its
// own (see above), reading up to batch datagrams of at most size bytes per
// socket and round.
func NewThreadPoller[T any](batch, size int) (*Poller[T], error) {
	if batch < 1 || size < 1 {
		return nil, fmt.Errorf("udpbatch: poller batch %d, size %d", batch, size)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("udpbatch: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("udpbatch: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("udpbatch: epoll_ctl: %w", err)
	}
	p := newPoller[T](epfd, batch, size)
	t := &threadState{
		wakefd: wakefd,
		msgs:   make([]Message, batch),
		hdrs:   make([]unix.Mmsghdr, batch),
		iovs:   make([]unix.Iovec, batch),
		names:  make([]unix.RawSockaddrInet6, batch),
	}
	for i := range t.msgs {
		t.msgs[i].Buf = make([]byte, size)
		t.iovs[i].Base = &t.msgs[i].Buf[0]
		t.iovs[i].SetLen(size)
		h := &t.hdrs[i].Hdr
		h.Iov = &t.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&t.names[i]))
	}
	p.thread = t
	return p, nil
}

// AddSource adds fd, a non-blocking UDP socket that stays the caller's, to
// a thread poller before Run: Run reads it and calls fn with each batch of
// datagrams (Addr is each one's sender; Buf is reused after fn returns).
func (p *Poller[T]) AddSource(fd int, fn func(msgs []Message)) error {
	t := p.thread
	if t == nil {
		return ErrNotThreadPoller
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return fmt.Errorf("udpbatch: add source: %w", errClosed)
	case t.running:
		return errors.New("udpbatch: AddSource after Run")
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(-1 - len(t.sources))}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("udpbatch: epoll_ctl: %w", err)
	}
	t.sources = append(t.sources, source{fd: fd, fn: fn})
	return nil
}

var errClosed = errors.New("poller closed")

// runThread is Run for a thread poller.
func (p *Poller[T]) runThread() error {
	t := p.thread
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.closeThreadFDs()
		return nil
	}
	t.running = true
	p.mu.Unlock()
	defer p.closeThreadFDs()
	for {
		// epoll_pwait with no signal mask is epoll_wait, on every
		// architecture.
		n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd),
			uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), waitMillis, 0, 0)
		switch errno {
		case 0:
		case unix.EINTR:
			// Most likely a preemption request (GC, sysmon): honour it.
			runtime.Gosched()
			continue
		default:
			if t.stopped.Load() {
				return nil
			}
			return fmt.Errorf("udpbatch: epoll_wait: %w", errno)
		}
		if n == 0 {
			runtime.Gosched() // a preemption point while idle
			continue
		}
		if !p.dispatch(p.events[:n]) {
			return nil
		}
	}
}

// dispatch serves one epoll_wait's events: sources first, without the lock,
// then the connected sockets in a round. It reports whether to go on.
func (p *Poller[T]) dispatch(events []unix.EpollEvent) bool {
	t := p.thread
	for i := range events {
		switch slot := events[i].Fd; {
		case slot == wakeSlot:
			if t.stopped.Load() {
				return false
			}
		case slot < 0:
			if j := int(-1 - slot); j < len(t.sources) {
				p.readSource(&t.sources[j])
			}
		}
	}
	return p.round(events)
}

// sourceRounds bounds the recvmmsg calls per source and wake-up, so that a
// flooded source cannot starve the other sockets.
const sourceRounds = 8

// readSource reads src until it is drained or sourceRounds batches were
// read, calling its callback with each batch.
func (p *Poller[T]) readSource(src *source) {
	t := p.thread
	for range sourceRounds {
		for i := range t.hdrs {
			t.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			t.hdrs[i].Hdr.Flags = 0
			t.hdrs[i].Len = 0
		}
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(src.fd),
			uintptr(unsafe.Pointer(&t.hdrs[0])), uintptr(len(t.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		default:
			return // EAGAIN: drained
		}
		n := int(r)
		for i := range n {
			m := &t.msgs[i]
			m.N = int(t.hdrs[i].Len)
			m.Addr = parseSockaddr(&t.names[i], t.hdrs[i].Hdr.Namelen)
		}
		if n > 0 {
			src.fn(t.msgs[:n])
		}
		if n < len(t.hdrs) {
			return
		}
	}
}

// stopThread wakes a running thread poller to return, or releases its
// descriptors if Run never started.
func (p *Poller[T]) stopThread() {
	t := p.thread
	t.stopped.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case t.fdsClosed:
	case !t.running:
		p.closeThreadFDsLocked()
	default:
		one := uint64(1)
		_, _ = unix.Write(t.wakefd, (*[8]byte)(unsafe.Pointer(&one))[:])
	}
}

// closeThreadFDs closes the epoll set and the eventfd once; the sources are
// the caller's.
func (p *Poller[T]) closeThreadFDs() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeThreadFDsLocked()
}

func (p *Poller[T]) closeThreadFDsLocked() {
	if p.thread.fdsClosed {
		return
	}
	p.thread.fdsClosed = true
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.thread.wakefd)
}

// TakeFD takes c's socket over for a thread poller: it returns a duplicate
// of its descriptor (non-blocking, close-on-exec) and closes c, which also
// takes the socket out of the runtime poller. Close the descriptor with
// CloseFD.
func TakeFD(c *net.UDPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("udpbatch: raw conn: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("udpbatch: raw conn: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("udpbatch: dup: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("udpbatch: dup: %w", err)
	}
	_ = c.Close()
	return fd, nil
}

// CloseFD closes a descriptor from TakeFD.
func CloseFD(fd int) error { return unix.Close(fd) }

//go:build linux

package loadgen

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// clientSocket opens a non-blocking IPv4 socket of transport
// (TransportUDP or TransportTCP) on 127.0.0.1 (or the family of remote),
// connected to remote, with buf bytes of send and receive buffer. A TCP
// connection is established (within timeout) when it returns, with
// TCP_NODELAY set: every frame leaves at once, as a datagram would.
func clientSocket(transport string, remote netip.AddrPort, buf int, timeout time.Duration) (int, error) {
	if !remote.Addr().Is4() {
		return -1, fmt.Errorf("loadgen: %s: only IPv4 targets are supported", remote)
	}
	typ := unix.SOCK_DGRAM
	if transport == TransportTCP {
		typ = unix.SOCK_STREAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("loadgen: socket: %w", err)
	}
	if buf > 0 {
		setBuffers(fd, buf)
	}
	if typ == unix.SOCK_STREAM {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if err == nil {
		err = connectWait(fd, &unix.SockaddrInet4{Port: int(remote.Port()), Addr: remote.Addr().As4()}, timeout)
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("loadgen: connect %s %s: %w", transport, remote, err)
	}
	return fd, nil
}

// connectWait connects the non-blocking socket fd to sa, waiting up to
// timeout for a connection in progress (TCP) to be established.
func connectWait(fd int, sa unix.Sockaddr, timeout time.Duration) error {
	err := unix.Connect(fd, sa)
	if !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("not established within %s", timeout)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) || err == nil && n == 0 {
			continue
		}
		if err != nil {
			return err
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// setBuffers sets SO_RCVBUF and SO_SNDBUF, with the FORCE variants first
// (they pass net.core.rmem_max with CAP_NET_ADMIN), as the relay does.
func setBuffers(fd, n int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n)
	}
}

// localAddr returns the bound address of fd.
func localAddr(fd int) netip.AddrPort {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	if s4, ok := sa.(*unix.SockaddrInet4); ok {
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(s4.Port))
	}
	return netip.AddrPort{}
}

// sendOne writes datagram b to the connected socket fd. It reports
// whether the kernel took it (false on a full buffer or a refused port).
func sendOne(fd int, b []byte) bool {
	_, ok := sendSome(fd, b)
	return ok
}

// sendSome writes b to the connected socket fd without waiting and
// returns how much the kernel took (all of a datagram; over TCP possibly
// a part) and whether it took anything. A broken connection returns an
// error, never SIGPIPE.
func sendSome(fd int, b []byte) (int, bool) {
	for range 4 {
		n, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, false
		}
		return int(n), true
	}
	return 0, false
}

// poller is an epoll set over client sockets; each event carries the
// session index, not the descriptor. The epoll descriptor is itself
// registered with Go's network poller (an epoll set is readable when one
// of its sockets is), so waiting parks the goroutine instead of blocking
// a thread in epoll_wait: with GOMAXPROCS 1 a blocked thread would hold
// the only P until sysmon takes it back, up to 10ms later.
type poller struct {
	epfd   int
	file   *os.File
	rc     syscall.RawConn
	events []unix.EpollEvent
	n      int
	errno  error
	waitFn func(fd uintptr) bool
}

func newPoller(maxEvents int) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loadgen: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("loadgen: epoll non-blocking: %w", err)
	}
	p := &poller{epfd: epfd, file: os.NewFile(uintptr(epfd), "epoll"), events: make([]unix.EpollEvent, maxEvents)}
	if p.rc, err = p.file.SyscallConn(); err != nil {
		_ = p.file.Close()
		return nil, fmt.Errorf("loadgen: epoll raw conn: %w", err)
	}
	p.waitFn = func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), p.events, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.n, p.errno = n, err
			return err != nil || n > 0
		}
	}
	return p, nil
}

// add watches fd for reading, tagged with idx.
func (p *poller) add(fd int, idx int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(idx)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("loadgen: epoll_ctl: %w", err)
	}
	return nil
}

// remove stops watching fd.
func (p *poller) remove(fd int) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// wait returns the ready events, waiting at most timeout.
func (p *poller) wait(timeout time.Duration) ([]unix.EpollEvent, error) {
	// A ready set answers at once, without touching the deadline.
	if p.waitFn(uintptr(p.epfd)) {
		if p.errno != nil {
			return nil, fmt.Errorf("loadgen: epoll_wait: %w", p.errno)
		}
		return p.events[:p.n], nil
	}
	if err := p.file.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("loadgen: epoll deadline: %w", err)
	}
	p.n, p.errno = 0, nil
	if err := p.rc.Read(p.waitFn); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil
		}
		return nil, fmt.Errorf("loadgen: epoll wait: %w", err)
	}
	if p.errno != nil {
		return nil, fmt.Errorf("loadgen: epoll_wait: %w", p.errno)
	}
	return p.events[:p.n], nil
}

func (p *poller) close() { _ = p.file.Close() }

// recvBatch is the recvmmsg machinery for connected sockets: headers, iovecs
// and buffers allocated once and reused.
type recvBatch struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
}

func newRecvBatch(n, size int) *recvBatch {
	b := &recvBatch{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n)}
	for i := range b.hdrs {
		b.bufs[i] = make([]byte, size)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	return b
}

// read reads up to len(b.hdrs) datagrams from fd without blocking; the i-th
// is b.bufs[i][:b.hdrs[i].Len]. It returns 0 when nothing is waiting.
func (b *recvBatch) read(fd int) int {
	for range 4 {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[0])),
			uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0
		}
		return int(n)
	}
	return 0
}

// msg returns the i-th datagram of the last read.
func (b *recvBatch) msg(i int) []byte { return b.bufs[i][:b.hdrs[i].Len] }

// pinProcess sets the CPU affinity of every thread of process pid (0: this
// process) to cpu. Threads created later inherit it from their creator.
func pinProcess(pid, cpu int) error {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = filepath.Join("/proc", strconv.Itoa(pid), "task")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("loadgen: pinning %d to cpu %d: %w", pid, cpu, err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	var errs []error
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("loadgen: pinning %d to cpu %d: %w", pid, cpu, err)
	}
	return nil
}

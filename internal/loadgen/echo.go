//go:build linux

package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/pion/stun/v2"
	"golang.org/x/sys/unix"
)

// Default ICE credentials of the echo origin; `rtcedge-load echo` and
// `rtcedge-load run` agree on them unless told otherwise.
const (
	DefaultEchoUfrag = "echoorigin"
	DefaultEchoPwd   = "echooriginpassword0123456789"
)

// echoBatch is how many datagrams the echo origin reads and writes per
// system call.
const echoBatch = 64

// EchoConfig configures NewEcho.
type EchoConfig struct {
	// Listen is the UDP address, e.g. "127.0.0.1:0".
	Listen string
	// HTTPListen is the WHIP endpoint's TCP address; empty serves no HTTP.
	HTTPListen string
	// Ufrag and Pwd are the origin's ICE credentials; empty uses
	// DefaultEchoUfrag and DefaultEchoPwd.
	Ufrag, Pwd string
	// Buffer is SO_RCVBUF/SO_SNDBUF in bytes; 0 uses 8 MiB.
	Buffer int
	// Logger is nil for slog.Default().
	Logger *slog.Logger
}

// EchoStats counts what the echo origin did.
type EchoStats struct {
	// Echoed counts datagrams sent back unchanged.
	Echoed uint64 `json:"echoed"`
	// STUNAnswered counts Binding requests answered with a success.
	STUNAnswered uint64 `json:"stun_answered"`
	// STUNRejected counts Binding requests whose integrity did not verify
	// (not answered).
	STUNRejected uint64 `json:"stun_rejected"`
	// SendErrors counts datagrams the kernel refused to send.
	SendErrors uint64 `json:"send_errors"`
}

// Echo is a UDP echo origin: it sends every datagram back to its sender,
// except STUN Binding requests, which it answers as an ICE agent with its
// credentials would (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY with its pwd,
// FINGERPRINT), and drops when their MESSAGE-INTEGRITY does not verify with
// its pwd. It reads and writes in batches (recvmmsg, sendmmsg) from one
// goroutine. With an HTTP address it also answers WHIP offers (see
// Handler).
type Echo struct {
	cfg  EchoConfig
	log  *slog.Logger
	conn *net.UDPConn
	addr netip.AddrPort
	rc   syscall.RawConn

	httpLis net.Listener
	httpSrv *http.Server

	echoed, stunAnswered, stunRejected, sendErrors atomic.Uint64

	whipMu   sync.Mutex // guards whip
	whip     map[string]struct{}
	wg       sync.WaitGroup
	closeErr error
	once     sync.Once
}

// NewEcho opens the echo origin's sockets and starts serving them.
func NewEcho(cfg EchoConfig) (*Echo, error) {
	if cfg.Ufrag == "" {
		cfg.Ufrag = DefaultEchoUfrag
	}
	if cfg.Pwd == "" {
		cfg.Pwd = DefaultEchoPwd
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = 8 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ua, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("loadgen: echo listen %q: %w", cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("loadgen: echo listen: %w", err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("loadgen: echo raw conn: %w", err)
	}
	_ = rc.Control(func(fd uintptr) { setBuffers(int(fd), cfg.Buffer) })
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	e := &Echo{cfg: cfg, log: cfg.Logger, conn: conn, rc: rc,
		addr: netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), whip: map[string]struct{}{}}
	if cfg.HTTPListen != "" {
		e.httpLis, err = net.Listen("tcp", cfg.HTTPListen)
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("loadgen: echo http listen: %w", err)
		}
		e.httpSrv = &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 5 * time.Second}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := e.httpSrv.Serve(e.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("echo: http", "err", err)
			}
		}()
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.loop()
	}()
	return e, nil
}

// Addr returns the UDP address.
func (e *Echo) Addr() netip.AddrPort { return e.addr }

// HTTPAddr returns the WHIP endpoint's address, "" without one.
func (e *Echo) HTTPAddr() string {
	if e.httpLis == nil {
		return ""
	}
	return e.httpLis.Addr().String()
}

// Ufrag returns the origin's ICE ufrag.
func (e *Echo) Ufrag() string { return e.cfg.Ufrag }

// Pwd returns the origin's ICE pwd.
func (e *Echo) Pwd() string { return e.cfg.Pwd }

// Stats returns the counters.
func (e *Echo) Stats() EchoStats {
	return EchoStats{Echoed: e.echoed.Load(), STUNAnswered: e.stunAnswered.Load(),
		STUNRejected: e.stunRejected.Load(), SendErrors: e.sendErrors.Load()}
}

// Close stops the echo origin and waits for its goroutines.
func (e *Echo) Close() error {
	e.once.Do(func() {
		e.closeErr = e.conn.Close()
		if e.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = e.httpSrv.Shutdown(ctx)
			cancel()
		}
		e.wg.Wait()
	})
	return e.closeErr
}

// echoState holds the batch buffers of the echo loop, allocated once.
type echoState struct {
	rhdrs, shdrs []unix.Mmsghdr
	riovs, siovs []unix.Iovec
	names        []unix.RawSockaddrInet6
	bufs         [][]byte
	resps        [][]byte // STUN responses, one slot per datagram
	req, resp    stun.Message
	integrity    stun.MessageIntegrity

	// Results and arguments of the system calls, and the functions
	// RawConn runs, built once so the loop does not allocate.
	n, off, total, sent int
	errno               syscall.Errno
	readFn, writeFn     func(fd uintptr) bool
}

func newEchoState(pwd string) *echoState {
	s := &echoState{
		rhdrs: make([]unix.Mmsghdr, echoBatch), shdrs: make([]unix.Mmsghdr, echoBatch),
		riovs: make([]unix.Iovec, echoBatch), siovs: make([]unix.Iovec, echoBatch),
		names: make([]unix.RawSockaddrInet6, echoBatch),
		bufs:  make([][]byte, echoBatch), resps: make([][]byte, echoBatch),
		integrity: stun.NewShortTermIntegrity(pwd),
	}
	for i := range s.bufs {
		s.bufs[i] = make([]byte, 2048)
		s.riovs[i].Base = &s.bufs[i][0]
		s.rhdrs[i].Hdr.Iov = &s.riovs[i]
		s.rhdrs[i].Hdr.SetIovlen(1)
		s.rhdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.names[i]))
		s.shdrs[i].Hdr.Iov = &s.siovs[i]
		s.shdrs[i].Hdr.SetIovlen(1)
		s.shdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.names[i]))
	}
	s.readFn = func(fd uintptr) bool {
		for i := range s.rhdrs {
			s.riovs[i].SetLen(len(s.bufs[i]))
			s.rhdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(s.names[i]))
		}
		for {
			r, _, en := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.rhdrs[0])),
				uintptr(len(s.rhdrs)), unix.MSG_DONTWAIT, 0, 0)
			switch en {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait for readability
			}
			s.n, s.errno = int(r), en
			return true
		}
	}
	s.writeFn = func(fd uintptr) bool {
		for {
			r, _, en := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.shdrs[s.off])),
				uintptr(s.total-s.off), unix.MSG_DONTWAIT, 0, 0)
			switch en {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait for writability
			}
			s.sent, s.errno = int(r), en
			return true
		}
	}
	return s
}

// loop echoes until the socket closes.
func (e *Echo) loop() {
	st := newEchoState(e.cfg.Pwd)
	for {
		if err := e.rc.Read(st.readFn); err != nil {
			return // closed
		}
		if st.errno != 0 {
			e.log.Debug("echo: recvmmsg", "err", st.errno)
			continue
		}
		k := 0 // datagrams to send, compacted to the front
		for i := range st.n {
			b := st.bufs[i][:st.rhdrs[i].Len]
			if len(b) == 0 {
				continue
			}
			out := b
			if len(b) >= 20 && b[0] == 0 && b[1] == 1 && stun.IsMessage(b) {
				if out = e.answerSTUN(st, i, b); out == nil {
					continue
				}
			}
			if k != i {
				st.names[k] = st.names[i]
			}
			st.shdrs[k].Hdr.Namelen = st.rhdrs[i].Hdr.Namelen
			st.siovs[k].Base = &out[0]
			st.siovs[k].SetLen(len(out))
			k++
		}
		if !e.send(st, k) {
			return
		}
	}
}

// send writes the first total prepared datagrams; false once the socket
// is closed. A datagram the kernel refuses is counted and skipped.
func (e *Echo) send(st *echoState, total int) bool {
	st.off, st.total = 0, total
	for attempts := 0; st.off < st.total && attempts < 4*echoBatch; attempts++ {
		if err := e.rc.Write(st.writeFn); err != nil {
			return false
		}
		if st.errno != 0 {
			e.sendErrors.Add(1)
			st.off++
			continue
		}
		st.off += st.sent
		e.echoed.Add(uint64(st.sent))
	}
	return true
}

// answerSTUN answers the Binding request b from st.names[i]; nil when its
// integrity does not verify.
func (e *Echo) answerSTUN(st *echoState, i int, b []byte) []byte {
	st.req.Raw = b
	if err := st.req.Decode(); err != nil {
		e.stunRejected.Add(1)
		return nil
	}
	if err := st.integrity.Check(&st.req); err != nil {
		e.stunRejected.Add(1)
		return nil
	}
	src := sockaddrToAddrPort(&st.names[i])
	err := st.resp.Build(stun.NewTransactionIDSetter(st.req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		st.integrity, stun.Fingerprint)
	if err != nil {
		e.stunRejected.Add(1)
		return nil
	}
	st.resps[i] = append(st.resps[i][:0], st.resp.Raw...)
	e.stunAnswered.Add(1)
	return st.resps[i]
}

// sockaddrToAddrPort converts a raw IPv4 or IPv6 socket address.
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// randomAlnum returns n random letters and digits.
func randomAlnum(n int) string {
	return randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", n)
}

// randomICE returns n random ice-chars.
func randomICE(n int) string {
	return randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", n)
}

// randomFrom returns n random bytes of alphabet.
func randomFrom(alphabet string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

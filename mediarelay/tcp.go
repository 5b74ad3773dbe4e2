package mediarelay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
)

// ICE-TCP (RFC 6544) at the edge: clients whose networks block UDP connect
// to the relay's TCP port (the relay's candidates there are "tcptype
// passive"), and each verified connection is one more path of its session.
// The origin side stays UDP: frames from a TCP path go to the origin over
// the session's socket, and what the origin sends to a selected TCP path
// is framed (RFC 4571) and written to the connection, or queued for its
// writer goroutine when the socket does not take it at once.

// tcpWriteBatch is how many queued frames one write (writev) takes.
const tcpWriteBatch = 16

// tcpWriterLinger is how long a connection's writer goroutine waits for
// more frames before it returns; the next frame starts another. An idle
// connection so holds one goroutine (its reader), not two.
const tcpWriterLinger = 2 * time.Second

// lookupPoll is how often a connection whose first check names a session
// the relay does not know yet looks again while the registry is asked.
const lookupPoll = 50 * time.Millisecond

// tcpCloseReason is why the relay closed a TCP connection.
type tcpCloseReason uint8

const (
	tcpCloseVerifyTimeout  tcpCloseReason = iota // no verified Binding request within TCPVerifyTimeout
	tcpCloseNotBinding                           // the first frame was no Binding request with USERNAME
	tcpCloseIntegrity                            // the first check failed MESSAGE-INTEGRITY or FINGERPRINT, or was a replay
	tcpCloseUnknownSession                       // the first check named a session neither the relay nor the registry has
	tcpCloseOversize                             // a frame longer than MaxPacketSize
	tcpCloseIdle                                 // a verified connection sent nothing for TCPIdleTimeout
	tcpClosePeer                                 // the client closed or reset it
	tcpCloseWriteError                           // a write failed or timed out (the client stopped reading)
	tcpClosePathRemoved                          // its path expired or was evicted (the MaxPaths cap)
	tcpCloseSessionEnded                         // its session was released
	tcpCloseRelayClosed                          // the relay closed
	numTCPCloseReasons
)

var tcpCloseNames = [numTCPCloseReasons]string{"verify_timeout", "not_binding", "integrity", "unknown_session",
	"oversize", "idle", "peer", "write_error", "path_removed", "session_ended", "relay_closed"}

// String is the reason's metric label.
func (c tcpCloseReason) String() string { return tcpCloseNames[c] }

// tcpRejectReason is why the relay refused a TCP connection at accept.
type tcpRejectReason uint8

const (
	tcpRejectMaxConns      tcpRejectReason = iota // TCPMaxConns open
	tcpRejectMaxConnsPerIP                        // TCPMaxConnsPerIP open from the source IP (IPv6: its /64)
	tcpRejectClosed                               // the relay is closing
	tcpRejectBadAddress                           // no IP address as the remote address
	numTCPRejectReasons
)

var tcpRejectNames = [numTCPRejectReasons]string{"max_conns", "max_conns_per_ip", "relay_closed", "bad_address"}

// tcpState is the relay's TCP side: listeners, connections and counters.
type tcpState struct {
	accepted     atomic.Uint64
	rejected     [numTCPRejectReasons]atomic.Uint64
	closed       [numTCPCloseReasons]atomic.Uint64
	framesIn     atomic.Uint64 // complete frames read from clients
	framesOut    atomic.Uint64 // frames written to clients
	directWrites atomic.Uint64 // of framesOut: written whole by the sender, no writer involved
	queueDrops   atomic.Uint64 // origin packets dropped: a connection's write queue was full

	mu       sync.Mutex // guards the following
	shut     bool       // closeTCP ran: no more listeners or connections
	lns      map[net.Listener]struct{}
	conns    map[*tcpConn]struct{}
	perIP    map[netip.Addr]int
	verified int // connections with a path
}

// init makes the maps.
func (t *tcpState) init() {
	t.lns = map[net.Listener]struct{}{}
	t.conns = map[*tcpConn]struct{}{}
	t.perIP = map[netip.Addr]int{}
}

// tcpFrame is one framed packet queued for a connection's writer; frames
// are reused through framePool, so queueing allocates nothing.
type tcpFrame struct {
	off, n int // b[off:n] is still to be written (off > 0: a direct write took the start)
	b      [frameHeader + MaxPacketSize]byte
}

var framePool = sync.Pool{New: func() any { return new(tcpFrame) }}

// stunPool holds the STUN scratch space of the TCP connections' readers:
// a connection takes one only while it handles a STUN frame, so an idle
// connection holds none.
var stunPool = sync.Pool{New: func() any { return newSTUNScratch() }}

// tcpConn is one ICE-TCP connection from a client. Its reader goroutine
// reads frames and acts on them as the UDP loops act on datagrams; once a
// Binding request on it verified, it is a path of that session. What the
// origin sends it is written at once, without waiting, by whoever handles
// the origin's packet (a data-plane thread) while nothing is queued before
// it (directWrite, Linux); what the socket does not take at once is queued
// (bounded) for a writer goroutine, started by the first frame queued and
// gone after tcpWriterLinger without one.
type tcpConn struct {
	r      *Relay
	conn   net.Conn
	remote netip.AddrPort

	path    atomic.Pointer[path] // set once its first check verified
	done    chan struct{}        // closed by close: the writer returns
	closed  atomic.Bool
	writing atomic.Bool // a writer goroutine runs
	once    sync.Once
	mu      sync.Mutex  // orders starting a writer before close (the relay's WaitGroup)
	wbufs   net.Buffers // the writer's writev vector, reused

	// wmu orders direct writes against the queue: a frame is written
	// directly only while busy is false, i.e. nothing queued or being
	// written by the writer is due before it. Senders hold it for one
	// non-blocking write or one queueing; the writer only to clear busy.
	wmu  sync.Mutex
	busy bool           // frames are queued or in the writer's hands
	out  chan *tcpFrame // origin packets for the client; bounded, never waited on; made by the first frame queued
	dw   directWriter   // the socket for direct writes (none: every frame is queued)
}

// isClosed reports whether close ran.
func (tc *tcpConn) isClosed() bool { return tc.closed.Load() }

// close closes the connection for reason (counted once, the first
// reason); the reader's next read and the writer return.
func (tc *tcpConn) close(reason tcpCloseReason) {
	tc.once.Do(func() {
		tc.mu.Lock()
		tc.closed.Store(true) // no writer starts from now on
		tc.mu.Unlock()
		tc.r.tcp.closed[reason].Add(1)
		_ = tc.conn.Close()
		close(tc.done)
		tc.r.log.Debug("relay: TCP connection closed", "remote", tc.remote, "reason", reason.String())
	})
}

// send frames origin packet p of session s for the client without
// waiting: written at once when nothing is queued before it and the socket
// takes it, else (the rest of it) queued for the writer. With the queue
// full (a client that reads slower than its media arrives) the packet is
// dropped and counted.
func (tc *tcpConn) send(s *session, p []byte) {
	if tc.closed.Load() || len(p) > MaxPacketSize {
		s.dropWrite.Add(1)
		return
	}
	f := framePool.Get().(*tcpFrame)
	binary.BigEndian.PutUint16(f.b[:frameHeader], uint16(len(p)))
	f.off, f.n = 0, frameHeader+copy(f.b[frameHeader:], p)
	tc.wmu.Lock()
	if !tc.busy {
		f.off = tc.dw.write(f.b[:f.n])
		if f.off == f.n {
			tc.wmu.Unlock()
			framePool.Put(f)
			s.o2cPackets.Add(1)
			s.o2cBytes.Add(uint64(len(p)))
			tc.r.tcp.framesOut.Add(1)
			tc.r.tcp.directWrites.Add(1)
			return
		}
	}
	if tc.out == nil {
		tc.out = make(chan *tcpFrame, tc.r.cfg.TCPWriteQueue)
	}
	queued := false
	select {
	case tc.out <- f:
		tc.busy, queued = true, true
	default:
	}
	tc.wmu.Unlock()
	if queued {
		s.o2cPackets.Add(1)
		s.o2cBytes.Add(uint64(len(p)))
	} else {
		framePool.Put(f)
		s.dropWrite.Add(1)
		tc.r.tcp.queueDrops.Add(1)
	}
	if !tc.writing.Load() {
		tc.startWriter()
	}
}

// startWriter starts the connection's writer unless one runs or the
// connection is closed. The reader, which holds a count of the relay's
// WaitGroup until after close, makes the Add below safe against Close's
// Wait.
func (tc *tcpConn) startWriter() {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.closed.Load() || !tc.writing.CompareAndSwap(false, true) {
		return
	}
	tc.r.wg.Add(1)
	go tc.r.writeTCP(tc)
}

// ServeTCP accepts ICE-TCP connections (RFC 6544, passive; frames per RFC
// 4571) on ln until the relay closes, then returns nil; it returns
// ErrClosed when the relay is already closed, and the listener's error
// when ln fails otherwise. Close closes ln and every connection and waits
// for their goroutines. It may run next to Serve, with any number of
// listeners; Config.PublicTCPAddrs is what clients are told.
//
// A connection must send, as its first frame and within TCPVerifyTimeout,
// a STUN Binding request whose USERNAME names a session (this relay's, or
// one the registry assigns to it) and whose MESSAGE-INTEGRITY verifies;
// it then is a path of that session under the same rules as a UDP address.
// Anything else closes it.
func (r *Relay) ServeTCP(ln net.Listener) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	r.wg.Add(1)
	r.tcp.mu.Lock()
	r.tcp.lns[ln] = struct{}{}
	r.tcp.mu.Unlock()
	r.mu.Unlock()
	defer r.wg.Done()
	defer func() {
		r.tcp.mu.Lock()
		delete(r.tcp.lns, ln)
		r.tcp.mu.Unlock()
		_ = ln.Close()
	}()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-r.closing:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("mediarelay: TCP listener %s: %w", ln.Addr(), err)
			}
			// Out of descriptors or a connection reset before accept:
			// wait a little rather than spin.
			r.log.Debug("relay: TCP accept", "err", err, "retry_in", backoff)
			select {
			case <-r.closing:
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		r.acceptTCP(c)
	}
}

// acceptTCP admits connection c within the limits and starts its reader.
func (r *Relay) acceptTCP(c net.Conn) {
	remote, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		remote, err = ta.AddrPort(), nil
	}
	reject := numTCPRejectReasons
	t := &r.tcp
	t.mu.Lock()
	switch ip := sourceKey(remote.Addr()); {
	case err != nil || !remote.IsValid():
		reject = tcpRejectBadAddress
	case t.shut:
		reject = tcpRejectClosed
	case len(t.conns) >= r.cfg.TCPMaxConns:
		reject = tcpRejectMaxConns
	case t.perIP[ip] >= r.cfg.TCPMaxConnsPerIP:
		reject = tcpRejectMaxConnsPerIP
	}
	if reject != numTCPRejectReasons {
		t.mu.Unlock()
		t.rejected[reject].Add(1)
		_ = c.Close()
		r.log.Debug("relay: TCP connection refused", "remote", c.RemoteAddr(), "reason", tcpRejectNames[reject])
		return
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	tc := &tcpConn{r: r, conn: c, remote: remote, done: make(chan struct{})}
	t.conns[tc] = struct{}{}
	t.perIP[sourceKey(remote.Addr())]++
	r.wg.Add(1) // before closeTCP's Wait: t.shut is false under t.mu
	t.mu.Unlock()
	t.accepted.Add(1)
	go r.serveTCPConn(tc)
}

// sourceKey is what TCPMaxConnsPerIP counts connections by: the IPv4
// address, or the /64 of an IPv6 one (a host picks addresses within its
// /64 at will).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.Addr()
	}
	return a
}

// closeTCP closes the listeners and connections; no more are admitted.
func (r *Relay) closeTCP() {
	t := &r.tcp
	t.mu.Lock()
	t.shut = true
	for ln := range t.lns {
		_ = ln.Close()
	}
	conns := make([]*tcpConn, 0, len(t.conns))
	for tc := range t.conns {
		conns = append(conns, tc)
	}
	t.mu.Unlock()
	for _, tc := range conns {
		tc.close(tcpCloseRelayClosed)
	}
}

// serveTCPConn runs a connection's reader until it ends, then removes its
// path and its accounting.
func (r *Relay) serveTCPConn(tc *tcpConn) {
	defer r.wg.Done()
	tc.close(r.readTCP(tc))
	r.mu.Lock()
	if p := tc.path.Load(); p != nil && !p.removed.Load() {
		r.removePathLocked(p)
	}
	r.mu.Unlock()
	t := &r.tcp
	t.mu.Lock()
	delete(t.conns, tc)
	if key := sourceKey(tc.remote.Addr()); t.perIP[key] <= 1 {
		delete(t.perIP, key)
	} else {
		t.perIP[key]--
	}
	if tc.path.Load() != nil {
		t.verified--
	}
	t.mu.Unlock()
}

// readTCP reads and handles a connection's frames until it must close, and
// says why.
func (r *Relay) readTCP(tc *tcpConn) tcpCloseReason {
	deadline := time.Now().Add(r.cfg.TCPVerifyTimeout)
	_ = tc.conn.SetReadDeadline(deadline) // the whole first frame: a slowloris gets no more
	fr := newFrameReader(tc.conn, MaxPacketSize)
	var deadlineSet int64 // coarse clock when the idle deadline was last moved
	for {
		b, err := fr.next()
		if err != nil {
			switch {
			case tc.isClosed():
				return tcpCloseRelayClosed // the reason that closed it was counted
			case errors.Is(err, ErrFrameTooLarge):
				return tcpCloseOversize
			case isTimeout(err) && tc.path.Load() == nil:
				return tcpCloseVerifyTimeout
			case isTimeout(err):
				return tcpCloseIdle
			}
			return tcpClosePeer
		}
		r.tcp.framesIn.Add(1)
		var spare *[stunFrameSize]byte
		if classify(b) == classSTUN && len(b) <= MaxPacketSize {
			// Checking MESSAGE-INTEGRITY writes the HMAC it computes just past
			// the message (pion/stun appends to Raw[len:]): in the reader's
			// buffer that is the next frame. Give STUN room of its own.
			spare = stunFrames.Get().(*[stunFrameSize]byte)
			b = spare[:copy(spare[:], b)]
		}
		reason, ok := r.tcpFrame(tc, b, deadline, &deadlineSet)
		if spare != nil {
			stunFrames.Put(spare)
		}
		if !ok {
			return reason
		}
	}
}

// stunFrameSize leaves room past the largest STUN frame for what checking
// it writes there.
const stunFrameSize = MaxPacketSize + 64

// stunFrames are the buffers STUN frames are checked in.
var stunFrames = sync.Pool{New: func() any { return new([stunFrameSize]byte) }}

// tcpFrame handles one frame of a connection; false says the connection
// must close, and why.
func (r *Relay) tcpFrame(tc *tcpConn, b []byte, deadline time.Time, deadlineSet *int64) (tcpCloseReason, bool) {
	if tc.path.Load() == nil {
		if reason, ok := r.verifyTCP(tc, b, deadline); !ok {
			return reason, false
		}
		r.tcp.mu.Lock()
		r.tcp.verified++
		r.tcp.mu.Unlock()
		*deadlineSet = r.clock.Load()
		_ = tc.conn.SetReadDeadline(time.Now().Add(r.cfg.TCPIdleTimeout))
		return 0, true
	}
	now := r.clock.Load()
	if now != *deadlineSet {
		*deadlineSet = now
		_ = tc.conn.SetReadDeadline(time.Unix(0, now).Add(r.cfg.TCPIdleTimeout))
	}
	r.handleTCPFrame(tc, b, now)
	return 0, true
}

// verifyTCP handles the first frame of a connection: a Binding request
// that verifies makes the connection a path (true); anything else says
// why the connection closes. A USERNAME the relay does not know is looked
// up in the registry (the session may be one assigned to this relay that
// it has not adopted yet) while the deadline allows; without a registry
// the connection closes at once.
func (r *Relay) verifyTCP(tc *tcpConn, b []byte, deadline time.Time) (tcpCloseReason, bool) {
	sc := stunPool.Get().(*stunScratch)
	defer func() {
		sc.in.Raw = nil // the frame buffer is the reader's
		stunPool.Put(sc)
	}()
	now := r.clock.Load()
	d := decideTCPFrame(b, tc, r.tabs, &sc.in, now)
	if d.v == verdictLookup {
		r.requestLookup(&sc.in, &r.drops)
		if r.cfg.Registry == nil {
			return tcpCloseUnknownSession, false // nobody else knows sessions
		}
		timer := time.NewTimer(lookupPoll)
		defer timer.Stop()
		maxPolls := int(r.cfg.TCPVerifyTimeout/lookupPoll) + 1
		for range maxPolls {
			select {
			case <-r.closing:
				return tcpCloseRelayClosed, false
			case <-tc.done:
				return tcpCloseRelayClosed, false
			case <-timer.C:
			}
			if time.Now().After(deadline) {
				return tcpCloseUnknownSession, false
			}
			if user, err := sc.in.Get(stun.AttrUsername); err == nil && r.tabs.byUsername(user) != nil {
				d = decideTCPFrame(b, tc, r.tabs, &sc.in, r.clock.Load())
				break
			}
			timer.Reset(lookupPoll)
		}
	}
	switch d.v {
	case verdictCheck:
		// The socket for direct writes before the path is published
		// (Relay.mu orders them for the data plane).
		tc.dw = newDirectWriter(tc.conn)
		r.check(d, tc.remote, nil, tc, b, sc, now)
		if tc.path.Load() == nil {
			return tcpCloseUnknownSession, false // the session ended meanwhile
		}
		return 0, true
	case verdictDropIntegrity:
		d.s.dropIntegrity.Add(1)
		r.log.Debug("relay: STUN over TCP failed verification", "session", d.s.id, "remote", tc.remote)
		return tcpCloseIntegrity, false
	case verdictLookup:
		return tcpCloseUnknownSession, false
	}
	return tcpCloseNotBinding, false
}

// handleTCPFrame acts on a frame from a verified connection as
// handleClientPacket acts on a datagram from a verified address.
func (r *Relay) handleTCPFrame(tc *tcpConn, b []byte, now int64) {
	if classify(b) != classSTUN {
		r.act(decideTCPFrame(b, tc, r.tabs, nil, now), tc.remote, nil, tc, b, nil, now)
		return
	}
	sc := stunPool.Get().(*stunScratch)
	r.act(decideTCPFrame(b, tc, r.tabs, &sc.in, now), tc.remote, nil, tc, b, sc, now)
	sc.in.Raw = nil // the frame buffer is the reader's
	stunPool.Put(sc)
}

// writeTCP is a verified connection's writer: it writes the queued frames,
// several at a time (writev), until the queue stays empty for
// tcpWriterLinger or the connection closes. A write that cannot finish
// within TCPIdleTimeout (a client that stopped reading) closes the
// connection.
func (r *Relay) writeTCP(tc *tcpConn) {
	defer r.wg.Done()
	var frames [tcpWriteBatch]*tcpFrame
	var bufs [tcpWriteBatch][]byte
	var deadlineSet int64
	linger := time.NewTimer(tcpWriterLinger)
	defer linger.Stop()
	for {
		var f *tcpFrame
		select {
		case f = <-tc.out:
		default:
			linger.Reset(tcpWriterLinger)
			select {
			case f = <-tc.out:
			case <-tc.done:
				for range cap(tc.out) { // return what is queued to the pool
					select {
					case f = <-tc.out:
						framePool.Put(f)
					default:
						return
					}
				}
				return
			case <-linger.C:
				// Idle: return, unless a frame came in meanwhile and no
				// other writer took over (send starts one when it sees
				// writing false).
				tc.writing.Store(false)
				if len(tc.out) == 0 || !tc.writing.CompareAndSwap(false, true) {
					return
				}
				continue
			}
		}
		frames[0] = f
		n := 1
	fill:
		for n < len(frames) {
			select {
			case f = <-tc.out:
				frames[n] = f
				n++
			default:
				break fill
			}
		}
		if now := r.clock.Load(); now != deadlineSet {
			deadlineSet = now
			_ = tc.conn.SetWriteDeadline(time.Unix(0, now).Add(r.cfg.TCPIdleTimeout))
		}
		var err error
		if n == 1 {
			_, err = tc.conn.Write(frames[0].b[frames[0].off:frames[0].n])
		} else {
			for i := range n {
				bufs[i] = frames[i].b[frames[i].off:frames[i].n]
			}
			tc.wbufs = bufs[:n]
			_, err = tc.wbufs.WriteTo(tc.conn)
		}
		for i := range n {
			framePool.Put(frames[i])
			frames[i], bufs[i] = nil, nil
		}
		if err != nil {
			tc.close(tcpCloseWriteError)
			continue // returns through tc.done once the queue is empty
		}
		r.tcp.framesOut.Add(uint64(n))
		// Nothing left before the next frame: senders may write directly
		// again.
		tc.wmu.Lock()
		if len(tc.out) == 0 {
			tc.busy = false
		}
		tc.wmu.Unlock()
	}
}

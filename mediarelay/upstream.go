package mediarelay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/pion/stun/v2"

	"github.com/rtcedge/rtcedge/mediarelay/internal/udpbatch"
)

// The origin side of the data plane. Each session has its own socket
// connected to its origin (the origin tells sessions apart by source
// address). On Linux the data-plane threads (or one netpoll poller) read
// them (epoll and recvmmsg): each session socket belongs to the thread that
// had the fewest when it was opened, and that thread sends what it receives
// to the clients in sendmmsg batches across sessions, through its own
// socket of the public address each client's verified STUN arrived on.
// Elsewhere, or when Config asks for it, each session socket has its own
// reader goroutine and packets go out one write at a time.

// upstreamBatch is how many datagrams one poller round reads, across
// sessions, before it flushes them to the clients.
const upstreamBatch = 64

// pubSock is a public socket: a conn, or with the data-plane threads a
// descriptor one thread reads.
type pubSock struct {
	conn   *net.UDPConn   // nil with the data-plane threads
	fd     int            // a data-plane thread's descriptor
	local  netip.AddrPort // its local address
	group  int            // the index of local among the public sockets' addresses (one SO_REUSEPORT group)
	thread int            // the data-plane thread that reads it
	st     *planeStats    // the counters of the loop that reads it
	out    *pubWriter     // netpoll plane: the batch writer of origin packets to clients; nil: one write each
}

// upstream is a session's socket toward its origin: a poller conn, or a
// net.UDPConn with its own reader goroutine.
type upstream struct {
	origin netip.AddrPort
	local  netip.AddrPort
	pc     *udpbatch.Conn[*session]
	thread int // pc's poller: the data-plane thread that reads it
	conn   *net.UDPConn
	done   chan struct{} // conn only: closed when its reader returns
}

// write sends a client packet to the origin.
func (u *upstream) write(b []byte) error {
	if u.pc != nil {
		return u.pc.Write(b)
	}
	_, err := u.conn.Write(b)
	return err
}

// close closes the socket; once it returns nothing more is delivered from
// it.
func (u *upstream) close() {
	if u.pc != nil {
		_ = u.pc.Close()
		return
	}
	_ = u.conn.Close()
	if u.done != nil {
		<-u.done
	}
}

// openUpstream opens a socket toward the first origin address the relay
// can reach (an IPv6 origin fails fast on a host without IPv6 routes, and
// the next address is tried). A valid prefer is the session's earlier
// address toward its origin (a relay restarted with the same id): the
// socket binds to it again, so an origin that selected it as its ICE peer
// keeps sending there; if it cannot be had, a new port is used.
func (r *Relay) openUpstream(s *session, origins []netip.AddrPort, prefer netip.AddrPort) (*upstream, error) {
	var errs []error
	for _, o := range origins {
		if prefer.IsValid() && prefer.Addr().Unmap().Is4() == o.Addr().Unmap().Is4() {
			up, err := r.dialUpstream(s, o, prefer, r.cfg.Takeover && !r.localInUse(prefer))
			if err == nil {
				return up, nil
			}
			r.log.Warn("relay: the session's earlier address toward its origin is not available; the origin sees a new source until the client's next ICE restart",
				"session", s.id, "addr", prefer, "err", err)
			prefer = netip.AddrPort{}
		}
		up, err := r.dialUpstream(s, o, netip.AddrPort{}, false)
		if err == nil {
			return up, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: no origin address", ErrInvalid)
	}
	return nil, errors.Join(errs...)
}

// localInUse reports whether one of this relay's own sessions has a socket
// toward its origin on local: a restored session must not share it (only
// the process being taken over may hold it too).
func (r *Relay) localInUse(local netip.AddrPort) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sessions {
		if up := s.up.Load(); up != nil && up.local == local {
			return true
		}
	}
	return false
}

// dialUpstream opens a socket toward origin, bound to local when valid;
// shared joins local while the process this relay takes over holds it.
// Every socket gets SO_REUSEPORT once bound (Linux), so that a successor
// can join it.
func (r *Relay) dialUpstream(s *session, origin, local netip.AddrPort, shared bool) (*upstream, error) {
	if r.pollers != nil {
		t := r.leastLoadedPoller()
		dial := r.pollers[t].Dial
		if shared {
			dial = r.pollers[t].DialShared
		}
		pc, err := dial(origin, local, r.cfg.SocketBuffer, s)
		if err != nil {
			return nil, fmt.Errorf("mediarelay: socket toward origin %s: %w", origin, err)
		}
		return &upstream{pc: pc, thread: t, origin: pc.Remote, local: pc.Local}, nil
	}
	d := net.Dialer{}
	if local.IsValid() {
		d.LocalAddr = net.UDPAddrFromAddrPort(local)
		if shared {
			d.Control = reusePortControl
		}
	}
	c, err := d.Dial("udp", origin.String())
	if err != nil {
		return nil, fmt.Errorf("mediarelay: socket toward origin %s: %w", origin, err)
	}
	conn := c.(*net.UDPConn)
	setReusePort(conn)
	if r.cfg.SocketBuffer > 0 {
		_ = conn.SetReadBuffer(r.cfg.SocketBuffer)
		_ = conn.SetWriteBuffer(r.cfg.SocketBuffer)
	}
	la := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	return &upstream{conn: conn, origin: origin, local: netip.AddrPortFrom(la.Addr().Unmap(), la.Port()), done: make(chan struct{})}, nil
}

// leastLoadedPoller returns the index of the poller (data-plane thread)
// reading the fewest session sockets: sessions are spread evenly over the
// threads.
func (r *Relay) leastLoadedPoller() int {
	best, n := 0, -1
	if len(r.pollers) == 1 {
		return 0
	}
	for i, p := range r.pollers {
		if l := p.Len(); n < 0 || l < n {
			best, n = i, l
		}
	}
	return best
}

// startUpstream installs up as the session's socket and, without the
// poller, starts its reader.
func (r *Relay) startUpstream(s *session, up *upstream) {
	s.up.Store(up)
	if up.conn == nil {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.readUpstream(s, up)
	}()
}

// readUpstream forwards what the origin sends on one session socket to the
// session's client, from the public port (the path without the poller).
func (r *Relay) readUpstream(s *session, up *upstream) {
	defer close(up.done)
	buf := make([]byte, MaxPacketSize+1)
	var sc *stunScratch // the first STUN from the origin allocates it
	for {
		n, err := up.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A connected UDP socket reports ICMP errors (the origin's port
			// is closed) on the next read; keep going.
			continue
		}
		if n > MaxPacketSize {
			s.dropForeign.Add(1)
			continue
		}
		to := s.client.Load()
		if to == nil {
			s.dropUnbound.Add(1)
			continue
		}
		if classify(buf[:n]) == classSTUN {
			if sc == nil {
				sc = newSTUNScratch()
			}
			if to, n = r.fromOrigin(s, to, buf, n, sc); to == nil {
				continue
			}
		}
		r.toClient(s, to, buf[:n])
	}
}

// fromOrigin rewrites an origin STUN message in buf[:n], in place, for the
// client, and returns the path it goes to and its new length (nil: drop
// it). sel is the session's selected path.
//
// A Binding response goes to the path whose check it answers (by
// transaction ID; the selected path if the relay has forgotten the
// transaction), once it verifies with the origin's key: its
// XOR-MAPPED-ADDRESS becomes that path's address as the relay saw it, and
// it is re-signed with the key the client's check used. Clients never learn
// the relay's socket toward the origin. A Binding request (a full-ICE
// origin's check) goes to the selected path, translated to the client's
// credentials when they differ from the origin's. Anything else passes
// unchanged.
func (r *Relay) fromOrigin(s *session, sel *path, buf []byte, n int, sc *stunScratch) (*path, int) {
	msg := &sc.in
	if !decodeSTUN(buf[:n], msg) || msg.Type.Method != stun.MethodBinding {
		return sel, n
	}
	var out []byte
	switch msg.Type.Class {
	case stun.ClassSuccessResponse, stun.ClassErrorResponse:
		to, c := sel, s.creds.Load()
		if from, via, tc, ok := s.transaction(msg.TransactionID); ok {
			c = tc
			if via != nil {
				if p := via.path.Load(); p != nil && p.s == s && !p.removed.Load() {
					to = p
				}
			} else if p := r.tabs.byAddr(from); p != nil && p.s == s {
				to = p
			}
		}
		if !verifies(msg, c.originIntegrity) {
			s.dropOriginSTUN.Add(1)
			return nil, 0
		}
		sel = to
		out = sc.rewrite(msg, nil, to.addr, c.integrity, 0)
	case stun.ClassRequest:
		c := s.creds.Load()
		if !c.translate {
			return sel, n
		}
		if !verifies(msg, c.originClientIntegrity) {
			s.dropOriginSTUN.Add(1)
			return nil, 0
		}
		out = sc.rewrite(msg, c.clientUsernameB, netip.AddrPort{}, c.clientIntegrity, 0)
	default:
		return sel, n
	}
	if out == nil || len(out) > len(buf) {
		s.dropOriginSTUN.Add(1)
		return nil, 0
	}
	return sel, copy(buf, out)
}

// toClient writes an origin packet to client path to, from the public
// socket the path's verified STUN arrived on, or queues it for the path's
// TCP connection.
func (r *Relay) toClient(s *session, to *path, p []byte) {
	if to.tcp != nil {
		to.tcp.send(s, p)
		return
	}
	if to.sock.conn == nil { // the data-plane thread writes through out only
		s.dropWrite.Add(1)
		return
	}
	if _, err := to.sock.conn.WriteToUDPAddrPort(p, to.addr); err != nil {
		s.dropWrite.Add(1)
		return
	}
	s.o2cPackets.Add(1)
	s.o2cBytes.Add(uint64(len(p)))
}

// pubWriter batches origin packets leaving one public socket. It belongs
// to one poller goroutine (data-plane thread).
type pubWriter struct {
	w    *udpbatch.Writer
	sess []*session // the session of each queued datagram
	lens []int
}

// upstreamHandler is the poller's udpbatch.Handler: it queues what the
// session sockets received for the clients and flushes at the end of each
// round (or when a batch fills).
type upstreamHandler struct {
	r       *Relay
	sc      *stunScratch
	st      *planeStats  // this thread's counters
	outs    []*pubWriter // data-plane thread: its writer of each public address (pubSock.group); nil: pubSock.out
	pending []*pubWriter // writers with queued datagrams
}

// writer returns the batch writer for datagrams to UDP path to: this
// thread's socket of the public address the path arrived on (nil: none;
// write each datagram through its conn).
func (h *upstreamHandler) writer(to *path) *pubWriter {
	if h.outs != nil && to.sock.group < len(h.outs) {
		return h.outs[to.sock.group]
	}
	return to.sock.out
}

// Packets implements udpbatch.Handler.
func (h *upstreamHandler) Packets(c *udpbatch.Conn[*session], msgs []udpbatch.Message) {
	h.st.fromOrigins.Add(uint64(len(msgs)))
	s := c.Value
	sel := s.client.Load()
	if sel == nil {
		s.dropUnbound.Add(uint64(len(msgs)))
		return
	}
	for i := range msgs {
		m := &msgs[i]
		if m.N > MaxPacketSize {
			s.dropForeign.Add(1)
			continue
		}
		to, n := sel, m.N
		if classify(m.Buf[:n]) == classSTUN {
			if to, n = h.r.fromOrigin(s, sel, m.Buf, n, h.sc); to == nil {
				continue
			}
		}
		var o *pubWriter
		if to.tcp == nil {
			o = h.writer(to)
		}
		if o == nil {
			h.r.toClient(s, to, m.Buf[:n])
			continue
		}
		h.queue(o, to, s, m.Buf[:n])
	}
}

func (h *upstreamHandler) queue(o *pubWriter, to *path, s *session, p []byte) {
	full, ok := o.w.Add(p, to.addr)
	if !ok {
		s.dropWrite.Add(1)
		return
	}
	if len(o.sess) == 0 {
		h.pending = append(h.pending, o)
	}
	o.sess = append(o.sess, s)
	o.lens = append(o.lens, len(p))
	if full {
		h.flush(o)
	}
}

// EndBatch implements udpbatch.Handler.
func (h *upstreamHandler) EndBatch() {
	for _, o := range h.pending {
		h.flush(o)
	}
	clear(h.pending)
	h.pending = h.pending[:0]
}

// flush sends o's queue and counts the outcome per session, one atomic
// update per run of datagrams of the same session.
func (h *upstreamHandler) flush(o *pubWriter) {
	if len(o.sess) == 0 {
		return
	}
	o.w.Flush()
	var (
		cur            *session
		packets, bytes uint64
	)
	for i, s := range o.sess {
		if s != cur {
			if cur != nil {
				cur.o2cPackets.Add(packets)
				cur.o2cBytes.Add(bytes)
			}
			cur, packets, bytes = s, 0, 0
		}
		if o.w.Failed(i) {
			s.dropWrite.Add(1)
			continue
		}
		packets++
		bytes += uint64(o.lens[i])
	}
	cur.o2cPackets.Add(packets)
	cur.o2cBytes.Add(bytes)
	clear(o.sess)
	o.sess = o.sess[:0]
	o.lens = o.lens[:0]
}

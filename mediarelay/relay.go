package mediarelay

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"golang.org/x/sys/cpu"

	"github.com/rtcedge/rtcedge/mediarelay/internal/udpbatch"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// Relay is a media relay. Create it with New, run its data plane with
// Serve, and drive it through its methods or the gRPC service.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	started time.Time

	// pollers read the sessions' sockets: one per data-plane thread
	// (thread pollers, which read the public sockets too), or one netpoll
	// poller; nil: a reader goroutine per socket.
	pollers   []*udpbatch.Poller[*session]
	thread    bool           // pollers are thread pollers
	stats     []*planeStats  // per data-plane thread; one on the other planes
	outs      [][]*pubWriter // thread plane: outs[thread][group] writes origin packets to clients
	drops     dropCounters   // drops counted outside the socket loops (TCP, lookups)
	tabs      *tables
	clock     atomic.Int64 // coarse unix nanos, advanced by the sweeper
	lookups   chan string  // unknown USERNAMEs for the registry lookup worker
	closing   chan struct{}
	ready     chan struct{} // closed by Serve once the sessions are reloaded
	readyOnce sync.Once
	closeOnce sync.Once
	wg        sync.WaitGroup // every goroutine the relay starts

	// Relay-wide drops, of packets that belong to no session (with the
	// data-plane threads' own, stats[i].drops).
	lookupDropped atomic.Uint64
	totals        counters // of sessions already released
	moves         [numCauses]atomic.Uint64

	tcp tcpState // ICE-TCP listeners and connections (ServeTCP)

	removals removals // released sessions' records being removed

	mu         sync.Mutex // guards the following
	sessions   map[string]*session
	draining   bool
	drainTimer *time.Timer
	socks      []*pubSock // the public sockets
	reg        *registry.RelayRegistration
	subs       map[*subscriber]struct{}
	closed     bool
}

// runPoller runs a data-plane thread (or the netpoll poller) until it
// stops; a variable so that a test can make one fail.
var runPoller = func(p *udpbatch.Poller[*session], h *upstreamHandler) error { return p.Run(h) }

// dataThreads counts the data-plane threads of the relays serving in this
// process.
var dataThreads atomic.Int32

// dropCounters count packets dropped before any session is known.
type dropCounters struct {
	unknownSource   atomic.Uint64 // every packet from an address that is no verified path
	unknownUsername atomic.Uint64 // of which STUN for a USERNAME no session has
	malformed       atomic.Uint64
	unclassified    atomic.Uint64 // from verified paths, not STUN/DTLS/RTP
}

// planeStats are the counters of one data-plane thread (or, on the other
// planes, of all socket loops): written by that thread only, on cache lines
// of their own, so threads never contend for a counter.
type planeStats struct {
	_           cpu.CacheLinePad
	fromClients atomic.Uint64 // datagrams read from the public sockets
	fromOrigins atomic.Uint64 // datagrams read from sessions' sockets toward origins
	drops       dropCounters
	_           cpu.CacheLinePad
}

// dropsOf returns the drop counters of the loop that reads public socket
// ps (nil: a TCP connection).
func (r *Relay) dropsOf(ps *pubSock) *dropCounters {
	if ps != nil && ps.st != nil {
		return &ps.st.drops
	}
	return &r.drops
}

// dropTotals sums the relay's drop counters over its threads.
func (r *Relay) dropTotals() (unknownSource, malformed, unclassified, unknownUsername uint64) {
	add := func(d *dropCounters) {
		unknownSource += d.unknownSource.Load()
		unknownUsername += d.unknownUsername.Load()
		malformed += d.malformed.Load()
		unclassified += d.unclassified.Load()
	}
	add(&r.drops)
	for _, st := range r.stats {
		add(&st.drops)
	}
	return
}

// New validates cfg and returns a relay. It opens no socket.
func New(cfg Config) (*Relay, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := &Relay{
		cfg:      cfg,
		log:      cfg.Logger,
		started:  time.Now(),
		lookups:  make(chan string, 128),
		closing:  make(chan struct{}),
		ready:    make(chan struct{}),
		sessions: map[string]*session{},
		subs:     map[*subscriber]struct{}{},
	}
	if cfg.DataPlane != DataPlaneGoroutines {
		newPoller, n := udpbatch.NewThreadPoller[*session], cfg.DataPlaneThreads
		if cfg.DataPlane == DataPlaneNetpoll {
			newPoller, n = udpbatch.NewPoller[*session], 1
		}
		for range n {
			p, err := newPoller(upstreamBatch, MaxPacketSize+1)
			if err != nil {
				for _, p := range r.pollers {
					_ = p.Close()
				}
				r.pollers = nil
				if !errors.Is(err, udpbatch.ErrPollerUnsupported) {
					cfg.Logger.Warn("relay: poller unavailable, a reader goroutine per socket instead", "err", err)
				}
				break
			}
			r.pollers = append(r.pollers, p)
		}
		r.thread = r.pollers != nil && cfg.DataPlane == DataPlaneThread
	}
	r.stats = []*planeStats{new(planeStats)}
	if r.thread {
		for range len(r.pollers) - 1 {
			r.stats = append(r.stats, new(planeStats))
		}
	}
	r.tcp.init()
	r.removals.init()
	r.metrics = newMetrics(r)
	r.tabs = newTables()
	r.clock.Store(time.Now().UnixNano())
	return r, nil
}

// Serve runs the data plane on the public sockets until ctx ends or Close
// is called, then closes the relay. With a registry it first reloads the
// sessions assigned to this relay's id, then registers the relay and keeps
// its registration fresh. Several conns (SO_REUSEPORT sockets of one port,
// see ListenUDP) each get a reader, or (DataPlaneThread) are dealt out to
// the data-plane threads, which take their descriptors over: the conns are
// closed at once, and the relay closes the descriptors when it closes.
// Conns bound to the same address are one group: its k-th socket goes to
// thread k mod Config.DataPlaneThreads, so give Serve one socket per
// thread and address for every thread to read clients. A thread that has
// none of a group's sockets still sends through one (sendmmsg on a shared
// descriptor is safe) and serves its share of the sessions' sockets.
func (r *Relay) Serve(ctx context.Context, conns ...net.PacketConn) error {
	if len(conns) == 0 {
		return fmt.Errorf("%w: Serve needs at least one socket", ErrInvalid)
	}
	pubs := make([]*net.UDPConn, 0, len(conns))
	for _, c := range conns {
		u, ok := c.(*net.UDPConn)
		if !ok {
			return fmt.Errorf("%w: Serve needs *net.UDPConn sockets, got %T", ErrInvalid, c)
		}
		pubs = append(pubs, u)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if r.socks != nil {
		r.mu.Unlock()
		return errors.New("mediarelay: Serve called twice")
	}
	socks, err := r.openSocks(pubs)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	r.socks = socks
	r.mu.Unlock()

	if r.cfg.Registry != nil {
		r.reload(ctx)
	}
	r.readyOnce.Do(func() { close(r.ready) })
	// Close may have run during the reload: its Wait must not race the
	// goroutines started below, so they are counted under r.mu, after a
	// look at closed.
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	n := 3 + len(r.pollers) // clock, sweep, lookup, the pollers
	if !r.thread {
		n += len(socks)
	}
	if r.cfg.Registry != nil {
		n += 3 // registration, paths, record removals
	}
	r.wg.Add(n)
	r.mu.Unlock()
	if r.thread {
		// Each data-plane thread keeps a P while it waits: leave at least
		// one for everything else (more relays in one process, tests).
		k := int32(len(r.pollers))
		n := int(dataThreads.Add(k))
		defer dataThreads.Add(-k)
		if runtime.GOMAXPROCS(0) < n+1 {
			runtime.GOMAXPROCS(n + 1)
			r.log.Info("relay: GOMAXPROCS raised: each data-plane thread keeps a P of its own", "gomaxprocs", n+1)
		}
		r.log.Info("relay: data plane", "threads", len(r.pollers), "public_sockets", len(socks))
	} else {
		for _, ps := range socks {
			go func() {
				defer r.wg.Done()
				r.readPublic(ps)
			}()
		}
	}
	// A data plane that stops by itself ends Serve with its error: a relay
	// that forwards nothing must not go on looking healthy (restarted with
	// the same id, it resumes its sessions).
	failed := make(chan error, len(r.pollers))
	for i, p := range r.pollers {
		h := r.newUpstreamHandler(i)
		go func() {
			defer r.wg.Done()
			if err := runPoller(p, h); err != nil {
				failed <- fmt.Errorf("mediarelay: data-plane thread %d stopped: %w", i, err)
			}
		}()
	}
	go func() {
		defer r.wg.Done()
		r.clockLoop()
	}()
	go func() {
		defer r.wg.Done()
		r.sweepLoop()
	}()
	go func() {
		defer r.wg.Done()
		r.lookupLoop()
	}()
	if r.cfg.Registry != nil {
		go func() {
			defer r.wg.Done()
			r.registerLoop()
		}()
		go func() {
			defer r.wg.Done()
			r.pathsLoop()
		}()
		go func() {
			defer r.wg.Done()
			r.removalLoop()
		}()
	}
	select {
	case <-ctx.Done():
	case <-r.closing:
	case err := <-failed:
		r.log.Error("relay: data plane stopped; closing", "err", err)
		_ = r.Close()
		return err
	}
	return r.Close()
}

// Close stops the relay: it closes the public sockets, the TCP listeners
// and connections and every session's socket, ends all goroutines
// (ServeTCP returns) and revokes the registration. Session records
// stay in the registry, so a relay started again with the same id reloads
// them; the records of sessions released before, whose removal failed
// and is still pending, get one last attempt (closeRemovalTimeout in all).
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		close(r.closing)
		if r.drainTimer != nil {
			r.drainTimer.Stop()
		}
		socks := r.socks
		sessions := slices.Collect(maps.Values(r.sessions))
		r.sessions = map[string]*session{}
		r.tabs.clearLocked()
		for sub := range r.subs {
			close(sub.ch)
			delete(r.subs, sub)
		}
		r.mu.Unlock()
		for _, ps := range socks {
			if ps.conn != nil {
				_ = ps.conn.Close() // its reader returns
			}
		}
		r.closeTCP() // listeners and connections; their goroutines return
		for _, s := range sessions {
			r.closeSession(s)
		}
		for _, p := range r.pollers {
			_ = p.Close()
		}
		r.wg.Wait()
		for _, ps := range socks {
			if ps.conn == nil {
				_ = udpbatch.CloseFD(ps.fd) // the data-plane thread has returned
			}
		}
		if r.cfg.Registry != nil {
			r.finishRemovals()
		}
		r.mu.Lock()
		reg := r.reg
		r.reg = nil
		r.mu.Unlock()
		if reg != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			if err := reg.Close(ctx); err != nil {
				r.log.Warn("relay: revoking registration failed; it expires with its lease", "err", err)
			}
			cancel()
		}
	})
	return nil
}

// openSocks prepares the public sockets for the data plane; r.mu is held.
func (r *Relay) openSocks(pubs []*net.UDPConn) ([]*pubSock, error) {
	socks := make([]*pubSock, 0, len(pubs))
	var groups [][]*pubSock // the sockets of each local address
	group := func(local netip.AddrPort) int {
		for g, m := range groups {
			if m[0].local == local {
				return g
			}
		}
		groups = append(groups, nil)
		return len(groups) - 1
	}
	for _, pub := range pubs {
		la := pub.LocalAddr().(*net.UDPAddr).AddrPort()
		local := netip.AddrPortFrom(la.Addr().Unmap(), la.Port())
		if !r.thread {
			ps := &pubSock{conn: pub, local: local, st: r.stats[0]}
			ps.group = group(local)
			groups[ps.group] = append(groups[ps.group], ps)
			if r.pollers != nil {
				if w, err := udpbatch.NewWriter(pub, upstreamBatch); err != nil {
					r.log.Warn("relay: batch writes unavailable, writing one datagram at a time", "err", err)
				} else {
					ps.out = &pubWriter{w: w}
				}
			}
			socks = append(socks, ps)
			continue
		}
		// The data-plane threads read and write the descriptors
		// themselves, out of the runtime poller (which would wake for every
		// datagram).
		fd, err := udpbatch.TakeFD(pub)
		if err == nil {
			g := group(local)
			t := len(groups[g]) % len(r.pollers)
			ps := &pubSock{fd: fd, local: local, group: g, thread: t, st: r.stats[t]}
			groups[g] = append(groups[g], ps)
			socks = append(socks, ps)
			err = r.pollers[t].AddSource(fd, r.clientPackets(ps))
		}
		if err != nil {
			for _, ps := range socks {
				_ = udpbatch.CloseFD(ps.fd)
			}
			return nil, fmt.Errorf("mediarelay: public socket for the data-plane threads: %w", err)
		}
	}
	if !r.thread {
		return socks, nil
	}
	// Each thread writes what the origins send to clients through its own
	// socket of the group the client's path arrived on: the same local
	// address and port, so clients see one source, whichever thread sends.
	r.outs = make([][]*pubWriter, len(r.pollers))
	for t := range r.outs {
		r.outs[t] = make([]*pubWriter, len(groups))
		for g, m := range groups {
			w, err := udpbatch.NewWriterFD(m[t%len(m)].fd, upstreamBatch)
			if err != nil {
				for _, ps := range socks {
					_ = udpbatch.CloseFD(ps.fd)
				}
				return nil, fmt.Errorf("mediarelay: public socket for the data-plane threads: %w", err)
			}
			r.outs[t][g] = &pubWriter{w: w}
		}
	}
	for _, m := range groups {
		if len(m) < len(r.pollers) {
			r.log.Warn("relay: fewer public sockets than data-plane threads on an address: only some threads read clients there (open it with ListenUDP and one SO_REUSEPORT socket per thread)",
				"addr", m[0].local, "sockets", len(m), "threads", len(r.pollers))
		}
	}
	return socks, nil
}

// newUpstreamHandler returns the handler of what poller i's session
// sockets receive.
func (r *Relay) newUpstreamHandler(i int) *upstreamHandler {
	h := &upstreamHandler{r: r, sc: newSTUNScratch(), st: r.stats[0]}
	if r.thread {
		h.st, h.outs = r.stats[i], r.outs[i]
	}
	return h
}

// clientPackets returns the data-plane thread's handler of what one public
// socket receives.
func (r *Relay) clientPackets(ps *pubSock) func([]udpbatch.Message) {
	sc := newSTUNScratch()
	return func(msgs []udpbatch.Message) {
		ps.st.fromClients.Add(uint64(len(msgs)))
		for i := range msgs {
			m := &msgs[i]
			if m.N > MaxPacketSize {
				ps.st.drops.malformed.Add(1)
				continue
			}
			r.handleClientPacket(ps, m.Buf[:m.N], m.Addr, sc)
		}
	}
}

// readPublic is the loop of one public socket without the data-plane
// thread. It reads in batches (recvmmsg on Linux) into reused buffers.
func (r *Relay) readPublic(ps *pubSock) {
	pub := ps.conn
	rd, err := udpbatch.NewReader(pub, readBatch, MaxPacketSize+1)
	if err != nil {
		r.log.Warn("relay: batch reads unavailable, reading one datagram at a time", "err", err)
		rd, _ = udpbatch.NewReader(pub, 1, MaxPacketSize+1)
	}
	sc := newSTUNScratch()
	for {
		msgs, err := rd.Read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Debug("relay: public read", "err", err)
			continue
		}
		ps.st.fromClients.Add(uint64(len(msgs)))
		for i := range msgs {
			m := &msgs[i]
			if m.N > MaxPacketSize {
				ps.st.drops.malformed.Add(1)
				continue
			}
			r.handleClientPacket(ps, m.Buf[:m.N], m.Addr, sc)
		}
	}
}

// handleClientPacket acts on decideClientPacket's verdict.
func (r *Relay) handleClientPacket(ps *pubSock, b []byte, src netip.AddrPort, sc *stunScratch) {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	now := r.clock.Load()
	r.act(decideClientPacket(b, src, r.tabs, &sc.in, now), src, ps, nil, b, sc, now)
}

// act carries out decision d on packet b from src, which arrived on public
// socket ps (UDP) or TCP connection tc; sc holds the decoded STUN message,
// when b is STUN.
func (r *Relay) act(d decision, src netip.AddrPort, ps *pubSock, tc *tcpConn, b []byte, sc *stunScratch, now int64) {
	switch d.v {
	case verdictForward:
		d.p.touch(now, b[0] >= 20) // DTLS, RTP, RTCP; not STUN indications
		r.forward(d.s, b)
	case verdictMedia:
		d.p.touch(now, true)
		r.selectPath(d.s, d.p, causeMedia)
		r.forward(d.s, b)
	case verdictCheck:
		r.check(d, src, ps, tc, b, sc, now)
	case verdictResponse:
		d.p.touch(now, false)
		var origin netip.AddrPort
		if up := d.s.up.Load(); up != nil {
			origin = up.origin
		}
		out := sc.toOrigin(&sc.in, b, d.s.creds.Load(), origin)
		if out == nil {
			d.s.dropIntegrity.Add(1)
			return
		}
		r.forward(d.s, out)
	case verdictLookup:
		r.requestLookup(&sc.in, r.dropsOf(ps))
	case verdictDropUnknown:
		r.dropsOf(ps).unknownSource.Add(1)
	case verdictDropMalformed:
		r.dropsOf(ps).malformed.Add(1)
	case verdictDropUnclassified:
		r.dropsOf(ps).unclassified.Add(1)
	case verdictDropIntegrity:
		d.s.dropIntegrity.Add(1)
		r.log.Debug("relay: STUN failed verification", "session", d.s.id, "src", src)
	}
}

// check acts on a verified Binding request: the address (UDP, from public
// socket ps) or the connection (TCP, tc) becomes or stays one of the
// session's paths, a nomination selects it, and the request goes on to the
// origin with the credentials the origin knows.
func (r *Relay) check(d decision, src netip.AddrPort, ps *pubSock, tc *tcpConn, b []byte, sc *stunScratch, now int64) {
	s, p := d.s, d.p
	if p == nil {
		if tc != nil {
			p = r.addTCPPath(s, tc, now)
		} else {
			p = r.addPath(s, src, ps, now)
		}
		if p == nil {
			return
		}
	}
	p.touch(now, false)
	nominated := sc.in.Contains(stun.AttrUseCandidate)
	current := d.creds == s.creds.Load()
	switch sel := s.client.Load(); {
	case sel == nil:
		r.selectPath(s, p, causeFirst)
	case nominated && sel != p:
		cause := causeUseCandidate
		if current && s.restarted.Swap(false) {
			cause = causeRestart
		}
		r.selectPath(s, p, cause)
	case nominated && current:
		s.restarted.Store(false) // the restart kept the selected path
	}
	out := sc.toOrigin(&sc.in, b, d.creds, netip.AddrPort{})
	if out == nil {
		r.dropsOf(ps).malformed.Add(1)
		return
	}
	r.forward(s, out)
}

// forward writes a client packet to the session's origin.
func (r *Relay) forward(s *session, b []byte) {
	// Written only when the coarse clock moved: the line also holds what
	// the thread reading the session's origin socket loads per packet.
	if now := r.clock.Load(); s.lastActive.Load() != now {
		s.lastActive.Store(now)
	}
	up := s.up.Load()
	if up == nil {
		s.dropWrite.Add(1)
		return
	}
	if err := up.write(b); err != nil {
		s.dropWrite.Add(1)
		return
	}
	s.c2oPackets.Add(1)
	s.c2oBytes.Add(uint64(len(b)))
}

// closeSession closes a session's socket and waits for its reader; the
// session must already be out of the tables.
func (r *Relay) closeSession(s *session) {
	s.closed.Store(true)
	if up := s.up.Load(); up != nil {
		up.close()
	}
	r.totals.c2oPackets.Add(s.c2oPackets.Load())
	r.totals.c2oBytes.Add(s.c2oBytes.Load())
	r.totals.o2cPackets.Add(s.o2cPackets.Load())
	r.totals.o2cBytes.Add(s.o2cBytes.Load())
	r.totals.dropIntegrity.Add(s.dropIntegrity.Load())
	r.totals.dropUnbound.Add(s.dropUnbound.Load())
	r.totals.dropWrite.Add(s.dropWrite.Load())
	r.totals.dropForeign.Add(s.dropForeign.Load())
	r.totals.dropOriginSTUN.Add(s.dropOriginSTUN.Load())
}

// newSessionID returns 16 random bytes, base64url.
func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// addSession installs the session with up, its socket toward the origin,
// unless its id or ufrag pair is taken or the relay is closed, full or
// draining (checked when checkAdmission); up is closed then.
func (r *Relay) addSession(s *session, up *upstream, checkAdmission bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.admitLocked(s, checkAdmission); err != nil {
		up.close()
		return err
	}
	s.lastActive.Store(time.Now().UnixNano())
	r.sessions[s.id] = s
	username := s.creds.Load().username
	r.tabs.setUfragLocked(username, s)
	r.startUpstream(s, up)
	return nil
}

func (r *Relay) admitLocked(s *session, checkAdmission bool) error {
	switch {
	case r.closed:
		return ErrClosed
	case checkAdmission && r.draining:
		return ErrDraining
	case checkAdmission && r.cfg.MaxSessions > 0 && len(r.sessions) >= r.cfg.MaxSessions:
		return fmt.Errorf("%w (%d)", ErrFull, r.cfg.MaxSessions)
	case r.sessions[s.id] != nil:
		return fmt.Errorf("%w: id %s", ErrSessionExists, s.id)
	case r.tabs.byUfrag(s.creds.Load().username) != nil:
		return fmt.Errorf("%w: ufrag pair %s", ErrSessionExists, s.creds.Load().username)
	}
	return nil
}

// removeSession takes a session out of the tables; nil if unknown.
func (r *Relay) removeSession(id string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sessions[id]
	if s == nil {
		return nil
	}
	delete(r.sessions, id)
	r.tabs.setUfragLocked(s.creds.Load().username, nil)
	for _, p := range s.pathList() {
		p.removed.Store(true)
		if p.tcp != nil {
			p.tcp.close(tcpCloseSessionEnded)
		} else if r.tabs.byAddr(p.addr) == p {
			r.tabs.setAddrLocked(p.addr, nil)
		}
	}
	s.closed.Store(true)
	return s
}

// lookupSession returns a live session.
func (r *Relay) lookupSession(id string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[id]
}

// sessionCount returns the number of open sessions.
func (r *Relay) sessionCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// idleSessions returns the sessions whose client sent nothing since
// now-IdleTimeout. Time is a parameter so tests need not wait.
func (r *Relay) idleSessions(now time.Time) []*session {
	cutoff := now.Add(-r.cfg.IdleTimeout).UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*session
	for _, s := range r.sessions {
		if s.lastActive.Load() < cutoff {
			out = append(out, s)
		}
	}
	return out
}

// expireIdle releases the sessions idleSessions returns.
func (r *Relay) expireIdle(ctx context.Context, now time.Time) {
	for _, s := range r.idleSessions(now) {
		r.log.Info("relay: session idle, releasing", "session", s.id, "idle_timeout", r.cfg.IdleTimeout)
		_, _ = r.release(ctx, s.id, relayv1.SessionEventType_SESSION_EVENT_TYPE_EXPIRED)
	}
}

// sweepLoop expires idle sessions and refreshes
// the registration's load.
func (r *Relay) sweepLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastLoad time.Time
	for {
		select {
		case <-r.closing:
			return
		case now := <-tick.C:
			// Registry calls below may block for their timeout while etcd
			// is away; the clock goes on in clockLoop meanwhile, so a slow
			// sweep never makes live sessions look idle.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r.expireIdle(ctx, now)
			cancel()
			r.expirePaths(r.clock.Load())
			if now.Sub(lastLoad) >= 5*time.Second {
				lastLoad = now
				r.updateRegistration()
			}
		}
	}
}

// clockLoop advances the coarse clock the data path stamps activity with.
// It does nothing else, so nothing can hold it up.
func (r *Relay) clockLoop() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.closing:
			return
		case now := <-tick.C:
			r.clock.Store(now.UnixNano())
		}
	}
}

// candidates returns the relay's ICE candidates, one per public address,
// component 1, highest priority first (RFC 8445 section 5.1.2.1: host type
// preference 126, local preference falling with the address's rank): the
// UDP ones, then a TCP passive one per public TCP address.
func (r *Relay) candidates() []*relayv1.Candidate {
	return append(Candidates(r.cfg.PublicAddrs), TCPCandidates(r.cfg.PublicTCPAddrs)...)
}

// TCPCandidates returns the ICE-TCP candidates of a relay accepting TCP on
// addrs: host, "tcptype passive" (RFC 6544), component 1. Their priority
// is below every UDP candidate's (RFC 6544 section 4.2: the same type
// preference, 126 for host; local preference 2^13 * direction-pref +
// other-pref, with direction-pref 4 for a passive host candidate and
// other-pref 8191 falling with the address's rank), so a client that can
// reach the relay over UDP uses it.
func TCPCandidates(addrs []netip.AddrPort) []*relayv1.Candidate {
	const passiveHostDirectionPref = 4
	out := make([]*relayv1.Candidate, 0, len(addrs))
	for i, a := range addrs {
		other := uint32(8191 - min(i, 8191))
		out = append(out, &relayv1.Candidate{
			Foundation: tcpFoundation(a.Addr()),
			Component:  1,
			Protocol:   "tcp",
			Priority:   candidatePriority(1<<13*passiveHostDirectionPref+other, 1),
			Address:    a.Addr().String(),
			Port:       uint32(a.Port()),
			Type:       "host",
			TcpType:    "passive",
		})
	}
	return out
}

// Candidates returns the ICE candidates of a relay advertising addrs, as
// AllocateSession returns them; signaling uses it for a relay it moves a
// session to.
func Candidates(addrs []netip.AddrPort) []*relayv1.Candidate {
	out := make([]*relayv1.Candidate, 0, len(addrs))
	for i, a := range addrs {
		out = append(out, &relayv1.Candidate{
			Foundation: foundation(a.Addr()),
			Component:  1,
			Protocol:   "udp",
			Priority:   candidatePriority(65535-uint32(i), 1),
			Address:    a.Addr().String(),
			Port:       uint32(a.Port()),
			Type:       "host",
		})
	}
	return out
}

// candidatePriority is RFC 8445's formula for a host candidate.
func candidatePriority(localPref, component uint32) uint32 {
	return 126<<24 | (localPref&0xffff)<<8 | (256 - component)
}

// foundation is a stable decimal foundation per address (FNV-1a 32).
func foundation(a netip.Addr) string { return fmt.Sprint(fnv1a(2166136261, a.AsSlice())) }

// tcpFoundation is a TCP candidate's foundation: another than the UDP
// candidate's of the same address (RFC 8445 section 5.1.1.3: the transport
// differs).
func tcpFoundation(a netip.Addr) string {
	return fmt.Sprint(fnv1a(fnv1a(2166136261, a.AsSlice()), []byte("tcp")))
}

// fnv1a continues an FNV-1a 32 hash h over b.
func fnv1a(h uint32, b []byte) uint32 {
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

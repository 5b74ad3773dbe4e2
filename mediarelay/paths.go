package mediarelay

import (
	"context"
	"errors"
	"net/netip"
	"time"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// A session's client paths: every address that passed MESSAGE-INTEGRITY,
// and the selected one that downstream goes to (see the package doc for
// the rules).

// moveCause is why a session's selected path changed.
type moveCause uint8

const (
	causeFirst        moveCause = iota // the first verified check: not a move
	causeUseCandidate                  // a verified check nominated another path
	causeMedia                         // media arrived on another path while the selected one had none
	causeRestart                       // the first nomination after an ICE restart
	causeExpired                       // the selected path expired or was evicted
	numCauses
)

var causeNames = [numCauses]string{"first", "use_candidate", "media", "restart", "expired"}

func (c moveCause) String() string { return causeNames[c] }

// selectPath makes p the session's selected path: what the origin sends
// goes there from now on.
func (r *Relay) selectPath(s *session, p *path, cause moveCause) {
	r.mu.Lock()
	if s.closed.Load() || p.removed.Load() || p.tcp == nil && r.tabs.byAddr(p.addr) != p {
		r.mu.Unlock() // the path was removed meanwhile
		return
	}
	old := s.client.Load()
	if old == p {
		r.mu.Unlock()
		return
	}
	s.client.Store(p)
	s.pathsDirty.Store(true)
	typ := relayv1.SessionEventType_SESSION_EVENT_TYPE_CONNECTED
	if old == nil {
		s.connectTime.CompareAndSwap(0, time.Now().UnixNano())
	} else {
		s.addressChanges.Add(1)
		r.moves[cause].Add(1)
		typ = relayv1.SessionEventType_SESSION_EVENT_TYPE_ADDRESS_CHANGED
	}
	r.mu.Unlock()
	r.log.Debug("relay: selected client path", "session", s.id, "addr", p.addr, "cause", cause.String())
	r.emit(typ, s)
}

// addPath makes src, where a verified check from came from on public
// socket ps, one of the session's paths. At MaxPaths the least recently
// active path other than the selected one makes room. nil: the session is
// closed.
func (r *Relay) addPath(s *session, src netip.AddrPort, ps *pubSock, now int64) *path {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.closed.Load() {
		return nil
	}
	if prev := r.tabs.byAddr(src); prev != nil {
		if prev.s == s {
			return prev // another reader added it meanwhile
		}
		// The address moved to another session (a client reusing a
		// port): the previous one no longer has a client there.
		r.removePathLocked(prev)
	}
	p := &path{s: s, addr: src, sock: ps, verified: time.Now().UnixNano()}
	n := r.appendPathLocked(s, p, now)
	r.tabs.setAddrLocked(src, p)
	s.pathsDirty.Store(true)
	r.log.Debug("relay: client path verified", "session", s.id, "addr", src, "paths", n)
	return p
}

// addTCPPath makes TCP connection tc, on which a verified check arrived,
// one of the session's paths, under the same cap as UDP paths. TCP paths
// are not in the address table (a UDP datagram from the connection's
// address proves nothing) and not written to the registry (a connection
// does not survive a restart of the relay). nil: the session or the
// connection is closed.
func (r *Relay) addTCPPath(s *session, tc *tcpConn, now int64) *path {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.closed.Load() || tc.isClosed() {
		return nil
	}
	if p := tc.path.Load(); p != nil {
		return p
	}
	p := &path{s: s, addr: tc.remote, tcp: tc, verified: time.Now().UnixNano()}
	n := r.appendPathLocked(s, p, now)
	tc.path.Store(p)
	r.log.Debug("relay: client path verified", "session", s.id, "addr", tc.remote, "transport", "tcp", "paths", n)
	return p
}

// appendPathLocked adds p to its session's paths, active at now; at
// MaxPaths the least recently active path other than the selected one
// makes room. It returns the number of paths.
func (r *Relay) appendPathLocked(s *session, p *path, now int64) int {
	paths := s.pathList()
	if len(paths) >= MaxPaths {
		sel := s.client.Load()
		var victim *path
		for _, q := range paths {
			if q != sel && (victim == nil || q.lastSeen.Load() < victim.lastSeen.Load()) {
				victim = q
			}
		}
		r.removePathLocked(victim)
		paths = s.pathList()
	}
	p.lastSeen.Store(now)
	next := append(make([]*path, 0, len(paths)+1), paths...)
	next = append(next, p)
	s.paths.Store(&next)
	return len(next)
}

// removePathLocked drops path p from its session and the address table (a
// TCP path's connection is closed). If it was the selected path, the most
// recently active remaining one is selected (or none).
func (r *Relay) removePathLocked(p *path) {
	s := p.s
	p.removed.Store(true)
	if p.tcp != nil {
		p.tcp.close(tcpClosePathRemoved)
	} else if r.tabs.byAddr(p.addr) == p {
		r.tabs.setAddrLocked(p.addr, nil)
	}
	paths := s.pathList()
	next := make([]*path, 0, len(paths))
	var freshest *path
	for _, q := range paths {
		if q == p {
			continue
		}
		next = append(next, q)
		if freshest == nil || q.lastSeen.Load() > freshest.lastSeen.Load() {
			freshest = q
		}
	}
	s.paths.Store(&next)
	s.pathsDirty.Store(true)
	if s.client.Load() == p {
		s.client.Store(freshest)
		if freshest != nil {
			s.addressChanges.Add(1)
			r.moves[causeExpired].Add(1)
		}
	}
}

// expirePaths drops the paths that carried nothing since now-PathIdleTimeout
// (coarse unix nanos), of every session; the sessions stay. Time is a
// parameter so tests need not wait.
func (r *Relay) expirePaths(now int64) {
	cutoff := now - int64(PathIdleTimeout)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sessions {
		for _, p := range s.pathList() {
			if p.lastSeen.Load() < cutoff {
				r.removePathLocked(p)
				r.log.Debug("relay: client path expired", "session", s.id, "addr", p.addr)
			}
		}
	}
}

// restorePaths installs the client paths of a session's registry record
// (a relay restarted with the same id): media from them is forwarded at
// once, with or without consent checks, and downstream goes to the one
// that was selected. Each path counts as active now and expires like any
// other if nothing arrives on it.
func (r *Relay) restorePaths(s *session, recs []registry.ClientPath) {
	now := r.clock.Load()
	for _, rec := range recs {
		addr, err := netip.ParseAddrPort(rec.Addr)
		if err != nil {
			continue
		}
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
		ps := r.pubSockFor(rec.Via, addr)
		if ps == nil {
			continue
		}
		p := r.addPath(s, addr, ps, now)
		if p == nil {
			return
		}
		if rec.Selected {
			r.selectPath(s, p, causeFirst)
		}
	}
	s.pathsDirty.Store(false) // the registry has them
}

// pubSockFor returns the public socket whose local address is via, or else
// the first of client's address family.
func (r *Relay) pubSockFor(via string, client netip.AddrPort) *pubSock {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, err := netip.ParseAddrPort(via); err == nil {
		for _, ps := range r.socks {
			if ps.local == v {
				return ps
			}
		}
	}
	for _, ps := range r.socks {
		if ps.local.Addr().Is4() == client.Addr().Is4() || ps.local.Addr().IsUnspecified() && ps.local.Addr().Is6() {
			return ps
		}
	}
	return nil
}

// pathRecords renders the session's UDP paths for the registry. TCP paths
// are left out: a TCP connection ends with the relay process, and the
// client reconnects (ICE-TCP) or moves to a UDP path by itself.
func pathRecords(s *session) []registry.ClientPath {
	sel := s.client.Load()
	paths := s.pathList()
	out := make([]registry.ClientPath, 0, len(paths))
	for _, p := range paths {
		if p.tcp != nil {
			continue
		}
		rec := registry.ClientPath{Addr: p.addr.String(), Selected: p == sel}
		if p.sock.local.IsValid() {
			rec.Via = p.sock.local.String()
		}
		out = append(out, rec)
	}
	return out
}

// pathsLoop writes the client paths of the sessions whose paths changed to
// the registry, at most once a second per session, off the forwarding path.
func (r *Relay) pathsLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.closing:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		var dirty []*session
		for _, s := range r.sessions {
			if s.pathsDirty.Swap(false) {
				dirty = append(dirty, s)
			}
		}
		r.mu.Unlock()
		for _, s := range dirty {
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Registry.RequestTimeout())
			err := r.cfg.Registry.NoteClientPaths(ctx, s.id, r.cfg.RelayID, pathRecords(s))
			cancel()
			switch {
			case err == nil, errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrConflict):
			default:
				s.pathsDirty.Store(true) // etcd is away: try again later
				r.log.Debug("relay: recording client paths failed", "session", s.id, "err", err)
			}
			select {
			case <-r.closing:
				return
			default:
			}
		}
	}
}

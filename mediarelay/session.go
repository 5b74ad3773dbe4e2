package mediarelay

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"golang.org/x/sys/cpu"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// credentials are a session's ICE credentials; replaced whole on restart.
//
// The client's side (client, server) is what the client uses: its checks
// carry USERNAME "<server-ufrag>:<client-ufrag>" signed with the server
// pwd. The origin's side (origin, originClient) is what the origin
// negotiated. They are the same until the edge answers an ICE restart
// itself; from then on the relay translates USERNAME and re-signs every
// check and response that crosses it (translate).
type credentials struct {
	clientUfrag, clientPwd             string // the client's own
	serverUfrag, serverPwd             string // what the client uses for the server side
	originUfrag, originPwd             string // the origin's own
	originClientUfrag, originClientPwd string // the client's, as the origin knows them

	username       string // "<server-ufrag>:<client-ufrag>": the client's checks
	originUsername string // "<origin-ufrag>:<origin-client-ufrag>": checks forwarded to the origin
	clientUsername string // "<client-ufrag>:<server-ufrag>": the origin's checks as the client expects them
	translate      bool
	// priorityBoost is added to the PRIORITY of the client's checks
	// forwarded to the origin: the session's moves to another relay
	// (registry.Session.Moves), so that the origin selects the path through
	// this relay over the one through the relay it left.
	priorityBoost uint32

	// The USERNAMEs a rewrite puts in, as bytes (no conversion per packet).
	originUsernameB, clientUsernameB []byte

	integrity             stun.MessageIntegrity // server pwd: client checks, responses to the client
	originIntegrity       stun.MessageIntegrity // origin pwd: checks to the origin, its responses
	clientIntegrity       stun.MessageIntegrity // client pwd: the origin's checks toward the client, the client's responses
	originClientIntegrity stun.MessageIntegrity // origin-client pwd: the origin's checks as sent, responses to them
}

// newCredentials returns credentials without translation: the client uses
// the origin's credentials and the origin knows the client's.
func newCredentials(clientUfrag, clientPwd, originUfrag, originPwd string) *credentials {
	return newTranslatedCredentials(clientUfrag, clientPwd, originUfrag, originPwd, originUfrag, originPwd, clientUfrag, clientPwd)
}

// newTranslatedCredentials returns credentials whose client side (client,
// server) may differ from the origin side (origin, origin client).
func newTranslatedCredentials(clientUfrag, clientPwd, serverUfrag, serverPwd,
	originUfrag, originPwd, originClientUfrag, originClientPwd string) *credentials {
	return &credentials{
		clientUfrag: clientUfrag, clientPwd: clientPwd,
		serverUfrag: serverUfrag, serverPwd: serverPwd,
		originUfrag: originUfrag, originPwd: originPwd,
		originClientUfrag: originClientUfrag, originClientPwd: originClientPwd,
		username:        serverUfrag + ":" + clientUfrag,
		originUsername:  originUfrag + ":" + originClientUfrag,
		clientUsername:  clientUfrag + ":" + serverUfrag,
		originUsernameB: []byte(originUfrag + ":" + originClientUfrag),
		clientUsernameB: []byte(clientUfrag + ":" + serverUfrag),
		translate: serverUfrag != originUfrag || serverPwd != originPwd ||
			clientUfrag != originClientUfrag || clientPwd != originClientPwd,
		integrity:             stun.NewShortTermIntegrity(serverPwd),
		originIntegrity:       stun.NewShortTermIntegrity(originPwd),
		clientIntegrity:       stun.NewShortTermIntegrity(clientPwd),
		originClientIntegrity: stun.NewShortTermIntegrity(originClientPwd),
	}
}

// credentialsFrom returns a registry record's credentials.
func credentialsFrom(rs registry.Session) *credentials {
	srv, oc := rs.Server(), rs.OriginClient()
	c := newTranslatedCredentials(rs.ClientICE.Ufrag, rs.ClientICE.Pwd, srv.Ufrag, srv.Pwd,
		rs.OriginICE.Ufrag, rs.OriginICE.Pwd, oc.Ufrag, oc.Pwd)
	c.priorityBoost = rs.Moves
	return c
}

// counters are a session's traffic counters. With several data-plane
// threads, client-to-origin ones are written by the thread that reads the
// client and origin-to-client ones by the thread that reads the session's
// origin socket, often another: they sit on cache lines of their own.
type counters struct {
	_                    cpu.CacheLinePad
	c2oPackets, c2oBytes atomic.Uint64
	_                    cpu.CacheLinePad
	o2cPackets, o2cBytes atomic.Uint64
	_                    cpu.CacheLinePad
	dropIntegrity        atomic.Uint64
	dropUnbound          atomic.Uint64
	dropWrite            atomic.Uint64
	dropForeign          atomic.Uint64
	dropOriginSTUN       atomic.Uint64 // origin STUN that did not verify (not rewritten)
	addressChanges       atomic.Uint64
}

// path is one verified client address of a session: a STUN Binding
// request from it passed MESSAGE-INTEGRITY. Packets from any path of a
// session are forwarded to its origin; downstream goes to the selected one
// (session.client) only.
type path struct {
	s        *session
	addr     netip.AddrPort // the client's address (for TCP, the connection's remote address)
	sock     *pubSock       // UDP: the public socket it arrived on; replies leave from it
	tcp      *tcpConn       // TCP: the connection; nil for UDP
	verified int64          // unix nanos of its first verified check

	removed atomic.Bool // no longer a path of its session (set under Relay.mu)

	lastSeen  atomic.Int64 // coarse clock of the last packet forwarded from it
	lastMedia atomic.Int64 // coarse clock of its last DTLS, RTP or RTCP
}

// transport is "tcp" for an ICE-TCP path, else "udp".
func (p *path) transport() string {
	if p.tcp != nil {
		return "tcp"
	}
	return "udp"
}

// touch records activity on p at coarse time now; media says the packet
// was DTLS, RTP or RTCP. It writes only when the value changes, so the
// cache line stays shared between packets of one clock tick.
func (p *path) touch(now int64, media bool) {
	if p.lastSeen.Load() != now {
		p.lastSeen.Store(now)
	}
	if media && p.lastMedia.Load() != now {
		p.lastMedia.Store(now)
	}
}

// txSlots is how many Binding transactions a session remembers: enough for
// the checks in flight on every path (a few per path, at most MaxPaths).
const txSlots = 32

// transaction is a verified Binding request a client sent through the
// relay: where the origin's response goes, and with which credentials.
type transaction struct {
	id    [stun.TransactionIDSize]byte
	from  netip.AddrPort
	via   *tcpConn // the TCP connection it came on; nil for UDP
	creds *credentials
}

// session is one relayed session.
type session struct {
	id         string
	stream     string
	direction  relayv1.Direction
	originID   string
	labels     map[string]string
	originAddr []netip.AddrPort
	created    time.Time

	creds       atomic.Pointer[credentials]
	prevCreds   atomic.Pointer[credentials] // before the last restart: known paths may still check with them
	client      atomic.Pointer[path]        // the selected path; nil before the first verified check
	paths       atomic.Pointer[[]*path]     // every verified path, selected included; replaced whole under Relay.mu
	up          atomic.Pointer[upstream]
	lastActive  atomic.Int64 // unix nanos of the relay's coarse clock
	connectTime atomic.Int64 // unix nanos; 0 before the first binding
	closed      atomic.Bool
	restarted   atomic.Bool // a restart's credentials have not selected a path yet
	pathsDirty  atomic.Bool // the paths changed since the registry last had them
	counters
	rates rateMeter // the API's current rates from counters

	txMu sync.Mutex // guards the following
	txs  [txSlots]transaction
	txN  int
}

// credsFor returns the credentials whose client USERNAME is user: the
// current ones, or those before the last restart (a path verified before
// it may go on checking with them until the client selects a new one).
func (s *session) credsFor(user []byte) *credentials {
	if c := s.creds.Load(); c.username == string(user) {
		return c
	}
	if c := s.prevCreds.Load(); c != nil && c.username == string(user) {
		return c
	}
	return nil
}

// rememberTransaction records a verified Binding transaction from src (on
// TCP connection via; nil for UDP) and reports whether it may be
// forwarded: a new one, or a retransmission from the address and
// connection that sent it first. The same transaction from another address
// or connection is a replay and proves nothing.
func (s *session) rememberTransaction(id [stun.TransactionIDSize]byte, src netip.AddrPort, via *tcpConn, c *credentials) bool {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	for i := range min(s.txN, len(s.txs)) {
		if s.txs[i].id == id {
			return s.txs[i].from == src && s.txs[i].via == via
		}
	}
	s.txs[s.txN%len(s.txs)] = transaction{id: id, from: src, via: via, creds: c}
	s.txN++
	return true
}

// transaction returns the client address, TCP connection (nil for UDP) and
// credentials of a Binding transaction the relay forwarded to the origin.
func (s *session) transaction(id [stun.TransactionIDSize]byte) (netip.AddrPort, *tcpConn, *credentials, bool) {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	for i := range min(s.txN, len(s.txs)) {
		if s.txs[i].id == id {
			return s.txs[i].from, s.txs[i].via, s.txs[i].creds, true
		}
	}
	return netip.AddrPort{}, nil, nil, false
}

// pathList returns the session's verified paths (do not modify).
func (s *session) pathList() []*path {
	if p := s.paths.Load(); p != nil {
		return *p
	}
	return nil
}

// snapshot renders the session for the API.
func (s *session) snapshot(relayID string, state relayv1.SessionState) *relayv1.Session {
	c := s.creds.Load()
	rt := s.rates.observe(time.Now(), s.created, &s.counters)
	out := &relayv1.Session{
		Id:             s.id,
		Stream:         s.stream,
		Direction:      s.direction,
		State:          state,
		ClientUfrag:    c.clientUfrag,
		OriginUfrag:    c.originUfrag,
		ServerUfrag:    c.serverUfrag,
		RelayId:        relayID,
		OriginId:       s.originID,
		Labels:         s.labels,
		CreateTime:     timestamp(s.created),
		AddressChanges: s.addressChanges.Load(),
		ClientToOrigin: &relayv1.TrafficCounters{Packets: s.c2oPackets.Load(), Bytes: s.c2oBytes.Load(),
			PacketsPerSecond: rt.c2oPPS, BitsPerSecond: rt.c2oBPS},
		OriginToClient: &relayv1.TrafficCounters{Packets: s.o2cPackets.Load(), Bytes: s.o2cBytes.Load(),
			PacketsPerSecond: rt.o2cPPS, BitsPerSecond: rt.o2cBPS},
		Drops: &relayv1.DropCounters{
			StunIntegrity: s.dropIntegrity.Load(),
			UnboundSource: s.dropUnbound.Load(),
			WriteErrors:   s.dropWrite.Load(),
			ForeignSource: s.dropForeign.Load(),
		},
	}
	if up := s.up.Load(); up != nil {
		out.OriginAddress = up.origin.String()
		out.RelayAddress = up.local.String()
	}
	sel := s.client.Load()
	if sel != nil {
		out.ClientAddress = sel.addr.String()
	}
	for _, p := range s.pathList() {
		cp := &relayv1.ClientPath{Address: p.addr.String(), Transport: p.transport(), Selected: p == sel,
			VerifyTime: timestamp(time.Unix(0, p.verified))}
		if t := p.lastSeen.Load(); t != 0 {
			cp.LastActivityTime = timestamp(time.Unix(0, t))
		}
		out.ClientPaths = append(out.ClientPaths, cp)
	}
	if t := s.connectTime.Load(); t != 0 {
		out.ConnectTime = timestamp(time.Unix(0, t))
	}
	if t := s.lastActive.Load(); t != 0 {
		out.LastActivityTime = timestamp(time.Unix(0, t))
	}
	if state == relayv1.SessionState_SESSION_STATE_UNSPECIFIED {
		out.State = s.state()
	}
	return out
}

func (s *session) state() relayv1.SessionState {
	switch {
	case s.closed.Load():
		return relayv1.SessionState_SESSION_STATE_CLOSED
	case s.client.Load() != nil:
		return relayv1.SessionState_SESSION_STATE_CONNECTED
	}
	return relayv1.SessionState_SESSION_STATE_ALLOCATED
}

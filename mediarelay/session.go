package mediarelay

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// credentials are a session's ICE credentials; replaced whole on restart.
type credentials struct {
	clientUfrag, clientPwd string
	originUfrag, originPwd string
	username               string // "<origin-ufrag>:<client-ufrag>"
	integrity              stun.MessageIntegrity
}

func newCredentials(clientUfrag, clientPwd, originUfrag, originPwd string) *credentials {
	return &credentials{
		clientUfrag: clientUfrag, clientPwd: clientPwd,
		originUfrag: originUfrag, originPwd: originPwd,
		username:  originUfrag + ":" + clientUfrag,
		integrity: stun.NewShortTermIntegrity(originPwd),
	}
}

// counters are a session's traffic counters.
type counters struct {
	c2oPackets, c2oBytes atomic.Uint64
	o2cPackets, o2cBytes atomic.Uint64
	dropIntegrity        atomic.Uint64
	dropUnbound          atomic.Uint64
	dropWrite            atomic.Uint64
	dropForeign          atomic.Uint64
	addressChanges       atomic.Uint64
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
	client      atomic.Pointer[binding]
	up          atomic.Pointer[upstream]
	lastActive  atomic.Int64 // unix nanos of the relay's coarse clock
	connectTime atomic.Int64 // unix nanos; 0 before the first binding
	closed      atomic.Bool
	counters

	txMu sync.Mutex // guards the following
	txs  [8][stun.TransactionIDSize]byte
	txN  int
}

// rememberTransaction records a verified Binding transaction and reports
// whether it is new. A transaction seen before is a retransmission or a
// replay: it is accepted only from the address already bound.
func (s *session) rememberTransaction(id [stun.TransactionIDSize]byte) bool {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	for i := range min(s.txN, len(s.txs)) {
		if s.txs[i] == id {
			return false
		}
	}
	s.txs[s.txN%len(s.txs)] = id
	s.txN++
	return true
}

// snapshot renders the session for the API.
func (s *session) snapshot(relayID string, state relayv1.SessionState) *relayv1.Session {
	c := s.creds.Load()
	out := &relayv1.Session{
		Id:             s.id,
		Stream:         s.stream,
		Direction:      s.direction,
		State:          state,
		ClientUfrag:    c.clientUfrag,
		OriginUfrag:    c.originUfrag,
		RelayId:        relayID,
		OriginId:       s.originID,
		Labels:         s.labels,
		CreateTime:     timestamp(s.created),
		AddressChanges: s.addressChanges.Load(),
		ClientToOrigin: &relayv1.TrafficCounters{Packets: s.c2oPackets.Load(), Bytes: s.c2oBytes.Load()},
		OriginToClient: &relayv1.TrafficCounters{Packets: s.o2cPackets.Load(), Bytes: s.o2cBytes.Load()},
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
	if b := s.client.Load(); b != nil {
		out.ClientAddress = b.addr.String()
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

package mediarelay

import (
	"net/netip"
	"time"

	"github.com/pion/stun/v2"
)

// verdict is what the relay does with one packet from the public port.
type verdict uint8

const (
	// verdictForward: from a verified path; forward to its origin as it is.
	verdictForward verdict = iota
	// verdictMedia: DTLS, RTP or RTCP from a verified path other than the
	// selected one while the selected one carries no media: the client
	// switched paths without nominating; select this one, then forward.
	verdictMedia
	// verdictCheck: a Binding request whose MESSAGE-INTEGRITY verifies,
	// from a verified path or a new address (which becomes a path): record
	// its transaction, select its path if it nominates (USE-CANDIDATE), and
	// forward it (translated when the credentials are).
	verdictCheck
	// verdictResponse: a STUN response from a verified path (the client
	// answering the origin's check): forward it, re-signed when the
	// credentials are translated.
	verdictResponse
	// verdictLookup: a Binding request for a USERNAME no session has: the
	// registry may know it.
	verdictLookup
	// verdictDropUnknown: not STUN, from an address that is no verified
	// path.
	verdictDropUnknown
	// verdictDropMalformed: looked like STUN but did not parse, or a STUN
	// from an unknown address that is not a Binding request carrying
	// USERNAME.
	verdictDropMalformed
	// verdictDropIntegrity: a Binding request for a known session whose
	// MESSAGE-INTEGRITY or FINGERPRINT did not verify, or a replay of a
	// transaction the session already saw from another address.
	verdictDropIntegrity
	// verdictDropUnclassified: from a verified path, but neither STUN, DTLS
	// nor RTP/RTCP by its first byte (RFC 7983): nothing a WebRTC origin
	// expects, so it is not forwarded.
	verdictDropUnclassified
)

// mediaSwitchAfter is how long the selected path must have carried no
// media before media on another verified path selects that one.
const mediaSwitchAfter = time.Second

// decision is decideClientPacket's result: the verdict and what it
// concerns.
type decision struct {
	v     verdict
	s     *session     // the session, when known
	p     *path        // the verified path the packet came from; nil for a new address
	creds *credentials // verdictCheck: the credentials the check verified with
}

// packetClass is a packet's protocol by its first byte (RFC 7983 section 7).
type packetClass uint8

const (
	classOther packetClass = iota
	classSTUN              // 0-3
	classDTLS              // 20-63
	classRTP               // 128-191: RTP and RTCP
)

// classify demultiplexes b by its first byte as RFC 7983 does.
func classify(b []byte) packetClass {
	if len(b) == 0 {
		return classOther
	}
	switch c := b[0]; {
	case c <= 3:
		return classSTUN
	case c >= 20 && c <= 63:
		return classDTLS
	case c >= 128 && c <= 191:
		return classRTP
	}
	return classOther
}

// Sizes of STUN fields used in the checks below (RFC 8489).
const (
	stunHeaderSize    = 20
	integritySize     = 20
	maxUsernameLength = 513 // two 256-byte ufrags and ":"
)

// decideClientPacket decides what to do with packet b that arrived from src
// on the public port at coarse time now. It is a pure function of its
// inputs apart from the session's transaction memory; msg is scratch space
// reused across calls (it holds the decoded STUN message afterwards).
func decideClientPacket(b []byte, src netip.AddrPort, t *tables, msg *stun.Message, now int64) decision {
	class := classify(b)
	if p := t.byAddr(src); p != nil {
		return decideOnPath(b, class, p, msg, now)
	}
	return decideNewSource(b, class, src, nil, t, msg)
}

// decideTCPFrame is decideClientPacket for frame b from TCP connection
// tc: the connection is a path once a Binding request on it verified, and
// until then only such a request is of use. The same rules as for UDP,
// with the connection, not its address, as the path's identity.
func decideTCPFrame(b []byte, tc *tcpConn, t *tables, msg *stun.Message, now int64) decision {
	class := classify(b)
	if p := tc.path.Load(); p != nil {
		if p.removed.Load() {
			return decision{v: verdictDropUnknown} // the connection is closing
		}
		return decideOnPath(b, class, p, msg, now)
	}
	return decideNewSource(b, class, tc.remote, tc, t, msg)
}

// decideOnPath decides on a packet of class from verified path p.
func decideOnPath(b []byte, class packetClass, p *path, msg *stun.Message, now int64) decision {
	s := p.s
	switch class {
	case classOther:
		return decision{v: verdictDropUnclassified, s: s, p: p}
	case classSTUN:
		return decideFromPath(b, p.addr, p, msg)
	}
	if sel := s.client.Load(); sel != p && (sel == nil || now-sel.lastMedia.Load() >= int64(mediaSwitchAfter)) {
		return decision{v: verdictMedia, s: s, p: p}
	}
	return decision{v: verdictForward, s: s, p: p}
}

// decideNewSource decides on a packet of class from src, which is no
// verified path (via: the TCP connection it came on; nil for UDP). Only a
// Binding request that verifies is of use.
func decideNewSource(b []byte, class packetClass, src netip.AddrPort, via *tcpConn, t *tables, msg *stun.Message) decision {
	if class != classSTUN {
		return decision{v: verdictDropUnknown}
	}
	if !decodeSTUN(b, msg) || msg.Type != stun.BindingRequest {
		return decision{v: verdictDropMalformed}
	}
	user, err := msg.Get(stun.AttrUsername)
	if err != nil || len(user) == 0 || len(user) > maxUsernameLength {
		return decision{v: verdictDropMalformed}
	}
	s := t.byUsername(user)
	if s == nil {
		return decision{v: verdictLookup}
	}
	c := s.creds.Load()
	if !s.verifyBinding(msg, c, src, via) {
		return decision{v: verdictDropIntegrity, s: s}
	}
	return decision{v: verdictCheck, s: s, creds: c}
}

// decideFromPath decides on a STUN packet from verified path p.
func decideFromPath(b []byte, src netip.AddrPort, p *path, msg *stun.Message) decision {
	s := p.s
	if !decodeSTUN(b, msg) {
		return decision{v: verdictDropMalformed, s: s, p: p}
	}
	switch msg.Type.Class {
	case stun.ClassRequest:
		if msg.Type.Method != stun.MethodBinding {
			return decision{v: verdictForward, s: s, p: p}
		}
		user, err := msg.Get(stun.AttrUsername)
		if err != nil {
			return decision{v: verdictDropIntegrity, s: s, p: p}
		}
		c := s.credsFor(user)
		if c == nil || !s.verifyBinding(msg, c, src, p.tcp) {
			return decision{v: verdictDropIntegrity, s: s, p: p}
		}
		return decision{v: verdictCheck, s: s, p: p, creds: c}
	case stun.ClassSuccessResponse, stun.ClassErrorResponse:
		return decision{v: verdictResponse, s: s, p: p}
	}
	return decision{v: verdictForward, s: s, p: p} // indications
}

// decodeSTUN decodes b into msg, which then refers to b.
func decodeSTUN(b []byte, msg *stun.Message) bool {
	if !stun.IsMessage(b) {
		return false // first byte of STUN, but no magic cookie or too short
	}
	msg.Raw = b
	return msg.Decode() == nil
}

// verifyBinding checks a decoded Binding request from src (on TCP
// connection via; nil for UDP) against credentials c: MESSAGE-INTEGRITY
// must be present and verify with the server pwd, FINGERPRINT must verify
// when present, and the transaction must not be one the session already
// accepted from another address or connection (a replay).
func (s *session) verifyBinding(msg *stun.Message, c *credentials, src netip.AddrPort, via *tcpConn) bool {
	mi, err := msg.Get(stun.AttrMessageIntegrity)
	if err != nil || len(mi) != integritySize {
		return false
	}
	if err := c.integrity.Check(msg); err != nil {
		return false
	}
	if _, err := msg.Get(stun.AttrFingerprint); err == nil {
		if err := stun.Fingerprint.Check(msg); err != nil {
			return false
		}
	}
	return s.rememberTransaction(msg.TransactionID, src, via, c)
}

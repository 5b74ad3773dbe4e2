package mediarelay

import (
	"net/netip"

	"github.com/pion/stun/v2"
)

// verdict is what the relay does with one packet from the public port.
type verdict uint8

const (
	// verdictForward: from a bound client address; forward to its origin.
	verdictForward verdict = iota
	// verdictBind: a verified Binding request from a new address: bind the
	// session to it, then forward.
	verdictBind
	// verdictLookup: a Binding request for a USERNAME no session has: the
	// registry may know it.
	verdictLookup
	// verdictDropUnknown: not STUN, from an address bound to no session.
	verdictDropUnknown
	// verdictDropMalformed: looked like STUN but did not parse, or a STUN
	// that is not a Binding request carrying USERNAME and
	// MESSAGE-INTEGRITY.
	verdictDropMalformed
	// verdictDropIntegrity: a Binding request for a known session whose
	// MESSAGE-INTEGRITY or FINGERPRINT did not verify, or a replay of a
	// transaction the session already saw from another address.
	verdictDropIntegrity
	// verdictDropUnclassified: from a bound address, but neither STUN, DTLS
	// nor RTP/RTCP by its first byte (RFC 7983): nothing a WebRTC origin
	// expects, so it is not forwarded.
	verdictDropUnclassified
)

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
// on the public port. It is a pure function of its inputs apart from the
// session's transaction-id memory; msg is scratch space reused across calls.
// It returns the session the verdict concerns, if any.
func decideClientPacket(b []byte, src netip.AddrPort, t *tables, msg *stun.Message) (verdict, *session) {
	class := classify(b)
	if s := t.byAddr(src); s != nil {
		switch class {
		case classOther:
			return verdictDropUnclassified, s
		case classSTUN:
			if isBindingRequest(b) {
				// Remember the bound client's own transactions, so a copy
				// replayed from another address is refused.
				s.rememberTransaction([stun.TransactionIDSize]byte(b[8:stunHeaderSize]))
			}
		}
		return verdictForward, s
	}
	if class != classSTUN {
		return verdictDropUnknown, nil
	}
	if !stun.IsMessage(b) {
		// First byte of a STUN message, but no magic cookie or too short.
		return verdictDropMalformed, nil
	}
	msg.Raw = b
	if err := msg.Decode(); err != nil {
		return verdictDropMalformed, nil
	}
	if msg.Type != stun.BindingRequest {
		return verdictDropMalformed, nil
	}
	user, err := msg.Get(stun.AttrUsername)
	if err != nil || len(user) == 0 || len(user) > maxUsernameLength {
		return verdictDropMalformed, nil
	}
	s := t.byUsername(user)
	if s == nil {
		return verdictLookup, nil
	}
	if !s.verifyBinding(msg) {
		return verdictDropIntegrity, s
	}
	return verdictBind, s
}

// isBindingRequest reports whether b is a STUN Binding request, from its
// header alone.
func isBindingRequest(b []byte) bool {
	return stun.IsMessage(b) && b[0] == 0x00 && b[1] == 0x01
}

// verifyBinding checks a decoded Binding request against the session's
// current origin ice-pwd: MESSAGE-INTEGRITY must be present and verify,
// FINGERPRINT must verify when present, and the transaction must not be one
// the session already accepted (a replay from another address).
func (s *session) verifyBinding(msg *stun.Message) bool {
	mi, err := msg.Get(stun.AttrMessageIntegrity)
	if err != nil || len(mi) != integritySize {
		return false
	}
	c := s.creds.Load()
	if err := c.integrity.Check(msg); err != nil {
		return false
	}
	if _, err := msg.Get(stun.AttrFingerprint); err == nil {
		if err := stun.Fingerprint.Check(msg); err != nil {
			return false
		}
	}
	return s.rememberTransaction(msg.TransactionID)
}

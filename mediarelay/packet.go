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
)

// Sizes of STUN fields used in the checks below (RFC 8489).
const (
	stunHeaderSize    = 20
	integritySize     = 20
	maxUsernameLength = 513 // two 256-byte ufrags and ":"
)

// tables are the relay's lookup tables. They are immutable once published:
// writers copy them (see Relay.publishLocked), so the socket loops read
// them without locks.
type tables struct {
	byAddr  map[netip.AddrPort]*session
	byUfrag map[string]*session // by STUN USERNAME "<origin-ufrag>:<client-ufrag>"
}

// decideClientPacket decides what to do with packet b that arrived from src
// on the public port. It is a pure function of its inputs apart from the
// session's transaction-id memory; msg is scratch space reused across calls.
// It returns the session the verdict concerns, if any.
func decideClientPacket(b []byte, src netip.AddrPort, t *tables, msg *stun.Message) (verdict, *session) {
	if s := t.byAddr[src]; s != nil {
		if isBindingRequest(b) {
			// Remember the bound client's own transactions, so a copy
			// replayed from another address is refused.
			s.rememberTransaction([stun.TransactionIDSize]byte(b[8:stunHeaderSize]))
		}
		return verdictForward, s
	}
	if !stun.IsMessage(b) {
		return verdictDropUnknown, nil
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
	s := t.byUfrag[string(user)]
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

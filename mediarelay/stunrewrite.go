package mediarelay

import (
	"encoding/binary"
	"math"
	"net"
	"net/netip"

	"github.com/pion/stun/v2"
)

// attrMessageIntegritySHA256 is RFC 8489's MESSAGE-INTEGRITY-SHA256, which
// ICE does not use; a rewritten message leaves it out rather than carry a
// value that no longer verifies.
const attrMessageIntegritySHA256 stun.AttrType = 0x001C

// stunScratch is the space one socket loop rewrites STUN messages in: the
// decoded input and the re-encoded output, both reused, so rewriting
// allocates nothing.
type stunScratch struct {
	in   stun.Message
	out  stun.Message
	ip   [net.IPv6len]byte
	prio [4]byte
}

func newSTUNScratch() *stunScratch {
	sc := &stunScratch{}
	sc.out.Raw = make([]byte, 0, 2*MaxPacketSize)
	sc.out.Attributes = make(stun.Attributes, 0, 32)
	sc.in.Attributes = make(stun.Attributes, 0, 32)
	return sc
}

// rewrite re-encodes the decoded msg into the scratch output: USERNAME
// becomes username when it is not nil, XOR-MAPPED-ADDRESS becomes mapped
// when it is valid, MESSAGE-INTEGRITY is computed anew with key and
// FINGERPRINT after it. Attributes after MESSAGE-INTEGRITY other than
// FINGERPRINT are left out (RFC 8489 section 14.5: receivers ignore them).
// A PRIORITY attribute is raised by boost (saturating).
// The result is valid until the next call.
func (sc *stunScratch) rewrite(msg *stun.Message, username []byte, mapped netip.AddrPort, key stun.MessageIntegrity, boost uint32) []byte {
	o := &sc.out
	o.Reset()
	o.Type = msg.Type
	o.TransactionID = msg.TransactionID
	o.WriteHeader()
attrs:
	for _, a := range msg.Attributes {
		switch a.Type {
		case stun.AttrMessageIntegrity, attrMessageIntegritySHA256:
			break attrs
		case stun.AttrFingerprint:
			continue
		case stun.AttrUsername:
			if username != nil {
				o.Add(stun.AttrUsername, username)
				continue
			}
		case stun.AttrXORMappedAddress:
			if mapped.IsValid() {
				sc.addXORMapped(mapped)
				continue
			}
		case stun.AttrPriority:
			if boost > 0 && len(a.Value) == len(sc.prio) {
				p := binary.BigEndian.Uint32(a.Value)
				binary.BigEndian.PutUint32(sc.prio[:], p+min(boost, math.MaxUint32-p))
				o.Add(stun.AttrPriority, sc.prio[:])
				continue
			}
		}
		o.Add(a.Type, a.Value)
	}
	if err := key.AddTo(o); err != nil {
		return nil
	}
	if err := stun.Fingerprint.AddTo(o); err != nil {
		return nil
	}
	return o.Raw
}

// addXORMapped adds XOR-MAPPED-ADDRESS a to the output.
func (sc *stunScratch) addXORMapped(a netip.AddrPort) {
	ip := a.Addr().Unmap()
	var b []byte
	if ip.Is4() {
		v4 := ip.As4()
		b = sc.ip[:net.IPv4len]
		copy(b, v4[:])
	} else {
		sc.ip = ip.As16()
		b = sc.ip[:]
	}
	_ = stun.XORMappedAddress{IP: b, Port: int(a.Port())}.AddTo(&sc.out)
}

// verifies reports whether the decoded msg carries MESSAGE-INTEGRITY that
// verifies with key, and a FINGERPRINT that verifies when it has one.
func verifies(msg *stun.Message, key stun.MessageIntegrity) bool {
	if mi, err := msg.Get(stun.AttrMessageIntegrity); err != nil || len(mi) != integritySize {
		return false
	}
	if key.Check(msg) != nil {
		return false
	}
	if _, err := msg.Get(stun.AttrFingerprint); err == nil {
		return stun.Fingerprint.Check(msg) == nil
	}
	return true
}

// toOrigin returns what the relay sends the origin for the decoded STUN
// message msg (raw bytes b) from the client, with credentials c: b itself
// when nothing is translated or raised; otherwise the message re-encoded
// in sc. A request gets the USERNAME and key the origin knows and its
// PRIORITY raised by c.priorityBoost; a response (to the
// origin's check) is verified with the client's key, its
// XOR-MAPPED-ADDRESS set to origin (the origin's address as the relay saw
// it) and re-signed with the key the origin's request used. nil: drop.
func (sc *stunScratch) toOrigin(msg *stun.Message, b []byte, c *credentials, origin netip.AddrPort) []byte {
	if !c.translate {
		if c.priorityBoost > 0 && msg.Type.Class == stun.ClassRequest {
			// The client signed it with the origin's pwd (nothing is
			// translated): re-signed with it after the raise.
			return sc.rewrite(msg, nil, netip.AddrPort{}, c.originIntegrity, c.priorityBoost)
		}
		return b
	}
	switch msg.Type.Class {
	case stun.ClassRequest:
		return sc.rewrite(msg, c.originUsernameB, netip.AddrPort{}, c.originIntegrity, c.priorityBoost)
	case stun.ClassSuccessResponse, stun.ClassErrorResponse:
		if !verifies(msg, c.clientIntegrity) {
			return nil
		}
		return sc.rewrite(msg, nil, origin, c.originClientIntegrity, 0)
	}
	return b
}

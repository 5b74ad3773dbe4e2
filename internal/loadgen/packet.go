//go:build linux

package loadgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/pion/stun/v2"
)

// Packet layout: a 12-byte RTP header (version 2, payload type 96, the
// sequence number, an RTP timestamp and SSRC = session index), then the
// 64-bit sequence number and the send time in monotonic nanoseconds, both
// big-endian, then zeros up to the packet size.
const (
	rtpHeaderSize  = 12
	payloadType    = 96
	minPacketSize  = rtpHeaderSize + 16
	maxPacketSize  = 1472 // one Ethernet MTU of UDP payload
	defaultSize    = 1200
	rtpClockPerSec = 90000
)

// putPacket stamps packet b (already sized, zero beyond the stamped bytes)
// for session idx with sequence seq sent at sendNs.
func putPacket(b []byte, idx uint32, seq uint64, sendNs int64) {
	b[0] = 0x80
	b[1] = payloadType
	binary.BigEndian.PutUint16(b[2:4], uint16(seq))
	binary.BigEndian.PutUint32(b[4:8], uint32(sendNs/1000*rtpClockPerSec/1000000))
	binary.BigEndian.PutUint32(b[8:12], idx)
	binary.BigEndian.PutUint64(b[12:20], seq)
	binary.BigEndian.PutUint64(b[20:28], uint64(sendNs))
}

// parsePacket reads back what putPacket stamped; ok is false for anything
// else (STUN, a truncated packet).
func parsePacket(b []byte) (idx uint32, seq uint64, sendNs int64, ok bool) {
	if len(b) < minPacketSize || b[0] != 0x80 || b[1]&0x7f != payloadType {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(b[8:12]), binary.BigEndian.Uint64(b[12:20]),
		int64(binary.BigEndian.Uint64(b[20:28])), true
}

// bindingRequest builds a client's ICE connectivity check: a STUN Binding
// request with USERNAME "<originUfrag>:<clientUfrag>", MESSAGE-INTEGRITY
// keyed by the origin's pwd and FINGERPRINT.
func bindingRequest(originUfrag, clientUfrag, originPwd string) (*stun.Message, error) {
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest,
		stun.NewUsername(originUfrag+":"+clientUfrag),
		stun.NewShortTermIntegrity(originPwd), stun.Fingerprint)
	if err != nil {
		return nil, fmt.Errorf("loadgen: building a binding request: %w", err)
	}
	return m, nil
}

// checkBindingSuccess verifies that b is a Binding success response to
// transaction tx whose MESSAGE-INTEGRITY verifies with pwd, and returns
// its XOR-MAPPED-ADDRESS.
func checkBindingSuccess(b []byte, tx [stun.TransactionIDSize]byte, pwd string) (netip.AddrPort, error) {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return netip.AddrPort{}, fmt.Errorf("loadgen: decoding a STUN response: %w", err)
	}
	if m.Type != stun.BindingSuccess {
		return netip.AddrPort{}, fmt.Errorf("loadgen: STUN %s, want a binding success", m.Type)
	}
	if m.TransactionID != tx {
		return netip.AddrPort{}, errors.New("loadgen: STUN response to another transaction")
	}
	if err := stun.NewShortTermIntegrity(pwd).Check(m); err != nil {
		return netip.AddrPort{}, fmt.Errorf("loadgen: STUN response integrity: %w", err)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		return netip.AddrPort{}, fmt.Errorf("loadgen: STUN response fingerprint: %w", err)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		return netip.AddrPort{}, fmt.Errorf("loadgen: STUN response: %w", err)
	}
	a, _ := netip.AddrFromSlice(xa.IP)
	return netip.AddrPortFrom(a.Unmap(), uint16(xa.Port)), nil
}

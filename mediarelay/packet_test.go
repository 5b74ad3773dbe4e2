package mediarelay

import (
	"net/netip"
	"testing"

	"github.com/pion/stun/v2"
)

func testTables(t testing.TB) (*tables, *session, netip.AddrPort) {
	t.Helper()
	s := &session{id: "s1"}
	s.creds.Store(newCredentials("cliu", "clientpasswordclientpw", "orgu", "originpasswordoriginpw"))
	bound := netip.MustParseAddrPort("127.0.0.1:5000")
	tabs := newTables()
	tabs.setAddrLocked(bound, s)
	tabs.setUfragLocked("orgu:cliu", s)
	return tabs, s, bound
}

func build(t testing.TB, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func TestDecideClientPacket(t *testing.T) {
	tabs, _, bound := testTables(t)
	other := netip.MustParseAddrPort("127.0.0.1:6000")
	srsCrash := append([]byte{0x00, 0x01, 0x00, 0x05, 0x21, 0x12, 0xa4, 0x42},
		append([]byte("123456789012"), 0x00, 0x06, 0x00, 0x01, 0x78)...)
	tests := []struct {
		name string
		pkt  []byte
		src  netip.AddrPort
		want verdict
	}{
		{name: "rtp from bound address", pkt: []byte{0x80, 96, 0, 1}, src: bound, want: verdictForward},
		{name: "rtcp from bound address", pkt: []byte{0x81, 200, 0, 6}, src: bound, want: verdictForward},
		{name: "dtls from bound address", pkt: []byte{22, 0xfe, 0xfd, 0}, src: bound, want: verdictForward},
		{name: "stun from bound address", pkt: build(t, stun.BindingRequest), src: bound, want: verdictForward},
		{name: "unclassified from bound address", pkt: []byte{64, 0, 0, 0}, src: bound, want: verdictDropUnclassified},
		{name: "zrtp range from bound address", pkt: []byte{16, 0, 0, 0}, src: bound, want: verdictDropUnclassified},
		{name: "empty from bound address", pkt: []byte{}, src: bound, want: verdictDropUnclassified},
		{name: "stun first byte without cookie", pkt: make([]byte, 40), src: other, want: verdictDropMalformed},
		{name: "short stun", pkt: []byte{0, 1, 0, 0}, src: other, want: verdictDropMalformed},
		{name: "rtp from unknown address", pkt: []byte{0x80, 96, 0, 1}, src: other, want: verdictDropUnknown},
		{name: "dtls from unknown address", pkt: []byte{22, 0xfe, 0xfd, 0}, src: other, want: verdictDropUnknown},
		{name: "empty", pkt: nil, src: other, want: verdictDropUnknown},
		{name: "srs crash packet", pkt: srsCrash, src: other, want: verdictDropMalformed},
		{name: "binding response", pkt: build(t, stun.BindingSuccess), src: other, want: verdictDropMalformed},
		{name: "no username", pkt: build(t, stun.BindingRequest, stun.NewShortTermIntegrity("originpasswordoriginpw")), src: other, want: verdictDropMalformed},
		{name: "unknown username", pkt: build(t, stun.BindingRequest, stun.NewUsername("nobody:here"), stun.NewShortTermIntegrity("x")), src: other, want: verdictLookup},
		{name: "wrong password", pkt: build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("wrongpasswordwrongpass"), stun.Fingerprint), src: other, want: verdictDropIntegrity},
		{name: "no integrity", pkt: build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu")), src: other, want: verdictDropIntegrity},
		{name: "verified without fingerprint", pkt: build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("originpasswordoriginpw")), src: other, want: verdictBind},
		{name: "verified with fingerprint", pkt: build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("originpasswordoriginpw"), stun.Fingerprint), src: other, want: verdictBind},
	}
	var msg stun.Message
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := decideClientPacket(tc.pkt, tc.src, tabs, &msg); got != tc.want {
				t.Errorf("verdict %d, want %d", got, tc.want)
			}
		})
	}
}

func TestReplayFromAnotherAddressRefused(t *testing.T) {
	tabs, _, bound := testTables(t)
	req := build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("originpasswordoriginpw"), stun.Fingerprint)
	var msg stun.Message
	// The bound client sends it (a consent check) ...
	if v, _ := decideClientPacket(req, bound, tabs, &msg); v != verdictForward {
		t.Fatalf("from bound address: %d", v)
	}
	// ... and a copy from elsewhere is refused.
	if v, _ := decideClientPacket(req, netip.MustParseAddrPort("127.0.0.1:7000"), tabs, &msg); v != verdictDropIntegrity {
		t.Fatalf("replay: verdict %d, want drop", v)
	}
}

// TestForwardPathAllocations pins the hot path at zero allocations: a media
// packet from a bound client is decided and forwarded without allocating.
func TestForwardPathAllocations(t *testing.T) {
	tabs, _, bound := testTables(t)
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	var msg stun.Message
	allocs := testing.AllocsPerRun(1000, func() {
		if v, s := decideClientPacket(pkt, bound, tabs, &msg); v != verdictForward || s == nil {
			t.Fatal("not forwarded")
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per packet, want 0", allocs)
	}
}

func FuzzDecideClientPacket(f *testing.F) {
	tabs, _, bound := testTables(f)
	f.Add([]byte{0x00, 0x01, 0x00, 0x05, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x00, 0x06, 0x00, 0x01, 0x78}, false)
	f.Add(build(f, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("originpasswordoriginpw"), stun.Fingerprint), false)
	f.Add(build(f, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("originpasswordoriginpw")), true)
	f.Add([]byte{0x80, 96, 0, 1, 0, 0, 0, 0}, true)
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0, 0}, false)
	other := netip.MustParseAddrPort("127.0.0.1:6000")
	f.Fuzz(func(t *testing.T, pkt []byte, fromBound bool) {
		src := other
		if fromBound {
			src = bound
		}
		var msg stun.Message
		before := append([]byte(nil), pkt...)
		v, s := decideClientPacket(pkt, src, tabs, &msg)
		if v == verdictBind && s == nil {
			t.Fatal("bind without a session")
		}
		if string(before) != string(pkt) {
			t.Fatal("the decision modified the packet")
		}
	})
}

func BenchmarkDecideForward(b *testing.B) {
	tabs, _, bound := testTables(b)
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	var msg stun.Message
	b.ReportAllocs()
	for b.Loop() {
		decideClientPacket(pkt, bound, tabs, &msg)
	}
}

func BenchmarkDecideVerifiedBinding(b *testing.B) {
	tabs, s, _ := testTables(b)
	other := netip.MustParseAddrPort("127.0.0.1:6000")
	var msg stun.Message
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = build(b, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("originpasswordoriginpw"), stun.Fingerprint)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.txMu.Lock()
		s.txN = 0
		s.txMu.Unlock()
		decideClientPacket(pkts[i%len(pkts)], other, tabs, &msg)
		i++
	}
}

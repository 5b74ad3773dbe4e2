package mediarelay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"
)

const (
	testOriginPwd = "originpasswordoriginpw"
	testClientPwd = "clientpasswordclientpw"
)

// bind makes src a verified path of s and selects it, as a verified check
// with USE-CANDIDATE from src would.
func (r *Relay) bind(s *session, src netip.AddrPort, ps *pubSock) *path {
	p := r.addPath(s, src, ps, r.clock.Load())
	if p != nil {
		r.selectPath(s, p, causeUseCandidate)
	}
	return p
}

// testTables returns tables with one session ("orgu:cliu") whose selected
// path is bound.
func testTables(t testing.TB) (*tables, *session, netip.AddrPort) {
	t.Helper()
	s := &session{id: "s1"}
	s.creds.Store(newCredentials("cliu", testClientPwd, "orgu", testOriginPwd))
	bound := netip.MustParseAddrPort("127.0.0.1:5000")
	tabs := newTables()
	p := &path{s: s, addr: bound}
	s.paths.Store(&[]*path{p})
	s.client.Store(p)
	tabs.setAddrLocked(bound, p)
	tabs.setUfragLocked("orgu:cliu", s)
	return tabs, s, bound
}

// useCandidate is the USE-CANDIDATE attribute (RFC 8445 section 7.1.2):
// the controlling agent nominates the pair.
type useCandidate struct{}

func (useCandidate) AddTo(m *stun.Message) error {
	m.Add(stun.AttrUseCandidate, nil)
	return nil
}

func build(t testing.TB, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// check is a client's connectivity check on the session of testTables.
func check(t testing.TB, extra ...stun.Setter) []byte {
	t.Helper()
	setters := append([]stun.Setter{stun.BindingRequest, stun.NewUsername("orgu:cliu")}, extra...)
	return build(t, append(setters, stun.NewShortTermIntegrity(testOriginPwd), stun.Fingerprint)...)
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
		{name: "verified check from bound address", pkt: check(t), src: bound, want: verdictCheck},
		{name: "unverified check from bound address", pkt: build(t, stun.BindingRequest), src: bound, want: verdictDropIntegrity},
		{name: "binding response from bound address", pkt: build(t, stun.BindingSuccess), src: bound, want: verdictResponse},
		{name: "binding indication from bound address", pkt: build(t, stun.NewType(stun.MethodBinding, stun.ClassIndication)), src: bound, want: verdictForward},
		{name: "malformed stun from bound address", pkt: []byte{0, 1, 0, 0}, src: bound, want: verdictDropMalformed},
		{name: "unclassified from bound address", pkt: []byte{64, 0, 0, 0}, src: bound, want: verdictDropUnclassified},
		{name: "zrtp range from bound address", pkt: []byte{16, 0, 0, 0}, src: bound, want: verdictDropUnclassified},
		{name: "empty from bound address", pkt: []byte{}, src: bound, want: verdictDropUnclassified},
		{name: "stun first byte without cookie", pkt: make([]byte, 40), src: other, want: verdictDropMalformed},
		{name: "short stun", pkt: []byte{0, 1, 0, 0}, src: other, want: verdictDropMalformed},
		{name: "rtp from unknown address", pkt: []byte{0x80, 96, 0, 1}, src: other, want: verdictDropUnknown},
		{name: "dtls from unknown address", pkt: []byte{22, 0xfe, 0xfd, 0}, src: other, want: verdictDropUnknown},
		{name: "empty", pkt: nil, src: other, want: verdictDropUnknown},
		{name: "srs crash packet", pkt: srsCrash, src: other, want: verdictDropMalformed},
		{name: "binding response from unknown address", pkt: build(t, stun.BindingSuccess), src: other, want: verdictDropMalformed},
		{name: "no username", pkt: build(t, stun.BindingRequest, stun.NewShortTermIntegrity(testOriginPwd)), src: other, want: verdictDropMalformed},
		{name: "unknown username", pkt: build(t, stun.BindingRequest, stun.NewUsername("nobody:here"), stun.NewShortTermIntegrity("x")), src: other, want: verdictLookup},
		{name: "wrong password", pkt: build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("wrongpasswordwrongpass"), stun.Fingerprint), src: other, want: verdictDropIntegrity},
		{name: "no integrity", pkt: build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu")), src: other, want: verdictDropIntegrity},
		{name: "verified without fingerprint", pkt: build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity(testOriginPwd)), src: other, want: verdictCheck},
		{name: "verified with fingerprint", pkt: check(t), src: other, want: verdictCheck},
	}
	var msg stun.Message
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := decideClientPacket(tc.pkt, tc.src, tabs, &msg, 0); got.v != tc.want {
				t.Errorf("verdict %d, want %d", got.v, tc.want)
			}
		})
	}
}

func TestReplayFromAnotherAddressRefused(t *testing.T) {
	tabs, _, bound := testTables(t)
	req := check(t)
	var msg stun.Message
	// The bound client sends it (a consent check), and retransmits it ...
	for range 2 {
		if d := decideClientPacket(req, bound, tabs, &msg, 0); d.v != verdictCheck {
			t.Fatalf("from bound address: %d", d.v)
		}
	}
	// ... and a copy from elsewhere is refused.
	if d := decideClientPacket(req, netip.MustParseAddrPort("127.0.0.1:7000"), tabs, &msg, 0); d.v != verdictDropIntegrity {
		t.Fatalf("replay: verdict %d, want drop", d.v)
	}
}

// testRelayPaths is a relay without sockets holding one session, for the
// path rules: the handlers run on it as the socket loops would run them.
func testRelayPaths(t *testing.T) (*Relay, *session, *pubSock) {
	t.Helper()
	r, err := New(Config{PublicAddrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8000")}, DataPlane: DataPlaneGoroutines})
	if err != nil {
		t.Fatal(err)
	}
	s := &session{id: "s1"}
	s.creds.Store(newCredentials("cliu", testClientPwd, "orgu", testOriginPwd))
	r.mu.Lock()
	r.sessions[s.id] = s
	r.tabs.setUfragLocked("orgu:cliu", s)
	r.mu.Unlock()
	return r, s, &pubSock{}
}

// TestSelectedPathRules drives the client-side handler through the
// sequences real clients send and checks which path downstream goes to.
func TestSelectedPathRules(t *testing.T) {
	a := netip.MustParseAddrPort("10.77.0.1:40000")
	b := netip.MustParseAddrPort("10.77.0.2:40001")
	lo := netip.MustParseAddrPort("127.0.0.1:40002")
	attacker := netip.MustParseAddrPort("127.0.0.1:6666")
	rtp := []byte{0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}
	dtls := []byte{22, 0xfe, 0xfd, 0, 0, 0}
	type step struct {
		src     netip.AddrPort
		pkt     func(t *testing.T) []byte
		advance time.Duration // the coarse clock moves by this before the packet
	}
	plain := func(t *testing.T) []byte { return check(t) }
	nominate := func(t *testing.T) []byte { return check(t, useCandidate{}) }
	rtpPkt := func(*testing.T) []byte { return rtp }
	dtlsPkt := func(*testing.T) []byte { return dtls }
	tests := []struct {
		name      string
		steps     []step
		want      netip.AddrPort // the selected path at the end
		wantPaths int
		wantMoves map[moveCause]uint64
		wantDrops uint64 // unknown-source drops
	}{
		{name: "first verified check selects", steps: []step{{src: a, pkt: plain}}, want: a, wantPaths: 1},
		{name: "backup check does not move", steps: []step{
			{src: a, pkt: nominate}, {src: a, pkt: rtpPkt}, {src: b, pkt: plain}, {src: lo, pkt: plain}, {src: a, pkt: rtpPkt},
		}, want: a, wantPaths: 3},
		{name: "use-candidate from another path moves", steps: []step{
			{src: a, pkt: nominate}, {src: b, pkt: plain}, {src: b, pkt: nominate},
		}, want: b, wantPaths: 2, wantMoves: map[moveCause]uint64{causeUseCandidate: 1}},
		{name: "renomination of the selected path does not move", steps: []step{
			{src: a, pkt: nominate}, {src: a, pkt: nominate}, {src: a, pkt: nominate},
		}, want: a, wantPaths: 1},
		{name: "media on a backup path while the selected one carries media does not move", steps: []step{
			{src: a, pkt: nominate}, {src: a, pkt: rtpPkt}, {src: b, pkt: plain}, {src: b, pkt: rtpPkt},
		}, want: a, wantPaths: 2},
		{name: "media latches once the selected path went silent", steps: []step{
			{src: a, pkt: nominate}, {src: a, pkt: rtpPkt}, {src: b, pkt: plain},
			{src: b, pkt: dtlsPkt, advance: 2 * mediaSwitchAfter},
		}, want: b, wantPaths: 2, wantMoves: map[moveCause]uint64{causeMedia: 1}},
		{name: "media on a verified path when the selected one never carried any", steps: []step{
			{src: a, pkt: nominate}, {src: b, pkt: nominate}, {src: a, pkt: rtpPkt, advance: 2 * mediaSwitchAfter},
		}, want: a, wantPaths: 2, wantMoves: map[moveCause]uint64{causeUseCandidate: 1, causeMedia: 1}},
		{name: "unverified address forwards nothing and moves nothing", steps: []step{
			{src: a, pkt: nominate}, {src: attacker, pkt: rtpPkt}, {src: attacker, pkt: dtlsPkt},
		}, want: a, wantPaths: 1, wantDrops: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, s, ps := testRelayPaths(t)
			sc := newSTUNScratch()
			now := time.Now().UnixNano()
			for _, st := range tc.steps {
				now += int64(st.advance)
				r.clock.Store(now)
				pkt := st.pkt(t)
				r.handleClientPacket(ps, pkt, st.src, sc)
			}
			if sel := s.client.Load(); sel == nil || sel.addr != tc.want {
				t.Fatalf("selected %v, want %v", sel, tc.want)
			}
			if n := len(s.pathList()); n != tc.wantPaths {
				t.Errorf("%d paths, want %d", n, tc.wantPaths)
			}
			for c := range numCauses {
				if got := r.moves[c].Load(); got != tc.wantMoves[c] {
					t.Errorf("moves %s: %d, want %d", c, got, tc.wantMoves[c])
				}
			}
			if got := r.drops.unknownSource.Load(); got != tc.wantDrops {
				t.Errorf("unknown-source drops %d, want %d", got, tc.wantDrops)
			}
		})
	}
}

// TestReplayedCheckFromUnverifiedAddress: a verified check captured and
// replayed from another address neither adds a path nor moves the
// selected one, and nothing from that address is forwarded.
func TestReplayedCheckFromUnverifiedAddress(t *testing.T) {
	r, s, ps := testRelayPaths(t)
	sc := newSTUNScratch()
	client := netip.MustParseAddrPort("10.77.0.1:40000")
	attacker := netip.MustParseAddrPort("127.0.0.1:6666")
	req := check(t, useCandidate{})
	r.handleClientPacket(ps, req, client, sc)
	r.handleClientPacket(ps, req, attacker, sc)
	r.handleClientPacket(ps, []byte{0x80, 96, 0, 1}, attacker, sc)
	if sel := s.client.Load(); sel == nil || sel.addr != client || len(s.pathList()) != 1 {
		t.Fatalf("selected %v with %d paths, want %v alone", sel, len(s.pathList()), client)
	}
	if s.dropIntegrity.Load() != 1 || r.drops.unknownSource.Load() != 1 {
		t.Fatalf("integrity drops %d, unknown-source drops %d; want 1 and 1", s.dropIntegrity.Load(), r.drops.unknownSource.Load())
	}
}

// TestPathCapAndExpiry: verified checks from ever new ports keep the set at
// MaxPaths without evicting the selected path, and a path that carries
// nothing for PathIdleTimeout expires while the session stays.
func TestPathCapAndExpiry(t *testing.T) {
	r, s, ps := testRelayPaths(t)
	sc := newSTUNScratch()
	now := time.Now().UnixNano()
	r.clock.Store(now)
	selected := netip.MustParseAddrPort("10.77.0.1:40000")
	r.handleClientPacket(ps, check(t, useCandidate{}), selected, sc)
	for i := range 1000 {
		src := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.2"), uint16(20000+i))
		r.handleClientPacket(ps, check(t), src, sc)
		if n := len(s.pathList()); n > MaxPaths {
			t.Fatalf("after %d checks: %d paths, cap %d", i+1, n, MaxPaths)
		}
	}
	if sel := s.client.Load(); sel == nil || sel.addr != selected {
		t.Fatalf("the flood moved the selected path to %v", sel)
	}
	if n := len(s.pathList()); n != MaxPaths {
		t.Fatalf("%d paths, want the cap %d", n, MaxPaths)
	}
	// The selected path carries media; the others go quiet and expire.
	later := now + int64(PathIdleTimeout) + int64(time.Second)
	r.clock.Store(later)
	r.handleClientPacket(ps, []byte{0x80, 96, 0, 1}, selected, sc)
	r.expirePaths(later)
	if paths := s.pathList(); len(paths) != 1 || paths[0].addr != selected {
		t.Fatalf("after expiry: %d paths, want the selected one alone", len(paths))
	}
	if r.lookupSession(s.id) == nil {
		t.Fatal("the session ended with its idle paths")
	}
	// The selected path expires too when it goes quiet: no path, no target.
	r.expirePaths(later + 2*int64(PathIdleTimeout))
	if len(s.pathList()) != 0 || s.client.Load() != nil {
		t.Fatalf("after the last path expired: %d paths, selected %v", len(s.pathList()), s.client.Load())
	}
}

// TestForwardPathAllocations pins the hot path at zero allocations: a media
// packet from a verified path is decided without allocating.
func TestForwardPathAllocations(t *testing.T) {
	tabs, _, bound := testTables(t)
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	var msg stun.Message
	allocs := testing.AllocsPerRun(1000, func() {
		if d := decideClientPacket(pkt, bound, tabs, &msg, 0); d.v != verdictForward || d.s == nil {
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
	f.Add(check(f), false)
	f.Add(build(f, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity(testOriginPwd)), true)
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
		d := decideClientPacket(pkt, src, tabs, &msg, 0)
		if d.v == verdictCheck && (d.s == nil || d.creds == nil) {
			t.Fatal("a check without a session or credentials")
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
		decideClientPacket(pkt, bound, tabs, &msg, 0)
	}
}

func BenchmarkDecideVerifiedBinding(b *testing.B) {
	tabs, s, _ := testTables(b)
	other := netip.MustParseAddrPort("127.0.0.1:6000")
	var msg stun.Message
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = check(b)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.txMu.Lock()
		s.txN = 0
		s.txMu.Unlock()
		decideClientPacket(pkts[i%len(pkts)], other, tabs, &msg, 0)
		i++
	}
}

// BenchmarkVerifiedCheckFlood is a flood of verified checks, each from a
// new source port, on one session: every one adds a path and evicts the
// least recently active one (the set stays at MaxPaths). The cost per
// check is in docs/PERFORMANCE.md.
func BenchmarkVerifiedCheckFlood(b *testing.B) {
	r, err := New(Config{PublicAddrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8000")}, DataPlane: DataPlaneGoroutines})
	if err != nil {
		b.Fatal(err)
	}
	s := &session{id: "s1"}
	s.creds.Store(newCredentials("cliu", testClientPwd, "orgu", testOriginPwd))
	r.sessions[s.id] = s
	r.tabs.setUfragLocked("orgu:cliu", s)
	ps := &pubSock{}
	sc := newSTUNScratch()
	pkts := make([][]byte, txSlots*2)
	for i := range pkts {
		pkts[i] = check(b)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		src := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.2"), uint16(1024+i%60000))
		r.handleClientPacket(ps, pkts[i%len(pkts)], src, sc)
		i++
	}
	if n := len(s.pathList()); n > MaxPaths {
		b.Fatalf("%d paths", n)
	}
}

// BenchmarkOriginResponseRewrite is the origin's answer to a client check:
// verified with the origin's key, XOR-MAPPED-ADDRESS set to the client's
// path, re-signed and FINGERPRINTed, in place.
func BenchmarkOriginResponseRewrite(b *testing.B) {
	r, err := New(Config{PublicAddrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8000")}, DataPlane: DataPlaneGoroutines})
	if err != nil {
		b.Fatal(err)
	}
	s := &session{id: "s1"}
	s.creds.Store(newCredentials("cliu", testClientPwd, "orgu", testOriginPwd))
	r.sessions[s.id] = s
	r.tabs.setUfragLocked("orgu:cliu", s)
	sc := newSTUNScratch()
	client := netip.MustParseAddrPort("10.77.0.1:40000")
	req := check(b, useCandidate{})
	r.handleClientPacket(&pubSock{}, req, client, sc)
	sel := s.client.Load()
	if sel == nil {
		b.Fatal("the check selected no path")
	}
	resp := stun.MustBuild(stun.NewTransactionIDSetter([stun.TransactionIDSize]byte(req[8:20])), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: []byte{127, 0, 0, 1}, Port: 9}, stun.NewShortTermIntegrity(testOriginPwd), stun.Fingerprint)
	buf := make([]byte, MaxPacketSize+1)
	b.ReportAllocs()
	for b.Loop() {
		n := copy(buf, resp.Raw)
		if to, _ := r.fromOrigin(s, sel, buf, n, sc); to != sel {
			b.Fatal("dropped")
		}
	}
}

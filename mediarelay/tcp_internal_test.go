package mediarelay

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"
)

// testTCPConn is a connection from remote as the relay's reader sees it,
// over an in-memory pipe (the decisions and path rules need no socket).
func testTCPConn(t testing.TB, r *Relay, remote string) *tcpConn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return &tcpConn{r: r, conn: a, remote: netip.MustParseAddrPort(remote), out: make(chan *tcpFrame, 4), done: make(chan struct{})}
}

// TestDecideTCPFrame: the per-frame decision for TCP is the UDP one with
// the connection as the path's identity: a new connection is of use only
// through a verified check, and a transaction seen on another connection
// or over UDP, even from the same address, is a replay.
func TestDecideTCPFrame(t *testing.T) {
	tabs, s, bound := testTables(t)
	r, err := New(Config{PublicAddrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8000")}, DataPlane: DataPlaneGoroutines})
	if err != nil {
		t.Fatal(err)
	}
	rtp := []byte{0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}
	var msg stun.Message
	// A check first seen over UDP from the bound address, and one first
	// seen on connection seen.
	udpSeen := check(t)
	if d := decideClientPacket(udpSeen, bound, tabs, &msg, 0); d.v != verdictCheck {
		t.Fatalf("the UDP check: verdict %d", d.v)
	}
	seen := testTCPConn(t, r, "127.0.0.1:7000")
	tcpSeen := check(t)
	if d := decideTCPFrame(tcpSeen, seen, tabs, &msg, 0); d.v != verdictCheck {
		t.Fatalf("the TCP check: verdict %d", d.v)
	}
	verified := testTCPConn(t, r, "127.0.0.1:7001")
	verifiedPath := &path{s: s, addr: verified.remote, tcp: verified}
	verified.path.Store(verifiedPath)
	removed := testTCPConn(t, r, "127.0.0.1:7002")
	removedPath := &path{s: s, addr: removed.remote, tcp: removed}
	removedPath.removed.Store(true)
	removed.path.Store(removedPath)
	tests := []struct {
		name string
		tc   *tcpConn
		pkt  []byte
		want verdict
	}{
		{name: "new connection: verified check", tc: testTCPConn(t, r, "127.0.0.1:7100"), pkt: check(t, useCandidate{}), want: verdictCheck},
		{name: "new connection: wrong key", tc: testTCPConn(t, r, "127.0.0.1:7101"),
			pkt: build(t, stun.BindingRequest, stun.NewUsername("orgu:cliu"), stun.NewShortTermIntegrity("wrongpasswordwrongpassword"), stun.Fingerprint), want: verdictDropIntegrity},
		{name: "new connection: media", tc: testTCPConn(t, r, "127.0.0.1:7102"), pkt: rtp, want: verdictDropUnknown},
		{name: "new connection: unknown username", tc: testTCPConn(t, r, "127.0.0.1:7103"),
			pkt: build(t, stun.BindingRequest, stun.NewUsername("nobody:here"), stun.NewShortTermIntegrity(testOriginPwd)), want: verdictLookup},
		{name: "replay of another connection's check", tc: testTCPConn(t, r, "127.0.0.1:7104"), pkt: tcpSeen, want: verdictDropIntegrity},
		{name: "replay of a UDP check from the same address", tc: testTCPConn(t, r, bound.String()), pkt: udpSeen, want: verdictDropIntegrity},
		{name: "retransmission on the connection that sent it", tc: seen, pkt: tcpSeen, want: verdictCheck},
		{name: "verified connection: media", tc: verified, pkt: rtp, want: verdictMedia}, // the selected UDP path never carried media
		{name: "verified connection: check", tc: verified, pkt: check(t), want: verdictCheck},
		{name: "verified connection: unclassified", tc: verified, pkt: []byte{70, 1, 2}, want: verdictDropUnclassified},
		{name: "removed path", tc: removed, pkt: rtp, want: verdictDropUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := decideTCPFrame(tc.pkt, tc.tc, tabs, &msg, int64(10*time.Second)); d.v != tc.want {
				t.Fatalf("verdict %d, want %d", d.v, tc.want)
			}
		})
	}
	// A UDP datagram from a verified connection's address proves nothing.
	if d := decideClientPacket(rtp, verified.remote, tabs, &msg, 0); d.v != verdictDropUnknown {
		t.Fatalf("UDP from the TCP path's address: verdict %d", d.v)
	}
}

// TestTCPPathRules: TCP paths follow the UDP paths' rules: selection by
// nomination and media, the cap (an evicted connection is closed), expiry
// (closed too), and they are never written to the registry.
func TestTCPPathRules(t *testing.T) {
	r, s, ps := testRelayPaths(t)
	sc := newSTUNScratch()
	now := time.Now().UnixNano()
	r.clock.Store(now)
	udp := netip.MustParseAddrPort("10.77.0.1:40000")
	tcpA := testTCPConn(t, r, "10.77.0.2:50000")
	tcpB := testTCPConn(t, r, "10.77.0.3:50001")
	rtp := []byte{0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}
	selected := func() string {
		if p := s.client.Load(); p != nil {
			return p.transport() + " " + p.addr.String()
		}
		return "none"
	}
	r.handleClientPacket(ps, check(t, useCandidate{}), udp, sc)
	r.handleClientPacket(ps, rtp, udp, sc)
	r.handleTCPFrame(tcpA, check(t), now) // a plain check: a path, not selected
	if tcpA.path.Load() == nil || selected() != "udp "+udp.String() {
		t.Fatalf("after a plain check over TCP: path %v, selected %s", tcpA.path.Load(), selected())
	}
	r.handleTCPFrame(tcpA, check(t, useCandidate{}), now)
	if selected() != "tcp "+tcpA.remote.String() {
		t.Fatalf("after a nomination over TCP: selected %s", selected())
	}
	if recs := pathRecords(s); len(recs) != 1 || recs[0].Addr != udp.String() || recs[0].Selected {
		t.Fatalf("registry records %+v: want the UDP path alone, not selected", recs)
	}
	if snap := s.snapshot("relay", 0); len(snap.ClientPaths) != 2 || snap.ClientAddress != tcpA.remote.String() {
		t.Fatalf("snapshot paths %v, selected %s", snap.ClientPaths, snap.ClientAddress)
	}
	// Media on the UDP path once the TCP one went silent moves it back.
	now += int64(2 * mediaSwitchAfter)
	r.clock.Store(now)
	r.handleClientPacket(ps, rtp, udp, sc)
	if selected() != "udp "+udp.String() || r.moves[causeMedia].Load() != 1 {
		t.Fatalf("after media on UDP: selected %s, media moves %d", selected(), r.moves[causeMedia].Load())
	}
	// The cap: checks from new UDP ports evict the least recently active
	// path other than the selected one, the TCP path first.
	r.handleTCPFrame(tcpB, check(t), now)
	now += int64(time.Second)
	r.clock.Store(now)
	r.handleTCPFrame(tcpB, rtp, now) // tcpB stays fresher than tcpA
	for i := range MaxPaths - 2 {
		r.handleClientPacket(ps, check(t), netip.AddrPortFrom(netip.MustParseAddr("10.77.0.9"), uint16(30000+i)), sc)
	}
	if !tcpA.isClosed() || tcpB.isClosed() || r.tcp.closed[tcpClosePathRemoved].Load() != 1 {
		t.Fatalf("at the cap: tcpA closed %v, tcpB closed %v", tcpA.isClosed(), tcpB.isClosed())
	}
	if n := len(s.pathList()); n != MaxPaths {
		t.Fatalf("%d paths, want %d", n, MaxPaths)
	}
	// Expiry closes an idle TCP path's connection; the selected path stays.
	later := now + int64(PathIdleTimeout) + int64(time.Second)
	r.clock.Store(later)
	r.handleClientPacket(ps, rtp, udp, sc)
	r.expirePaths(later)
	if !tcpB.isClosed() || len(s.pathList()) != 1 || selected() != "udp "+udp.String() {
		t.Fatalf("after expiry: tcpB closed %v, %d paths, selected %s", tcpB.isClosed(), len(s.pathList()), selected())
	}
	// A check for another session on a verified connection fails.
	other := &session{id: "s2"}
	other.creds.Store(newCredentials("cli2", testClientPwd, "org2", testOriginPwd))
	r.mu.Lock()
	r.tabs.setUfragLocked("org2:cli2", other)
	r.mu.Unlock()
	tcpC := testTCPConn(t, r, "10.77.0.4:50002")
	r.handleTCPFrame(tcpC, check(t), later)
	foreign := build(t, stun.BindingRequest, stun.NewUsername("org2:cli2"), stun.NewShortTermIntegrity(testOriginPwd), stun.Fingerprint)
	before := s.dropIntegrity.Load()
	r.handleTCPFrame(tcpC, foreign, later)
	if s.dropIntegrity.Load() != before+1 || len(other.pathList()) != 0 {
		t.Fatalf("a check for another session on a verified connection: drops %d, that session's paths %d", s.dropIntegrity.Load()-before, len(other.pathList()))
	}
}

// TestOriginResponseGoesToTheTCPPath: the origin's answer to a check that
// came over TCP goes back on that connection, framed, with
// XOR-MAPPED-ADDRESS = the connection's remote address, re-signed.
func TestOriginResponseGoesToTheTCPPath(t *testing.T) {
	r, s, ps := testRelayPaths(t)
	sc := newSTUNScratch()
	udp := netip.MustParseAddrPort("10.77.0.1:40000")
	tc := testTCPConn(t, r, "10.77.0.2:50000")
	tc.writing.Store(true) // no writer: the test takes the frame from the queue
	r.handleClientPacket(ps, check(t, useCandidate{}), udp, sc)
	req := check(t)
	r.handleTCPFrame(tc, req, r.clock.Load())
	resp := stun.MustBuild(stun.NewTransactionIDSetter([stun.TransactionIDSize]byte(req[8:20])), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: 9}, stun.NewShortTermIntegrity(testOriginPwd), stun.Fingerprint)
	buf := make([]byte, MaxPacketSize+1)
	n := copy(buf, resp.Raw)
	to, n := r.fromOrigin(s, s.client.Load(), buf, n, sc)
	if to == nil || to.tcp != tc {
		t.Fatalf("the response goes to %v, want the TCP path", to)
	}
	r.toClient(s, to, buf[:n])
	var f *tcpFrame
	select {
	case f = <-tc.out:
	default:
		t.Fatal("nothing queued for the connection")
	}
	if int(f.b[0])<<8|int(f.b[1]) != f.n-frameHeader {
		t.Fatalf("frame length %d for %d bytes", int(f.b[0])<<8|int(f.b[1]), f.n-frameHeader)
	}
	m := &stun.Message{Raw: append([]byte(nil), f.b[frameHeader:f.n]...)}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	if err := stun.NewShortTermIntegrity(testOriginPwd).Check(m); err != nil {
		t.Fatalf("MESSAGE-INTEGRITY: %v", err)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Fatalf("FINGERPRINT: %v", err)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		t.Fatal(err)
	}
	if got, _ := netip.AddrFromSlice(xa.IP); netip.AddrPortFrom(got.Unmap(), uint16(xa.Port)) != tc.remote {
		t.Fatalf("XOR-MAPPED-ADDRESS %s:%d, want the connection's remote address %s", xa.IP, xa.Port, tc.remote)
	}
}

// TestTCPSendQueue: queueing for a connection never waits and allocates
// nothing once the frame pool is warm; a full queue drops and counts.
func TestTCPSendQueue(t *testing.T) {
	r, s, _ := testRelayPaths(t)
	tc := testTCPConn(t, r, "10.77.0.2:50000")
	tc.writing.Store(true) // a writer runs (stuck: the pipe is not read); the test takes its frames
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	allocs := allocsPerRun(500, func() {
		tc.send(s, pkt)
		framePool.Put(<-tc.out)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per packet, want 0", allocs)
	}
	for range cap(tc.out) + 3 {
		tc.send(s, pkt)
	}
	if r.tcp.queueDrops.Load() != 3 || s.dropWrite.Load() != 3 {
		t.Fatalf("queue drops %d, session write drops %d; want 3", r.tcp.queueDrops.Load(), s.dropWrite.Load())
	}
	tc.close(tcpCloseRelayClosed)
	tc.send(s, pkt)
	if s.dropWrite.Load() != 4 || r.tcp.queueDrops.Load() != 3 {
		t.Fatal("a packet for a closed connection was queued")
	}
}

// TestTCPCandidates: one passive host candidate per public TCP address,
// after the UDP ones and below every UDP priority (RFC 6544 section 4.2).
func TestTCPCandidates(t *testing.T) {
	udp := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:8000"), netip.MustParseAddrPort("[2001:db8::7]:8000")}
	tcp := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:443"), netip.MustParseAddrPort("[2001:db8::7]:443")}
	r, err := New(Config{PublicAddrs: udp, PublicTCPAddrs: tcp, DataPlane: DataPlaneGoroutines})
	if err != nil {
		t.Fatal(err)
	}
	cands := r.candidates()
	if len(cands) != 4 {
		t.Fatalf("%d candidates, want 4", len(cands))
	}
	foundations := map[string]bool{}
	for i, c := range cands {
		foundations[c.Foundation] = true
		wantTCP := i >= 2
		if (c.Protocol == "tcp") != wantTCP || (c.TcpType == "passive") != wantTCP || c.Type != "host" || c.Component != 1 {
			t.Fatalf("candidate %d: %v", i, c)
		}
		if i > 0 && c.Priority >= cands[i-1].Priority {
			t.Fatalf("candidate %d priority %d not below the previous %d", i, c.Priority, cands[i-1].Priority)
		}
	}
	if len(foundations) != 4 {
		t.Fatalf("foundations %v: want one per address and transport", foundations)
	}
	// type preference 126, local preference 2^13*4 + 8191, component 1.
	if want := uint32(126<<24 | (4<<13+8191)<<8 | 255); cands[2].Priority != want {
		t.Fatalf("first TCP priority %d, want %d", cands[2].Priority, want)
	}
	if cands[2].Port != 443 || cands[2].Address != "203.0.113.7" {
		t.Fatalf("first TCP candidate %v", cands[2])
	}
	if _, err := New(Config{PublicAddrs: udp, PublicTCPAddrs: []netip.AddrPort{{}}}); err == nil {
		t.Fatal("an invalid public TCP address was accepted")
	}
}

// TestTCPFrameHandlingDoesNotAllocate: a media frame from a verified
// connection is decided and forwarded to the origin without allocating,
// as a datagram is.
func TestTCPFrameHandlingDoesNotAllocate(t *testing.T) {
	l := startLoopbackRelay(t)
	origin := udpSink(t, false)
	s := l.allocate(t, origin.LocalAddr().(*net.UDPAddr).AddrPort())
	tc := testTCPConn(t, l.r, "127.0.0.1:50000")
	tc.writing.Store(true)
	now := l.r.clock.Load()
	l.r.handleTCPFrame(tc, check(t, useCandidate{}), now)
	if p := tc.path.Load(); p == nil || s.client.Load() != p {
		t.Fatal("the connection did not become the selected path")
	}
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	before := s.c2oPackets.Load()
	if allocs := allocsPerRun(500, func() { l.r.handleTCPFrame(tc, pkt, now) }); allocs != 0 {
		t.Fatalf("%.1f allocations per frame, want 0", allocs)
	}
	if got := s.c2oPackets.Load() - before; got < 500 {
		t.Fatalf("%d frames forwarded, want 501", got)
	}
}

// TestTCPEchoThroughEveryDataPlane: media over a TCP path reaches the
// origin and comes back framed whichever data plane serves the origin
// side (the poller's batch handler, or a reader goroutine per session).
func TestTCPEchoThroughEveryDataPlane(t *testing.T) {
	for _, plane := range dataPlanes {
		t.Run(plane, func(t *testing.T) {
			l := startLoopbackRelayMode(t, plane)
			addr := serveLoopbackTCP(t, l)
			origin := udpSink(t, true)
			s := l.allocate(t, origin.LocalAddr().(*net.UDPAddr).AddrPort())
			c := dialVerifiedTCP(t, addr, "cliu", true)
			defer c.Close()
			pkt := make([]byte, 1000)
			pkt[0] = 0x80
			scratch := make([]byte, 2048)
			buf := make([]byte, 2048)
			const total, burst = 400, 20
			for sent := 0; sent < total; sent += burst {
				for range burst {
					if err := writeFrame(c, scratch, pkt); err != nil {
						t.Fatal(err)
					}
				}
				for range burst {
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					n, err := readFrame(c, buf)
					if err != nil || n != len(pkt) {
						t.Fatalf("after %d packets: %d bytes, %v", sent, n, err)
					}
				}
			}
			if s.o2cPackets.Load() < total || s.c2oPackets.Load() < total {
				t.Fatalf("counters c2o %d o2c %d", s.c2oPackets.Load(), s.o2cPackets.Load())
			}
		})
	}
}

func TestSourceKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
		{"2001:db8:1:2::1", "2001:db8:1:2::"},
		{"fe80::1%eth0", "fe80::"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := sourceKey(netip.MustParseAddr(tc.in)); got.String() != tc.want {
				t.Fatalf("%s, want %s", got, tc.want)
			}
		})
	}
}

// TestServeTCPLifecycle: ServeTCP returns nil once the relay closes (its
// listener closed), ErrClosed after Close, and the listener's error when
// someone else closes it.
func TestServeTCPLifecycle(t *testing.T) {
	newRelay := func(t *testing.T) *Relay {
		r, err := New(Config{PublicAddrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8000")}, DataPlane: DataPlaneGoroutines})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	listen := func(t *testing.T) net.Listener {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	t.Run("closed relay", func(t *testing.T) {
		r := newRelay(t)
		_ = r.Close()
		ln := listen(t)
		if err := r.ServeTCP(ln); !errors.Is(err, ErrClosed) {
			t.Fatalf("ServeTCP after Close: %v", err)
		}
		if _, err := ln.Accept(); err == nil {
			t.Fatal("the listener was left open")
		}
	})
	t.Run("relay closes", func(t *testing.T) {
		r := newRelay(t)
		ln := listen(t)
		served := make(chan error, 1)
		go func() { served <- r.ServeTCP(ln) }()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = r.Close()
		if err := <-served; err != nil {
			t.Fatalf("ServeTCP after Close: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("the connection stayed open: %v", err)
		}
	})
	t.Run("listener closed elsewhere", func(t *testing.T) {
		r := newRelay(t)
		defer r.Close()
		ln := listen(t)
		served := make(chan error, 1)
		go func() { served <- r.ServeTCP(ln) }()
		time.Sleep(20 * time.Millisecond)
		_ = ln.Close()
		if err := <-served; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ServeTCP: %v, want net.ErrClosed wrapped", err)
		}
	})
}

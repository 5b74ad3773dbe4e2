package mediarelay

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/rtcedge/rtcedge/mediarelay/internal/udpbatch"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// loopbackRelay is a served relay without gRPC or registry, for the hot
// path tests and benchmarks of this package.
type loopbackRelay struct {
	r      *Relay
	public netip.AddrPort
}

// sock returns the relay's public socket once Serve has set it up.
func (l *loopbackRelay) sock(tb testing.TB) *pubSock {
	tb.Helper()
	for range 500 {
		l.r.mu.Lock()
		socks := l.r.socks
		l.r.mu.Unlock()
		if len(socks) > 0 {
			return socks[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatal("Serve did not set up the public socket")
	return nil
}

// dataPlanes are the relay's data planes.
var dataPlanes = []string{DataPlaneThread, DataPlaneNetpoll, DataPlaneGoroutines}

// allocsPerRun is testing.AllocsPerRun without setting GOMAXPROCS to 1 (the
// data-plane thread keeps a P while it waits): the allocations of the whole
// process per call of f, after a warm-up call, rounded down.
func allocsPerRun(runs int, f func()) float64 {
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64((after.Mallocs - before.Mallocs) / uint64(runs))
}

func startLoopbackRelay(tb testing.TB) *loopbackRelay { return startLoopbackRelayMode(tb, "") }

func startLoopbackRelayMode(tb testing.TB, plane string) *loopbackRelay {
	return startLoopbackRelayThreads(tb, plane, 0)
}

// startLoopbackRelayThreads serves a relay with threads data-plane threads
// (0: the default) on as many SO_REUSEPORT sockets of one port.
func startLoopbackRelayThreads(tb testing.TB, plane string, threads int) *loopbackRelay {
	tb.Helper()
	conns, err := ListenUDP(context.Background(), "udp4", "127.0.0.1:0", max(threads, 1), 4<<20)
	if err != nil {
		tb.Fatal(err)
	}
	public := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	r, err := New(Config{PublicAddrs: []netip.AddrPort{public}, SocketBuffer: 4 << 20, Logger: slog.New(slog.DiscardHandler),
		DataPlane: plane, DataPlaneThreads: threads})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Serve(ctx, conns...) }()
	tb.Cleanup(func() { cancel(); <-done })
	return &loopbackRelay{r: r, public: public}
}

// udpSink is a loopback socket; with echo it sends every datagram back.
func udpSink(tb testing.TB, echo bool) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if echo {
				_, _ = c.WriteToUDPAddrPort(buf[:n], src)
			}
		}
	}()
	tb.Cleanup(func() { _ = c.Close(); <-done })
	return c
}

func (l *loopbackRelay) allocate(tb testing.TB, origin netip.AddrPort) *session {
	return l.allocateUfrag(tb, origin, "cliu")
}

func (l *loopbackRelay) allocateUfrag(tb testing.TB, origin netip.AddrPort, clientUfrag string) *session {
	tb.Helper()
	resp, err := l.r.Allocate(context.Background(), &relayv1.AllocateSessionRequest{
		Stream: "bench/live", Direction: relayv1.Direction_DIRECTION_PUBLISH,
		ClientIce:       &relayv1.IceCredentials{Ufrag: clientUfrag, Pwd: "clientpasswordclientpw"},
		OriginIce:       &relayv1.IceCredentials{Ufrag: "orgu", Pwd: "originpasswordoriginpw"},
		OriginAddresses: []string{origin.String()},
	})
	if err != nil {
		tb.Fatal(err)
	}
	s := l.r.lookupSession(resp.Session.Id)
	if s == nil {
		tb.Fatal("allocated session not found")
	}
	return s
}

// TestForwardPathDoesNotAllocate pins both directions of the data path,
// with real sockets and reused buffers, at zero allocations per packet.
func TestForwardPathDoesNotAllocate(t *testing.T) {
	l := startLoopbackRelay(t)
	origin := udpSink(t, false)
	s := l.allocate(t, origin.LocalAddr().(*net.UDPAddr).AddrPort())
	client := udpSink(t, false)
	clientAddr := client.LocalAddr().(*net.UDPAddr).AddrPort()
	ps := l.sock(t)
	cp := l.r.bind(s, clientAddr, ps)
	s.creds.Store(newCredentials("cliu", "clientpasswordclientpw", "orgu", testOriginPwd))

	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	sc := newSTUNScratch()
	// The poller's handler, driven directly: a round of 8 datagrams of one
	// session, queued and flushed with sendmmsg.
	h := l.r.newUpstreamHandler(0)
	conn := &udpbatch.Conn[*session]{Value: s}
	round := make([]udpbatch.Message, 8)
	for i := range round {
		round[i] = udpbatch.Message{Buf: pkt, N: len(pkt)}
	}
	// STUN is rare, but a flood of it must not allocate either: a verified
	// check from the selected path (retransmitted), the origin's response
	// to it (verified, XOR-MAPPED-ADDRESS rewritten, re-signed), and the
	// same translated after an edge-answered restart.
	req := check(t, useCandidate{})
	resp := stun.MustBuild(stun.NewTransactionIDSetter([stun.TransactionIDSize]byte(req[8:20])), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: 9}, stun.NewShortTermIntegrity(testOriginPwd), stun.Fingerprint)
	respBuf := make([]byte, MaxPacketSize+1)
	stunRound := []udpbatch.Message{{Buf: respBuf}}
	originSTUN := func() {
		stunRound[0].N = copy(respBuf, resp.Raw)
		h.Packets(conn, stunRound)
		h.EndBatch()
	}
	tests := []struct {
		name   string
		fn     func()
		pooled bool // uses pooled HMAC state
	}{
		{name: "client to origin", fn: func() { l.r.handleClientPacket(ps, pkt, clientAddr, sc) }},
		{name: "origin to client, poller round", fn: func() { h.Packets(conn, round); h.EndBatch() }},
		{name: "verified check", fn: func() { l.r.handleClientPacket(ps, req, clientAddr, sc) }, pooled: true},
		{name: "origin binding response rewritten", fn: originSTUN, pooled: true},
	}
	if ps.conn != nil {
		tests = append(tests, struct {
			name   string
			fn     func()
			pooled bool
		}{name: "origin to client, direct", fn: func() { l.r.toClient(s, cp, pkt) }})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.pooled && raceEnabled {
				t.Skip("the race detector makes sync.Pool drop pooled HMAC state: allocations are counted without it (make bench, go test without -race)")
			}
			if allocs := allocsPerRun(500, tc.fn); allocs != 0 {
				t.Fatalf("%.1f allocations per packet, want 0", allocs)
			}
		})
	}
	if s.dropOriginSTUN.Load() != 0 || s.dropIntegrity.Load() != 0 {
		t.Fatalf("STUN dropped: origin %d, integrity %d", s.dropOriginSTUN.Load(), s.dropIntegrity.Load())
	}
	// Translated: the client's side now differs from the origin's.
	s.creds.Store(newTranslatedCredentials("cliu", testClientPwd, "edgeu", "edgepasswordedgepasswd", "orgu", testOriginPwd, "cliu", testClientPwd))
	treq := build(t, stun.BindingRequest, stun.NewUsername("edgeu:cliu"), stun.NewShortTermIntegrity("edgepasswordedgepasswd"), stun.Fingerprint)
	t.Run("translated check", func(t *testing.T) {
		if raceEnabled {
			t.Skip("the race detector makes sync.Pool drop pooled HMAC state")
		}
		if allocs := allocsPerRun(500, func() { l.r.handleClientPacket(ps, treq, clientAddr, sc) }); allocs != 0 {
			t.Fatalf("%.1f allocations per packet, want 0", allocs)
		}
	})
	if s.c2oPackets.Load() == 0 || s.o2cPackets.Load() == 0 {
		t.Fatalf("nothing forwarded: c2o %d o2c %d (write drops %d)", s.c2oPackets.Load(), s.o2cPackets.Load(), s.dropWrite.Load())
	}
}

// BenchmarkForwardLoopback measures the full path over loopback: client ->
// relay public port -> session socket -> echo origin -> relay -> client.
// One op is one packet's round trip; packets go in bursts of 32, then the
// client reads the burst back.
func BenchmarkForwardLoopback(b *testing.B) {
	for _, plane := range dataPlanes {
		b.Run(plane, func(b *testing.B) { benchmarkForwardLoopback(b, plane) })
	}
}

func benchmarkForwardLoopback(b *testing.B, plane string) {
	l := startLoopbackRelayMode(b, plane)
	origin := udpSink(b, true)
	l.allocate(b, origin.LocalAddr().(*net.UDPAddr).AddrPort())
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	_ = client.SetReadBuffer(4 << 20)
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername("orgu:cliu"),
		stun.NewShortTermIntegrity("originpasswordoriginpw"), stun.Fingerprint)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 2048)
	bound := false
	for range 50 {
		_, _ = client.WriteToUDPAddrPort(req.Raw, l.public)
		_ = client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := client.ReadFromUDPAddrPort(buf); err == nil {
			bound = true
			break
		}
	}
	if !bound {
		b.Fatal("no STUN echo through the relay")
	}
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	const burst = 32
	lost := 0
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	sent := 0
	for b.Loop() {
		_, _ = client.WriteToUDPAddrPort(pkt, l.public)
		sent++
		if sent%burst == 0 {
			for range burst {
				_ = client.SetReadDeadline(time.Now().Add(time.Second))
				if _, _, err := client.ReadFromUDPAddrPort(buf); err != nil {
					lost++
				}
			}
		}
	}
	b.ReportMetric(float64(lost), "lost")
}

// FuzzHandleClientPacket runs arbitrary datagrams through the relay's full
// packet handler (decision, counters, forwarding to a real origin socket):
// nothing panics, and no datagram from a stranger moves the bound client.
func FuzzHandleClientPacket(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x00, 0x05, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x00, 0x06, 0x00, 0x01, 0x78}, false)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("orgu:cliu"),
		stun.NewShortTermIntegrity("wrongpasswordwrongpass"), stun.Fingerprint).Raw, false)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("orgu:cliu")).Raw, false)
	f.Add([]byte{0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, true)
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0, 0}, true)
	f.Add([]byte{64, 0, 0, 0}, true)
	l := startLoopbackRelay(f)
	origin := udpSink(f, false)
	s := l.allocate(f, origin.LocalAddr().(*net.UDPAddr).AddrPort())
	client := netip.MustParseAddrPort("127.0.0.1:5000")
	stranger := netip.MustParseAddrPort("127.0.0.1:6000")
	ps := l.sock(f)
	l.r.bind(s, client, ps)
	sc := newSTUNScratch()
	f.Fuzz(func(t *testing.T, pkt []byte, fromClient bool) {
		src := stranger
		if fromClient {
			src = client
		}
		l.r.handleClientPacket(ps, pkt, src, sc)
		if b := s.client.Load(); b == nil || b.addr != client {
			t.Fatalf("client binding moved to %v", b)
		}
	})
}

// TestEchoThroughEveryDataPlane sends RTP from many clients through the
// relay to an echo origin and back, on each data plane: every packet
// returns to the client that sent it, and releasing the sessions closes
// their sockets.
func TestEchoThroughEveryDataPlane(t *testing.T) {
	const sessions, perSession = 20, 100
	for _, plane := range dataPlanes {
		t.Run(plane, func(t *testing.T) {
			l := startLoopbackRelayMode(t, plane)
			origin := udpSink(t, true)
			clients := make([]*net.UDPConn, sessions)
			ids := make([]string, sessions)
			for i := range clients {
				ufrag := fmt.Sprintf("cli%d", i)
				ids[i] = l.allocateUfrag(t, origin.LocalAddr().(*net.UDPAddr).AddrPort(), ufrag).id
				c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
				_ = c.SetReadBuffer(1 << 20)
				clients[i] = c
				req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("orgu:"+ufrag),
					stun.NewShortTermIntegrity("originpasswordoriginpw"), stun.Fingerprint)
				if _, err := c.WriteToUDPAddrPort(req.Raw, l.public); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 2048)
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatalf("session %d: no STUN echo: %v", i, err)
				}
			}
			pkt := make([]byte, 1200)
			pkt[0] = 0x80
			for j := range perSession {
				for i, c := range clients {
					binary.BigEndian.PutUint32(pkt[4:], uint32(i))
					binary.BigEndian.PutUint32(pkt[8:], uint32(j))
					if _, err := c.WriteToUDPAddrPort(pkt, l.public); err != nil {
						t.Fatal(err)
					}
				}
				if j%10 == 9 {
					time.Sleep(time.Millisecond) // stay within the socket buffers
				}
			}
			buf := make([]byte, 2048)
			for i, c := range clients {
				seen := map[uint32]bool{}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for len(seen) < perSession {
					n, _, err := c.ReadFromUDPAddrPort(buf)
					if err != nil {
						t.Fatalf("session %d: %d of %d packets back: %v", i, len(seen), perSession, err)
					}
					if n != len(pkt) || binary.BigEndian.Uint32(buf[4:]) != uint32(i) {
						t.Fatalf("session %d got another session's packet (%d bytes, session %d)", i, n, binary.BigEndian.Uint32(buf[4:]))
					}
					seen[binary.BigEndian.Uint32(buf[8:])] = true
				}
			}
			for i, id := range ids {
				snap, err := l.r.Release(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if snap.OriginToClient.Packets != perSession+1 || snap.ClientToOrigin.Packets != perSession+1 {
					t.Errorf("session %d counters: c2o %d o2c %d, want %d each", i,
						snap.ClientToOrigin.Packets, snap.OriginToClient.Packets, perSession+1)
				}
			}
			for i, p := range l.r.pollers {
				if p.Len() != 0 {
					t.Errorf("poller %d holds %d sockets after release", i, p.Len())
				}
			}
		})
	}
}

// BenchmarkSessionMemory allocates b.N bound sessions on the poller path
// and reports the Go heap they hold per session (socket kernel memory is
// not user space and not counted).
func BenchmarkSessionMemory(b *testing.B) {
	l := startLoopbackRelay(b)
	origin := udpSink(b, false)
	dst := origin.LocalAddr().(*net.UDPAddr).AddrPort()
	ps := l.sock(b)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		s := l.allocateUfrag(b, dst, fmt.Sprintf("cl%05d", i))
		l.r.bind(s, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}), uint16(10000+i%50000)), ps)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(b.N), "heap-B/session")
}

// TestListenUDPSocketBuffers checks that ListenUDP's buffers are what was
// asked for, beyond net.core.rmem_max when the process may force them.
func TestListenUDPSocketBuffers(t *testing.T) {
	const want = 8 << 20
	conns, err := ListenUDP(context.Background(), "udp4", "127.0.0.1:0", 2, want)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		defer c.Close()
		got := ReceiveBuffer(c)
		switch {
		case runtime.GOOS != "linux":
			t.Skip("the granted size is read back on Linux only")
		case got >= want:
		case os.Geteuid() == 0:
			t.Errorf("socket %d: receive buffer %d, want %d (root may exceed rmem_max)", i, got, want)
		default:
			t.Skipf("socket %d: receive buffer %d: capped by net.core.rmem_max without CAP_NET_ADMIN", i, got)
		}
	}
}

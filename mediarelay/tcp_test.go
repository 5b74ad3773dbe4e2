package mediarelay_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// tcpRelay is a test relay that also serves ICE-TCP on loopback.
type tcpRelay struct {
	*testRelay
	tcp     netip.AddrPort
	metrics http.Handler
}

// startTCPRelay runs a stand-alone relay on UDP and TCP, both on loopback.
func startTCPRelay(t *testing.T, tweak ...func(*mediarelay.Config)) *tcpRelay {
	t.Helper()
	return startTCPRelayWith(t, nil, tweak...)
}

// startTCPRelayWith is startTCPRelay with a registry.
func startTCPRelayWith(t *testing.T, reg *registry.Client, tweak ...func(*mediarelay.Config)) *tcpRelay {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	tweaks := append([]func(*mediarelay.Config){func(c *mediarelay.Config) {
		c.PublicTCPAddrs = []netip.AddrPort{addr}
	}}, tweak...)
	tr := startRelay(t, reg, "relay-a", "127.0.0.1:0", tweaks...)
	served := make(chan error, 1)
	go func() { served <- tr.relay.ServeTCP(ln) }()
	t.Cleanup(func() {
		tr.stop() // closes the listener: ServeTCP returns
		if err := <-served; err != nil {
			t.Errorf("ServeTCP: %v", err)
		}
	})
	return &tcpRelay{testRelay: tr, tcp: addr, metrics: tr.relay.HTTPHandler()}
}

// tcpClient is an ICE-TCP client connection (RFC 4571 frames) with what it
// received.
type tcpClient struct {
	t    *testing.T
	conn *net.TCPConn
	addr netip.AddrPort // its local address: what the relay sees

	wmu       sync.Mutex
	mu        sync.Mutex
	rtp       int
	seqs      map[uint32]bool
	responses map[[stun.TransactionIDSize]byte]*stun.Message
	requests  []*stun.Message
	err       error // why reading ended
	done      chan struct{}
}

// dialTCP connects to the relay's TCP port; read says whether a reader
// goroutine collects what arrives (a slow reader reads nothing).
func dialTCP(t *testing.T, to netip.AddrPort, read bool) *tcpClient {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	cl := &tcpClient{t: t, conn: c, addr: c.LocalAddr().(*net.TCPAddr).AddrPort(), seqs: map[uint32]bool{},
		responses: map[[stun.TransactionIDSize]byte]*stun.Message{}, done: make(chan struct{})}
	if read {
		go cl.readLoop()
	} else {
		close(cl.done)
	}
	t.Cleanup(func() { _ = c.Close(); <-cl.done })
	return cl
}

func (c *tcpClient) readLoop() {
	defer close(c.done)
	var hdr [2]byte
	buf := make([]byte, 65536)
	for {
		if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
			c.setErr(err)
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c.conn, buf[:n]); err != nil {
			c.setErr(err)
			return
		}
		pkt := buf[:n]
		c.mu.Lock()
		switch {
		case stun.IsMessage(pkt):
			m := &stun.Message{Raw: append([]byte(nil), pkt...)}
			if m.Decode() == nil {
				if m.Type.Class == stun.ClassRequest {
					c.requests = append(c.requests, m)
				} else {
					c.responses[m.TransactionID] = m
				}
			}
		case n >= 12 && pkt[0] >= 128:
			c.rtp++
			c.seqs[binary.BigEndian.Uint32(pkt[8:12])] = true
		}
		c.mu.Unlock()
	}
}

func (c *tcpClient) setErr(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// send writes one frame.
func (c *tcpClient) send(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := make([]byte, 2+len(p))
	binary.BigEndian.PutUint16(b, uint16(len(p)))
	copy(b[2:], p)
	_, err := c.conn.Write(b)
	return err
}

// check sends a Binding request over the connection and waits for its
// response (TCP is reliable: no retransmissions, RFC 6544 section 7.1).
func (c *tcpClient) check(username, pwd string, nominate bool) *stun.Message {
	c.t.Helper()
	var extra []stun.Setter
	if nominate {
		extra = append(extra, useCandidate{})
	}
	req := check(c.t, username, pwd, extra...)
	if err := c.send(req); err != nil {
		c.t.Fatal(err)
	}
	id := [stun.TransactionIDSize]byte(req[8:20])
	var m *stun.Message
	waitFor(c.t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		m = c.responses[id]
		return m != nil
	}, "the response to a check over TCP")
	return m
}

func (c *tcpClient) rtpCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtp
}

// waitClosed waits until the relay closed the connection (the reader got
// EOF or a reset) and returns how long that took.
func (c *tcpClient) waitClosed(within time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = c.conn.SetReadDeadline(start.Add(within))
	buf := make([]byte, 4096)
	for {
		if _, err := c.conn.Read(buf); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || !isTimeoutErr(err) {
				return time.Since(start), nil
			}
			return time.Since(start), fmt.Errorf("still open after %s", within)
		}
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tcpMetric reads a TCP metric, labels included in name.
func (r *tcpRelay) metric(t *testing.T, name string) float64 {
	t.Helper()
	return metric(t, r.metrics, name)
}

// sessionOf returns a session's snapshot.
func (r *tcpRelay) session(t *testing.T, id string) *relayv1.Session {
	t.Helper()
	s, err := r.client.GetSession(t.Context(), &relayv1.GetSessionRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return s.Session
}

// TestTCPConnectionsThatNeverVerify: a connection is closed, and counted
// by reason, unless its first frame is a Binding request that verifies,
// within the time limit; a slowloris gets no more time than a silent one.
func TestTCPConnectionsThatNeverVerify(t *testing.T) {
	const verifyTimeout = 400 * time.Millisecond
	relay := startTCPRelay(t, func(c *mediarelay.Config) { c.TCPVerifyTimeout = verifyTimeout })
	cr := newCreds("1")
	origin := startEcho(t)
	if _, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr)); err != nil {
		t.Fatal(err)
	}
	user := cr.ou + ":" + cr.cu
	tests := []struct {
		name   string
		reason string
		act    func(t *testing.T, c *tcpClient)
		slow   bool // closed only at the time limit
	}{
		{name: "silent", reason: "verify_timeout", slow: true, act: func(*testing.T, *tcpClient) {}},
		{name: "slowloris", reason: "verify_timeout", slow: true, act: func(t *testing.T, c *tcpClient) {
			req := binding(t, user, cr.op)
			frame := append([]byte{byte(len(req) >> 8), byte(len(req))}, req...)
			go func() {
				for _, b := range frame {
					if _, err := c.conn.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}},
		{name: "wrong key", reason: "integrity", act: func(t *testing.T, c *tcpClient) {
			_ = c.send(binding(t, user, "wrongpasswordwrongpassword"))
		}},
		{name: "client key instead of the origin's", reason: "integrity", act: func(t *testing.T, c *tcpClient) {
			_ = c.send(binding(t, user, cr.cp))
		}},
		{name: "media first", reason: "not_binding", act: func(t *testing.T, c *tcpClient) {
			_ = c.send(rtp(1, 200))
		}},
		{name: "binding without username", reason: "not_binding", act: func(t *testing.T, c *tcpClient) {
			_ = c.send(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewShortTermIntegrity(cr.op), stun.Fingerprint).Raw)
		}},
		{name: "unknown session", reason: "unknown_session", act: func(t *testing.T, c *tcpClient) {
			_ = c.send(binding(t, "nobody:nobody", cr.op))
		}},
		{name: "oversize frame", reason: "oversize", act: func(t *testing.T, c *tcpClient) {
			_, _ = c.conn.Write([]byte{0xff, 0xff, 0, 1, 0, 0})
		}},
		{name: "oversize by one", reason: "oversize", act: func(t *testing.T, c *tcpClient) {
			n := mediarelay.MaxPacketSize + 1
			_, _ = c.conn.Write(append([]byte{byte(n >> 8), byte(n)}, make([]byte, n)...))
		}},
		{name: "half a frame then close", reason: "peer", act: func(t *testing.T, c *tcpClient) {
			_, _ = c.conn.Write([]byte{0, 100, 0, 1})
			_ = c.conn.CloseWrite()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := `rtcedge_relay_tcp_closed_total{reason="` + tc.reason + `"}`
			before := relay.metric(t, name)
			// Timed from before the dial: the relay's limit runs from its
			// accept, later, so a connection closed at the limit is never
			// seen closing early however slow the machine. (Whether a
			// connection was closed at once or at the limit is told by the
			// reason it is counted under, not by a clock.)
			start := time.Now()
			c := dialTCP(t, relay.tcp, false)
			tc.act(t, c)
			if _, err := c.waitClosed(30 * time.Second); err != nil { // a bound for a busy machine
				t.Fatal(err)
			}
			if took := time.Since(start); tc.slow && took < verifyTimeout {
				t.Errorf("closed after %s, before the time limit %s", took, verifyTimeout)
			}
			waitFor(t, func() bool { return relay.metric(t, name) == before+1 }, name)
		})
	}
	if got := relay.metric(t, `rtcedge_relay_tcp_connections{state="unverified"}`); got != 0 {
		t.Errorf("%v unverified connections still open", got)
	}
	st, err := relay.client.GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ClientToOrigin.Packets != 0 {
		t.Fatalf("%d packets reached the origin from connections that never verified", st.ClientToOrigin.Packets)
	}
}

// TestTCPConnectionLimits: connections over the per-IP or the total limit
// are closed at accept and counted; closing one makes room again.
func TestTCPConnectionLimits(t *testing.T) {
	tests := []struct {
		name   string
		tweak  func(*mediarelay.Config)
		reason string
	}{
		{name: "per source IP", tweak: func(c *mediarelay.Config) { c.TCPMaxConnsPerIP = 3 }, reason: "max_conns_per_ip"},
		{name: "total", tweak: func(c *mediarelay.Config) { c.TCPMaxConns = 3 }, reason: "max_conns"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			relay := startTCPRelay(t, tc.tweak)
			name := `rtcedge_relay_tcp_rejected_total{reason="` + tc.reason + `"}`
			var open []*tcpClient
			for range 3 {
				open = append(open, dialTCP(t, relay.tcp, false))
			}
			waitFor(t, func() bool { return relay.metric(t, "rtcedge_relay_tcp_accepted_total") == 3 }, "3 accepted")
			over := dialTCP(t, relay.tcp, false)
			if _, err := over.waitClosed(2 * time.Second); err != nil {
				t.Fatalf("the connection over the limit: %v", err)
			}
			if got := relay.metric(t, name); got != 1 {
				t.Fatalf("%s = %v, want 1", name, got)
			}
			_ = open[0].conn.Close()
			waitFor(t, func() bool { return relay.metric(t, `rtcedge_relay_tcp_connections{state="unverified"}`) == 2 }, "the closed one gone")
			dialTCP(t, relay.tcp, false)
			waitFor(t, func() bool { return relay.metric(t, "rtcedge_relay_tcp_accepted_total") == 4 }, "room again")
		})
	}
}

// TestTCPMediaBothWays: a client reaches the relay over TCP only; its
// check is answered over the connection, re-signed, with
// XOR-MAPPED-ADDRESS = its TCP address; media goes to the UDP origin and
// comes back framed; the session reports a tcp path.
func TestTCPMediaBothWays(t *testing.T) {
	relay := startTCPRelay(t)
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	resp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	var tcpCands int
	for i, c := range resp.Candidates {
		if c.Protocol == "tcp" {
			tcpCands++
			if c.TcpType != "passive" || c.Port != uint32(relay.tcp.Port()) || i == 0 || c.Priority >= resp.Candidates[0].Priority {
				t.Fatalf("TCP candidate %v (of %v)", c, resp.Candidates)
			}
		}
	}
	if tcpCands != 1 {
		t.Fatalf("candidates %v: want one TCP passive candidate after the UDP one", resp.Candidates)
	}
	user := cr.ou + ":" + cr.cu
	c := dialTCP(t, relay.tcp, true)
	assertResponse(t, c.check(user, cr.op, true), cr.op, c.addr)
	const total, burst = 2000, 50
	for sent := 0; sent < total; sent += burst {
		for i := sent; i < sent+burst; i++ {
			if err := c.send(rtp(uint32(i), 1200)); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, func() bool { return c.rtpCount() == sent+burst }, fmt.Sprintf("packets %d-%d echoed back over TCP", sent, sent+burst))
	}
	// Consent checks on the connection go on being answered.
	assertResponse(t, c.check(user, cr.op, false), cr.op, c.addr)
	s := relay.session(t, resp.Session.Id)
	if len(s.ClientPaths) != 1 || s.ClientPaths[0].Transport != "tcp" || !s.ClientPaths[0].Selected ||
		s.ClientPaths[0].Address != c.addr.String() || s.ClientAddress != c.addr.String() {
		t.Fatalf("paths %v, selected %s; want the TCP connection %s", s.ClientPaths, s.ClientAddress, c.addr)
	}
	if s.ClientToOrigin.Packets < total || s.OriginToClient.Packets < total || dropTotal(s.Drops) != 0 {
		t.Fatalf("counters: c2o %v o2c %v drops %v", s.ClientToOrigin, s.OriginToClient, s.Drops)
	}
	if got := relay.metric(t, `rtcedge_relay_tcp_frames_total{direction="sent"}`); got < total {
		t.Fatalf("frames sent %v, want at least %d", got, total)
	}
	// Released, the session closes its connection.
	if _, err := relay.client.ReleaseSession(t.Context(), &relayv1.ReleaseSessionRequest{Id: resp.Session.Id}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err != nil
	}, "the connection closed with its session")
	waitFor(t, func() bool { return relay.metric(t, `rtcedge_relay_tcp_closed_total{reason="session_ended"}`) == 1 }, "counted")
}

// TestTCPForgedSTUNProvesNothing: the forged-STUN guarantee holds across
// transports. A check captured from a client (UDP or TCP) and replayed on
// another TCP connection closes that connection; nothing reaches it and
// the selected path stays.
func TestTCPForgedSTUNProvesNothing(t *testing.T) {
	relay := startTCPRelay(t)
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	resp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	user := cr.ou + ":" + cr.cu
	udp := startICEClient(t, "127.0.0.1")
	legitUDP := binding(t, user, cr.op)
	if _, err := udp.conn.WriteToUDPAddrPort(legitUDP, relay.public); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(relay.session(t, resp.Session.Id).ClientPaths) == 1 }, "the UDP path")
	victim := dialTCP(t, relay.tcp, true)
	legitTCP := check(t, user, cr.op)
	if err := victim.send(legitTCP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(relay.session(t, resp.Session.Id).ClientPaths) == 2 }, "the TCP path")
	tests := []struct {
		name string
		pkt  []byte
	}{
		{name: "replay of a UDP client's check", pkt: legitUDP},
		{name: "replay of another connection's check", pkt: legitTCP},
		{name: "no integrity", pkt: stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(user), useCandidate{}).Raw},
		{name: "integrity but bad fingerprint", pkt: func() []byte {
			b := append([]byte(nil), binding(t, user, cr.op)...)
			b[len(b)-1] ^= 0xff
			return b
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			attacker := dialTCP(t, relay.tcp, false)
			if err := attacker.send(tc.pkt); err != nil {
				t.Fatal(err)
			}
			if _, err := attacker.waitClosed(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			s := relay.session(t, resp.Session.Id)
			if len(s.ClientPaths) != 2 || s.ClientAddress != udp.addr.String() || s.AddressChanges != 0 {
				t.Fatalf("after the forgery: paths %v, selected %s, changes %d", s.ClientPaths, s.ClientAddress, s.AddressChanges)
			}
		})
	}
	if got := relay.metric(t, `rtcedge_relay_tcp_closed_total{reason="integrity"}`); got != float64(len(tests)) {
		t.Fatalf("closed for integrity: %v, want %d", got, len(tests))
	}
}

// TestTCPSelectedPathMovesBetweenTransports: a session with a UDP and a
// TCP path follows the client's nominations from one transport to the
// other and back; a plain check moves nothing; downstream goes to the
// selected path only; the check responses go to the path that sent them.
func TestTCPSelectedPathMovesBetweenTransports(t *testing.T) {
	testTCPSelectedPathMovesBetweenTransports(t)
}

// testTCPSelectedPathMovesBetweenTransports is the test on a relay
// configured by tweak (e.g. several data-plane threads).
func testTCPSelectedPathMovesBetweenTransports(t *testing.T, tweak ...func(*mediarelay.Config)) {
	relay := startTCPRelay(t, tweak...)
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	resp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	user := cr.ou + ":" + cr.cu
	udp := startICEClient(t, "127.0.0.1")
	tcp := dialTCP(t, relay.tcp, true)
	// The origin's media: what it sends goes to the selected path.
	originSend := func(n int, base uint32) {
		origin.mu.Lock()
		to := origin.last
		origin.mu.Unlock()
		for i := range n {
			if _, err := origin.conn.WriteToUDPAddrPort(rtp(base+uint32(i), 300), to); err != nil {
				t.Fatal(err)
			}
		}
	}
	steps := []struct {
		name           string
		act            func()
		selected       func() string
		udpRTP, tcpRTP int // what each has received in total afterwards
	}{
		{name: "UDP nominates", act: func() {
			assertResponse(t, udp.check(relay.public, user, cr.op, true), cr.op, udp.addr)
		}, selected: udp.addr.String, udpRTP: 10},
		{name: "a plain check over TCP moves nothing", act: func() {
			assertResponse(t, tcp.check(user, cr.op, false), cr.op, tcp.addr)
		}, selected: udp.addr.String, udpRTP: 20},
		{name: "TCP nominates", act: func() {
			assertResponse(t, tcp.check(user, cr.op, true), cr.op, tcp.addr)
		}, selected: tcp.addr.String, udpRTP: 20, tcpRTP: 10},
		{name: "a backup check over UDP moves nothing", act: func() {
			assertResponse(t, udp.check(relay.public, user, cr.op, false), cr.op, udp.addr)
		}, selected: tcp.addr.String, udpRTP: 20, tcpRTP: 20},
		{name: "UDP nominates again", act: func() {
			assertResponse(t, udp.check(relay.public, user, cr.op, true), cr.op, udp.addr)
		}, selected: udp.addr.String, udpRTP: 30, tcpRTP: 20},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.act()
			s := relay.session(t, resp.Session.Id)
			if s.ClientAddress != st.selected() {
				t.Fatalf("selected %s, want %s", s.ClientAddress, st.selected())
			}
			originSend(10, uint32(100*i))
			waitFor(t, func() bool { return udp.rtpCount() == st.udpRTP && tcp.rtpCount() == st.tcpRTP },
				fmt.Sprintf("media at UDP %d, TCP %d", st.udpRTP, st.tcpRTP))
		})
	}
	time.Sleep(100 * time.Millisecond)
	if udp.rtpCount() != 30 || tcp.rtpCount() != 20 {
		t.Fatalf("media went astray: UDP %d, TCP %d", udp.rtpCount(), tcp.rtpCount())
	}
	s := relay.session(t, resp.Session.Id)
	transports := map[string]bool{}
	for _, p := range s.ClientPaths {
		transports[p.Transport] = true
	}
	if len(s.ClientPaths) != 2 || !transports["udp"] || !transports["tcp"] || s.AddressChanges != 2 {
		t.Fatalf("paths %v, %d changes; want a udp and a tcp path, 2 changes", s.ClientPaths, s.AddressChanges)
	}
}

// TestTCPSlowReaderStallsNothing: a verified TCP client that floods media
// and never reads what comes back costs its own bounded queue (drops
// counted), while a UDP session on the same relay loses nothing.
func TestTCPSlowReaderStallsNothing(t *testing.T) {
	relay := startTCPRelay(t, func(c *mediarelay.Config) { c.TCPWriteQueue = 16 })
	slowOrigin, udpOrigin := startEcho(t), startEcho(t)
	slowCreds, udpCreds := newCreds("1"), newCreds("2")
	if _, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/slow", slowCreds, slowOrigin.addr)); err != nil {
		t.Fatal(err)
	}
	udpResp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/udp", udpCreds, udpOrigin.addr))
	if err != nil {
		t.Fatal(err)
	}
	slow := dialTCP(t, relay.tcp, false) // never reads
	if err := slow.send(binding(t, slowCreds.ou+":"+slowCreds.cu, slowCreds.op)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return relay.metric(t, `rtcedge_relay_tcp_connections{state="verified"}`) == 1 }, "verified")
	udp := clientSocket(t)
	connect(t, udp, relay.public, udpCreds)

	// The flood: the echo origin returns everything toward the slow reader.
	stop := make(chan struct{})
	flooded := make(chan int)
	go func() {
		n := 0
		defer func() { flooded <- n }()
		pkt := rtp(0, 1200)
		_ = slow.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if slow.send(pkt) != nil {
				return
			}
			n++
		}
	}()
	// Meanwhile the UDP session's round trips lose nothing.
	const total, burst = 3000, 30
	buf := make([]byte, 2048)
	for sent := 0; sent < total; sent += burst {
		for i := sent; i < sent+burst; i++ {
			if _, err := udp.WriteToUDPAddrPort(rtp(uint32(i), 1200), relay.public); err != nil {
				t.Fatal(err)
			}
		}
		for range burst {
			_ = udp.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := udp.ReadFromUDPAddrPort(buf); err != nil {
				t.Fatalf("the UDP session stalled after %d packets: %v", sent, err)
			}
		}
	}
	waitFor(t, func() bool { return relay.metric(t, "rtcedge_relay_tcp_write_queue_drops_total") > 0 }, "drops for the full queue")
	close(stop)
	n := <-flooded
	// Every frame is read and counted (the ones the kernel still buffered
	// too), once verified forwarded: bounded by TCP's flow control.
	waitFor(t, func() bool {
		return relay.metric(t, `rtcedge_relay_tcp_frames_total{direction="received"}`) >= float64(n)
	}, "every flooded frame counted")
	s := relay.session(t, udpResp.Session.Id)
	if s.OriginToClient.Packets < total || dropTotal(s.Drops) != 0 {
		t.Fatalf("UDP session: o2c %d, drops %v", s.OriginToClient.Packets, s.Drops)
	}
	t.Logf("flooded %d frames; %v dropped for the full queue", n, relay.metric(t, "rtcedge_relay_tcp_write_queue_drops_total"))
}

// TestTCPIdleConnectionCloses: a verified connection that sends nothing
// for TCPIdleTimeout is closed, and its path goes with it.
func TestTCPIdleConnectionCloses(t *testing.T) {
	relay := startTCPRelay(t, func(c *mediarelay.Config) { c.TCPIdleTimeout = 700 * time.Millisecond })
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	resp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, relay.tcp, true)
	c.check(cr.ou+":"+cr.cu, cr.op, true)
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err != nil
	}, "the idle connection closed")
	waitFor(t, func() bool { return relay.metric(t, `rtcedge_relay_tcp_closed_total{reason="idle"}`) == 1 }, "counted as idle")
	waitFor(t, func() bool { return len(relay.session(t, resp.Session.Id).ClientPaths) == 0 }, "its path removed")
	if s := relay.session(t, resp.Session.Id); s.ClientAddress != "" {
		t.Fatalf("selected path %s after its connection closed", s.ClientAddress)
	}
}

// TestTCPRelayCloseEndsConnections: closing the relay closes the listener
// and every connection, verified or not, and returns only once their
// goroutines have (goleak checks the package).
func TestTCPRelayCloseEndsConnections(t *testing.T) {
	relay := startTCPRelay(t)
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	if _, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr)); err != nil {
		t.Fatal(err)
	}
	verified := dialTCP(t, relay.tcp, true)
	verified.check(cr.ou+":"+cr.cu, cr.op, true)
	pending := dialTCP(t, relay.tcp, false)
	waitFor(t, func() bool { return relay.metric(t, "rtcedge_relay_tcp_accepted_total") == 2 }, "both accepted")
	relay.stop()
	if _, err := pending.waitClosed(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		verified.mu.Lock()
		defer verified.mu.Unlock()
		return verified.err != nil
	}, "the verified connection closed")
	if _, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(relay.tcp)); err == nil {
		t.Fatal("the listener still accepts")
	}
}

// TestTCPAdoptsFromRegistry: a connection whose first check names a
// session assigned to this relay in etcd but unknown to the process (a
// client moved here by an ICE restart) waits for the registry lookup and
// verifies; the session's record gets no TCP path (connections do not
// survive the relay).
func TestTCPAdoptsFromRegistry(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	relay := startTCPRelayWith(t, reg)
	cr := newCreds("9")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	if err := reg.CreateSession(t.Context(), registry.Session{ID: "adopted", Stream: "v/a/b", Direction: registry.DirectionPlay,
		RelayID: "relay-a", ClientICE: registry.ICECredentials{Ufrag: cr.cu, Pwd: cr.cp},
		OriginICE: registry.ICECredentials{Ufrag: cr.ou, Pwd: cr.op}, OriginAddresses: []string{origin.addr.String()}}); err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, relay.tcp, true)
	assertResponse(t, c.check(cr.ou+":"+cr.cu, cr.op, true), cr.op, c.addr)
	s := relay.session(t, "adopted")
	if len(s.ClientPaths) != 1 || s.ClientPaths[0].Transport != "tcp" || !s.ClientPaths[0].Selected {
		t.Fatalf("paths %v", s.ClientPaths)
	}
	time.Sleep(1500 * time.Millisecond) // the paths are written at most once a second
	rec, err := reg.GetSession(t.Context(), "adopted")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.ClientPaths) != 0 {
		t.Fatalf("registry record paths %+v: a TCP path is not restorable", rec.ClientPaths)
	}
}

// TestTCPCheckCoalescedWithMedia: a consent check and media frames in one
// TCP segment (as Chromium sends them). Checking the check's
// MESSAGE-INTEGRITY must not touch the frames behind it in the reader's
// buffer: once it overwrote the next frame's length (the connection closed
// as "oversize") or its payload (SRTP that no longer authenticates).
func TestTCPCheckCoalescedWithMedia(t *testing.T) {
	relay := startTCPRelay(t)
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	resp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	user := cr.ou + ":" + cr.cu
	c := dialTCP(t, relay.tcp, true)
	assertResponse(t, c.check(user, cr.op, true), cr.op, c.addr)
	frame := func(p []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(p))), p...) }
	const rounds = 50
	for i := range rounds {
		var seg []byte
		seg = append(seg, frame(check(t, user, cr.op))...)
		seg = append(seg, frame(rtp(uint32(2*i), 1200))...)
		seg = append(seg, frame(check(t, user, cr.op))...)
		seg = append(seg, frame(rtp(uint32(2*i+1), 1200))...)
		c.wmu.Lock()
		_, err := c.conn.Write(seg)
		c.wmu.Unlock()
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		// The echo origin returns every RTP packet unchanged (one round at
		// a time: its UDP socket's buffer is small): all of them come back
		// over the connection, which stays open.
		waitFor(t, func() bool { return c.rtpCount() == 2*(i+1) }, fmt.Sprintf("round %d's media echoed back", i))
	}
	if got := relay.metric(t, `rtcedge_relay_tcp_closed_total{reason="oversize"}`); got != 0 {
		t.Fatalf("%v connections closed as oversize", got)
	}
	s := relay.session(t, resp.Session.Id)
	if s.ClientToOrigin.Packets < 2*rounds || dropTotal(s.Drops) != 0 {
		t.Fatalf("counters: c2o %v drops %v", s.ClientToOrigin, s.Drops)
	}
}

package mediarelay_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// testRelay is a relay serving on loopback with a gRPC server and client.
type testRelay struct {
	relay  *mediarelay.Relay
	public netip.AddrPort
	client relayv1.RelayServiceClient
	grpc   string
	stop   func()
}

// startRelay runs a relay on udpAddr (127.0.0.1:0 for any port).
func startRelay(t *testing.T, reg *registry.Client, id, udpAddr string, tweak ...func(*mediarelay.Config)) *testRelay {
	t.Helper()
	var want mediarelay.Config // one socket per data-plane thread, at least 2
	for _, f := range tweak {
		f(&want)
	}
	conns, err := mediarelay.ListenUDP(t.Context(), "udp4", udpAddr, max(2, want.DataPlaneThreads), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	public := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := mediarelay.Config{RelayID: id, PublicAddrs: []netip.AddrPort{public}, GRPCAddress: lis.Addr().String(),
		Registry: reg, IdleTimeout: 30 * time.Second, Version: "test"}
	for _, f := range tweak {
		f(&cfg)
	}
	r, err := mediarelay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	mediarelay.RegisterGRPC(srv, r)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(lis) }()
	go func() { defer wg.Done(); _ = r.Serve(ctx, conns...) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRelay{relay: r, public: public, client: relayv1.NewRelayServiceClient(cc), grpc: lis.Addr().String()}
	var once sync.Once
	tr.stop = func() {
		once.Do(func() {
			_ = cc.Close()
			srv.Stop()
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(tr.stop)
	return tr
}

// echoOrigin is a UDP origin that echoes every packet and records sources.
type echoOrigin struct {
	conn *net.UDPConn
	addr netip.AddrPort

	mu      sync.Mutex
	sources map[netip.AddrPort]int
}

func startEcho(t *testing.T) *echoOrigin {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	e := &echoOrigin{conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), sources: map[netip.AddrPort]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.sources[src]++
			e.mu.Unlock()
			_, _ = c.WriteToUDPAddrPort(buf[:n], src)
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return e
}

func (e *echoOrigin) sourceCount() map[netip.AddrPort]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[netip.AddrPort]int{}
	for k, v := range e.sources {
		out[k] = v
	}
	return out
}

// creds are a test session's ICE credentials.
type creds struct{ cu, cp, ou, op string }

func newCreds(n string) creds {
	return creds{cu: "cli" + n, cp: "clientpasswordclientpw" + n, ou: "org" + n, op: "originpasswordoriginpw" + n}
}

func allocReq(stream string, c creds, origin netip.AddrPort) *relayv1.AllocateSessionRequest {
	return &relayv1.AllocateSessionRequest{
		Stream: stream, Direction: relayv1.Direction_DIRECTION_PUBLISH,
		ClientIce:       &relayv1.IceCredentials{Ufrag: c.cu, Pwd: c.cp},
		OriginIce:       &relayv1.IceCredentials{Ufrag: c.ou, Pwd: c.op},
		OriginAddresses: []string{origin.String()},
	}
}

// useCandidate is USE-CANDIDATE: the controlling client nominates the pair.
type useCandidate struct{}

func (useCandidate) AddTo(m *stun.Message) error {
	m.Add(stun.AttrUseCandidate, nil)
	return nil
}

// binding builds a client's STUN Binding request toward the relay, a
// nomination (USE-CANDIDATE) as the controlling client sends on the pair
// it selects.
func binding(t testing.TB, username, pwd string) []byte {
	t.Helper()
	return check(t, username, pwd, useCandidate{})
}

// check builds a client's STUN Binding request with extra attributes.
func check(t testing.TB, username, pwd string, extra ...stun.Setter) []byte {
	t.Helper()
	setters := append([]stun.Setter{stun.TransactionID, stun.BindingRequest, stun.NewUsername(username)}, extra...)
	m, err := stun.Build(append(setters, stun.NewShortTermIntegrity(pwd), stun.Fingerprint)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func clientSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// connect sends STUN bindings until the echoed request comes back through
// the relay (the echo origin answers everything).
func connect(t *testing.T, c *net.UDPConn, relay netip.AddrPort, cr creds) {
	t.Helper()
	req := binding(t, cr.ou+":"+cr.cu, cr.op)
	buf := make([]byte, 2048)
	for attempt := 0; attempt < 50; attempt++ {
		if _, err := c.WriteToUDPAddrPort(req, relay); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := c.ReadFromUDPAddrPort(buf); err == nil && stun.IsMessage(buf[:n]) {
			_ = c.SetReadDeadline(time.Time{})
			return
		}
	}
	t.Fatal("no STUN echo through the relay")
}

// rtp returns an RTP-shaped packet carrying seq.
func rtp(seq uint32, size int) []byte {
	b := make([]byte, size)
	b[0] = 0x80
	b[1] = 96
	binary.BigEndian.PutUint32(b[8:], seq)
	return b
}

func TestForwardThroughRelay(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	relay := startRelay(t, reg, "relay-a", "127.0.0.1:0")
	origin := startEcho(t)
	ctx := t.Context()

	c1, c2 := newCreds("1"), newCreds("2")
	resp, err := relay.client.AllocateSession(ctx, allocReq("v/live/cam1", c1, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Candidates) != 1 || resp.Candidates[0].Port != uint32(relay.public.Port()) || resp.Candidates[0].Address != "127.0.0.1" {
		t.Fatalf("candidates %v, want the public address %s", resp.Candidates, relay.public)
	}
	if _, err := relay.client.AllocateSession(ctx, allocReq("v/live/cam1", c2, origin.addr)); err != nil {
		t.Fatal(err)
	}
	rec, err := reg.GetSessionByUfrag(ctx, c1.ou+":"+c1.cu)
	if err != nil || rec.ID != resp.Session.Id || rec.RelayID != "relay-a" {
		t.Fatalf("registry record %+v %v", rec, err)
	}

	client1, client2 := clientSocket(t), clientSocket(t)
	connect(t, client1, relay.public, c1)
	connect(t, client2, relay.public, c2)

	const total, burst = 10000, 50
	buf := make([]byte, 2048)
	got := 0
	seen := make([]bool, total)
	for sent := 0; sent < total; sent += burst {
		for i := sent; i < sent+burst; i++ {
			if _, err := client1.WriteToUDPAddrPort(rtp(uint32(i), 1200), relay.public); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < burst; i++ {
			_ = client1.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, src, err := client1.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("after %d packets back: %v", got, err)
			}
			if src != relay.public {
				t.Fatalf("reply from %s, want the relay's public address %s", src, relay.public)
			}
			seq := binary.BigEndian.Uint32(buf[8:12])
			if n != 1200 || seq >= total || seen[seq] {
				t.Fatalf("bad or duplicate packet: %d bytes, seq %d", n, seq)
			}
			seen[seq] = true
			got++
		}
	}
	if got != total {
		t.Fatalf("got %d of %d packets back", got, total)
	}

	// The origin sees one distinct source per session.
	sources := origin.sourceCount()
	if len(sources) != 2 {
		t.Fatalf("origin saw sources %v, want 2 (one per session)", sources)
	}
	s, err := relay.client.GetSession(ctx, &relayv1.GetSessionRequest{Id: resp.Session.Id})
	if err != nil {
		t.Fatal(err)
	}
	if s.Session.State != relayv1.SessionState_SESSION_STATE_CONNECTED ||
		s.Session.ClientAddress != client1.LocalAddr().String() ||
		s.Session.OriginToClient.Packets < total || s.Session.ClientToOrigin.Packets < total {
		t.Fatalf("session after traffic: %+v", s.Session)
	}
	if sources[netip.MustParseAddrPort(s.Session.RelayAddress)] < total {
		t.Errorf("origin saw %v; session socket %s should have sent %d", sources, s.Session.RelayAddress, total)
	}
}

func TestForgedSTUNRedirectsNothing(t *testing.T) {
	relay := startRelay(t, nil, "relay-a", "127.0.0.1:0")
	origin := startEcho(t)
	ctx := t.Context()
	cr := newCreds("1")
	resp, err := relay.client.AllocateSession(ctx, allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	victim, attacker := clientSocket(t), clientSocket(t)
	connect(t, victim, relay.public, cr)

	username := cr.ou + ":" + cr.cu
	legit := binding(t, username, cr.op)
	forgeries := []struct {
		name string
		pkt  []byte
	}{
		{name: "wrong password", pkt: binding(t, username, "wrongpasswordwrongpassword")},
		{name: "client password instead of origin's", pkt: binding(t, username, cr.cp)},
		{name: "no integrity", pkt: stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(username)).Raw},
		{name: "integrity but bad fingerprint", pkt: func() []byte {
			b := append([]byte(nil), binding(t, username, cr.op)...)
			b[len(b)-1] ^= 0xff
			return b
		}()},
		{name: "replay of the victim's own request", pkt: legit},
	}
	// The victim uses the legit request once, so its replay is known.
	if _, err := victim.WriteToUDPAddrPort(legit, relay.public); err != nil {
		t.Fatal(err)
	}
	for _, f := range forgeries {
		t.Run(f.name, func(t *testing.T) {
			for i := 0; i < 5; i++ {
				if _, err := attacker.WriteToUDPAddrPort(f.pkt, relay.public); err != nil {
					t.Fatal(err)
				}
			}
			// Traffic after the attempt still flows to the victim only.
			if _, err := victim.WriteToUDPAddrPort(rtp(1, 200), relay.public); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			for {
				_ = victim.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, _, err := victim.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("victim lost its media: %v", err)
				}
				if n == 200 && buf[0] == 0x80 {
					break
				}
			}
			_ = attacker.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := attacker.ReadFromUDPAddrPort(buf); err == nil {
				t.Fatalf("attacker received %d bytes", n)
			}
		})
	}
	s, err := relay.client.GetSession(ctx, &relayv1.GetSessionRequest{Id: resp.Session.Id})
	if err != nil {
		t.Fatal(err)
	}
	if s.Session.ClientAddress != victim.LocalAddr().String() || s.Session.AddressChanges != 0 {
		t.Fatalf("client address %s (changes %d), want the victim %s", s.Session.ClientAddress, s.Session.AddressChanges, victim.LocalAddr())
	}
	if s.Session.Drops.StunIntegrity == 0 {
		t.Error("forged STUN not counted")
	}
}

// TestNominationMovesAddress shows a verified nomination from a new address
// (NAT rebinding, a new network) moves the session's selected path, and a
// plain check from another address (a backup pair) does not.
func TestNominationMovesAddress(t *testing.T) {
	relay := startRelay(t, nil, "relay-a", "127.0.0.1:0")
	origin := startEcho(t)
	cr := newCreds("1")
	resp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	first, second := clientSocket(t), clientSocket(t)
	connect(t, first, relay.public, cr)
	connect(t, second, relay.public, cr)
	s, _ := relay.client.GetSession(t.Context(), &relayv1.GetSessionRequest{Id: resp.Session.Id})
	if s.Session.ClientAddress != second.LocalAddr().String() || s.Session.AddressChanges != 1 {
		t.Fatalf("after rebinding: %s changes %d", s.Session.ClientAddress, s.Session.AddressChanges)
	}
	backup := clientSocket(t)
	if _, err := backup.WriteToUDPAddrPort(check(t, cr.ou+":"+cr.cu, cr.op), relay.public); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Session.ClientPaths) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		s, _ = relay.client.GetSession(t.Context(), &relayv1.GetSessionRequest{Id: resp.Session.Id})
	}
	if len(s.Session.ClientPaths) != 3 || s.Session.ClientAddress != second.LocalAddr().String() || s.Session.AddressChanges != 1 {
		t.Fatalf("after a backup check: %d paths, selected %s, changes %d", len(s.Session.ClientPaths), s.Session.ClientAddress, s.Session.AddressChanges)
	}
}

func TestMalformedPackets(t *testing.T) {
	relay := startRelay(t, nil, "relay-a", "127.0.0.1:0")
	origin := startEcho(t)
	cr := newCreds("1")
	if _, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr)); err != nil {
		t.Fatal(err)
	}
	srsCrash := append([]byte{0x00, 0x01, 0x00, 0x05, 0x21, 0x12, 0xa4, 0x42},
		append([]byte("123456789012"), 0x00, 0x06, 0x00, 0x01, 0x78)...)
	if len(srsCrash) != 25 {
		t.Fatalf("fixture is %d bytes", len(srsCrash))
	}
	attacker := clientSocket(t)
	packets := [][]byte{
		srsCrash,
		{},
		{0x00},
		rtp(1, 100),        // RTP from an unbound address
		{0x16, 0xfe, 0xfd}, // DTLS from an unbound address
		make([]byte, 1600), // oversized
	}
	for _, p := range packets {
		if _, err := attacker.WriteToUDPAddrPort(p, relay.public); err != nil {
			t.Fatal(err)
		}
	}
	// The relay still works, and counted the drops.
	client := clientSocket(t)
	connect(t, client, relay.public, cr)
	st, err := relay.client.GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Malformed < 2 || st.UnknownSource < 3 {
		t.Errorf("drops: malformed %d unknown %d", st.Malformed, st.UnknownSource)
	}
}

func TestAllocateValidation(t *testing.T) {
	relay := startRelay(t, nil, "relay-a", "127.0.0.1:0")
	origin := netip.MustParseAddrPort("127.0.0.1:9")
	tests := []struct {
		name string
		mod  func(*relayv1.AllocateSessionRequest)
		code codes.Code
		msg  string
	}{
		{name: "short ufrag", mod: func(r *relayv1.AllocateSessionRequest) { r.ClientIce.Ufrag = "abc" }, code: codes.InvalidArgument, msg: "client_ice.ufrag"},
		{name: "bad ufrag char", mod: func(r *relayv1.AllocateSessionRequest) { r.OriginIce.Ufrag = "ab:cd" }, code: codes.InvalidArgument, msg: "origin_ice.ufrag"},
		{name: "short pwd", mod: func(r *relayv1.AllocateSessionRequest) { r.OriginIce.Pwd = "short" }, code: codes.InvalidArgument, msg: "origin_ice.pwd"},
		{name: "missing client ice", mod: func(r *relayv1.AllocateSessionRequest) { r.ClientIce = nil }, code: codes.InvalidArgument, msg: "client_ice is required"},
		{name: "no direction", mod: func(r *relayv1.AllocateSessionRequest) { r.Direction = 0 }, code: codes.InvalidArgument, msg: "direction"},
		{name: "no origin address", mod: func(r *relayv1.AllocateSessionRequest) { r.OriginAddresses = nil }, code: codes.InvalidArgument, msg: "origin_addresses"},
		{name: "host name origin", mod: func(r *relayv1.AllocateSessionRequest) { r.OriginAddresses = []string{"origin:8000"} }, code: codes.InvalidArgument, msg: "origin address"},
		{name: "empty stream", mod: func(r *relayv1.AllocateSessionRequest) { r.Stream = "" }, code: codes.InvalidArgument, msg: "stream"},
		{name: "bad session id", mod: func(r *relayv1.AllocateSessionRequest) { r.SessionId = "a/b" }, code: codes.InvalidArgument, msg: "session_id"},
		{name: "ok", mod: func(r *relayv1.AllocateSessionRequest) { r.SessionId = "fixed" }, code: codes.OK},
		{name: "duplicate id", mod: func(r *relayv1.AllocateSessionRequest) { r.SessionId = "fixed"; r.ClientIce.Ufrag = "other" }, code: codes.AlreadyExists},
		{name: "duplicate ufrag pair", mod: func(r *relayv1.AllocateSessionRequest) {}, code: codes.AlreadyExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := allocReq("v/live/x", newCreds("1"), origin)
			tc.mod(req)
			_, err := relay.client.AllocateSession(t.Context(), req)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if tc.msg != "" && !contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("message %q does not say %q", status.Convert(err).Message(), tc.msg)
			}
		})
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestReleaseAndIdleCleanUp(t *testing.T) {
	f := connectedSession(t, func(c *mediarelay.Config) { c.IdleTimeout = time.Second })
	reg, relay, origin, client := f.reg, f.relay, f.origin, f.client
	ctx := t.Context()
	rel, err := relay.client.ReleaseSession(ctx, &relayv1.ReleaseSessionRequest{Id: f.id})
	if err != nil || rel.Session.State != relayv1.SessionState_SESSION_STATE_CLOSED {
		t.Fatalf("release: %v %v", rel, err)
	}
	if _, err := reg.GetSession(ctx, f.id); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("registry record after release: %v", err)
	}
	if _, err := relay.client.ReleaseSession(ctx, &relayv1.ReleaseSessionRequest{Id: f.id}); status.Code(err) != codes.NotFound {
		t.Errorf("second release: %v", err)
	}
	// Its packets go nowhere now.
	if _, err := client.WriteToUDPAddrPort(rtp(1, 100), relay.public); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := client.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Error("a released session still forwards")
	}

	// Idle expiry.
	cr2 := newCreds("2")
	resp2, err := relay.client.AllocateSession(ctx, allocReq("v/live/a", cr2, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := relay.client.GetSession(ctx, &relayv1.GetSessionRequest{Id: resp2.Session.Id})
		if status.Code(err) == codes.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle session not expired")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The record goes right after the session leaves the relay's table.
	for {
		_, err := reg.GetSession(ctx, resp2.Session.Id)
		if errors.Is(err, registry.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry record after expiry: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, _ := relay.client.GetStatus(ctx, &relayv1.GetStatusRequest{})
	if st.SessionCount != 0 {
		t.Errorf("sessions left: %d", st.SessionCount)
	}
}

func TestRestartReloadsSessions(t *testing.T) {
	f := connectedSession(t)
	reg, relay, cr, client := f.reg, f.relay, f.cr, f.client

	// The record names the relay's socket toward the origin: the source
	// the origin has seen (and, being an ICE agent, selected).
	rs, err := reg.GetSession(t.Context(), f.id)
	if err != nil {
		t.Fatal(err)
	}
	before := f.origin.sourceCount()
	if len(before) != 1 || before[netip.MustParseAddrPort(rs.RelayOriginAddress)] == 0 {
		t.Fatalf("record names %q; the origin saw %v", rs.RelayOriginAddress, before)
	}

	// The relay process goes away; a new one with the same id and port
	// takes over, and binds the same socket toward the origin again, so
	// the origin's packets to it still reach the client.
	relay.stop()
	again := startRelay(t, reg, "relay-a", relay.public.String())
	connect(t, client, again.public, cr)
	if after := f.origin.sourceCount(); len(after) != 1 || after[netip.MustParseAddrPort(rs.RelayOriginAddress)] <= before[netip.MustParseAddrPort(rs.RelayOriginAddress)] {
		t.Fatalf("after the restart the origin saw %v, want only more from %s", after, rs.RelayOriginAddress)
	}
	if _, err := client.WriteToUDPAddrPort(rtp(7, 300), again.public); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no media after restart: %v", err)
		}
		if n == 300 {
			break
		}
	}
}

// TestRestartResumesClientsWithoutConsentChecks: a client that sends no
// STUN after connecting (libnice) keeps publishing through a relay
// restarted with the same id and port: the relay restores the session's
// verified paths from the registry, so its media flows at once and counts
// as activity.
func TestRestartResumesClientsWithoutConsentChecks(t *testing.T) {
	f := connectedSession(t, func(c *mediarelay.Config) { c.IdleTimeout = 3 * time.Second })
	reg, relay, client := f.reg, f.relay, f.client
	waitFor(t, func() bool {
		rs, err := reg.GetSession(t.Context(), f.id)
		return err == nil && len(rs.ClientPaths) == 1 && rs.ClientPaths[0].Selected &&
			rs.ClientPaths[0].Addr == client.LocalAddr().String()
	}, "the client path in the registry")
	relay.stop()
	again := startRelay(t, reg, "relay-a", relay.public.String(), func(c *mediarelay.Config) { c.IdleTimeout = 3 * time.Second })
	// Media only, for longer than the idle timeout: every packet comes back.
	buf := make([]byte, 2048)
	for seq := range uint32(40) {
		if _, err := client.WriteToUDPAddrPort(rtp(seq, 300), again.public); err != nil {
			t.Fatal(err)
		}
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := client.ReadFromUDPAddrPort(buf)
		if err != nil || n != 300 || binary.BigEndian.Uint32(buf[8:]) != seq {
			t.Fatalf("packet %d after the restart: %d bytes, %v", seq, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, err := again.client.GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.SessionCount != 1 || st.UnknownSource != 0 {
		t.Fatalf("after 4 s of media only: %d sessions, %d unknown-source drops", st.SessionCount, st.UnknownSource)
	}
}

// TestAdoptFromRegistry shows a session assigned to this relay in etcd but
// unknown to the process is found on the first STUN.
func TestAdoptFromRegistry(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	relay := startRelay(t, reg, "relay-a", "127.0.0.1:0")
	origin := startEcho(t)
	cr := newCreds("9")
	if err := reg.CreateSession(t.Context(), registry.Session{ID: "adopted", Stream: "v/a/b", Direction: registry.DirectionPlay,
		RelayID: "relay-a", ClientICE: registry.ICECredentials{Ufrag: cr.cu, Pwd: cr.cp},
		OriginICE: registry.ICECredentials{Ufrag: cr.ou, Pwd: cr.op}, OriginAddresses: []string{origin.addr.String()}}); err != nil {
		t.Fatal(err)
	}
	connect(t, clientSocket(t), relay.public, cr)
}

func TestDrain(t *testing.T) {
	f := connectedSession(t)
	reg, relay, origin, cr, client := f.reg, f.relay, f.origin, f.cr, f.client
	ctx := t.Context()
	readyz := func() int {
		rec := httptest.NewRecorder()
		relay.relay.HTTPHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code
	}
	// Ready once registered (in the background).
	for code, until := readyz(), time.Now().Add(10*time.Second); code != http.StatusOK; code = readyz() {
		if time.Now().After(until) {
			t.Fatalf("/readyz before the drain = %d, want 200", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := relay.client.Drain(ctx, &relayv1.DrainRequest{}); err != nil {
		t.Fatal(err)
	}
	// Unready from the drain on, while its sessions go on.
	if code := readyz(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining = %d, want 503", code)
	}
	if _, err := relay.client.AllocateSession(ctx, allocReq("v/live/a", newCreds("2"), origin.addr)); status.Code(err) != codes.Unavailable {
		t.Fatalf("allocate while draining: %v, want Unavailable", err)
	}
	// The existing session goes on.
	connect(t, client, relay.public, cr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := reg.GetRelay(ctx, "relay-a")
		if err == nil && r.Draining {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registration not draining: %+v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A deadline releases what is left.
	if _, err := relay.client.Drain(ctx, &relayv1.DrainRequest{Deadline: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := relay.client.GetSession(ctx, &relayv1.GetSessionRequest{Id: f.id})
		if status.Code(err) == codes.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("drain deadline did not release the session")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRestartSession(t *testing.T) {
	f := connectedSession(t)
	reg, relay, cr := f.reg, f.relay, f.cr
	ctx := t.Context()
	next := newCreds("2")
	if _, err := relay.client.RestartSession(ctx, &relayv1.RestartSessionRequest{Id: f.id,
		ClientIce: &relayv1.IceCredentials{Ufrag: next.cu, Pwd: next.cp},
		OriginIce: &relayv1.IceCredentials{Ufrag: next.ou, Pwd: next.op}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.GetSessionByUfrag(ctx, next.ou+":"+next.cu); err != nil {
		t.Fatalf("registry not rekeyed: %v", err)
	}
	// New credentials work from a new address; the old ones no longer do.
	moved := clientSocket(t)
	connect(t, moved, relay.public, next)
	stale := clientSocket(t)
	if _, err := stale.WriteToUDPAddrPort(binding(t, cr.ou+":"+cr.cu, cr.op), relay.public); err != nil {
		t.Fatal(err)
	}
	_ = stale.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := stale.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Error("old credentials still bind")
	}

	// A restart onto another origin opens a socket toward it and records
	// that socket, the source the new origin sees.
	origin2 := startEcho(t)
	third := newCreds("3")
	if _, err := relay.client.RestartSession(ctx, &relayv1.RestartSessionRequest{Id: f.id,
		ClientIce:       &relayv1.IceCredentials{Ufrag: third.cu, Pwd: third.cp},
		OriginIce:       &relayv1.IceCredentials{Ufrag: third.ou, Pwd: third.op},
		OriginAddresses: []string{origin2.addr.String()}}); err != nil {
		t.Fatal(err)
	}
	connect(t, moved, relay.public, third)
	rs, err := reg.GetSession(ctx, f.id)
	if err != nil {
		t.Fatal(err)
	}
	if seen := origin2.sourceCount(); len(seen) != 1 || seen[netip.MustParseAddrPort(rs.RelayOriginAddress)] == 0 {
		t.Fatalf("record names %q; the new origin saw %v", rs.RelayOriginAddress, seen)
	}
}

// fixture is a relay on real etcd with an echo origin and one session
// whose client has bound its address with a verified STUN.
type fixture struct {
	reg    *registry.Client
	relay  *testRelay
	origin *echoOrigin
	cr     creds
	id     string
	client *net.UDPConn
}

func connectedSession(t *testing.T, tweak ...func(*mediarelay.Config)) *fixture {
	t.Helper()
	etcd := embedetcd.StartForTest(t)
	f := &fixture{reg: embedetcd.NewClientForTest(t, etcd), origin: startEcho(t), cr: newCreds("1")}
	f.relay = startRelay(t, f.reg, "relay-a", "127.0.0.1:0", tweak...)
	resp, err := f.relay.client.AllocateSession(t.Context(), allocReq("v/live/a", f.cr, f.origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	f.id = resp.Session.Id
	f.client = clientSocket(t)
	connect(t, f.client, f.relay.public, f.cr)
	return f
}

// TestEtcdOutageDoesNotExpireLiveSessions: while etcd is away, releasing
// idle sessions blocks the sweeper on registry calls for their timeout.
// Live sessions must keep their activity (the data path's clock must not
// stop with the sweeper) and survive every sweep of the outage.
func TestEtcdOutageDoesNotExpireLiveSessions(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	origin := startEcho(t)
	relay := startRelay(t, reg, "relay-a", "127.0.0.1:0", func(c *mediarelay.Config) { c.IdleTimeout = 2 * time.Second })
	ctx := t.Context()
	// Allocate once the relay has reloaded and registered (as signaling
	// does: it only picks registered relays).
	for i := 0; ; i++ {
		if _, err := reg.GetRelay(ctx, "relay-a"); err == nil {
			break
		} else if i == 100 {
			t.Fatalf("relay not registered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	live := newCreds("live")
	resp, err := relay.client.AllocateSession(ctx, allocReq("v/live/a", live, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	client := clientSocket(t)
	connect(t, client, relay.public, live)
	// Sessions whose clients never come: each expiry during the outage
	// waits for a registry timeout.
	for i := range 4 {
		if _, err := relay.client.AllocateSession(ctx, allocReq("v/live/a", newCreds(fmt.Sprint("idle", i)), origin.addr)); err != nil {
			t.Fatal(err)
		}
	}
	// Media flows from before the outage (stopping etcd takes seconds) to
	// its end.
	done := make(chan int)
	stop := make(chan struct{})
	go func() {
		buf := make([]byte, 2048)
		lost := 0
		for seq := uint32(0); seq < 600; seq++ { // at most 60 s at 10 packets/s
			select {
			case <-stop:
				done <- lost
				return
			default:
			}
			if _, err := client.WriteToUDPAddrPort(rtp(seq, 200), relay.public); err != nil {
				lost++
			}
			// A generous wait: on a busy machine an echo may take more
			// than the pace; one that never comes is lost.
			_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := client.ReadFromUDPAddrPort(buf); err != nil {
				lost++
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- lost
	}()
	etcd.Stop()
	time.Sleep(8 * time.Second) // four expiries at a registry timeout each
	close(stop)
	lost := <-done
	if _, err := relay.client.GetSession(ctx, &relayv1.GetSessionRequest{Id: resp.Session.Id}); err != nil {
		t.Fatalf("the live session was released during the outage: %v", err)
	}
	if lost > 0 {
		t.Errorf("%d echoes lost during the outage", lost)
	}
}

package signaling_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
	"github.com/pion/stun/v2"
	"google.golang.org/grpc"

	"github.com/rtcedge/rtcedge/mediarelay"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

// startTCPRelay is startStoppableRelay with, when tcp, an ICE-TCP listener
// on loopback that the relay serves and advertises (Config.PublicTCPAddrs).
// It returns the TCP address, invalid without tcp.
func startTCPRelay(t testing.TB, reg *registry.Client, id string, tcp bool) (*mediarelay.Relay, netip.AddrPort, func()) {
	t.Helper()
	conns, err := mediarelay.ListenUDP(t.Context(), "udp4", "127.0.0.1:0", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := mediarelay.Config{RelayID: id, Registry: reg, GRPCAddress: lis.Addr().String(),
		PublicAddrs: []netip.AddrPort{conns[0].LocalAddr().(*net.UDPAddr).AddrPort()}}
	var tcpLis net.Listener
	var tcpAddr netip.AddrPort
	if tcp {
		if tcpLis, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		tcpAddr = tcpLis.Addr().(*net.TCPAddr).AddrPort()
		cfg.PublicTCPAddrs = []netip.AddrPort{tcpAddr}
	}
	r, err := mediarelay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	mediarelay.RegisterGRPC(gs, r)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	// The relay closes on Serve's goroutine only (when ctx ends, or when
	// Serve fails), so ServeTCP returns and no Close races Serve's start.
	go func() { defer wg.Done(); _ = r.Serve(ctx, conns...); _ = r.Close() }()
	if tcpLis != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.ServeTCP(tcpLis) }()
	}
	var once sync.Once
	stop := func() { once.Do(func() { gs.Stop(); cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return r, tcpAddr, stop
}

// newTCPEnv is newEnv with one signaling instance and its relay-1 started
// by startTCPRelay.
func newTCPEnv(t testing.TB, tcp bool) (*env, netip.AddrPort) {
	t.Helper()
	etcd := embedetcd.StartForTest(t)
	reg := embedetcd.NewClientForTest(t, etcd)
	e := &env{t: t, reg: reg}
	var tcpAddr netip.AddrPort
	e.relay, tcpAddr, _ = startTCPRelay(t, reg, "relay-1", tcp)
	s, err := signaling.New(signaling.Config{Registry: reg, RetryAfter: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); s.Close() })
	e.sig = append(e.sig, hs)
	waitRelays(t, reg, 1)
	return e, tcpAddr
}

// waitRelays waits until signaling's relay cache holds n relays.
func waitRelays(t testing.TB, reg *registry.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rs, err := reg.Relays(t.Context()); err == nil && len(rs) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d relays never registered", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// answerCandidates parses every candidate of an answer or sdpfrag (pion/sdp
// and pion/ice must read it) and checks that the UDP ones come first and
// every TCP one is a passive host candidate of lower priority than every
// UDP one (RFC 6544 section 4.2). It returns the TCP ones.
func answerCandidates(t *testing.T, body string, frag bool) []ice.Candidate {
	t.Helper()
	raw := body
	if frag {
		raw = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + body
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(raw); err != nil {
		t.Fatalf("pion/sdp: %v\n%s", err, body)
	}
	var udp, tcp []ice.Candidate
	for _, m := range append([]*sdp.MediaDescription{{Attributes: d.Attributes}}, d.MediaDescriptions...) {
		for _, a := range m.Attributes {
			if a.Key != "candidate" {
				continue
			}
			c, err := ice.UnmarshalCandidate(a.Value)
			if err != nil {
				t.Fatalf("pion/ice %q: %v", a.Value, err)
			}
			if !c.NetworkType().IsTCP() {
				if len(tcp) > 0 {
					t.Errorf("UDP candidate %q after a TCP one", a.Value)
				}
				udp = append(udp, c)
				continue
			}
			if c.TCPType() != ice.TCPTypePassive || c.Type() != ice.CandidateTypeHost {
				t.Errorf("%q: want a passive host candidate", a.Value)
			}
			tcp = append(tcp, c)
		}
	}
	if len(udp) == 0 {
		t.Fatalf("no UDP candidate:\n%s", body)
	}
	for _, c := range tcp {
		for _, u := range udp {
			if c.Component() == u.Component() && c.Priority() >= u.Priority() {
				t.Errorf("TCP candidate %s has priority %d, not below UDP %s's %d", c, c.Priority(), u, u.Priority())
			}
		}
	}
	return tcp
}

// checkTCPCandidate checks that the TCP candidates are exactly one per
// component at want (none when want is invalid).
func checkTCPCandidate(t *testing.T, tcp []ice.Candidate, want netip.AddrPort) {
	t.Helper()
	if !want.IsValid() {
		if len(tcp) != 0 {
			t.Errorf("TCP candidates %v from a relay that takes no TCP", tcp)
		}
		return
	}
	if len(tcp) == 0 {
		t.Fatalf("no TCP candidate for the relay's %s", want)
	}
	for _, c := range tcp {
		if c.Address() != want.Addr().String() || c.Port() != int(want.Port()) {
			t.Errorf("TCP candidate %s, want %s", c, want)
		}
	}
}

// sendBindingTCP sends a Binding request for the session over one RFC 4571
// framed TCP connection to the relay and keeps the connection open.
func sendBindingTCP(t *testing.T, relay netip.AddrPort, username, pwd string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", relay.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(username),
		stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(m.Raw)))
	if _, err := c.Write(append(frame, m.Raw...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAnswerCarriesRelayTCPCandidate: a relay that advertises an ICE-TCP
// address gets a "tcptype passive" host candidate in the answer and in the
// ICE restart reply, after the UDP ones and of lower priority, and that
// candidate is the relay's working TCP port (a client's verified Binding
// request over it reaches the origin); a relay that advertises none gets
// no TCP candidate.
func TestAnswerCarriesRelayTCPCandidate(t *testing.T) {
	tests := []struct {
		name string
		tcp  bool
	}{
		{name: "relay advertises tcp", tcp: true},
		{name: "relay without tcp", tcp: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, tcpAddr := newTCPEnv(t, tc.tcp)
			origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
			origin.register(t, e.reg)
			offer := fixture(t, "chrome-whip-offer.sdp")
			clientOffer, err := sdpx.ParseOffer(offer)
			if err != nil {
				t.Fatal(err)
			}
			r := do(t, http.MethodPost, e.sig[0].URL+"/whip/live/tcp", "application/sdp", offer)
			if r.status != http.StatusCreated {
				t.Fatalf("POST = %d %s", r.status, r.body)
			}
			if !tc.tcp && (strings.Contains(r.body, "tcptype") || strings.Contains(r.body, " tcp ")) {
				t.Errorf("TCP candidate from a relay without TCP:\n%s", r.body)
			}
			checkTCPCandidate(t, answerCandidates(t, r.body, false), tcpAddr)
			if tc.tcp {
				ans, err := sdpx.ParseAnswer(r.body)
				if err != nil {
					t.Fatal(err)
				}
				user := ans.ICE.Ufrag + ":" + clientOffer.ICE.Ufrag
				sendBindingTCP(t, tcpAddr, user, originPwd)
				if got := origin.receiveSTUN(t); got != user {
					t.Fatalf("origin got USERNAME %q, want %q", got, user)
				}
			}

			p := do(t, http.MethodPatch, e.sig[0].URL+r.header.Get("Location"), "application/trickle-ice-sdpfrag",
				restartFrag("Tcpr0001", "tcprestartpasswordtcprestart"), "If-Match", r.header.Get("ETag"))
			if p.status != http.StatusOK {
				t.Fatalf("restart = %d %s", p.status, p.body)
			}
			checkTCPCandidate(t, answerCandidates(t, p.body, true), tcpAddr)
		})
	}
}

// TestRehomeCarriesTCPCandidate: a session moved by an ICE restart onto a
// relay that takes TCP gets that relay's TCP candidate, built from its
// registration (registry.Relay.PublicTCPAddresses).
func TestRehomeCarriesTCPCandidate(t *testing.T) {
	e, tcpAddr := newTCPEnv(t, true)
	_, _, stop := startTCPRelay(t, e.reg, "relay-0", false)
	waitRelays(t, e.reg, 2)
	rec, err := e.reg.GetRelay(t.Context(), "relay-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.PublicTCPAddresses) != 1 || rec.PublicTCPAddresses[0] != tcpAddr.String() {
		t.Fatalf("relay-1 registered TCP addresses %v, want [%s]", rec.PublicTCPAddresses, tcpAddr)
	}
	origin := newFakeOrigin(t, registry.OriginKindSRS)
	origin.register(t, e.reg)
	sig := e.sig[0].URL
	var r response
	var id string
	for range 20 { // the relay is picked by load: retry until relay-0 has it
		r = do(t, http.MethodPost, sig+"/whip/live/tcprehome", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
		if r.status != http.StatusCreated {
			t.Fatalf("POST = %d %s", r.status, r.body)
		}
		id = strings.TrimPrefix(r.header.Get("Location"), "/sessions/")
		rs, err := e.reg.GetSession(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if rs.RelayID == "relay-0" {
			break
		}
		if d := do(t, http.MethodDelete, sig+r.header.Get("Location"), "", ""); d.status != http.StatusOK {
			t.Fatalf("DELETE = %d", d.status)
		}
		id = ""
	}
	if id == "" {
		t.Fatal("no session landed on relay-0")
	}
	checkTCPCandidate(t, answerCandidates(t, r.body, false), netip.AddrPort{})
	stop()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := e.reg.GetRelay(t.Context(), "relay-0"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("relay-0's registration never went")
		}
		time.Sleep(50 * time.Millisecond)
	}
	p := do(t, http.MethodPatch, sig+r.header.Get("Location"), "application/trickle-ice-sdpfrag",
		restartFrag("Tcpm0001", "tcpmovedpasswordtcpmovedpw"), "If-Match", "*")
	if p.status != http.StatusOK {
		t.Fatalf("restart = %d %s", p.status, p.body)
	}
	if rs, err := e.reg.GetSession(t.Context(), id); err != nil || rs.RelayID != "relay-1" {
		t.Fatalf("session after the restart: %+v, %v", rs, err)
	}
	checkTCPCandidate(t, answerCandidates(t, p.body, true), tcpAddr)
}

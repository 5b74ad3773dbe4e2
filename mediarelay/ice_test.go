package mediarelay_test

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// iceOrigin is a UDP origin that behaves like a WebRTC server's ICE agent:
// it answers a Binding request only when USERNAME and MESSAGE-INTEGRITY
// are its own (success signed with its pwd, XOR-MAPPED-ADDRESS = the
// source it saw, FINGERPRINT), echoes RTP, and can send checks of its own
// toward the client, as a full-ICE origin does.
type iceOrigin struct {
	conn     *net.UDPConn
	addr     netip.AddrPort
	username string // "<origin-ufrag>:<client-ufrag as the origin knows it>"
	pwd      string

	mu        sync.Mutex
	checks    int // verified requests answered
	refused   int // requests that did not verify
	responses []*stun.Message
	last      netip.AddrPort // the relay socket it talks to
}

func startICEOrigin(t *testing.T, username, pwd string) *iceOrigin {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	o := &iceOrigin{conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), username: username, pwd: pwd}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			o.mu.Lock()
			o.last = src
			o.mu.Unlock()
			pkt := buf[:n]
			if !stun.IsMessage(pkt) {
				_, _ = c.WriteToUDPAddrPort(pkt, src)
				continue
			}
			m := &stun.Message{Raw: append([]byte(nil), pkt...)}
			if m.Decode() != nil {
				continue
			}
			switch m.Type.Class {
			case stun.ClassRequest:
				var u stun.Username
				if u.GetFrom(m) != nil || u.String() != o.username || stun.NewShortTermIntegrity(o.pwd).Check(m) != nil ||
					stun.Fingerprint.Check(m) != nil {
					o.mu.Lock()
					o.refused++
					o.mu.Unlock()
					continue
				}
				resp := stun.MustBuild(m, stun.BindingSuccess,
					&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
					stun.NewShortTermIntegrity(o.pwd), stun.Fingerprint)
				o.mu.Lock()
				o.checks++
				o.mu.Unlock()
				_, _ = c.WriteToUDPAddrPort(resp.Raw, src)
			case stun.ClassSuccessResponse:
				o.mu.Lock()
				o.responses = append(o.responses, m)
				o.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return o
}

func (o *iceOrigin) counts() (checks, refused int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.checks, o.refused
}

// iceClient is one client socket (a host candidate) with what it received.
type iceClient struct {
	t    *testing.T
	conn *net.UDPConn
	addr netip.AddrPort

	mu        sync.Mutex
	rtp       int
	responses map[[stun.TransactionIDSize]byte]*stun.Message
	requests  []*stun.Message
	done      chan struct{}
}

func startICEClient(t *testing.T, ip string) *iceClient {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	cl := &iceClient{t: t, conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(),
		responses: map[[stun.TransactionIDSize]byte]*stun.Message{}, done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		buf := make([]byte, 2048)
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			cl.mu.Lock()
			if stun.IsMessage(buf[:n]) {
				m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
				if m.Decode() == nil {
					if m.Type.Class == stun.ClassRequest {
						cl.requests = append(cl.requests, m)
					} else {
						cl.responses[m.TransactionID] = m
					}
				}
			} else if n > 0 && buf[0] >= 128 {
				cl.rtp++
			}
			cl.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-cl.done })
	return cl
}

// check sends a Binding request (a nomination when nominate) and waits for
// its response.
func (c *iceClient) check(relay netip.AddrPort, username, pwd string, nominate bool) *stun.Message {
	c.t.Helper()
	extra := []stun.Setter{}
	if nominate {
		extra = append(extra, useCandidate{})
	}
	req := check(c.t, username, pwd, extra...)
	var id [stun.TransactionIDSize]byte
	copy(id[:], req[8:20])
	for range 100 {
		if _, err := c.conn.WriteToUDPAddrPort(req, relay); err != nil {
			c.t.Fatal(err)
		}
		deadline := time.Now().Add(100 * time.Millisecond)
		for time.Now().Before(deadline) {
			c.mu.Lock()
			m := c.responses[id]
			c.mu.Unlock()
			if m != nil {
				return m
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.t.Fatalf("%s: no response to its check", c.addr)
	return nil
}

func (c *iceClient) rtpCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtp
}

// assertResponse checks a Binding success response as a client's ICE agent
// does: it verifies with pwd, its FINGERPRINT is right, and it names the
// client's own address.
func assertResponse(t *testing.T, m *stun.Message, pwd string, want netip.AddrPort) {
	t.Helper()
	if m.Type != stun.BindingSuccess {
		t.Fatalf("response type %s", m.Type)
	}
	if err := stun.NewShortTermIntegrity(pwd).Check(m); err != nil {
		t.Fatalf("MESSAGE-INTEGRITY: %v", err)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Fatalf("FINGERPRINT: %v", err)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		t.Fatal(err)
	}
	got, _ := netip.AddrFromSlice(xa.IP)
	if netip.AddrPortFrom(got.Unmap(), uint16(xa.Port)) != want {
		t.Fatalf("XOR-MAPPED-ADDRESS %s:%d, want the client's own %s", xa.IP, xa.Port, want)
	}
}

// TestMultiHomedClientKeepsItsSelectedPath is a client with two host
// candidates (two sockets, as a laptop with two interfaces) that checks its
// backup pair again and again while it sends media on the selected one, as
// Chromium does: nothing is dropped, no downstream packet goes to the
// backup address, and each check's response comes back to the socket that
// sent it, naming that socket's own address.
func TestMultiHomedClientKeepsItsSelectedPath(t *testing.T) {
	relay := startRelay(t, nil, "relay-a", "127.0.0.1:0")
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	resp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	user := cr.ou + ":" + cr.cu
	selected, backup := startICEClient(t, "127.0.0.1"), startICEClient(t, "127.0.0.2")
	// ICE: both pairs are checked; the controlling client nominates one.
	assertResponse(t, backup.check(relay.public, user, cr.op, false), cr.op, backup.addr)
	assertResponse(t, selected.check(relay.public, user, cr.op, true), cr.op, selected.addr)
	const rounds, perRound = 10, 20
	for i := range rounds {
		for j := range perRound {
			if _, err := selected.conn.WriteToUDPAddrPort(rtp(uint32(i*perRound+j), 200), relay.public); err != nil {
				t.Fatal(err)
			}
		}
		// A check on the backup pair, and a consent check on the selected one.
		assertResponse(t, backup.check(relay.public, user, cr.op, false), cr.op, backup.addr)
		assertResponse(t, selected.check(relay.public, user, cr.op, i%3 == 0), cr.op, selected.addr)
	}
	waitFor(t, func() bool { return selected.rtpCount() == rounds*perRound }, "the echoed media on the selected socket")
	if n := backup.rtpCount(); n != 0 {
		t.Fatalf("%d media packets went to the backup address", n)
	}
	st, err := relay.client.GetStatus(t.Context(), &relayv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.UnknownSource != 0 || st.Malformed != 0 || dropTotal(st.Drops) != 0 {
		t.Fatalf("drops: unknown source %d, malformed %d, session %v", st.UnknownSource, st.Malformed, st.Drops)
	}
	s, err := relay.client.GetSession(t.Context(), &relayv1.GetSessionRequest{Id: resp.Session.Id})
	if err != nil {
		t.Fatal(err)
	}
	if s.Session.ClientAddress != selected.addr.String() || len(s.Session.ClientPaths) != 2 || s.Session.AddressChanges != 1 {
		t.Fatalf("selected %s with %d paths and %d changes; want %s, 2 paths, 1 change (backup first, then the nomination)",
			s.Session.ClientAddress, len(s.Session.ClientPaths), s.Session.AddressChanges, selected.addr)
	}
	// The client never learns the relay's socket toward the origin.
	if s.Session.RelayAddress == selected.addr.String() || s.Session.RelayAddress == backup.addr.String() {
		t.Fatal("impossible: the relay socket is a client socket")
	}
}

// TestOriginResponseThatDoesNotVerifyIsDropped: a Binding response the
// origin's key does not verify is dropped, not re-signed for the client.
func TestOriginResponseThatDoesNotVerifyIsDropped(t *testing.T) {
	relay := startRelay(t, nil, "relay-a", "127.0.0.1:0")
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	if _, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr)); err != nil {
		t.Fatal(err)
	}
	// The origin answers a check as it should ...
	c := startICEClient(t, "127.0.0.1")
	c.check(relay.public, cr.ou+":"+cr.cu, cr.op, true)
	// ... then a response signed with another key arrives from it.
	forged := stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IPv4(6, 6, 6, 6), Port: 6666}, stun.NewShortTermIntegrity("notthepasswordnotthepw"), stun.Fingerprint)
	origin.mu.Lock()
	to := origin.last
	origin.mu.Unlock()
	if _, err := origin.conn.WriteToUDPAddrPort(forged.Raw, to); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // nothing to wait for: it must not arrive
	c.mu.Lock()
	_, got := c.responses[forged.TransactionID]
	c.mu.Unlock()
	if got {
		t.Fatal("a response that does not verify reached the client")
	}
}

// TestTranslatedRestart: after an ICE restart the edge answered itself, the
// client checks with new credentials the origin never saw; the origin sees
// only its own (USERNAME and key translated), the client sees only the new
// ones, in both directions.
func TestTranslatedRestart(t *testing.T) {
	relay := startRelay(t, nil, "relay-a", "127.0.0.1:0")
	cr := newCreds("1")
	origin := startICEOrigin(t, cr.ou+":"+cr.cu, cr.op)
	resp, err := relay.client.AllocateSession(t.Context(), allocReq("v/live/cam1", cr, origin.addr))
	if err != nil {
		t.Fatal(err)
	}
	c := startICEClient(t, "127.0.0.1")
	c.check(relay.public, cr.ou+":"+cr.cu, cr.op, true)

	next := newCreds("2") // the client's new credentials, and the edge's new server ones
	if _, err := relay.client.RestartSession(t.Context(), &relayv1.RestartSessionRequest{Id: resp.Session.Id,
		ClientIce:       &relayv1.IceCredentials{Ufrag: next.cu, Pwd: next.cp},
		ServerIce:       &relayv1.IceCredentials{Ufrag: next.ou, Pwd: next.op},
		OriginIce:       &relayv1.IceCredentials{Ufrag: cr.ou, Pwd: cr.op},
		OriginClientIce: &relayv1.IceCredentials{Ufrag: cr.cu, Pwd: cr.cp}}); err != nil {
		t.Fatal(err)
	}
	// The client's check with the new credentials, from a new address, is
	// answered: the origin verified it with its own credentials.
	moved := startICEClient(t, "127.0.0.2")
	assertResponse(t, moved.check(relay.public, next.ou+":"+next.cu, next.op, true), next.op, moved.addr)
	if _, refused := origin.counts(); refused != 0 {
		t.Fatalf("the origin refused %d checks: it saw credentials it does not know", refused)
	}
	// The old credentials still work on a path verified before the restart.
	assertResponse(t, c.check(relay.public, cr.ou+":"+cr.cu, cr.op, false), cr.op, c.addr)

	// The origin's own check toward the client arrives translated.
	origin.mu.Lock()
	to := origin.last
	origin.mu.Unlock()
	oreq := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(cr.cu+":"+cr.ou),
		stun.NewShortTermIntegrity(cr.cp), stun.Fingerprint)
	if _, err := origin.conn.WriteToUDPAddrPort(oreq.Raw, to); err != nil {
		t.Fatal(err)
	}
	var got *stun.Message
	waitFor(t, func() bool {
		moved.mu.Lock()
		defer moved.mu.Unlock()
		if len(moved.requests) > 0 {
			got = moved.requests[0]
		}
		return got != nil
	}, "the origin's check at the client")
	var u stun.Username
	if err := u.GetFrom(got); err != nil || u.String() != next.cu+":"+next.ou {
		t.Fatalf("USERNAME %q, want %q", u.String(), next.cu+":"+next.ou)
	}
	if err := stun.NewShortTermIntegrity(next.cp).Check(got); err != nil {
		t.Fatalf("the translated check does not verify with the client's new pwd: %v", err)
	}
	// The client's answer reaches the origin signed as the origin expects.
	answer := stun.MustBuild(got, stun.BindingSuccess, &stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: int(relay.public.Port())},
		stun.NewShortTermIntegrity(next.cp), stun.Fingerprint)
	if _, err := moved.conn.WriteToUDPAddrPort(answer.Raw, relay.public); err != nil {
		t.Fatal(err)
	}
	var oresp *stun.Message
	waitFor(t, func() bool {
		origin.mu.Lock()
		defer origin.mu.Unlock()
		if len(origin.responses) > 0 {
			oresp = origin.responses[0]
		}
		return oresp != nil
	}, "the client's response at the origin")
	if !bytes.Equal(oresp.TransactionID[:], oreq.TransactionID[:]) {
		t.Fatal("the response's transaction changed")
	}
	if err := stun.NewShortTermIntegrity(cr.cp).Check(oresp); err != nil {
		t.Fatalf("the client's response does not verify with the key the origin knows: %v", err)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(oresp); err != nil || xa.Port != int(origin.addr.Port()) {
		t.Fatalf("XOR-MAPPED-ADDRESS toward the origin %v (%v), want the origin's own %s", xa, err, origin.addr)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dropTotal(d *relayv1.DropCounters) uint64 {
	return d.GetStunIntegrity() + d.GetUnboundSource() + d.GetWriteErrors() + d.GetForeignSource()
}

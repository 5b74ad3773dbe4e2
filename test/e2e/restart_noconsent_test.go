//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtcedge/rtcedge/internal/demoorigin"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
)

// TestProcRelayRestartWithoutConsentChecks is issue 14's proof that a
// restarted relay resumes a session whose client sends no consent checks
// (RFC 7675) after connecting, as libnice (GStreamer) does.
//
// The client is a pion publisher with ICE keepalives off
// (SetICETimeouts(30s, 60s, 0): pion/ice sends no Binding request once a
// pair is selected when the keepalive interval is 0, and the long
// disconnected/failed timeouts keep it from giving up during the restart).
// Its socket is wrapped, so the test counts every STUN Binding request it
// puts on the wire. It publishes through a relay process (with a short
// -idle-timeout) to a demo origin that runs in the test, so its counters
// (RTP packets received, sessions created, PATCH requests) are read
// directly. Once media flows and the relay has written the client's
// verified path to the session's registry record, the relay is killed
// (SIGKILL) and started again with the same id and ports. It proves:
//
//   - media reaches the origin again after the restart (the latency from
//     the start and from /readyz is logged; the wait is bounded by a
//     generous 10 s, scaled by RTCEDGE_E2E_WAIT_SCALE, not a tight timing
//     assertion), with no unknown-source drops on the restarted relay;
//   - the client sent no Binding request after it connected, and its ICE
//     state never left connected: no consent check re-bound the session;
//   - no new setup and no ICE restart: signaling saw no WHIP/WHEP or
//     session (PATCH, DELETE) request, the origin created no session and
//     got no PATCH;
//   - the session outlives the relay's idle timeout several times over,
//     with media flowing throughout: traffic from a restored path is
//     activity.
//
// On the code before the relay kept client paths (ccd9989) it fails: the
// relay drops every media packet as unknown_source until a verified STUN
// arrives, and releases the session as idle.
func TestProcRelayRestartWithoutConsentChecks(t *testing.T) {
	const idle = 4 * time.Second
	b := buildBinaries(t)
	etcd := startEtcdProc(t, b, nil)
	reg := etcd.registry("", "")
	relay := startRelayProc(t, b, "relay-1", "a", append(etcd.etcdArgs("", ""), "-idle-timeout", idle.String()))
	sig := startSignalingProc(t, b, "sig-a", "a", etcd.etcdArgs("", ""))
	origin := startInProcessOrigin(t, "inproc-origin", sig)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	waitFor(t, 20*time.Second, "the relay and the origin registered", func() bool {
		rs, err := reg.ListRelays(ctx)
		os, err2 := reg.ListOrigins(ctx)
		return err == nil && err2 == nil && len(rs) == 1 && len(os) == 1
	})

	pub := publishWithoutConsent(t, ctx, sig.url+"/whip/live/noconsent")
	waitFor(t, 20*time.Second, "media at the origin", func() bool { return origin.o.Stats().PacketsForwarded >= 50 })
	connectedAt, reqAtConnect := pub.connected()
	if connectedAt.IsZero() {
		t.Fatal("media flows but the client's ICE state never was connected")
	}
	ss, err := relay.sessions(ctx)
	if err != nil || len(ss) != 1 {
		t.Fatalf("relay sessions: %v %v", ss, err)
	}
	var id string
	for id = range ss {
	}
	// The relay writes the verified path within about a second (rate-limited,
	// off the packet path); a kill before that would find nothing to
	// restore. On a relay that never writes it, go on: the restart is what
	// fails.
	var paths []registry.ClientPath
	if !poll(scaledWait(5*time.Second), 50*time.Millisecond, func() bool {
		rec, err := reg.GetSession(ctx, id)
		if err != nil {
			return false
		}
		paths = rec.ClientPaths
		for _, p := range paths {
			if p.Selected {
				return true
			}
		}
		return false
	}) {
		t.Errorf("the registry record of session %s names no selected client path after %s: %+v", id, scaledWait(5*time.Second), paths)
	}
	t.Logf("session %s: client connected %s after the publish began; registry paths %+v; %d Binding requests sent while connecting",
		id, connectedAt.Sub(pub.began).Round(time.Millisecond), paths, reqAtConnect)

	sigBefore := sigRequests(t, sig)
	setupsBefore := sig.metric("rtcedge_signaling_setup_seconds_count")
	createdBefore, patchesBefore := originCounters(origin.o)
	stunBefore := pub.conn.counts()

	relay.kill()
	killed := time.Now()
	time.Sleep(time.Second)
	fwdAtRestart := origin.o.Stats().PacketsForwarded
	sentAtRestart := pub.next.Load()
	started := time.Now()
	relay.start()
	// Poll the origin and /readyz finely, until media arrives (and the relay
	// said ready) or the bound passes.
	var readyAt, mediaAt time.Time
	hc := &http.Client{Timeout: time.Second}
	bound := scaledWait(10 * time.Second)
	poll(bound, 5*time.Millisecond, func() bool {
		now := time.Now()
		if mediaAt.IsZero() && origin.o.Stats().PacketsForwarded > fwdAtRestart {
			mediaAt = now
		}
		if readyAt.IsZero() {
			if resp, err := hc.Get(relay.http + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					readyAt = now
				}
			}
		}
		return !mediaAt.IsZero() && !readyAt.IsZero()
	})
	hc.CloseIdleConnections()
	if readyAt.IsZero() {
		relay.waitReady(startDeadline) // fails the test with the relay's log
		readyAt = time.Now()
	}
	if mediaAt.IsZero() {
		st, _ := relay.admin.GetStatus(ctx, &relayv1.GetStatusRequest{})
		after, _ := relay.sessions(ctx)
		record := "gone"
		if rec, err := reg.GetSession(ctx, id); err == nil {
			record = fmt.Sprintf("on %s with client paths %+v", rec.RelayID, rec.ClientPaths)
		}
		t.Fatalf("no media reached the origin within %s of the relay's restart (the client sent packets %d-%d, and %d Binding requests after connecting): "+
			"the restarted relay counts %d unknown-source packets and has sessions %v; the registry record of session %s: %s",
			bound, sentAtRestart, pub.next.Load(), pub.conn.counts().requests-reqAtConnect, st.GetUnknownSource(), after, id, record)
	}
	t.Logf("restart → media at the origin: %s after the relay's start, %s after /readyz first answered 200 (ready %s after the start); %s after the SIGKILL",
		mediaAt.Sub(started).Round(time.Millisecond), mediaAt.Sub(readyAt).Round(time.Millisecond),
		readyAt.Sub(started).Round(time.Millisecond), mediaAt.Sub(killed).Round(time.Millisecond))

	after, err := relay.sessions(ctx)
	if err != nil || after[id] == nil {
		t.Fatalf("session %s not on the restarted relay: %v %v", id, after, err)
	}
	if s := after[id]; s.State != relayv1.SessionState_SESSION_STATE_CONNECTED || len(s.ClientPaths) == 0 {
		t.Errorf("session %s on the restarted relay: state %s, client paths %v", id, s.State, s.ClientPaths)
	}

	// Keep publishing well past the idle timeout: a session fed only by a
	// restored path stays, and its media keeps reaching the origin.
	mark, fwdMark := pub.next.Load(), origin.o.Stats().PacketsForwarded
	var longestGap time.Duration
	lastGrowth, lastFwd := time.Now(), fwdMark
	hold := time.Now().Add(3 * idle)
	for time.Now().Before(hold) {
		time.Sleep(50 * time.Millisecond)
		if f := origin.o.Stats().PacketsForwarded; f > lastFwd {
			lastGrowth, lastFwd = time.Now(), f
		}
		longestGap = max(longestGap, time.Since(lastGrowth))
	}
	sent, got := pub.next.Load()-mark, origin.o.Stats().PacketsForwarded-fwdMark
	t.Logf("over %s after the restart (idle timeout %s): the client sent %d packets, the origin received %d; longest pause at the origin %s",
		3*idle, idle, sent, got, longestGap.Round(time.Millisecond))
	if got < uint64(sent)*8/10 {
		t.Errorf("the origin received %d of the %d packets sent after the restart", got, sent)
	}
	if longestGap >= idle {
		t.Errorf("media stopped at the origin for %s after the restart", longestGap.Round(time.Millisecond))
	}
	final, err := relay.sessions(ctx)
	if err != nil || final[id] == nil || final[id].State != relayv1.SessionState_SESSION_STATE_CONNECTED {
		t.Errorf("session %s after %s (3 idle timeouts) on the restarted relay: %v %v", id, 3*idle, final, err)
	}
	if rec, err := reg.GetSession(ctx, id); err != nil || rec.RelayID != relay.id {
		t.Errorf("registry record of session %s at the end: %+v %v", id, rec, err)
	}
	st, err := relay.admin.GetStatus(ctx, &relayv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.UnknownSource != 0 {
		t.Errorf("the restarted relay dropped %d packets from unknown sources", st.UnknownSource)
	}
	if os := origin.o.Stats(); os.Publishers != 1 {
		t.Errorf("origin publishers at the end: %d", os.Publishers)
	}

	// No consent check, no ICE restart, no new setup.
	stun := pub.conn.counts()
	t.Logf("client STUN on the wire: %d Binding requests while connecting, %d after (%d before the kill), %d indications; %d Binding responses (to the origin's checks) before the kill, %d in all",
		reqAtConnect, stun.requests-reqAtConnect, stunBefore.requests-reqAtConnect, stun.indications, stunBefore.responses, stun.responses)
	if stun.requests != reqAtConnect || stun.indications != 0 {
		t.Errorf("the client sent %d Binding requests and %d indications after it connected; want none (keepalives off)",
			stun.requests-reqAtConnect, stun.indications)
	}
	if states := pub.states(); len(states) != 2 || states[0] != webrtc.ICEConnectionStateChecking || states[1] != webrtc.ICEConnectionStateConnected {
		t.Errorf("client ICE states %v; want checking, connected and nothing else", states)
	}
	if got := sigRequests(t, sig); got["whip"] != sigBefore["whip"] || got["whep"] != sigBefore["whep"] || got["session"] != sigBefore["session"] {
		t.Errorf("signaling requests by endpoint before the kill %v, at the end %v: want no setup, PATCH or DELETE", sigBefore, got)
	}
	if n := sig.metric("rtcedge_signaling_setup_seconds_count"); n != setupsBefore {
		t.Errorf("signaling setups: %v before the kill, %v at the end", setupsBefore, n)
	}
	if created, patches := originCounters(origin.o); created != createdBefore || patches != patchesBefore || patches != 0 {
		t.Errorf("origin sessions created %d -> %d, PATCH requests %d -> %d; want no new session and no PATCH",
			createdBefore, created, patchesBefore, patches)
	}
}

// originCounters returns the sessions the origin created and the PATCH
// requests it got.
func originCounters(o *demoorigin.Origin) (created, patches uint64) {
	st := o.Stats()
	return st.SessionsCreated, st.PatchRequests
}

// poll calls cond every interval until it holds (true) or d passes (false).
func poll(d, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// inProcessOrigin is a demo origin in the test process, registered through
// signaling's gRPC API like the demo-origin binary, so its counters can be
// read directly.
type inProcessOrigin struct {
	o   *demoorigin.Origin
	url string
}

func startInProcessOrigin(t *testing.T, id string, via *sigProc) *inProcessOrigin {
	t.Helper()
	media, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	o, err := demoorigin.New(demoorigin.Config{MediaConn: media, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(o.Handler())
	cc, err := grpc.NewClient(via.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	hbCtx, stop := context.WithCancel(context.Background())
	hb := &demoorigin.Heartbeat{Client: originv1.NewOriginRegistryClient(cc),
		Origin: demoorigin.NewRegistration(id, hs.URL, []string{o.MediaAddr().String()}, 15*time.Second),
		Logger: slog.New(slog.NewTextHandler(logs, nil)), CallTimeout: 2 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = hb.Run(hbCtx) }()
	t.Cleanup(func() {
		stop()
		<-done
		_ = cc.Close()
		hs.Close()
		_ = o.Close()
		if t.Failed() {
			t.Logf("---- %s (in-process demo origin) log, last lines ----\n%s", id, tailLines(logs.String(), 40))
		}
	})
	return &inProcessOrigin{o: o, url: hs.URL}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stunCountingConn is a client's UDP socket that counts the STUN Binding
// messages written to it.
type stunCountingConn struct {
	net.PacketConn
	requests, indications, responses atomic.Uint64
}

type stunCounts struct{ requests, indications, responses uint64 }

func (c *stunCountingConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	// A STUN header: the two top bits zero, the magic cookie at 4..8.
	if len(p) >= 20 && p[0]&0xc0 == 0 && binary.BigEndian.Uint32(p[4:8]) == 0x2112a442 {
		switch binary.BigEndian.Uint16(p[0:2]) {
		case 0x0001:
			c.requests.Add(1)
		case 0x0011:
			c.indications.Add(1)
		case 0x0101:
			c.responses.Add(1)
		}
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *stunCountingConn) counts() stunCounts {
	return stunCounts{c.requests.Load(), c.indications.Load(), c.responses.Load()}
}

// quietPublisher is a publisher whose ICE agent sends no keepalives (no
// consent checks) once connected, with its socket's STUN counted and its
// ICE connection states recorded.
type quietPublisher struct {
	*publisher
	conn  *stunCountingConn
	began time.Time

	mu          sync.Mutex
	iceStates   []webrtc.ICEConnectionState
	connectedAt time.Time
	reqAtConn   uint64
}

func publishWithoutConsent(t *testing.T, ctx context.Context, endpoint string) *quietPublisher {
	t.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn := &stunCountingConn{PacketConn: udp}
	mux := ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn})
	t.Cleanup(func() { _ = mux.Close() })
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICEUDPMux(mux)
	// Keepalive interval 0: pion/ice never sends a keepalive (its consent
	// check) on the selected pair. Disconnected after 30 s and failed after
	// 60 s without receiving anything: far beyond the restart.
	se.SetICETimeouts(30*time.Second, 60*time.Second, 0)
	pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	q := &quietPublisher{conn: conn, began: time.Now()}
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.iceStates = append(q.iceStates, s)
		if s == webrtc.ICEConnectionStateConnected && q.connectedAt.IsZero() {
			q.connectedAt, q.reqAtConn = time.Now(), conn.requests.Load()
		}
	})
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(track, sendonly()); err != nil {
		t.Fatal(err)
	}
	res, answer, err := negotiate(ctx, pc, endpoint)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	p := &publisher{pc: pc, track: track, res: res, answer: answer, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	t.Cleanup(p.close)
	q.publisher = p
	return q
}

// connected returns when the ICE state first became connected and how
// many Binding requests had been sent by then.
func (q *quietPublisher) connected() (time.Time, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.connectedAt, q.reqAtConn
}

func (q *quietPublisher) states() []webrtc.ICEConnectionState {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]webrtc.ICEConnectionState(nil), q.iceStates...)
}

var requestsTotalLine = regexp.MustCompile(`^rtcedge_signaling_requests_total\{.*endpoint="([^"]*)".*\} (\S+)$`)

// sigRequests sums signaling's rtcedge_signaling_requests_total by
// endpoint.
func sigRequests(t *testing.T, s *sigProc) map[string]float64 {
	t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if m := requestsTotalLine.FindStringSubmatch(sc.Text()); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", sc.Text(), err)
			}
			out[m[1]] += v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(fmt.Errorf("reading signaling's metrics: %w", err))
	}
	return out
}

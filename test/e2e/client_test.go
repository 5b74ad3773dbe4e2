package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// loopbackAPI is a pion API that gathers only UDP4 host candidates on
// loopback, without mDNS: the tests send traffic nowhere else.
func loopbackAPI() *webrtc.API {
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}

// whepResource is a WHIP/WHEP session as the client sees it.
type whepResource struct {
	Location string
	ETag     string
}

// postSDP POSTs an offer and returns the answer and the session resource.
func postSDP(ctx context.Context, endpoint, offer string) (string, whepResource, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(offer))
	if err != nil {
		return "", whepResource{}, err
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", whepResource{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", whepResource{}, fmt.Errorf("POST %s: %s: %s", endpoint, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" {
		return "", whepResource{}, fmt.Errorf("POST %s: Content-Type %q", endpoint, ct)
	}
	base, _ := url.Parse(endpoint)
	loc, err := base.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return "", whepResource{}, fmt.Errorf("POST %s: bad Location %q", endpoint, resp.Header.Get("Location"))
	}
	return string(body), whepResource{Location: loc.String(), ETag: resp.Header.Get("ETag")}, nil
}

// deleteResource sends DELETE to a session resource.
func deleteResource(ctx context.Context, location string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, location, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// negotiate creates the offer, waits for ICE gathering, POSTs it and applies
// the answer.
func negotiate(ctx context.Context, pc *webrtc.PeerConnection, endpoint string) (whepResource, string, error) {
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return whepResource{}, "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return whepResource{}, "", err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return whepResource{}, "", ctx.Err()
	}
	answer, res, err := postSDP(ctx, endpoint, pc.LocalDescription().SDP)
	if err != nil {
		return whepResource{}, "", err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return whepResource{}, "", fmt.Errorf("answer: %w", err)
	}
	return res, answer, nil
}

var payloadMagic = []byte("rtcedge-e2e")

// publisher publishes RTP whose payload carries payloadMagic and a
// counter that is also its sequence number (mod 2^16), 50 packets a second,
// and counts what it sent.
type publisher struct {
	pc     *webrtc.PeerConnection
	track  *webrtc.TrackLocalStaticRTP
	res    whepResource
	answer string
	next   atomic.Uint32 // the counter of the next packet
	failed atomic.Uint32 // WriteRTP errors
	stop   chan struct{}
	done   chan struct{}
}

func publish(t *testing.T, ctx context.Context, endpoint string) *publisher {
	t.Helper()
	pc, err := loopbackAPI().NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
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
	return p
}

func (p *publisher) run() {
	defer close(p.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		seq := p.next.Load()
		payload := make([]byte, 0, 64)
		payload = append(payload, 0x10, 0x00, 0x9d, 0x01, 0x2a)
		payload = append(payload, payloadMagic...)
		payload = binary.BigEndian.AppendUint32(payload, seq)
		if err := p.track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(seq),
			Timestamp: seq * 3000, Marker: true}, Payload: payload}); err != nil {
			p.failed.Add(1)
		}
		p.next.Add(1)
	}
}

func (p *publisher) close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
		<-p.done
		_ = p.pc.Close()
	}
}

// player plays a stream and records which publisher counters arrived.
type player struct {
	pc     *webrtc.PeerConnection
	res    whepResource
	answer string

	mu    sync.Mutex
	got   map[uint32]int // counter -> times received
	other int            // packets without the publisher's pattern
}

func play(t *testing.T, ctx context.Context, endpoint string) *player {
	t.Helper()
	pc, err := loopbackAPI().NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(videoKind(), webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	pl := &player{pc: pc, got: map[uint32]int{}}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			pl.mu.Lock()
			if i := bytes.Index(pkt.Payload, payloadMagic); i >= 0 && len(pkt.Payload) >= i+len(payloadMagic)+4 {
				pl.got[binary.BigEndian.Uint32(pkt.Payload[i+len(payloadMagic):])]++
			} else {
				pl.other++
			}
			pl.mu.Unlock()
		}
	})
	res, answer, err := negotiate(ctx, pc, endpoint)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	pl.res, pl.answer = res, answer
	t.Cleanup(func() { _ = pc.Close() })
	return pl
}

// received returns how many packets carried the publisher's pattern
// (duplicates included) and how many did not.
func (p *player) received() (matching, other int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.got {
		matching += n
	}
	return matching, p.other
}

// count returns how many distinct counters arrived.
func (p *player) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.got)
}

// has reports whether counter c arrived.
func (p *player) has(c uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[c] > 0
}

// missing returns the counters in [from, to) that did not arrive.
func (p *player) missing(from, to uint32) []uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint32
	for c := from; c < to; c++ {
		if p.got[c] == 0 {
			out = append(out, c)
		}
	}
	return out
}

// maxSeen returns the largest counter received (0 when none).
func (p *player) maxSeen() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m uint32
	for c := range p.got {
		m = max(m, c)
	}
	return m
}

// ranges renders sorted counters compactly: "3-7,10".
func seqRanges(cs []uint32) string {
	var b strings.Builder
	for i := 0; i < len(cs); {
		j := i
		for j+1 < len(cs) && cs[j+1] == cs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if i == j {
			fmt.Fprint(&b, cs[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", cs[i], cs[j])
		}
		i = j + 1
	}
	return b.String()
}

// selectedRemote returns the remote address of the nominated candidate
// pair, once ICE has one.
func selectedRemote(pc *webrtc.PeerConnection) string {
	for _, s := range pc.GetStats() {
		if cp, ok := s.(webrtc.ICECandidatePairStats); ok && cp.Nominated && cp.State == webrtc.StatsICECandidatePairStateSucceeded {
			if rc, ok := pc.GetStats()[cp.RemoteCandidateID].(webrtc.ICECandidateStats); ok {
				return net.JoinHostPort(rc.IP, fmt.Sprint(rc.Port))
			}
		}
	}
	return ""
}

// waitFor polls cond every 100ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = scaledWait(d)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scaledWait stretches a waitFor deadline by RTCEDGE_E2E_WAIT_SCALE
// (default 3): the deadlines in the tests are what a quiet machine needs,
// and a loaded 2-core machine running the race detector may need several
// times that. A passing wait returns as soon as its condition holds, so
// the scale costs nothing; it only delays a real failure.
func scaledWait(d time.Duration) time.Duration {
	scale := 3.0
	if v, err := strconv.ParseFloat(os.Getenv("RTCEDGE_E2E_WAIT_SCALE"), 64); err == nil && v >= 1 {
		scale = v
	}
	return time.Duration(float64(d) * scale)
}

func webrtcConfig() webrtc.Configuration { return webrtc.Configuration{} }

func videoKind() webrtc.RTPCodecType { return webrtc.RTPCodecTypeVideo }

func sendonly() webrtc.RTPTransceiverInit {
	return webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}
}

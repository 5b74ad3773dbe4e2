package chaos

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// The clients' ICE timers: a real browser declares a path disconnected
// after a few seconds without consent (Chromium: about 5 s with checks
// every second); these are a little quicker so a run measures the edge, not
// the client.
const (
	iceKeepalive    = time.Second
	iceDisconnected = 3 * time.Second
	iceFailed       = 6 * time.Second
	// restartWait is how long a client waits for ICE to connect after an
	// ICE restart before it tries again; after two restarts that did not
	// connect it sets the session up anew (DELETE, then POST).
	restartWait = 8 * time.Second
	packetEvery = 20 * time.Millisecond // 50 packets/s per publisher
	// stallAfter is how long a connected player waits for media before it
	// sets the session up again.
	stallAfter = 6 * time.Second
)

var payloadMagic = []byte("rtcedge-chaos")

// loopbackAPI is a pion API that gathers UDP4 host candidates on loopback
// only, without mDNS: the harness sends traffic nowhere else.
func loopbackAPI() *webrtc.API {
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(iceDisconnected, iceFailed, iceKeepalive)
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}

// edge is how clients reach signaling: like clients behind a load
// balancer, a request that cannot connect to one instance goes to the
// other.
type edge struct {
	bases []string // http://127.0.0.1:port of each signaling instance
}

// do sends a request to the instance home first and the others when the
// connection fails; it returns the response, its body and the base used.
func (e *edge) do(ctx context.Context, home int, method, path, ctype string, body []byte, hdr map[string]string) (*http.Response, []byte, string, error) {
	var last error
	for i := range e.bases {
		base := e.bases[(home+i)%len(e.bases)]
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		req, err := http.NewRequestWithContext(rctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			cancel()
			return nil, nil, "", err
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			last = err
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				continue // nothing listens there: the load balancer's next instance
			}
			return nil, nil, base, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		cancel()
		return resp, b, base, err
	}
	return nil, nil, "", last
}

// offer makes a PeerConnection with one video transceiver in dir and its
// gathered offer.
func offer(ctx context.Context, dir webrtc.RTPTransceiverDirection) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP, error) {
	pc, err := loopbackAPI().NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, nil, err
	}
	var track *webrtc.TrackLocalStaticRTP
	if dir == webrtc.RTPTransceiverDirectionSendonly {
		track, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "chaos")
		if err == nil {
			_, err = pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: dir})
		}
	} else {
		_, err = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: dir})
	}
	if err != nil {
		_ = pc.Close()
		return nil, nil, err
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		_ = pc.Close()
		return nil, nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		_ = pc.Close()
		return nil, nil, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		_ = pc.Close()
		return nil, nil, ctx.Err()
	case <-time.After(10 * time.Second):
		_ = pc.Close()
		return nil, nil, errors.New("ICE gathering did not complete in 10 s")
	}
	return pc, track, nil
}

// statusError is a setup refused with an HTTP status.
type statusError struct {
	code       int
	retryAfter string
	body       string
}

func (e *statusError) Error() string { return fmt.Sprintf("%d: %s", e.code, e.body) }

// post POSTs pc's offer to path and returns the answer and the session's
// Location path.
func (e *edge) post(ctx context.Context, home int, path, sdp string) (answer, location string, err error) {
	resp, body, base, err := e.do(ctx, home, http.MethodPost, path, "application/sdp", []byte(sdp), nil)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return "", "", &statusError{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: strings.TrimSpace(string(body))}
	}
	u, err := url.Parse(base + path)
	if err != nil {
		return "", "", err
	}
	loc, err := u.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return "", "", fmt.Errorf("bad Location %q", resp.Header.Get("Location"))
	}
	return string(body), loc.Path, nil
}

// sessionID is the last segment of a session's Location.
func sessionID(location string) string { return location[strings.LastIndexByte(location, '/')+1:] }

// event is something a client did, for the report.
type event struct {
	At     time.Time
	Kind   string // restart, restart-failed, connected, resetup, resetup-failed
	Detail string
}

// client is one long-lived publisher or player with a real client's
// recovery: on ICE disconnected it restarts ICE with a PATCH (through any
// signaling instance); when that does not reconnect it sets the session up
// again.
type client struct {
	name   string
	stream string
	pub    bool
	edge   *edge
	home   int

	mu       sync.Mutex
	pc       *webrtc.PeerConnection
	track    *webrtc.TrackLocalStaticRTP
	location string
	answer   string
	events   []event
	got      map[uint32]time.Time // player: counter -> first arrival
	setupAt  time.Time            // when the current session was set up
	restarts int                  // ICE restarts sent (PATCH)
	resetups int                  // new setups after the first

	next atomic.Uint32 // publisher: the counter of the next packet
	stop chan struct{}
	done sync.WaitGroup
}

func (c *client) record(kind, detail string) {
	c.mu.Lock()
	c.events = append(c.events, event{At: time.Now(), Kind: kind, Detail: detail})
	c.mu.Unlock()
}

// setup makes a new PeerConnection and POSTs its offer.
func (c *client) setup(ctx context.Context) error {
	dir, path := webrtc.RTPTransceiverDirectionRecvonly, "/whep/"+c.stream
	if c.pub {
		dir, path = webrtc.RTPTransceiverDirectionSendonly, "/whip/"+c.stream
	}
	pc, track, err := offer(ctx, dir)
	if err != nil {
		return err
	}
	if !c.pub {
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			for {
				pkt, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				if i := bytes.Index(pkt.Payload, payloadMagic); i >= 0 && len(pkt.Payload) >= i+len(payloadMagic)+4 {
					n := binary.BigEndian.Uint32(pkt.Payload[i+len(payloadMagic):])
					c.mu.Lock()
					if _, ok := c.got[n]; !ok {
						c.got[n] = time.Now()
					}
					c.mu.Unlock()
				}
			}
		})
	}
	answer, loc, err := c.edge.post(ctx, c.home, path, pc.LocalDescription().SDP)
	if err != nil {
		_ = pc.Close()
		return err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		_ = pc.Close()
		return fmt.Errorf("answer: %w", err)
	}
	c.mu.Lock()
	old := c.pc
	c.pc, c.track, c.location, c.answer = pc, track, loc, answer
	c.setupAt = time.Now()
	c.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// start sets the client up (retrying for up to a minute) and starts its
// sender (publishers) and its supervisor.
func (c *client) start(ctx context.Context) error {
	c.stop = make(chan struct{})
	c.got = map[uint32]time.Time{}
	var err error
	for i := 0; i < 30; i++ {
		if err = c.setup(ctx); err == nil {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if c.pub {
		c.done.Add(1)
		go c.send()
	}
	c.done.Add(1)
	go c.supervise(ctx)
	return nil
}

// send writes one RTP packet every packetEvery whose payload carries the
// counter (also the sequence number), across ICE restarts and new setups.
func (c *client) send() {
	defer c.done.Done()
	tick := time.NewTicker(packetEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		n := c.next.Load()
		payload := make([]byte, 0, 64)
		payload = append(payload, 0x10, 0x00, 0x9d, 0x01, 0x2a)
		payload = append(payload, payloadMagic...)
		payload = binary.BigEndian.AppendUint32(payload, n)
		c.mu.Lock()
		track := c.track
		c.mu.Unlock()
		_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(n),
			Timestamp: n * 1800, Marker: true}, Payload: payload})
		c.next.Add(1)
	}
}

// connected reports whether the client's ICE is connected.
func (c *client) connected() bool {
	c.mu.Lock()
	pc := c.pc
	c.mu.Unlock()
	s := pc.ICEConnectionState()
	return s == webrtc.ICEConnectionStateConnected || s == webrtc.ICEConnectionStateCompleted
}

// supervise watches ICE and recovers like a real client.
func (c *client) supervise(ctx context.Context) {
	defer c.done.Done()
	failedRestarts := 0
	var restartedAt time.Time // the last ICE restart that connected
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
		c.mu.Lock()
		st := c.pc.ICEConnectionState()
		setupAt := c.setupAt
		c.mu.Unlock()
		// A player whose ICE is up but that has had no packet for
		// stallAfter (its publisher moved to another origin session) sets
		// up anew, as players do on a stalled stream; counted from its setup
		// or its last ICE restart, whichever is later (a player that has
		// just restarted ICE gives the new path that long too).
		since := setupAt
		if restartedAt.After(since) {
			since = restartedAt
		}
		stalled := !c.pub && time.Since(since) > stallAfter && time.Since(c.lastArrival()) > stallAfter
		if stalled {
			c.record("stalled", "no media for "+stallAfter.String())
			failedRestarts = 2
		} else if st != webrtc.ICEConnectionStateDisconnected && st != webrtc.ICEConnectionStateFailed {
			continue
		}
		if failedRestarts < 2 {
			c.record("restart", st.String())
			if err := c.iceRestart(ctx); err != nil {
				c.record("restart-failed", err.Error())
				failedRestarts++
				c.sleep(time.Second)
				continue
			}
			if c.waitConnected(restartWait) {
				c.record("connected", "after ICE restart")
				failedRestarts = 0
				restartedAt = time.Now()
				continue
			}
			c.record("restart-failed", "not connected in "+restartWait.String())
			failedRestarts++
			continue
		}
		// Two restarts did not bring the session back: a new setup.
		c.mu.Lock()
		loc := c.location
		c.mu.Unlock()
		if resp, _, _, err := c.edge.do(ctx, c.home, http.MethodDelete, loc, "", nil, nil); err == nil {
			c.record("delete", resp.Status)
		}
		for i := 0; i < 60; i++ {
			err := c.setup(ctx)
			if err == nil {
				c.mu.Lock()
				c.resetups++
				c.mu.Unlock()
				c.record("resetup", "")
				break
			}
			c.record("resetup-failed", err.Error())
			if !c.sleep(time.Second) {
				return
			}
		}
		if c.waitConnected(restartWait) {
			c.record("connected", "after a new setup")
		}
		failedRestarts = 0
	}
}

func (c *client) sleep(d time.Duration) bool {
	select {
	case <-c.stop:
		return false
	case <-time.After(d):
		return true
	}
}

func (c *client) waitConnected(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c.connected() {
			return true
		}
		if !c.sleep(50 * time.Millisecond) {
			return false
		}
	}
	return false
}

// iceRestart restarts ICE the WHIP/WHEP way: a new offer with fresh
// credentials, a PATCH with them (If-Match: *), and the previous answer
// with the credentials and candidates of the 200 reply.
func (c *client) iceRestart(ctx context.Context) error {
	c.mu.Lock()
	pc, loc, prev := c.pc, c.location, c.answer
	c.restarts++
	c.mu.Unlock()
	o, err := pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-time.After(10 * time.Second):
		return errors.New("gathering for the restart did not complete")
	}
	var ufrag, pwd, mid string
	for _, l := range strings.Split(pc.LocalDescription().SDP, "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:") && ufrag == "":
			ufrag = l
		case strings.HasPrefix(l, "a=ice-pwd:") && pwd == "":
			pwd = l
		case strings.HasPrefix(l, "a=mid:") && mid == "":
			mid = l
		}
	}
	frag := ufrag + "\r\n" + pwd + "\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + mid + "\r\n"
	resp, body, _, err := c.edge.do(ctx, c.home, http.MethodPatch, loc, "application/trickle-ice-sdpfrag", []byte(frag),
		map[string]string{"If-Match": "*"})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		// The offer stays local; roll it back so the next attempt starts clean.
		_ = pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback})
		return fmt.Errorf("PATCH %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var creds, cands []string
	for _, l := range strings.Split(string(body), "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:"), strings.HasPrefix(l, "a=ice-pwd:"):
			creds = append(creds, l)
		case strings.HasPrefix(l, "a=candidate:"):
			cands = append(cands, l)
		}
	}
	if len(creds) != 2 || len(cands) == 0 {
		_ = pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback})
		return fmt.Errorf("restart reply lacks credentials or candidates: %q", body)
	}
	var out []string
	candsDone := false
	for _, l := range strings.Split(prev, "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:"):
			out = append(out, creds[0])
		case strings.HasPrefix(l, "a=ice-pwd:"):
			out = append(out, creds[1])
		case strings.HasPrefix(l, "a=candidate:"):
			if !candsDone {
				out = append(out, cands...)
				candsDone = true
			}
		default:
			out = append(out, l)
		}
	}
	answer := strings.Join(out, "\r\n")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("restart answer: %w", err)
	}
	c.mu.Lock()
	c.answer = answer
	c.mu.Unlock()
	return nil
}

// close stops the client and ends its session (DELETE).
func (c *client) close(ctx context.Context) {
	close(c.stop)
	c.done.Wait()
	c.mu.Lock()
	pc, loc := c.pc, c.location
	c.mu.Unlock()
	_ = pc.Close()
	_, _, _, _ = c.edge.do(ctx, c.home, http.MethodDelete, loc, "", nil, nil)
}

// id is the client's current session id.
func (c *client) id() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sessionID(c.location)
}

// arrivals returns the player's first-arrival times of counters in [from, to).
func (c *client) arrivals(from, to uint32) (missing int, times []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := from; n < to; n++ {
		if at, ok := c.got[n]; ok {
			times = append(times, at)
		} else {
			missing++
		}
	}
	return missing, times
}

// lastArrival is when the player's newest packet arrived.
func (c *client) lastArrival() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last time.Time
	for _, at := range c.got {
		if at.After(last) {
			last = at
		}
	}
	return last
}

// firstArrivalAfter is the first arrival at or after t of a counter at or
// above from.
func (c *client) firstArrivalAfter(t time.Time, from uint32) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first time.Time
	for n, at := range c.got {
		if n >= from && !at.Before(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// eventsSince returns the client's events at or after t.
func (c *client) eventsSince(t time.Time) []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event
	for _, e := range c.events {
		if !e.At.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

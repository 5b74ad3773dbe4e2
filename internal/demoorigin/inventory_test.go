package demoorigin

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// listPaths GETs the inventory.
func listPaths(t *testing.T, base, query string) PathList {
	t.Helper()
	res := do(t, http.MethodGet, base+"/v3/paths/list"+query, "", "", nil)
	if res.status != http.StatusOK {
		t.Fatalf("GET /v3/paths/list%s: %d %s", query, res.status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var l PathList
	if err := json.Unmarshal([]byte(res.body), &l); err != nil {
		t.Fatalf("inventory %q: %v", res.body, err)
	}
	return l
}

// playFrames plays key over WHEP and returns a channel of the decoded test
// pattern frame numbers.
func playFrames(t *testing.T, base, key string) <-chan uint16 {
	t.Helper()
	pc := newClientPC(t)
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	out := make(chan uint16, 1024)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		var frames VP8Frames
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if f := frames.Push(pkt); f != nil {
				if n, err := DecodeTestPattern(f); err == nil {
					select {
					case out <- n:
					default:
					}
				}
			}
		}
	})
	res := do(t, http.MethodPost, base+"/"+key+"/whep", "application/sdp", gatheredOffer(t, pc, nil), nil)
	if res.status != http.StatusCreated {
		t.Fatalf("WHEP POST: %d %s", res.status, res.body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: res.body}); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFrames waits for count decoded frames with increasing numbers.
func waitFrames(t *testing.T, frames <-chan uint16, count int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	var last uint16
	for got := 0; got < count; {
		select {
		case n := <-frames:
			if got > 0 && int16(n-last) <= 0 {
				t.Fatalf("frame %d after %d", n, last)
			}
			last = n
			got++
		case <-deadline:
			t.Fatalf("decoded only %d of %d frames", got, count)
		}
	}
}

func TestTestPatternPlaysDecodableFrames(t *testing.T) {
	o, srv := newTestOrigin(t, "")
	const key = "live/test"
	if err := o.PublishTestPattern(key); err != nil {
		t.Fatal(err)
	}
	a := playFrames(t, srv.URL, key)
	b := playFrames(t, srv.URL, key)
	waitFrames(t, a, 10)
	waitFrames(t, b, 10)

	l := listPaths(t, srv.URL, "")
	if l.ItemCount != 1 || l.PageCount != 1 || len(l.Items) != 1 {
		t.Fatalf("inventory %+v, want one stream", l)
	}
	p := l.Items[0]
	if p.Name != key || !p.Ready || p.ReadyTime == nil || p.Source == nil || p.Source.Type != "testPattern" ||
		len(p.Tracks) != 1 || p.Tracks[0] != "VP8" || len(p.Readers) != 2 || p.BytesReceived == 0 {
		t.Fatalf("inventory item %+v", p)
	}
	if st := o.Stats(); st.Publishers != 1 || st.Players != 2 || st.PacketsForwarded == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPublishTestPatternErrors(t *testing.T) {
	o, _ := newTestOrigin(t, "")
	for _, tc := range []struct {
		name, key string
		want      error
	}{
		{"empty key", "", ErrBadStreamKey},
		{"dot segment", "live/../x", ErrBadStreamKey},
		{"space", "live/a b", ErrBadStreamKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := o.PublishTestPattern(tc.key); !errors.Is(err, tc.want) {
				t.Fatalf("PublishTestPattern(%q) = %v, want %v", tc.key, err, tc.want)
			}
		})
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.PublishTestPattern("live/late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestInventoryListsWHIPPublishers: a WHIP publisher is listed as a
// webRTCSession with its tracks and readers; a WHIP publish replaces a test
// pattern (whose players go with it), and the test pattern's session is not
// reachable through the session URLs.
func TestInventoryListsWHIPPublishers(t *testing.T) {
	o, srv := newTestOrigin(t, "")
	if got := listPaths(t, srv.URL, ""); got.ItemCount != 0 || got.PageCount != 0 || got.Items == nil || len(got.Items) != 0 {
		t.Fatalf("empty inventory %+v", got)
	}
	if err := o.PublishTestPattern("live/a"); err != nil {
		t.Fatal(err)
	}
	testID := listPaths(t, srv.URL, "").Items[0].Source.ID
	for _, m := range []string{http.MethodDelete, http.MethodPatch} {
		if res := do(t, m, srv.URL+"/live/a/whip/"+testID, "application/trickle-ice-sdpfrag", "a=ice-ufrag:x\r\n", map[string]string{"If-Match": "*"}); res.status != http.StatusNotFound {
			t.Fatalf("%s on the test pattern's session: %d %s", m, res.status, res.body)
		}
	}
	frames := playFrames(t, srv.URL, "live/a")
	waitFrames(t, frames, 2)

	pub := publish(t, srv.URL, "live/a") // replaces the test pattern
	_ = pub
	pl := play(t, srv.URL, "live/a")
	pl.receive(t, 10, 0)
	eventually(t, "the WHIP publisher listed with one reader", func() bool {
		l := listPaths(t, srv.URL, "")
		if len(l.Items) != 1 {
			return false
		}
		p := l.Items[0]
		return p.Source != nil && p.Source.Type == "webRTCSession" && p.Source.ID != testID && p.Ready &&
			len(p.Tracks) == 1 && p.Tracks[0] == "VP8" && len(p.Readers) == 1 && p.BytesReceived > 0
	})
	res := do(t, http.MethodGet, srv.URL+"/v3/paths/get/live/a", "", "", nil)
	var p Path
	if res.status != http.StatusOK || json.Unmarshal([]byte(res.body), &p) != nil || p.Name != "live/a" {
		t.Fatalf("GET /v3/paths/get/live/a: %d %s", res.status, res.body)
	}
}

func TestInventoryPagesAndErrors(t *testing.T) {
	o, srv := newTestOrigin(t, "")
	for _, k := range []string{"live/c", "live/a", "live/b"} {
		if err := o.PublishTestPattern(k); err != nil {
			t.Fatal(err)
		}
	}
	names := func(l PathList) []string {
		var out []string
		for _, p := range l.Items {
			out = append(out, p.Name)
		}
		return out
	}
	for _, tc := range []struct {
		name, query string
		pages       int
		want        []string
	}{
		{"default", "", 1, []string{"live/a", "live/b", "live/c"}},
		{"first page of 2", "?itemsPerPage=2", 2, []string{"live/a", "live/b"}},
		{"second page of 2", "?itemsPerPage=2&page=1", 2, []string{"live/c"}},
		{"past the end", "?itemsPerPage=2&page=5", 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listPaths(t, srv.URL, tc.query)
			if l.ItemCount != 3 || l.PageCount != tc.pages || len(l.Items) != len(tc.want) {
				t.Fatalf("got %d items of %d, %d pages: %v", len(l.Items), l.ItemCount, l.PageCount, names(l))
			}
			for i := range tc.want {
				if l.Items[i].Name != tc.want[i] {
					t.Fatalf("items %v, want %v", names(l), tc.want)
				}
			}
		})
	}
	for _, tc := range []struct {
		name, method, path string
		status             int
	}{
		{"bad page", http.MethodGet, "/v3/paths/list?page=-1", http.StatusBadRequest},
		{"bad itemsPerPage", http.MethodGet, "/v3/paths/list?itemsPerPage=0", http.StatusBadRequest},
		{"huge itemsPerPage", http.MethodGet, "/v3/paths/list?itemsPerPage=100000", http.StatusBadRequest},
		{"not a number", http.MethodGet, "/v3/paths/list?page=x", http.StatusBadRequest},
		{"POST", http.MethodPost, "/v3/paths/list", http.StatusMethodNotAllowed},
		{"unknown path", http.MethodGet, "/v3/paths/get/" + url.PathEscape("live/zz"), http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if res := do(t, tc.method, srv.URL+tc.path, "", "", nil); res.status != tc.status {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, res.status, res.body, tc.status)
			}
		})
	}
}

// TestVP8FramesDropsGaps: a frame whose start, middle or end is missing is
// not returned; the next complete one is.
func TestVP8FramesDropsGaps(t *testing.T) {
	mk := func(seq uint16, ts uint32, start, marker bool) *rtp.Packet {
		desc := byte(0)
		if start {
			desc = 0x10
		}
		return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: marker}, Payload: []byte{desc, byte(seq)}}
	}
	for _, tc := range []struct {
		name string
		pkts []*rtp.Packet
		want int // complete frames
	}{
		{"whole frames", []*rtp.Packet{mk(1, 10, true, false), mk(2, 10, false, true), mk(3, 20, true, true)}, 2},
		{"missing start", []*rtp.Packet{mk(2, 10, false, true), mk(3, 20, true, true)}, 1},
		{"missing middle", []*rtp.Packet{mk(1, 10, true, false), mk(3, 10, false, true)}, 0},
		{"missing end then a new frame", []*rtp.Packet{mk(1, 10, true, false), mk(3, 20, true, true)}, 1},
		{"empty payload", []*rtp.Packet{{Header: rtp.Header{Marker: true}}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f VP8Frames
			n := 0
			for _, p := range tc.pkts {
				if f.Push(p) != nil {
					n++
				}
			}
			if n != tc.want {
				t.Fatalf("%d frames, want %d", n, tc.want)
			}
		})
	}
}

package sdpx

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
)

// fixture reads a captured SDP from ../shared/reference/sdp, beside the
// checkout.
func fixture(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "..", "shared", "reference", "sdp")
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Skipf("fixture %s not available: %v", name, err)
	}
	return string(b)
}

func TestParseOfferStripsClientAddresses(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		ufrag string
		leaks []string // strings that must not survive
	}{
		{name: "chrome whip", file: "chrome-whip-offer.sdp", leaks: []string{"a=candidate", "10.88.0.2"}},
		{name: "chrome whep", file: "chrome-whep-offer.sdp", leaks: []string{"a=candidate", "10.88.0.2"}},
		{name: "chrome mdns", file: "chrome-whep-offer-mdns.sdp", leaks: []string{"a=candidate", ".local"}},
		{name: "chrome no candidates", file: "chrome-whep-offer-no-candidates.sdp", leaks: []string{"a=candidate"}},
		{name: "chrome mtx page trickle", file: "chrome-mtxpage-whip-offer.sdp", leaks: []string{"a=candidate"}},
		{name: "gstreamer whip", file: "gstreamer-whip-offer.sdp", leaks: []string{"a=candidate", "10.88.0.2", "fe80::", "end-of-candidates"}},
		{name: "gstreamer whep", file: "gstreamer-whep-offer.sdp", leaks: []string{"a=candidate", "10.88.0.2", "end-of-candidates"}},
		{name: "gstreamer trickle", file: "gstreamer-whip-trickle-offer.sdp", leaks: []string{"a=candidate"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := fixture(t, tc.file)
			o, err := ParseOffer(raw)
			if err != nil {
				t.Fatal(err)
			}
			for _, leak := range tc.leaks {
				if strings.Contains(o.Sanitized, leak) {
					t.Errorf("sanitized offer still contains %q", leak)
				}
			}
			if o.ICE.Ufrag == "" || !strings.Contains(o.Sanitized, "a=ice-ufrag:"+o.ICE.Ufrag) {
				t.Errorf("ICE credentials lost: %+v", o.ICE)
			}
			for _, line := range strings.Split(o.Sanitized, "\r\n") {
				if strings.HasPrefix(line, "m=") && !strings.Contains(line, " 9 ") && !strings.Contains(line, " 0 ") {
					t.Errorf("m-line keeps a port: %s", line)
				}
				if strings.HasPrefix(line, "c=") && line != "c=IN IP4 0.0.0.0" {
					t.Errorf("connection line keeps an address: %s", line)
				}
			}
			// mids and BUNDLE stay untouched.
			for _, line := range strings.Split(raw, "\r\n") {
				if strings.HasPrefix(line, "a=mid:") || strings.HasPrefix(line, "a=group:BUNDLE") {
					if !strings.Contains(o.Sanitized, line) {
						t.Errorf("lost %q", line)
					}
				}
			}
		})
	}
}

func TestParseOfferRejects(t *testing.T) {
	tests := []struct {
		name, sdp string
		want      error
	}{
		{name: "garbage", sdp: "hello", want: ErrMalformed},
		{name: "empty", sdp: "", want: ErrMalformed},
		{name: "no media", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", want: ErrUnsupported},
		{name: "only data channel", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", want: ErrUnsupported},
		{name: "two media streams", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
			"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:streamA trackA\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:streamB trackB\r\n", want: ErrUnsupported},
		{name: "two media streams by ssrc", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
			"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ssrc:1 msid:streamA trackA\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ssrc:2 msid:streamB trackB\r\n", want: ErrUnsupported},
		{name: "no ice", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", want: ErrMalformed},
		{name: "short pwd", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:abcd\r\na=ice-pwd:short\r\n", want: ErrMalformed},
		// Found by FuzzOfferAndAnswer: a bare CR hid a candidate line from
		// the sanitizer inside another line's value.
		{name: "candidate behind a bare CR", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:abcd\r\n" +
			"a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=mid:0\ra=candidate:1 1 udp 2130706431 203.0.113.9 5000 typ host\r\n", want: ErrMalformed},
		{name: "control character", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\x00\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", want: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseOffer(tc.sdp); err == nil || !errorsIs(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func errorsIs(err, target error) bool {
	return err != nil && strings.Contains(err.Error(), target.Error())
}

var relayCands = []Candidate{
	{Foundation: "1234", Priority: 2130706431, Addr: netip.MustParseAddrPort("198.51.100.7:8000")},
	{Foundation: "5678", Priority: 2130706175, Addr: netip.MustParseAddrPort("[2001:db8::7]:8000")},
}

func TestRewriteAnswer(t *testing.T) {
	tests := []struct {
		name      string
		file      string // a fixture of shared/reference/sdp, or testdata/<name>
		originIP  string
		wantComps int
		leaks     []string // origin addresses that must not survive
	}{
		{name: "mediamtx whip to chrome", file: "mediamtx-whip-answer-to-chrome.sdp", originIP: "10.88.0.1", wantComps: 2},
		{name: "mediamtx whep to chrome", file: "mediamtx-whep-answer-to-chrome.sdp", originIP: "10.88.0.1", wantComps: 2},
		{name: "mediamtx whep to chrome mdns", file: "mediamtx-whep-answer-to-chrome-mdns.sdp", originIP: "10.88.0.1", wantComps: 2},
		{name: "mediamtx whep to chrome no candidates", file: "mediamtx-whep-answer-to-chrome-no-candidates.sdp", originIP: "10.88.0.1", wantComps: 2},
		{name: "mediamtx whip to chrome mtx page", file: "mediamtx-whip-answer-to-chrome-mtxpage.sdp", originIP: "10.88.0.1", wantComps: 2},
		{name: "mediamtx whip to gstreamer", file: "mediamtx-whip-answer-to-gstreamer.sdp", originIP: "10.88.0.1", wantComps: 2},
		{name: "mediamtx whep to gstreamer trickle", file: "mediamtx-whep-answer-to-gstreamer-trickle.sdp", originIP: "10.88.0.1", wantComps: 2},
		{name: "srs style", file: "testdata/srs-answer.sdp", originIP: "192.0.2.10", wantComps: 1, leaks: []string{"tcptype"}},
		{name: "pion style", file: "testdata/pion-answer.sdp", originIP: "192.0.2.20", wantComps: 1,
			leaks: []string{"2001:db8::20", "203.0.113.20", ".local", "50000", "50001", "8443", "tcptype"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var raw string
			if strings.HasPrefix(tc.file, "testdata/") {
				b, err := os.ReadFile(tc.file)
				if err != nil {
					t.Fatal(err)
				}
				raw = string(b)
			} else {
				raw = fixture(t, tc.file)
			}
			a, err := ParseAnswer(raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.MediaAddresses) == 0 || a.MediaAddresses[0].Addr().String() != tc.originIP {
				t.Fatalf("media addresses %v, want %s first", a.MediaAddresses, tc.originIP)
			}
			out, err := a.RewriteAnswer(relayCands)
			if err != nil {
				t.Fatal(err)
			}
			for _, leak := range append([]string{tc.originIP}, tc.leaks...) {
				if strings.Contains(out, leak) {
					t.Errorf("origin address %q survives:\n%s", leak, out)
				}
			}
			// m= ports are the relay's first port, 9, or 0 (rejected).
			for _, line := range strings.Split(out, "\r\n") {
				if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(line, "m=") && f[1] != "8000" && f[1] != "9" && f[1] != "0" {
					t.Errorf("m= port %s", line)
				}
			}
			if strings.Contains(out, " tcp ") || strings.Contains(out, " TCP ") {
				t.Error("TCP candidate survives")
			}
			var cands int
			for _, line := range strings.Split(out, "\r\n") {
				if strings.HasPrefix(line, "a=candidate:") {
					cands++
					if !strings.Contains(line, "198.51.100.7 8000") && !strings.Contains(line, "2001:db8::7 8000") {
						t.Errorf("non-relay candidate: %s", line)
					}
				}
			}
			if cands != len(relayCands)*tc.wantComps {
				t.Errorf("%d candidates, want %d", cands, len(relayCands)*tc.wantComps)
			}
			if strings.Count(out, "a=end-of-candidates") != 1 {
				t.Error("want exactly one a=end-of-candidates")
			}
			for _, line := range strings.Split(raw, "\r\n") {
				if strings.HasPrefix(line, "a=mid:") || strings.HasPrefix(line, "a=group:BUNDLE") || strings.HasPrefix(line, "a=fingerprint") {
					if !strings.Contains(out, line) {
						t.Errorf("lost %q", line)
					}
				}
			}
		})
	}
}

// srsAnswer is shaped like SRS 6's WHIP answer: ICE-lite, one UDP host
// candidate plus a TCP one, no end-of-candidates.
const srsAnswer = "v=0\r\no=SRS/6.0.0 1 2 IN IP4 0.0.0.0\r\ns=SRSPublishSession\r\nt=0 0\r\na=ice-lite\r\n" +
	"a=group:BUNDLE 0 1\r\na=msid-semantic: WMS live/livestream\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:k1sr9v5e\r\na=ice-pwd:1u90c4f1wl6b5j46v2q79p1v1v3k2i80\r\n" +
	"a=fingerprint:sha-256 3E:40:1F:AA\r\na=setup:passive\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n" +
	"a=candidate:0 1 udp 2130706431 192.0.2.10 8000 typ host generation 0\r\n" +
	"a=candidate:1 1 tcp 2130706431 192.0.2.10 8000 typ host tcptype passive generation 0\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 106\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:k1sr9v5e\r\na=ice-pwd:1u90c4f1wl6b5j46v2q79p1v1v3k2i80\r\n" +
	"a=fingerprint:sha-256 3E:40:1F:AA\r\na=setup:passive\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:106 H264/90000\r\n" +
	"a=candidate:0 1 udp 2130706431 192.0.2.10 8000 typ host generation 0\r\n"

func TestParseFrag(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		body    string
		restart bool
		cands   int
		end     bool
		wantErr bool
	}{
		{name: "gstreamer trickle", file: "gstreamer-whip-trickle-patch-1.sdpfrag", cands: -1},
		{name: "gstreamer end", file: "gstreamer-whip-trickle-patch-2.sdpfrag", end: true},
		{name: "chrome trickle", file: "chrome-mtxpage-whip-trickle-patch-1.sdpfrag", cands: -1},
		{name: "restart", body: "a=ice-ufrag:newu\r\na=ice-pwd:newpasswordnewpassword1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n", restart: true},
		{name: "ufrag without pwd", body: "a=ice-ufrag:newu\r\n"},
		{name: "pwd without ufrag", body: "a=ice-pwd:newpasswordnewpassword1\r\n", wantErr: true},
		{name: "short pwd", body: "a=ice-ufrag:newu\r\na=ice-pwd:short\r\n", wantErr: true},
		{name: "full sdp", body: "v=0\r\n", wantErr: true},
		{name: "empty", body: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if tc.file != "" {
				body = fixture(t, tc.file)
			}
			f, err := ParseFrag(body)
			if tc.wantErr {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.restart != (f.ICE.Pwd != "" && tc.file == "") {
				t.Errorf("ICE %+v", f.ICE)
			}
			if tc.cands == -1 && len(f.Candidates) == 0 {
				t.Error("no candidates parsed")
			}
			if f.End != tc.end && tc.end {
				t.Error("end-of-candidates not seen")
			}
		})
	}
}

func FuzzOfferAndAnswer(f *testing.F) {
	for _, name := range []string{"chrome-whip-offer.sdp", "gstreamer-whip-offer.sdp", "mediamtx-whip-answer-to-chrome.sdp"} {
		dir := filepath.Join("..", "..", "..", "..", "shared", "reference", "sdp")
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			f.Add(string(b))
		}
	}
	for _, name := range []string{"pion-answer.sdp", "srs-answer.sdp"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(string(b))
		}
	}
	f.Add(srsAnswer)
	f.Add("v=0\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		if o, err := ParseOffer(s); err == nil {
			d, err := parse(o.Sanitized)
			if err != nil {
				t.Fatalf("sanitized offer does not parse: %v", err)
			}
			for _, m := range append([]*sdp.MediaDescription{{Attributes: d.Attributes}}, d.MediaDescriptions...) {
				if _, ok := m.Attribute("candidate"); ok {
					t.Fatal("candidate survived sanitising")
				}
			}
		}
		if a, err := ParseAnswer(s); err == nil {
			// UDP and ICE-TCP passive relay candidates.
			out, err := a.RewriteAnswer(relayTCPCands)
			if err == nil {
				d, err := parse(out)
				if err != nil {
					t.Fatalf("rewritten answer does not parse: %v", err)
				}
				n := 0
				for _, m := range append([]*sdp.MediaDescription{{Attributes: d.Attributes}}, d.MediaDescriptions...) {
					for _, at := range m.Attributes {
						if at.Key == "end-of-candidates" {
							n++
						}
						if at.Key == "candidate" {
							if _, err := ice.UnmarshalCandidate(at.Value); err != nil {
								t.Fatalf("candidate %q: %v", at.Value, err)
							}
						}
					}
				}
				if n != 1 {
					t.Fatalf("%d end-of-candidates after rewrite", n)
				}
			}
		}
		_, _ = ParseFrag(s)
	})
}

func BenchmarkParseOffer(b *testing.B) {
	offer := fixture(b, "chrome-whip-offer.sdp")
	for b.Loop() {
		if _, err := ParseOffer(offer); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRewriteAnswer(b *testing.B) {
	answer := fixture(b, "mediamtx-whip-answer-to-chrome.sdp")
	for b.Loop() {
		a, err := ParseAnswer(answer)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.RewriteAnswer(relayCands); err != nil {
			b.Fatal(err)
		}
	}
}

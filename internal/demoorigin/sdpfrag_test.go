package demoorigin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseFragFixtures(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "reference", "sdp")
	if _, err := os.Stat(dir); err != nil {
		t.Skip("reference SDP directory absent")
	}
	for _, tc := range []struct {
		file       string
		ufrag      string
		candidates int
		end        bool
	}{
		{"chrome-mtxpage-whep-trickle-patch-1.sdpfrag", "f07k", 3, false},
		{"chrome-mtxpage-whip-trickle-patch-1.sdpfrag", "CE83", 2, false},
		{"gstreamer-whep-trickle-patch-1.sdpfrag", "HrCgdgmTDqaI+lC2UKSdkU2UR+N1YTMu", 6, false},
		{"gstreamer-whip-trickle-patch-2.sdpfrag", "f482KuMZc+Ks7V/HIWzjAI7UkQP8NmP/", 0, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			f, err := parseFrag(b)
			if err != nil {
				t.Fatal(err)
			}
			if f.ufrag != tc.ufrag || f.pwd == "" || len(f.candidates) != tc.candidates || f.endOfCandidates != tc.end {
				t.Fatalf("got %+v", f)
			}
			for _, c := range f.candidates {
				if !strings.HasPrefix(c, "candidate:") {
					t.Errorf("candidate %q", c)
				}
			}
		})
	}
}

func TestParseFragErrors(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"not sdp", "hello"},
		{"too many lines", strings.Repeat("a=end-of-candidates\r\n", maxFragLines+1)},
		{"bad m line", "m=\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f, err := parseFrag([]byte(tc.body)); err == nil {
				t.Fatalf("accepted: %+v", f)
			}
		})
	}
}

func TestRestartedOffer(t *testing.T) {
	offer := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwdoldpwdoldpwdoldpw\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:old\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"
	got, err := restartedOffer(offer, "new", "newpwdnewpwdnewpwdnewpw")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"old", "candidate", "end-of-candidates"} {
		if strings.Contains(got, bad) {
			t.Errorf("restarted offer still has %q:\n%s", bad, got)
		}
	}
	if strings.Count(got, "a=ice-ufrag:new") != 2 || !strings.Contains(got, "o=- 1 3 ") {
		t.Errorf("restarted offer:\n%s", got)
	}
}

func TestValidStreamKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"live/demo", true},
		{"__defaultVhost__/live/cam1", true},
		{"", false},
		{"live//a", false},
		{"live/../a", false},
		{"/live", false},
		{"live/a b", false},
		{strings.Repeat("a", maxStreamKeyLen+1), false},
	} {
		if got := validStreamKey(tc.key); got != tc.want {
			t.Errorf("validStreamKey(%q) = %v", tc.key, got)
		}
	}
}

func FuzzParseFrag(f *testing.F) {
	f.Add([]byte("a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 1 UDP 1 127.0.0.1 1 typ host\r\n"))
	f.Add([]byte("a=end-of-candidates\n"))
	f.Add([]byte("m=video 9\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		frag, err := parseFrag(b)
		if err != nil {
			return
		}
		for _, c := range frag.candidates {
			if !strings.HasPrefix(c, "candidate") {
				t.Fatalf("candidate %q", c)
			}
		}
	})
}

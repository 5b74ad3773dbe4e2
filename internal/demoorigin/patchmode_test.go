package demoorigin

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestPatchModes: with PatchReject a PATCH gets 405 and an Allow without
// PATCH, with PatchClose the connection closes without an answer (as SRS
// does), and with the default every PATCH is served; Stats counts the PATCH
// requests in every mode and the sessions created.
func TestPatchModes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    PatchMode
		status  int // 0: no answer
		allow   string
		accepts bool // OPTIONS advertises PATCH
	}{
		{name: "default accepts", mode: "", status: http.StatusNoContent, allow: "OPTIONS, PATCH, DELETE", accepts: true},
		{name: "accept", mode: PatchAccept, status: http.StatusNoContent, allow: "OPTIONS, PATCH, DELETE", accepts: true},
		{name: "reject", mode: PatchReject, status: http.StatusMethodNotAllowed, allow: "OPTIONS, DELETE"},
		{name: "close", mode: PatchClose, status: 0, allow: "OPTIONS, DELETE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, srv := newTestOrigin(t, "", func(c *Config) { c.PatchMode = tc.mode })
			p := publishOpt(t, srv.URL, testStream, false)
			if st := o.Stats(); st.SessionsCreated != 1 || st.PatchRequests != 0 {
				t.Fatalf("after one publish: %+v", st)
			}
			opt := do(t, http.MethodOptions, p.location, "", "", nil)
			if opt.header.Get("Allow") != tc.allow || (opt.header.Get("Accept-Patch") != "") != tc.accepts {
				t.Errorf("OPTIONS Allow %q Accept-Patch %q", opt.header.Get("Allow"), opt.header.Get("Accept-Patch"))
			}
			trickle := "a=end-of-candidates\r\n"
			restart := "a=ice-ufrag:Restart1\r\na=ice-pwd:restartpasswordrestart1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"
			for i, body := range []string{trickle, restart} {
				req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, p.location, strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
				req.Header.Set("If-Match", "*")
				resp, err := http.DefaultClient.Do(req)
				if tc.status == 0 {
					if err == nil {
						resp.Body.Close()
						t.Fatalf("PATCH %d answered %d; want the connection closed", i, resp.StatusCode)
					}
					if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
						t.Errorf("PATCH %d: %v", i, err)
					}
				} else {
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					want := tc.status
					if tc.accepts && body == restart {
						want = http.StatusOK
					}
					if resp.StatusCode != want {
						t.Fatalf("PATCH %d = %d, want %d: %s", i, resp.StatusCode, want, b)
					}
					if want == http.StatusMethodNotAllowed && (resp.Header.Get("Allow") != tc.allow || resp.Header.Get("Content-Type") != problemMediaType) {
						t.Errorf("405 headers %v", resp.Header)
					}
				}
			}
			if st := o.Stats(); st.SessionsCreated != 1 || st.PatchRequests != 2 {
				t.Errorf("after two PATCHes: sessions created %d, PATCH requests %d; want 1, 2", st.SessionsCreated, st.PatchRequests)
			}
			// The session is still there: DELETE works.
			if res := do(t, http.MethodDelete, p.location, "", "", nil); res.status != http.StatusOK {
				t.Errorf("DELETE = %d", res.status)
			}
		})
	}
}

func TestParsePatchMode(t *testing.T) {
	for _, s := range []string{"accept", "reject", "close"} {
		if m, err := ParsePatchMode(s); err != nil || string(m) != s {
			t.Errorf("ParsePatchMode(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "Reject", "drop"} {
		if _, err := ParsePatchMode(s); err == nil {
			t.Errorf("ParsePatchMode(%q) accepted", s)
		}
	}
	if o, err := New(Config{MediaAddr: "127.0.0.1:0", PatchMode: "drop"}); err == nil {
		_ = o.Close()
		t.Fatal("New accepted patch mode drop")
	}
}

package signaling_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling"
)

// FuzzRequestPath drives the whole HTTP handler with arbitrary WHIP POSTs
// (body, Content-Type, Authorization) and PATCHes of a live session (body,
// Content-Type, If-Match) against real etcd, a real relay and a fake
// origin, set up once: every answer is a 2xx, 4xx or 5xx, and every error
// is application/problem+json. Sessions a fuzzed POST creates are deleted
// at once.
func FuzzRequestPath(f *testing.F) {
	offer := fixture(f, "chrome-whip-offer.sdp")
	for _, s := range []struct{ post, patch string }{
		{offer, fixture(f, "gstreamer-whip-trickle-patch-1.sdpfrag")},
		{fixture(f, "gstreamer-whip-trickle-offer.sdp"), fixture(f, "gstreamer-whip-trickle-patch-2.sdpfrag")},
		{fixture(f, "chrome-mtxpage-whip-offer.sdp"), fixture(f, "chrome-mtxpage-whip-trickle-patch-1.sdpfrag")},
	} {
		f.Add([]byte(s.post), "application/sdp", "Bearer fuzz-token", []byte(s.patch), "application/trickle-ice-sdpfrag", "*")
	}
	// An ICE restart.
	f.Add([]byte(offer), "application/sdp; charset=utf-8", "Bearer wrong", []byte("a=ice-ufrag:fuzzufrag\r\na=ice-pwd:fuzzpasswordfuzzpassword12\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"),
		"application/trickle-ice-sdpfrag", "*")
	f.Add([]byte("v=0\r\n"), "text/plain", "", []byte("a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n"), "application/sdp", `"nope"`)

	e := newEnv(f, 0)
	origin := newFakeOrigin(f, registry.OriginKindWHIP)
	origin.register(f, e.reg)
	srv, err := signaling.New(signaling.Config{Registry: e.reg, Auth: signaling.Auth{Tokens: []string{"fuzz-token"}},
		OriginTimeout: 2 * time.Second, RelayCallTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	h := srv.Handler()
	serve := func(method, target, ctype string, body []byte, hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, strings.NewReader(string(body)))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i+1] != "" {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	// The session the PATCHes go to.
	created := serve(http.MethodPost, "/whip/live/fuzz", "application/sdp", []byte(offer), "Authorization", "Bearer fuzz-token")
	if created.Code != http.StatusCreated {
		f.Fatalf("setting up the session: %d %s", created.Code, created.Body)
	}
	session := created.Header().Get("Location")

	check := func(t *testing.T, what string, rec *httptest.ResponseRecorder) {
		t.Helper()
		if rec.Code < 200 || rec.Code >= 600 || rec.Code >= 300 && rec.Code < 400 {
			t.Fatalf("%s: status %d", what, rec.Code)
		}
		if rec.Code < 400 || rec.Code == http.StatusNotAcceptable && rec.Header().Get("Content-Type") == "application/sdp" {
			return
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("%s: %d with Content-Type %q, want application/problem+json", what, rec.Code, ct)
		}
		var p struct {
			Title  string `json:"title"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != rec.Code || p.Title == "" {
			t.Fatalf("%s: %d with problem %q (%v)", what, rec.Code, rec.Body, err)
		}
	}
	f.Fuzz(func(t *testing.T, postBody []byte, postCT, authorization string, patchBody []byte, patchCT, ifMatch string) {
		rec := serve(http.MethodPost, "/whip/live/fuzz", postCT, postBody, "Authorization", authorization)
		check(t, "POST", rec)
		if rec.Code == http.StatusCreated {
			// Keep the relay and origin small.
			loc := rec.Header().Get("Location")
			if !strings.HasPrefix(loc, "/sessions/") || rec.Header().Get("ETag") == "" {
				t.Fatalf("201 without a session Location or ETag: %v", rec.Header())
			}
			if d := serve(http.MethodDelete, loc, "", nil); d.Code != http.StatusOK {
				t.Fatalf("DELETE of a fuzzed session: %d %s", d.Code, d.Body)
			}
		}
		check(t, "PATCH", serve(http.MethodPatch, session, patchCT, patchBody, "If-Match", ifMatch))
	})
}

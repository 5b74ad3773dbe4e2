package signaling_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/rtcedge/rtcedge/registry"
)

// TestMethodsAndPatchTypes: a method a resource does not serve gets 405
// with Allow naming the ones it does; GET gets 2xx with no body, as RFC
// 9725 section 4.1 requires, with Allow too; a PATCH whose body is not a
// trickle-ice-sdpfrag gets 415 with Accept-Patch, application/sdp included
// unless the session awaits the answer to a WHEP counter-offer. Every error
// is application/problem+json with a detail.
func TestMethodsAndPatchTypes(t *testing.T) {
	e := newEnv(t, 1)
	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.counterOffer = true // WHEP answers 406 with an offer
	origin.register(t, e.reg)
	base := e.sig[0].URL
	whip := do(t, http.MethodPost, base+"/whip/live/methods", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if whip.status != http.StatusCreated {
		t.Fatalf("WHIP POST = %d %s", whip.status, whip.body)
	}
	whep := do(t, http.MethodPost, base+"/whep/live/methods", "application/sdp", fixture(t, "chrome-whep-offer.sdp"))
	if whep.status != http.StatusNotAcceptable {
		t.Fatalf("WHEP POST = %d %s", whep.status, whep.body)
	}
	session, countered := base+whip.header.Get("Location"), base+whep.header.Get("Location")
	const (
		sessionAllow  = "PATCH, DELETE, OPTIONS, GET"
		endpointAllow = "POST, OPTIONS, GET, HEAD"
		fragOnly      = "application/trickle-ice-sdpfrag"
	)
	answer := fixture(t, "chrome-whep-offer.sdp")

	tests := []struct {
		name         string
		method, url  string
		ctype, body  string
		ifMatch      string
		status       int
		allow        string // want Allow
		acceptPatch  string // want Accept-Patch
		detailSubstr string // in the problem's detail
	}{
		{name: "GET whip endpoint is 204 with Allow", method: "GET", url: base + "/whip/live/x", status: 204, allow: endpointAllow},
		{name: "GET whep endpoint is 204 with Allow", method: "GET", url: base + "/whep/live/x", status: 204, allow: endpointAllow},
		{name: "GET session is 204 with Allow", method: "GET", url: session, status: 204, allow: sessionAllow},
		{name: "PUT whip endpoint", method: "PUT", url: base + "/whip/live/x", status: 405, allow: endpointAllow, detailSubstr: "PUT is not supported on a WHIP endpoint"},
		{name: "DELETE whep endpoint", method: "DELETE", url: base + "/whep/live/x", status: 405, allow: endpointAllow, detailSubstr: "WHEP endpoint"},
		{name: "PATCH whip endpoint", method: "PATCH", url: base + "/whip/live/x", ctype: fragOnly, body: "a=end-of-candidates\r\n", status: 405, allow: endpointAllow},
		{name: "PUT srs whip endpoint", method: "PUT", url: base + "/rtc/v1/whip/?app=live&stream=x", status: 405, allow: endpointAllow},
		{name: "GET srs legacy publish", method: "GET", url: base + "/rtc/v1/publish/", status: 405, allow: "POST, OPTIONS", detailSubstr: "streamurl"},
		{name: "POST session", method: "POST", url: session, ctype: "application/sdp", body: answer, status: 405, allow: sessionAllow, detailSubstr: "POST is not supported on a session"},
		{name: "PUT session", method: "PUT", url: session, status: 405, allow: sessionAllow},
		{name: "PUT unknown session", method: "PUT", url: base + "/sessions/nope", status: 405, allow: sessionAllow},
		{name: "PATCH sdp to a session without a counter-offer", method: "PATCH", url: session, ctype: "application/sdp", body: answer, ifMatch: "*",
			status: 415, acceptPatch: fragOnly, detailSubstr: "counter-offer"},
		{name: "PATCH sdp without If-Match is still 415", method: "PATCH", url: session, ctype: "application/sdp", body: answer,
			status: 415, acceptPatch: fragOnly},
		{name: "PATCH text/plain", method: "PATCH", url: session, ctype: "text/plain", body: "x", ifMatch: "*", status: 415, acceptPatch: fragOnly},
		{name: "PATCH without Content-Type", method: "PATCH", url: session, body: "x", ifMatch: "*", status: 415, acceptPatch: fragOnly},
		{name: "PATCH text/plain to a counter-offered session", method: "PATCH", url: countered, ctype: "text/plain", body: "x", ifMatch: "*",
			status: 415, acceptPatch: fragOnly + ", application/sdp"},
		{name: "PATCH a malformed answer to a counter-offered session", method: "PATCH", url: countered, ctype: "application/sdp", body: "v=0\r\nnonsense",
			ifMatch: "*", status: 400, detailSubstr: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.ifMatch != "" {
				hdr = []string{"If-Match", tc.ifMatch}
			}
			r := do(t, tc.method, tc.url, tc.ctype, tc.body, hdr...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.allow != "" && r.header.Get("Allow") != tc.allow {
				t.Errorf("Allow %q, want %q", r.header.Get("Allow"), tc.allow)
			}
			if tc.acceptPatch != "" && r.header.Get("Accept-Patch") != tc.acceptPatch {
				t.Errorf("Accept-Patch %q, want %q", r.header.Get("Accept-Patch"), tc.acceptPatch)
			}
			if r.status < 300 {
				if r.body != "" {
					t.Errorf("a %d with a body: %q", r.status, r.body)
				}
				return
			}
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("error Content-Type %q", ct)
			}
			var p struct {
				Status int    `json:"status"`
				Title  string `json:"title"`
				Detail string `json:"detail"`
			}
			if err := json.Unmarshal([]byte(r.body), &p); err != nil || p.Status != tc.status || p.Title == "" || p.Detail == "" {
				t.Fatalf("problem %q: %+v %v", r.body, p, err)
			}
			if !strings.Contains(p.Detail, tc.detailSubstr) {
				t.Errorf("detail %q lacks %q", p.Detail, tc.detailSubstr)
			}
		})
	}
	// None of the refused PATCHes reached the origin.
	if _, _, patches := origin.counts(); patches != 0 {
		t.Errorf("the origin saw %d PATCHes", patches)
	}
}

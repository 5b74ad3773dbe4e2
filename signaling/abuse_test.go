package signaling_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rtcedge/rtcedge/signaling"
)

// TestBadRegistrationTokens sends 10 000 registrations with wrong tokens,
// over the SRS heartbeat and the REST gateway: every one is 401 and no
// origin appears.
func TestBadRegistrationTokens(t *testing.T) {
	e := newEnv(t, 0)
	srv, err := signaling.New(signaling.Config{Registry: e.reg, RegistrationToken: "the-real-token"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h := srv.Handler()
	srs := `{"device_id":"intruder","ip":"127.0.0.1","api":["1985"],"rtc":["8000"]}`
	rest := `{"origin":{"id":"intruder","kind":"ORIGIN_KIND_MEDIAMTX","apiBaseUrl":"http://127.0.0.1:8889"}}`
	for i := 0; i < 10000; i++ {
		var req *http.Request
		switch i % 4 {
		case 0:
			req = httptest.NewRequest(http.MethodPost, "/api/v1/srs/register", strings.NewReader(srs))
		case 1:
			req = httptest.NewRequest(http.MethodPost, "/api/v1/srs/register?token=guess", strings.NewReader(srs))
		case 2:
			req = httptest.NewRequest(http.MethodPost, "/v1/origins", strings.NewReader(rest))
			req.Header.Set("Authorization", "Bearer the-real-tokeN")
		default:
			req = httptest.NewRequest(http.MethodPost, "/v1/origins", strings.NewReader(rest))
		}
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d (%s): %d %s", i, req.URL, rec.Code, rec.Body)
		}
	}
	if os, err := e.reg.ListOrigins(t.Context()); err != nil || len(os) != 0 {
		t.Fatalf("origins after bad tokens: %v %v", os, err)
	}
	// The right token still works.
	req := httptest.NewRequest(http.MethodPost, "/api/v1/srs/register?token=the-real-token", strings.NewReader(srs))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("good token: %d %s", rec.Code, rec.Body)
	}
}

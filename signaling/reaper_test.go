package signaling_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling"
)

// TestReaperRemovesSessionsOfDeadRelays: a relay dies for good and nobody
// ICE-restarts; after the grace period the reaper deletes the origin's
// session and the record, and the metrics show it.
func TestReaperRemovesSessionsOfDeadRelays(t *testing.T) {
	e := newEnv(t, 0)
	srv, err := signaling.New(signaling.Config{Registry: e.reg, ReapInterval: 100 * time.Millisecond, OrphanGrace: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); srv.RunReaper(ctx) }()
	defer func() { cancel(); <-done }()

	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.register(t, e.reg)
	rec := httptestDo(t, srv.Handler(), "POST", "/whip/live/reap", "application/sdp", fixture(t, "chrome-whip-offer.sdp"))
	if rec.Code != http.StatusCreated {
		t.Fatalf("POST %d %s", rec.Code, rec.Body)
	}
	// A live relay's session is left alone.
	time.Sleep(time.Second)
	if ss, _ := e.reg.ListSessions(t.Context()); len(ss) != 1 {
		t.Fatalf("sessions on a live relay: %d", len(ss))
	}
	_ = e.relay.Close() // dies for good: its registration goes
	deadline := time.Now().Add(15 * time.Second)
	for {
		ss, err := e.reg.ListSessions(t.Context())
		if err == nil && len(ss) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphaned session not reaped: %v %v", ss, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, deletes, _ := origin.counts(); deletes != 1 {
		t.Errorf("origin saw %d DELETEs, want 1", deletes)
	}
	m := httptestDo(t, srv.Handler(), "GET", "/metrics", "", "")
	if !strings.Contains(m.Body.String(), "rtcedge_signaling_sessions_reaped_total 1") {
		t.Error("reaped sessions not counted in the metrics")
	}
}

// TestReaperReleasesIdlePins: an origin with room for one stream serves a
// second stream once the first has ended and the reaper released its pin;
// while the first is live the second is refused.
func TestReaperReleasesIdlePins(t *testing.T) {
	e := newEnv(t, 0)
	srv, err := signaling.New(signaling.Config{Registry: e.reg, ReapInterval: 100 * time.Millisecond, PinIdle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); srv.RunReaper(ctx) }()
	defer func() { cancel(); <-done }()

	origin := newFakeOrigin(t, registry.OriginKindMediaMTX)
	origin.register(t, e.reg, 1)
	offer := fixture(t, "chrome-whip-offer.sdp")
	first := httptestDo(t, srv.Handler(), "POST", "/whip/live/first", "application/sdp", offer)
	if first.Code != http.StatusCreated {
		t.Fatalf("POST first %d %s", first.Code, first.Body)
	}
	// Several reaper passes: the live stream keeps its pin.
	time.Sleep(500 * time.Millisecond)
	if rec := httptestDo(t, srv.Handler(), "POST", "/whip/live/second", "application/sdp", offer); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("POST second while the first is live: %d %s, want 503", rec.Code, rec.Body)
	}
	if rec := httptestDo(t, srv.Handler(), "DELETE", first.Header().Get("Location"), "", ""); rec.Code != http.StatusOK {
		t.Fatalf("DELETE first: %d %s", rec.Code, rec.Body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pins, err := e.reg.ListPins(t.Context())
		if err == nil && len(pins) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the idle stream's pin was not released: %+v %v", pins, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rec := httptestDo(t, srv.Handler(), "POST", "/whip/live/second", "application/sdp", offer); rec.Code != http.StatusCreated {
		t.Fatalf("POST second after the first ended: %d %s", rec.Code, rec.Body)
	}
	m := httptestDo(t, srv.Handler(), "GET", "/metrics", "", "")
	if !strings.Contains(m.Body.String(), "rtcedge_signaling_pins_released_total 1") {
		t.Error("released pins not counted in the metrics")
	}
}

func httptestDo(t *testing.T, h http.Handler, method, target, ctype, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

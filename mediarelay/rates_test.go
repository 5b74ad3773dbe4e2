package mediarelay_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// TestSessionRates: with traffic flowing both ways through a session,
// WatchSessions with stats_interval reports STATS events carrying non-zero
// rates, and ListSessions and GetStatus show them too.
func TestSessionRates(t *testing.T) {
	f := connectedSession(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	watch, err := f.relay.client.WatchSessions(ctx, &relayv1.WatchSessionsRequest{Stream: "v/live/a", StatsInterval: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	// Traffic: the echo origin sends every packet back.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for i := uint32(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = f.client.WriteToUDPAddrPort(rtp(i, 1000), f.relay.public)
			_ = f.client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, _, _ = f.client.ReadFromUDPAddrPort(buf)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { close(stop); <-done }()

	positive := func(c *relayv1.TrafficCounters) bool {
		return c.GetPacketsPerSecond() > 0 && c.GetBitsPerSecond() >= 8*1000*c.GetPacketsPerSecond()/2
	}
	for i := 0; ; i++ {
		if i == 120 {
			t.Fatal("no STATS event with rates both ways in 120 events")
		}
		ev, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != relayv1.SessionEventType_SESSION_EVENT_TYPE_STATS {
			continue
		}
		s := ev.Session
		if s.Id != f.id || s.ClientAddress != f.client.LocalAddr().String() || s.LastActivityTime == nil {
			t.Fatalf("STATS event %+v", s)
		}
		if positive(s.ClientToOrigin) && positive(s.OriginToClient) {
			break
		}
	}
	list, err := f.relay.client.ListSessions(ctx, &relayv1.ListSessionsRequest{})
	if err != nil || len(list.Sessions) != 1 {
		t.Fatalf("ListSessions: %v %v", list, err)
	}
	// REST: GET /v1/sessions carries the same statistics.
	req := httptest.NewRequest(http.MethodGet, "/v1/sessions", nil)
	req.RemoteAddr = "127.0.0.1:5000"
	rec := httptest.NewRecorder()
	f.relay.relay.HTTPHandler().ServeHTTP(rec, req)
	var rest relayv1.ListSessionsResponse
	if rec.Code != http.StatusOK || protojson.Unmarshal(rec.Body.Bytes(), &rest) != nil || len(rest.Sessions) != 1 ||
		!strings.Contains(rec.Body.String(), `"bitsPerSecond"`) || rest.Sessions[0].ClientAddress != f.client.LocalAddr().String() {
		t.Fatalf("GET /v1/sessions = %d %s", rec.Code, rec.Body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := f.relay.client.GetStatus(ctx, &relayv1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if positive(st.ClientToOrigin) && positive(st.OriginToClient) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetStatus rates stayed zero: %v %v", st.ClientToOrigin, st.OriginToClient)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

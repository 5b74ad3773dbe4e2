package signaling_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
	"github.com/rtcedge/rtcedge/signaling"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines that contain every one of want.
func (b *syncBuffer) lines(want ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, l := range strings.Split(b.buf.String(), "\n") {
		for _, w := range want {
			if !strings.Contains(l, w) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// Internal names the failures below must not reveal to clients.
const (
	leakOriginID   = "origin-internal-7"
	leakRelayID    = "relay-internal-9"
	leakSecretHost = "secret-host.internal.example"
	leakGoError    = "dial tcp 10.77.0.1:8890: connect: connection refused"
)

// fakeRelay is a relay.v1 server whose calls fail as told; AllocateSession
// without an error writes the session record as a relay does.
type fakeRelay struct {
	relayv1.UnimplementedRelayServiceServer
	reg        *registry.Client
	allocErr   error
	candidates []*relayv1.Candidate
	restartErr error
}

func (f *fakeRelay) AllocateSession(ctx context.Context, req *relayv1.AllocateSessionRequest) (*relayv1.AllocateSessionResponse, error) {
	if f.allocErr != nil {
		return nil, f.allocErr
	}
	dir := registry.DirectionPublish
	if req.GetDirection() == relayv1.Direction_DIRECTION_PLAY {
		dir = registry.DirectionPlay
	}
	if err := f.reg.CreateSession(ctx, registry.Session{ID: req.GetSessionId(), Stream: req.GetStream(), Direction: dir, RelayID: leakRelayID,
		ClientICE:       registry.ICECredentials{Ufrag: req.GetClientIce().GetUfrag(), Pwd: req.GetClientIce().GetPwd()},
		OriginICE:       registry.ICECredentials{Ufrag: req.GetOriginIce().GetUfrag(), Pwd: req.GetOriginIce().GetPwd()},
		OriginAddresses: req.GetOriginAddresses()}); err != nil {
		return nil, err
	}
	return &relayv1.AllocateSessionResponse{Candidates: f.candidates}, nil
}

func (f *fakeRelay) ReleaseSession(context.Context, *relayv1.ReleaseSessionRequest) (*relayv1.ReleaseSessionResponse, error) {
	return &relayv1.ReleaseSessionResponse{}, nil
}

func (f *fakeRelay) RestartSession(context.Context, *relayv1.RestartSessionRequest) (*relayv1.RestartSessionResponse, error) {
	return nil, f.restartErr
}

// serveFakeRelay serves f on loopback and registers it as leakRelayID.
func serveFakeRelay(t *testing.T, reg *registry.Client, f *fakeRelay) string {
	t.Helper()
	f.reg = reg
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	relayv1.RegisterRelayServiceServer(gs, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	registerRelayRecord(t, reg, lis.Addr().String())
	return lis.Addr().String()
}

// registerRelayRecord registers leakRelayID at grpcAddr.
func registerRelayRecord(t *testing.T, reg *registry.Client, grpcAddr string) {
	t.Helper()
	rr, err := reg.RegisterRelay(t.Context(), registry.Relay{ID: leakRelayID, GRPCAddress: grpcAddr, PublicAddresses: []string{"127.0.0.1:40000"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rr.Close(context.Background()) })
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// registerWHIPOrigin registers leakOriginID with its WHIP and WHEP
// endpoints at base.
func registerWHIPOrigin(t *testing.T, reg *registry.Client, base string) {
	t.Helper()
	if _, _, err := reg.RegisterOrigin(t.Context(), registry.Origin{ID: leakOriginID, Kind: registry.OriginKindWHIP,
		WHIPURLTemplate: base + "/{stream}/whip", WHEPURLTemplate: base + "/{stream}/whep", TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
}

// leakEnv is one case's edge: a registry namespace of its own and
// signaling with a captured log.
type leakEnv struct {
	reg  *registry.Client
	sig  string
	log  *syncBuffer
	deny []string // what no response may contain
}

func newLeakEnv(t *testing.T, etcd *embedetcd.Server) *leakEnv {
	t.Helper()
	e := &leakEnv{reg: embedetcd.NewClientForTest(t, etcd), log: &syncBuffer{},
		deny: []string{leakOriginID, leakRelayID, leakSecretHost, "127.0.0.1", "10.77.0.1", "dial tcp", "connection refused",
			"context deadline", "rpc error", "desc =", `Post "`, "http://"}}
	srv, err := signaling.New(signaling.Config{Registry: e.reg, OriginTimeout: 500 * time.Millisecond, RelayCallTimeout: time.Second,
		RetryAfter: time.Second, Logger: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	e.sig = hs.URL
	return e
}

// forbid adds internal names of the case (addresses of its origin and
// relay) to what no response may contain.
func (e *leakEnv) forbid(s ...string) { e.deny = append(e.deny, s...) }

// check asserts that r reveals nothing internal, carries a request id, and
// that the log has the failure's cause under that id.
func (e *leakEnv) check(t *testing.T, what string, r response, wantStatus int, logWant string) {
	t.Helper()
	if r.status != wantStatus {
		t.Errorf("%s: status %d, want %d: %s", what, r.status, wantStatus, r.body)
	}
	var hdr strings.Builder
	for k, vs := range r.header {
		fmt.Fprintf(&hdr, "%s: %s\n", k, strings.Join(vs, ", "))
	}
	for _, d := range e.deny {
		if d == "" {
			continue
		}
		if strings.Contains(r.body, d) {
			t.Errorf("%s: the body names %q: %s", what, d, r.body)
		}
		if strings.Contains(hdr.String(), d) {
			t.Errorf("%s: a header names %q:\n%s", what, d, hdr.String())
		}
	}
	if !strings.Contains(r.body, `"detail":"`) {
		t.Errorf("%s: no detail: %s", what, r.body)
	}
	id := r.header.Get(signaling.RequestIDHeader)
	if id == "" {
		t.Fatalf("%s: no %s", what, signaling.RequestIDHeader)
	}
	if logWant != "" && len(e.log.lines("request_id="+id, logWant)) == 0 {
		t.Errorf("%s: no log line with request_id=%s and %q:\n%s", what, id, logWant, strings.Join(e.log.lines("request_id="+id), "\n"))
	}
	if ls := e.log.lines("request_id="+id, "level=WARN"); len(ls) == 0 && len(e.log.lines("request_id="+id, "level=ERROR")) == 0 {
		t.Errorf("%s: the cause is not logged at Warn or Error under request_id=%s", what, id)
	}
}

// TestErrorsNameNoInternalAddress makes each failure of an origin or a
// relay that a client can trigger and asserts that the WHIP/WHEP response
// (body and headers) names no internal address, URL, id or Go error text,
// while the log line with the response's request id has the cause.
func TestErrorsNameNoInternalAddress(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	offer := fixture(t, "chrome-whip-offer.sdp")
	internalBody := "upstream http://" + leakSecretHost + ":8890/live/whip failed: " + leakGoError + "\n"

	// origin returns the base URL of an origin, registered as
	// leakOriginID, with a working relay behind it.
	type originCase struct {
		name   string
		origin func(t *testing.T, e *leakEnv) string // the origin's base URL
		status int
		log    string // in the cause's log line
	}
	handlerOrigin := func(h http.HandlerFunc) func(t *testing.T, e *leakEnv) string {
		return func(t *testing.T, e *leakEnv) string {
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			return srv.URL
		}
	}
	originCases := []originCase{
		{name: "origin refuses connections", origin: func(t *testing.T, _ *leakEnv) string { return "http://" + closedAddr(t) },
			status: http.StatusServiceUnavailable, log: "connection refused"},
		{name: "origin times out", origin: handlerOrigin(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}), status: http.StatusServiceUnavailable, log: leakOriginID},
		{name: "origin answers 500 naming internals", origin: handlerOrigin(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, internalBody, http.StatusInternalServerError)
		}), status: http.StatusBadGateway, log: "answered 500"},
		{name: "origin answers 503 naming internals", origin: handlerOrigin(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, internalBody, http.StatusServiceUnavailable)
		}), status: http.StatusServiceUnavailable, log: "answered 503"},
		{name: "origin rejects the offer naming internals", origin: handlerOrigin(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, internalBody, http.StatusBadRequest)
		}), status: http.StatusUnprocessableEntity, log: leakSecretHost},
		{name: "origin answers garbage", origin: handlerOrigin(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "http://"+leakSecretHost+"/resource/1")
			w.Header().Set("Content-Type", "application/sdp")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, internalBody)
		}), status: http.StatusBadGateway, log: "its answer"},
		{name: "origin answers without Location", origin: handlerOrigin(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/sdp")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, "v=0\r\n")
		}), status: http.StatusBadGateway, log: "no Location"},
	}
	for _, tc := range originCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newLeakEnv(t, etcd)
			startRelay(t, e.reg, "relay-ok")
			base := tc.origin(t, e)
			e.forbid(base, strings.TrimPrefix(base, "http://"))
			registerWHIPOrigin(t, e.reg, base)
			r := do(t, http.MethodPost, e.sig+"/whip/live/leak", "application/sdp", offer)
			e.check(t, "POST", r, tc.status, tc.log)
		})
	}

	// Relay failures behind a working origin.
	relayCases := []struct {
		name   string
		relay  func(t *testing.T, e *leakEnv) // registers the relay
		status int
		log    string
	}{
		{name: "no relay", relay: func(*testing.T, *leakEnv) {}, status: http.StatusServiceUnavailable, log: "no relay"},
		{name: "relay refuses connections", relay: func(t *testing.T, e *leakEnv) {
			addr := closedAddr(t)
			e.forbid(addr)
			registerRelayRecord(t, e.reg, addr)
		}, status: http.StatusServiceUnavailable, log: leakRelayID},
		{name: "relay fails the allocation naming internals", relay: func(t *testing.T, e *leakEnv) {
			e.forbid(serveFakeRelay(t, e.reg, &fakeRelay{allocErr: status.Error(codes.Internal, leakGoError+" at "+leakSecretHost)}))
		}, status: http.StatusServiceUnavailable, log: leakSecretHost},
		{name: "relay refuses the allocation naming internals", relay: func(t *testing.T, e *leakEnv) {
			e.forbid(serveFakeRelay(t, e.reg, &fakeRelay{allocErr: status.Error(codes.InvalidArgument, "bad ufrag from "+leakSecretHost)}))
		}, status: http.StatusBadRequest, log: leakSecretHost},
		{name: "relay returns an unusable candidate", relay: func(t *testing.T, e *leakEnv) {
			e.forbid(serveFakeRelay(t, e.reg, &fakeRelay{candidates: []*relayv1.Candidate{{Foundation: "1", Priority: 1, Address: "10.77.0.1", Port: 0}}}))
		}, status: http.StatusBadGateway, log: "10.77.0.1"},
	}
	for _, tc := range relayCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newLeakEnv(t, etcd)
			origin := newFakeOrigin(t, registry.OriginKindWHIP)
			e.forbid(origin.srv.URL, strings.TrimPrefix(origin.srv.URL, "http://"))
			registerWHIPOrigin(t, e.reg, origin.srv.URL)
			tc.relay(t, e)
			r := do(t, http.MethodPost, e.sig+"/whip/live/leak", "application/sdp", offer)
			e.check(t, "POST", r, tc.status, tc.log)
		})
	}

	// Failures of PATCH on a session: ICE restarts the relays cannot take,
	// and a counter-offer answer the origin cannot take.
	restartCases := []struct {
		name   string
		err    error // of the relay's RestartSession; nil: the relay dies
		status int
		log    string
	}{
		{name: "restart, the relay is gone and no other", status: http.StatusServiceUnavailable, log: leakRelayID},
		{name: "restart refused by the relay naming internals", err: status.Error(codes.InvalidArgument, "bad pwd from "+leakSecretHost),
			status: http.StatusBadGateway, log: leakSecretHost},
		{name: "restart failed by the relay naming internals", err: status.Error(codes.Internal, leakGoError),
			status: http.StatusServiceUnavailable, log: "10.77.0.1"},
	}
	for _, tc := range restartCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newLeakEnv(t, etcd)
			origin := newFakeOrigin(t, registry.OriginKindWHIP)
			e.forbid(origin.srv.URL, strings.TrimPrefix(origin.srv.URL, "http://"))
			registerWHIPOrigin(t, e.reg, origin.srv.URL)
			f := &fakeRelay{restartErr: tc.err, candidates: []*relayv1.Candidate{{Foundation: "1", Priority: 1, Address: "127.0.0.1", Port: 40000}}}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f.reg = e.reg
			e.forbid(lis.Addr().String())
			gs := grpc.NewServer()
			relayv1.RegisterRelayServiceServer(gs, f)
			done := make(chan struct{})
			go func() { defer close(done); _ = gs.Serve(lis) }()
			defer func() { gs.Stop(); <-done }()
			rr, err := e.reg.RegisterRelay(t.Context(), registry.Relay{ID: leakRelayID, GRPCAddress: lis.Addr().String(), PublicAddresses: []string{"127.0.0.1:40000"}}, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = rr.Close(context.Background()) }()
			r := do(t, http.MethodPost, e.sig+"/whip/live/leak", "application/sdp", offer)
			if r.status != http.StatusCreated {
				t.Fatalf("POST = %d %s", r.status, r.body)
			}
			if tc.err == nil {
				gs.Stop()
				if err := rr.Close(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			p := do(t, http.MethodPatch, e.sig+r.header.Get("Location"), "application/trickle-ice-sdpfrag",
				restartFrag("Leak0001", "leakpasswordleakpasswordleak"), "If-Match", "*")
			e.check(t, "PATCH restart", p, tc.status, tc.log)
		})
	}

	t.Run("counter-offer answer, the origin is gone", func(t *testing.T) {
		e := newLeakEnv(t, etcd)
		startRelay(t, e.reg, "relay-ok")
		origin := newFakeOrigin(t, registry.OriginKindWHIP)
		origin.counterOffer = true
		e.forbid(origin.srv.URL, strings.TrimPrefix(origin.srv.URL, "http://"))
		registerWHIPOrigin(t, e.reg, origin.srv.URL)
		r := do(t, http.MethodPost, e.sig+"/whep/live/leak", "application/sdp", fixture(t, "chrome-whep-offer.sdp"))
		if r.status != http.StatusNotAcceptable {
			t.Fatalf("POST = %d %s", r.status, r.body)
		}
		origin.srv.Close()
		p := do(t, http.MethodPatch, e.sig+r.header.Get("Location"), "application/sdp", fixture(t, "chrome-whep-offer.sdp"),
			"If-Match", r.header.Get("ETag"))
		e.check(t, "PATCH answer", p, http.StatusBadGateway, "connection refused")
	})
}

// TestRequestID: every response carries X-Request-Id, the client's own
// when it is sane, else a fresh one.
func TestRequestID(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	e := newLeakEnv(t, etcd)
	tests := []struct {
		name   string
		sent   string
		reused bool
	}{
		{name: "none sent", reused: false},
		{name: "sane", sent: "req-42.abc_DEF~x", reused: true},
		{name: "64 characters", sent: strings.Repeat("a", 64), reused: true},
		{name: "too long", sent: strings.Repeat("a", 65), reused: false},
		{name: "not token characters", sent: "a b<script>", reused: false},
		{name: "injection attempt", sent: "x\" level=ERROR msg=\"forged", reused: false},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.sent != "" {
				hdr = []string{signaling.RequestIDHeader, tc.sent}
			}
			for _, path := range []string{"/whip/live/cam1", "/sessions/nosuchsession", "/healthz"} {
				r := do(t, http.MethodGet, e.sig+path, "", "", hdr...)
				id := r.header.Get(signaling.RequestIDHeader)
				switch {
				case id == "":
					t.Fatalf("%s: no %s", path, signaling.RequestIDHeader)
				case tc.reused && id != tc.sent:
					t.Fatalf("%s: id %q, want the client's %q", path, id, tc.sent)
				case !tc.reused && (id == tc.sent || seen[id]):
					t.Fatalf("%s: id %q is not fresh", path, id)
				}
				seen[id] = true
			}
		})
	}
	// The request log line carries the id.
	r := do(t, http.MethodPost, e.sig+"/whip/live/cam1", "text/plain", "x", signaling.RequestIDHeader, "log-me-1")
	if r.status != http.StatusUnsupportedMediaType || len(e.log.lines("request_id=log-me-1", "status=415")) == 0 {
		t.Fatalf("status %d; no request log line with the id:\n%s", r.status, strings.Join(e.log.lines("log-me-1"), "\n"))
	}
}

package signaling

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling/internal/originadapter"
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

// Dir is a session's direction.
type Dir int

// Directions.
const (
	DirPublish Dir = iota // WHIP
	DirPlay               // WHEP
)

func (d Dir) String() string {
	if d == DirPlay {
		return registry.DirectionPlay
	}
	return registry.DirectionPublish
}

// protocol names the direction's protocol for messages: WHIP or WHEP.
func (d Dir) protocol() string {
	if d == DirPlay {
		return "WHEP"
	}
	return "WHIP"
}

// endpointMethods are the methods a WHIP or WHEP endpoint serves, for Allow.
const endpointMethods = "POST, OPTIONS, GET, HEAD"

func (d Dir) adapter() originadapter.Direction {
	if d == DirPlay {
		return originadapter.Play
	}
	return originadapter.Publish
}

func (d Dir) relay() relayv1.Direction {
	if d == DirPlay {
		return relayv1.Direction_DIRECTION_PLAY
	}
	return relayv1.Direction_DIRECTION_PUBLISH
}

// httpError is a failure with its HTTP status. Its detail is sent to the
// client, so it never names an internal address, URL, host or Go error
// text: a stable sentence, or what was wrong with the client's own input.
// The cause, which may name all of those, is logged only.
type httpError struct {
	status int
	title  string
	detail string
	retry  bool  // send Retry-After
	cause  error // logged with the request id, never sent
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.title, e.detail) }

// Stable details of failures behind the edge, sent instead of their causes.
const (
	detailOriginUnavailable = "the stream's origin is unavailable; retry"
	detailOriginFailed      = "the stream's origin could not set up the session; retry"
	detailNoOrigin          = "no origin is available for this stream; retry"
	detailNoRelay           = "no relay is available; retry"
	detailRelayFailed       = "the relay could not set up the session; retry"
	detailStoreUnavailable  = "the session store is unavailable; retry"
	detailInternal          = "internal error; the X-Request-Id response header identifies it in the edge's logs"
)

// logFailure logs a failed request's cause with its request id: at Error
// for a 500, at Warn otherwise. A failure without a cause (the client's
// own input) is not logged here: the request log line has its status.
func (s *Server) logFailure(r *http.Request, e *httpError) {
	if e.cause == nil {
		return
	}
	lvl := slog.LevelWarn
	if e.status == http.StatusInternalServerError {
		lvl = slog.LevelError
	}
	s.logger(r.Context()).Log(r.Context(), lvl, "signaling: request failed", "method", r.Method, "path", r.URL.Path,
		"status", e.status, "title", e.title, "err", e.cause)
}

// fail logs e's cause and answers with e as application/problem+json.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, e *httpError) {
	s.logFailure(r, e)
	if e.retry {
		retryProblem(w, e.status, s.cfg.RetryAfter, e.title, e.detail)
		return
	}
	problem(w, e.status, e.title, e.detail)
}

// streamFunc extracts the stream from a request.
type streamFunc func(*http.Request) (string, error)

func streamFromPath(prefix string) streamFunc {
	return func(r *http.Request) (string, error) {
		p := strings.TrimPrefix(r.URL.Path, prefix)
		if p == "" {
			return "", errors.New("the URL names no stream")
		}
		return p, nil
	}
}

func streamFromQuery(r *http.Request) (string, error) {
	q := r.URL.Query()
	app, name := q.Get("app"), q.Get("stream")
	if app == "" || name == "" {
		return "", errors.New("app and stream query parameters are required")
	}
	if v := q.Get("vhost"); v != "" && v != DefaultVhost {
		return v + "/" + app + "/" + name, nil
	}
	return app + "/" + name, nil
}

// endpoint serves a WHIP or WHEP endpoint.
func (s *Server) endpoint(dir Dir, stream streamFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.cors(w)
		switch r.Method {
		case http.MethodOptions:
			s.options(w, r, "POST, OPTIONS")
			return
		case http.MethodGet:
			// RFC 9725 section 4.1: 2xx, no body. Allow says what the
			// endpoint is for.
			w.Header().Set("Allow", endpointMethods)
			w.WriteHeader(http.StatusNoContent)
			return
		case http.MethodHead:
			w.Header().Set("Allow", endpointMethods)
			if dir == DirPlay {
				w.Header().Set("Content-Type", "application/sdp")
			}
			w.WriteHeader(http.StatusOK)
			return
		case http.MethodPost:
		default:
			w.Header().Set("Allow", endpointMethods)
			problem(w, http.StatusMethodNotAllowed, "method not allowed",
				fmt.Sprintf("%s is not supported on a %s endpoint; POST an SDP offer (application/sdp) to start a session", r.Method, dir.protocol()))
			return
		}
		raw, err := stream(r)
		if err != nil {
			problem(w, http.StatusBadRequest, "bad stream", err.Error())
			return
		}
		key, _, err := NormalizeStream(raw)
		if err != nil {
			problem(w, http.StatusBadRequest, "bad stream", err.Error())
			return
		}
		if !s.cfg.Auth.check(r.Header.Get("Authorization"), key, dir.String(), time.Now()) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rtcedge"`)
			problem(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token for this stream is required")
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/sdp" {
			problem(w, http.StatusUnsupportedMediaType, "unsupported content type", "the offer must be application/sdp")
			return
		}
		body, herr := s.readBody(w, r)
		if herr != nil {
			s.fail(w, r, herr)
			return
		}
		res, herr := s.setup(r.Context(), dir, key, string(body), r.Header.Get("Authorization"))
		if herr != nil {
			s.fail(w, r, herr)
			return
		}
		s.writeCreated(w, res)
	}
}

// readBody reads at most BodyLimit bytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *httpError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.BodyLimit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &httpError{status: http.StatusRequestEntityTooLarge, title: "body too large",
				detail: fmt.Sprintf("the body exceeds %d bytes", s.cfg.BodyLimit)}
		}
		return nil, &httpError{status: http.StatusBadRequest, title: "unreadable body", detail: "the request body could not be read", cause: err}
	}
	return b, nil
}

// setupResult is a new session.
type setupResult struct {
	id     string
	sdp    string // the rewritten answer, or counter-offer
	etag   string
	status int // 201, or 406 for a counter-offer
}

func (s *Server) writeCreated(w http.ResponseWriter, res *setupResult) {
	h := w.Header()
	h.Set("Location", s.sessionURL(res.id))
	h.Set("ETag", res.etag)
	h.Set("Content-Type", "application/sdp")
	h.Set("Accept-Patch", "application/trickle-ice-sdpfrag")
	s.linkICEServers(w)
	w.WriteHeader(res.status)
	_, _ = io.WriteString(w, res.sdp)
}

// sessionURL is a session's Location: PublicBaseURL + "/sessions/" + id,
// or the relative path when no PublicBaseURL is set.
func (s *Server) sessionURL(id string) string {
	return s.cfg.PublicBaseURL + "/sessions/" + id
}

// newID returns 16 bytes from the CSPRNG, base64url.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// newETag returns a fresh strong entity-tag.
func newETag() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return `"` + base64.RawURLEncoding.EncodeToString(b[:]) + `"`
}

// setup runs the whole session set-up: the offer is validated before
// anything is contacted, and any failure after the origin accepted it
// deletes the origin's session and releases the relay's.
func (s *Server) setup(ctx context.Context, dir Dir, key, offerSDP, authorization string) (*setupResult, *httpError) {
	start := time.Now()
	offer, err := sdpx.ParseOffer(offerSDP)
	if err != nil {
		if errors.Is(err, sdpx.ErrUnsupported) {
			return nil, &httpError{status: http.StatusUnprocessableEntity, title: "unsupported offer", detail: err.Error()}
		}
		return nil, &httpError{status: http.StatusBadRequest, title: "malformed offer", detail: err.Error()}
	}
	if herr := checkOfferDirection(dir, offerSDP); herr != nil {
		return nil, herr
	}
	hdr := http.Header{}
	if s.cfg.ForwardAuthorization && authorization != "" {
		hdr.Set("Authorization", authorization)
	}
	// The session id comes first: the pending-setup record, written before
	// the origin is contacted, is keyed by it. A reaper undoes the setup if
	// this instance dies before the record is cleared (reaper.go), so the
	// setup must not outlive the record's deadline. An origin that cannot
	// be reached, or a play's origin that lacks a stream another origin
	// has live, gets one retry on another origin within the request
	// (failover.go).
	id := newID()
	opt := registry.PickOptions{Zone: s.cfg.Zone, Play: dir == DirPlay}
	var att *originAttempt
	for try := 0; ; try++ {
		a, herr, again := s.tryOrigin(ctx, dir, key, id, offer, hdr, opt)
		if herr == nil {
			att = a
			break
		}
		if again == retryNone || try == 1 {
			return nil, herr
		}
		s.logger(ctx).Info("signaling: retrying the setup on another origin", "session", id, "stream", key,
			"origin", a.origin.ID, "why", herr.title)
		s.health.failovers.WithLabelValues(again.String()).Inc()
		opt.Avoid = append(opt.Avoid, a.origin.ID)
		opt.OnlyLive = again == retryLiveElsewhere
	}
	origin, pending, resp := att.origin, att.pending, att.resp
	finished := false
	defer func() {
		if !finished {
			s.abandonSetup(ctx, pending)
		}
	}()
	ctx, cancelSetup := context.WithDeadline(ctx, att.deadline)
	defer cancelSetup()
	// From here on, the origin holds a session: undo it on any failure.
	cleanupOrigin := func() {
		if resp.Location == "" {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), s.cfg.OriginTimeout)
		defer cancel()
		if _, err := s.origins.Do(dctx, http.MethodDelete, resp.Location, "", nil, hdr); err != nil {
			s.logger(ctx).Warn("signaling: could not delete the origin's session", "location", resp.Location, "err", err)
		}
	}
	if resp.Location == "" {
		s.metrics.originErrors.WithLabelValues("no_location").Inc()
		return nil, &httpError{status: http.StatusBadGateway, title: "origin error", detail: detailOriginFailed,
			cause: fmt.Errorf("origin %s: its answer has no Location", origin.ID)}
	}
	// Record the origin's session at once, before anything else can fail or
	// this instance die, so that a reaper can delete it.
	noted, err := s.cfg.Registry.NoteSetupOrigin(ctx, pending, resp.Location, resp.ETag)
	if err != nil {
		cleanupOrigin()
		return nil, s.registryError("setup not recorded", err)
	}
	pending = noted
	answer, err := sdpx.ParseAnswer(string(resp.Body))
	if err != nil {
		cleanupOrigin()
		s.metrics.originErrors.WithLabelValues("bad_answer").Inc()
		return nil, &httpError{status: http.StatusBadGateway, title: "origin error", detail: detailOriginFailed,
			cause: fmt.Errorf("origin %s: its answer: %w", origin.ID, err)}
	}
	addrs := originMediaAddrs(origin, answer)
	if len(addrs) == 0 {
		cleanupOrigin()
		s.metrics.originErrors.WithLabelValues("no_media_address").Inc()
		return nil, &httpError{status: http.StatusBadGateway, title: "origin error", detail: detailOriginFailed,
			cause: fmt.Errorf("origin %s: its answer has no UDP candidate with an IP address and its registration no media address", origin.ID)}
	}
	var (
		relay registry.Relay
		rc    relayv1.RelayServiceClient
		alloc *relayv1.AllocateSessionResponse
		tried []string // relays that answered Unavailable
	)
	// releaseRelay undoes the allocation: the relay's session and the
	// registry record it wrote (in case the relay cannot be reached).
	releaseRelay := func() {
		rctx, cancel := context.WithTimeout(context.Background(), s.cfg.RelayCallTimeout)
		defer cancel()
		if _, err := rc.ReleaseSession(rctx, &relayv1.ReleaseSessionRequest{Id: id}); err != nil && status.Code(err) != codes.NotFound {
			s.logger(ctx).Warn("signaling: could not release the relay session", "session", id, "relay", relay.ID, "err", err)
		}
		if err := s.cfg.Registry.DeleteSession(rctx, id); err != nil && !errors.Is(err, registry.ErrNotFound) {
			s.logger(ctx).Warn("signaling: could not delete the session record", "session", id, "err", err)
		}
	}
	for {
		relay, err = s.cfg.Registry.PickRelayExcept(ctx, s.cfg.Zone, tried...)
		if err != nil {
			cleanupOrigin()
			return nil, s.registryError("no relay available", err)
		}
		rc, err = s.relayClient(relay.GRPCAddress)
		if err != nil {
			cleanupOrigin()
			return nil, &httpError{status: http.StatusServiceUnavailable, title: "relay unavailable", retry: true, detail: detailNoRelay,
				cause: fmt.Errorf("relay %s: %w", relay.ID, err)}
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayCallTimeout)
		alloc, err = rc.AllocateSession(rctx, &relayv1.AllocateSessionRequest{
			SessionId: id, Stream: key, Direction: dir.relay(),
			ClientIce:       &relayv1.IceCredentials{Ufrag: offer.ICE.Ufrag, Pwd: offer.ICE.Pwd},
			OriginIce:       &relayv1.IceCredentials{Ufrag: answer.ICE.Ufrag, Pwd: answer.ICE.Pwd},
			OriginAddresses: addrs, OriginId: origin.ID,
		})
		cancel()
		if err == nil {
			break
		}
		code := status.Code(err)
		switch code {
		case codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal:
			// The relay may have allocated before the call failed.
			releaseRelay()
		}
		if code == codes.Unavailable && len(tried) == 0 {
			// A relay that is down (its registration not yet expired),
			// draining or cut from etcd: once more on another relay, in
			// the same request.
			s.logger(ctx).Warn("signaling: relay unavailable, trying another", "session", id, "relay", relay.ID, "err", err)
			tried = append(tried, relay.ID)
			continue
		}
		cleanupOrigin()
		cause := fmt.Errorf("relay %s (%s): AllocateSession: %w", relay.ID, relay.GRPCAddress, err)
		if code == codes.InvalidArgument || code == codes.AlreadyExists {
			return nil, &httpError{status: http.StatusBadRequest, title: "session rejected",
				detail: "the relay refused the session's parameters (the offer's ICE credentials)", cause: cause}
		}
		return nil, &httpError{status: http.StatusServiceUnavailable, title: "relay unavailable", retry: true, detail: detailNoRelay, cause: cause}
	}
	cands, err := relayCandidates(alloc.GetCandidates())
	if err != nil {
		releaseRelay()
		cleanupOrigin()
		return nil, &httpError{status: http.StatusBadGateway, title: "relay error", detail: detailRelayFailed,
			cause: fmt.Errorf("relay %s: %w", relay.ID, err)}
	}
	rewritten, err := answer.RewriteAnswer(cands)
	if err != nil {
		releaseRelay()
		cleanupOrigin()
		return nil, &httpError{status: http.StatusBadGateway, title: "answer rewrite failed", detail: detailOriginFailed,
			cause: fmt.Errorf("rewriting origin %s's answer: %w", origin.ID, err)}
	}
	etag := newETag()
	// Complete the session record and clear the pending setup in one
	// transaction; it fails if a reaper claimed the setup meanwhile.
	_, err = s.cfg.Registry.FinishSetup(ctx, pending, func(rs *registry.Session) error {
		rs.OriginID, rs.OriginResource, rs.OriginETag, rs.ETag, rs.ICEOptions = origin.ID, resp.Location, resp.ETag, etag, offer.ICE.Options
		rs.ICEPacing, rs.ICELite = answer.ICE.Pacing, answer.ICE.Lite
		if resp.Status == http.StatusNotAcceptable {
			// A WHEP counter-offer: the client's answer comes by PATCH
			// application/sdp (counterOfferAnswer).
			if rs.Labels == nil {
				rs.Labels = map[string]string{}
			}
			rs.Labels[LabelAwaitingAnswer] = "counter-offer"
		}
		return nil
	})
	if err != nil {
		releaseRelay()
		cleanupOrigin()
		return nil, s.registryError("session not recorded", err)
	}
	finished = true
	s.metrics.setup.Observe(time.Since(start).Seconds())
	s.log.Info("signaling: session created", "session", id, "stream", key, "direction", dir.String(),
		"origin", origin.ID, "relay", relay.ID)
	code := http.StatusCreated
	if resp.Status == http.StatusNotAcceptable {
		code = http.StatusNotAcceptable
	}
	return &setupResult{id: id, sdp: rewritten, etag: etag, status: code}, nil
}

// setupSpan is how long a setup may take at most, from its pending record
// to the end: the origin call, the relay call and SetupMargin for the
// registry calls around them. Past it, the pending record is stale.
func (s *Server) setupSpan() time.Duration {
	return s.cfg.OriginTimeout + s.cfg.RelayCallTimeout + s.cfg.SetupMargin
}

// abandonSetup deletes the pending record of a failed setup, after its
// origin and relay sessions were undone. It is a compare-and-delete: a
// record a reaper claimed meanwhile is left to the reaper.
func (s *Server) abandonSetup(ctx context.Context, p registry.PendingSetup) {
	if err := s.cfg.Registry.DeleteSetup(context.WithoutCancel(ctx), p.ID, p.Rev); err != nil && !errors.Is(err, registry.ErrNotFound) {
		s.logger(ctx).Warn("signaling: could not delete the pending setup; the reaper will", "session", p.ID, "err", err)
	}
}

// originMediaAddrs returns the registration's media addresses, else the
// answer's.
func originMediaAddrs(o registry.Origin, a *sdpx.Answer) []string {
	var out []string
	for _, m := range o.MediaAddresses {
		if ap, err := netip.ParseAddrPort(m); err == nil {
			out = append(out, ap.String())
		}
	}
	if len(out) > 0 {
		return out[:min(len(out), 8)]
	}
	for _, ap := range a.MediaAddresses {
		out = append(out, ap.String())
	}
	return out[:min(len(out), 8)]
}

// relayCandidates converts the relay's candidates: its UDP ones, then its
// ICE-TCP passive ones (RFC 6544), each group in the relay's order, so an
// answer lists TCP after UDP whatever order the relay used. A candidate of
// another transport or TCP type (a newer relay's) is left out.
func relayCandidates(cs []*relayv1.Candidate) ([]sdpx.Candidate, error) {
	out := make([]sdpx.Candidate, 0, len(cs))
	var tcp []sdpx.Candidate
	for _, c := range cs {
		a, err := netip.ParseAddr(c.GetAddress())
		if err != nil || c.GetPort() == 0 || c.GetPort() > 65535 {
			return nil, fmt.Errorf("relay candidate %s:%d is not an ip:port", c.GetAddress(), c.GetPort())
		}
		cand := sdpx.Candidate{Foundation: c.GetFoundation(), Priority: c.GetPriority(), Addr: netip.AddrPortFrom(a, uint16(c.GetPort()))}
		switch p := strings.ToLower(c.GetProtocol()); {
		case p == "" || p == "udp":
			out = append(out, cand)
		case p == "tcp" && strings.EqualFold(c.GetTcpType(), sdpx.TCPPassive):
			cand.TCPType = sdpx.TCPPassive
			tcp = append(tcp, cand)
		}
	}
	out = append(out, tcp...)
	if len(out) == 0 {
		return nil, errors.New("the relay returned no candidate")
	}
	return out, nil
}

// registryError maps registry failures: no origin/relay and an unreachable
// etcd are 503 with Retry-After. The detail is stable; err is the logged
// cause.
func (s *Server) registryError(title string, err error) *httpError {
	e := &httpError{status: http.StatusServiceUnavailable, title: title, retry: true, cause: err}
	switch {
	case errors.Is(err, registry.ErrNoOrigin):
		e.detail = detailNoOrigin
	case errors.Is(err, registry.ErrNoRelay):
		e.detail = detailNoRelay
	case errors.Is(err, registry.ErrUnavailable):
		e.detail = detailStoreUnavailable
	case errors.Is(err, registry.ErrInvalid):
		e.status, e.retry, e.detail = http.StatusBadRequest, false, "the request was refused as invalid"
	default:
		e.status, e.retry, e.detail = http.StatusInternalServerError, false, detailInternal
	}
	return e
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// parseLegacy reads SRS's legacy JSON envelope {"sdp", "streamurl"} and
// returns the offer and the normalised stream key of
// webrtc://host/app/stream.
func parseLegacy(body []byte) (offer, key string, err error) {
	var req struct {
		SDP       string `json:"sdp"`
		StreamURL string `json:"streamurl"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.SDP == "" || req.StreamURL == "" {
		return "", "", errors.New(`want JSON {"sdp": ..., "streamurl": "webrtc://host/app/stream"}`)
	}
	path, ok := strings.CutPrefix(req.StreamURL, "webrtc://")
	i := strings.IndexByte(path, '/')
	if !ok || i < 0 {
		return "", "", errors.New("streamurl must be webrtc://host/app/stream")
	}
	path = path[i+1:]
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	key, _, err = NormalizeStream(path)
	if err != nil {
		return "", "", err
	}
	return req.SDP, key, nil
}

// legacy serves SRS's JSON API: {"sdp", "streamurl"} in, {"code", "sdp",
// "sessionid"} out.
func (s *Server) legacy(dir Dir) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.cors(w)
		if r.Method == http.MethodOptions {
			s.options(w, r, "POST, OPTIONS")
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST, OPTIONS")
			problem(w, http.StatusMethodNotAllowed, "method not allowed",
				r.Method+` is not supported here; POST JSON {"sdp": ..., "streamurl": "webrtc://host/app/stream"}`)
			return
		}
		reply := func(status, code int, v map[string]any) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			v["code"] = code
			v["server"] = "rtcedge"
			_ = json.NewEncoder(w).Encode(v)
		}
		body, herr := s.readBody(w, r)
		if herr != nil {
			s.logFailure(r, herr)
			reply(herr.status, herr.status, map[string]any{"msg": herr.detail})
			return
		}
		offerSDP, key, err := parseLegacy(body)
		if err != nil {
			reply(http.StatusBadRequest, http.StatusBadRequest, map[string]any{"msg": err.Error()})
			return
		}
		if !s.cfg.Auth.check(r.Header.Get("Authorization"), key, dir.String(), time.Now()) {
			reply(http.StatusUnauthorized, http.StatusUnauthorized, map[string]any{"msg": "unauthorized"})
			return
		}
		res, herr := s.setup(r.Context(), dir, key, offerSDP, r.Header.Get("Authorization"))
		if herr != nil {
			s.logFailure(r, herr)
			if herr.retry {
				w.Header().Set("Retry-After", fmt.Sprint(int(s.cfg.RetryAfter/time.Second)))
			}
			reply(herr.status, herr.status, map[string]any{"msg": herr.detail})
			return
		}
		w.Header().Set("Location", s.sessionURL(res.id))
		reply(http.StatusOK, 0, map[string]any{"sdp": res.sdp, "sessionid": res.id})
	}
}

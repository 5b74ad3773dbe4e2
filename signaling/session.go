package signaling

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling/internal/originadapter"
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

// sessionMethods are the methods a session resource serves, for Allow.
const sessionMethods = "PATCH, DELETE, OPTIONS, GET"

// sessionResource serves /sessions/{id}.
func (s *Server) sessionResource(w http.ResponseWriter, r *http.Request) {
	s.cors(w)
	id := r.PathValue("id")
	switch r.Method {
	case http.MethodOptions:
		s.options(w, r, "PATCH, DELETE, OPTIONS")
		return
	case http.MethodDelete, http.MethodPatch, http.MethodGet:
	default:
		w.Header().Set("Allow", sessionMethods)
		problem(w, http.StatusMethodNotAllowed, "method not allowed",
			r.Method+" is not supported on a session: PATCH it (trickle, ICE restart), DELETE it to end it")
		return
	}
	rs, err := s.cfg.Registry.GetSession(r.Context(), id)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrInvalid) {
			problem(w, http.StatusNotFound, "no such session", "session "+id+" does not exist")
			return
		}
		s.fail(w, r, s.registryError("session lookup failed", err))
		return
	}
	switch r.Method {
	case http.MethodGet:
		// RFC 9725 section 4.1: 2xx, no body. Allow says what the
		// session is for.
		w.Header().Set("Allow", sessionMethods)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		s.deleteSession(w, r, rs)
	case http.MethodPatch:
		s.patchSession(w, r, rs)
	}
}

// deleteSession frees the relay's and the origin's sessions, then the
// record. ETags are ignored (RFC 9725 section 4.3.1).
func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request, rs registry.Session) {
	// Finish freeing even if the client goes away; every call has its own
	// timeout.
	ctx := context.WithoutCancel(r.Context())
	if relay, err := s.cfg.Registry.GetRelay(ctx, rs.RelayID); err == nil {
		if rc, err := s.relayClient(relay.GRPCAddress); err == nil {
			rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayCallTimeout)
			_, err = rc.ReleaseSession(rctx, &relayv1.ReleaseSessionRequest{Id: rs.ID})
			cancel()
			if err != nil && status.Code(err) != codes.NotFound {
				s.logger(ctx).Warn("signaling: relay release failed", "session", rs.ID, "relay", rs.RelayID, "err", err)
			}
		}
	}
	if rs.OriginResource != "" {
		octx, cancel := context.WithTimeout(ctx, s.cfg.OriginTimeout)
		resp, err := s.origins.Do(octx, http.MethodDelete, rs.OriginResource, "", nil, nil)
		cancel()
		if err != nil || resp.Status >= 500 {
			s.metrics.originErrors.WithLabelValues("delete").Inc()
			s.logger(ctx).Warn("signaling: origin DELETE failed", "session", rs.ID, "origin", rs.OriginID, "status", statusOf(resp), "err", err)
		}
	}
	if err := s.cfg.Registry.DeleteSession(ctx, rs.ID); err != nil && !errors.Is(err, registry.ErrNotFound) {
		s.fail(w, r, s.registryError("session not removed", err))
		return
	}
	s.logger(ctx).Info("signaling: session deleted", "session", rs.ID, "stream", rs.Stream)
	w.WriteHeader(http.StatusOK)
}

// etagMatches implements If-Match for PATCH: "*" matches any.
func etagMatches(ifMatch, current string) bool {
	for _, t := range strings.Split(ifMatch, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || t == `"*"` || t == current {
			return true
		}
	}
	return false
}

// patchSession handles trickle (204), ICE restart (200) and the answer of a
// WHEP counter-offer (204). An application/sdp body is the answer to a
// counter-offer, so it is accepted only while the session awaits one
// (awaitingAnswer); any other session takes trickle-ice-sdpfrag only (415).
func (s *Server) patchSession(w http.ResponseWriter, r *http.Request, rs registry.Session) {
	awaiting := awaitingAnswer(rs)
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/trickle-ice-sdpfrag" && (mt != "application/sdp" || !awaiting) {
		accept, detail := "application/trickle-ice-sdpfrag", "PATCH takes application/trickle-ice-sdpfrag (trickle or ICE restart)"
		switch {
		case awaiting:
			accept += ", application/sdp"
			detail += ", or application/sdp: the answer to the session's counter-offer"
		case mt == "application/sdp":
			detail += "; application/sdp is only the answer to a WHEP counter-offer (406), and this session has none outstanding"
		}
		w.Header().Set("Accept-Patch", accept)
		problem(w, http.StatusUnsupportedMediaType, "unsupported content type", detail)
		return
	}
	ifMatch := r.Header.Get("If-Match")
	if ifMatch == "" {
		problem(w, http.StatusPreconditionRequired, "If-Match required", "send If-Match with the session's ETag, or * for an ICE restart")
		return
	}
	if !etagMatches(ifMatch, rs.ETag) {
		problem(w, http.StatusPreconditionFailed, "stale ETag", "the session's ICE state changed; its current ETag differs")
		return
	}
	body, herr := s.readBody(w, r)
	if herr != nil {
		s.fail(w, r, herr)
		return
	}
	if mt == "application/sdp" {
		s.counterOfferAnswer(w, r, rs, string(body))
		return
	}
	frag, err := sdpx.ParseFrag(string(body))
	if err != nil {
		problem(w, http.StatusBadRequest, "malformed sdpfrag", err.Error())
		return
	}
	// The client's own credentials tell a trickle from a restart: a
	// fragment with the ufrag (and pwd) it uses now is a trickle.
	if frag.ICE.Ufrag == "" || frag.ICE.Ufrag == rs.ClientICE.Ufrag && (frag.ICE.Pwd == "" || frag.ICE.Pwd == rs.ClientICE.Pwd) {
		// Trickle: the client's candidates never reach the origin (it must
		// reach the client through the relay only).
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if frag.ICE.Pwd == "" {
		problem(w, http.StatusBadRequest, "malformed sdpfrag", "a new a=ice-ufrag (an ICE restart) needs a=ice-pwd")
		return
	}
	s.iceRestart(w, r, rs, frag)
}

// iceRestart answers an ICE restart at the edge, for every origin kind: the
// origin is never contacted (SRS, for one, has no PATCH handler). The client
// gets new server credentials made here; toward the origin the session
// keeps the credentials of the original offer and answer, and the relay
// translates the STUN USERNAME and re-signs checks and responses between
// the two. So a restart, on the same relay or onto another, is invisible to
// the origin. The session moves to the new credentials on its relay, or on
// another live relay when its own is gone, and the reply carries a new
// ETag; the origin's ETag is untouched. On failure the session is kept as
// it was (RFC 9725 section 4.3.3).
func (s *Server) iceRestart(w http.ResponseWriter, r *http.Request, rs registry.Session, frag *sdpx.Frag) {
	ctx := r.Context()
	mid := "0"
	if len(frag.Mids) > 0 {
		mid = frag.Mids[0]
	}
	server, err := newServerICE()
	if err != nil {
		s.fail(w, r, &httpError{status: http.StatusInternalServerError, title: "ICE restart failed", detail: detailInternal, cause: err})
		return
	}
	keys := registry.ICEKeys{
		Client:       registry.ICECredentials{Ufrag: frag.ICE.Ufrag, Pwd: frag.ICE.Pwd},
		Server:       server,
		Origin:       rs.OriginICE,
		OriginClient: rs.OriginClient(),
	}
	relayCands, err := s.restartOnRelay(ctx, rs, keys)
	if errors.Is(err, errRelayGone) {
		// The session's relay is dead or has lost the session: move the
		// session to another relay, which adopts it from the registry on
		// the client's first verified STUN.
		relayCands, err = s.rehome(ctx, rs, keys)
	}
	if err != nil {
		s.fail(w, r, restartError(err))
		return
	}
	cands, err := relayCandidates(relayCands)
	if err != nil {
		s.fail(w, r, &httpError{status: http.StatusBadGateway, title: "relay error", detail: detailRelayFailed,
			cause: fmt.Errorf("session %s, relay %s: %w", rs.ID, rs.RelayID, err)})
		return
	}
	etag := newETag()
	if _, err := s.cfg.Registry.UpdateSession(ctx, rs.ID, func(x *registry.Session) error {
		x.ETag = etag
		return nil
	}); err != nil {
		s.fail(w, r, s.registryError("restart not recorded", err))
		return
	}
	// RFC 9725 section 4.3.3: the reply repeats the ice-options,
	// ice-pacing and ice-lite of the original offer and answer.
	reply := sdpx.RestartFrag(sdpx.ICE{Ufrag: server.Ufrag, Pwd: server.Pwd, Options: rs.ICEOptions,
		Pacing: rs.ICEPacing, Lite: rs.ICELite}, mid, cands, nil)
	w.Header().Set("Content-Type", "application/trickle-ice-sdpfrag")
	w.Header().Set("ETag", etag)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, reply)
	s.logger(ctx).Info("signaling: ICE restart answered at the edge", "session", rs.ID)
}

// restartError maps a failed restart on the relays to HTTP: a request the
// relay refuses as invalid is 502 (the client's credentials were checked
// here, the server's made here), anything else 503 with Retry-After. err
// (relay ids, gRPC messages) is the logged cause only.
func restartError(err error) *httpError {
	if errors.Is(err, errRelayRefused) {
		return &httpError{status: http.StatusBadGateway, title: "relay refused the restart",
			detail: "the relay refused the ICE restart; the session is unchanged", cause: err}
	}
	return &httpError{status: http.StatusServiceUnavailable, title: "relay restart failed", retry: true,
		detail: "no relay could take the ICE restart; the session is unchanged; retry", cause: err}
}

// counterOfferAnswer forwards the client's answer to a WHEP 406
// counter-offer (its addresses stripped) and moves the relay session to
// the client's ICE credentials. The origin receives this answer, so it
// knows the client by these credentials too (OriginClient = Client); the
// server side stays what the client was given (the counter-offer's).
func (s *Server) counterOfferAnswer(w http.ResponseWriter, r *http.Request, rs registry.Session, answer string) {
	ctx := r.Context()
	parsed, err := sdpx.ParseOffer(answer)
	if err != nil {
		problem(w, http.StatusBadRequest, "malformed answer", err.Error())
		return
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.OriginTimeout)
	resp, err := s.origins.Do(octx, http.MethodPatch, rs.OriginResource, "application/sdp", []byte(parsed.Sanitized), http.Header{"If-Match": {"*"}})
	cancel()
	if err != nil || resp.Status/100 != 2 {
		s.metrics.originErrors.WithLabelValues("answer").Inc()
		e := &httpError{status: http.StatusBadGateway, title: "origin rejected the answer", detail: detailOriginUnavailable,
			cause: fmt.Errorf("origin %s, PATCH of the counter-offer's answer: %w", rs.OriginID, err)}
		if err == nil {
			e.detail = fmt.Sprintf("the stream's origin answered %d to the answer", resp.Status)
			e.cause = fmt.Errorf("origin %s answered %d to the counter-offer's answer: %s", rs.OriginID, resp.Status, snippet(resp.Body))
		}
		s.fail(w, r, e)
		return
	}
	client := registry.ICECredentials{Ufrag: parsed.ICE.Ufrag, Pwd: parsed.ICE.Pwd}
	if _, err := s.restartOnRelay(ctx, rs, registry.ICEKeys{Client: client, OriginClient: client,
		Server: rs.Server(), Origin: rs.OriginICE}); err != nil {
		s.fail(w, r, &httpError{status: http.StatusServiceUnavailable, title: "relay unavailable", retry: true, detail: detailNoRelay, cause: err})
		return
	}
	if _, err := s.cfg.Registry.UpdateSession(ctx, rs.ID, func(x *registry.Session) error {
		delete(x.Labels, LabelAwaitingAnswer)
		return nil
	}); err != nil {
		s.fail(w, r, s.registryError("answer not recorded", err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// LabelAwaitingAnswer is the session label (registry.Session.Labels) that
// marks a WHEP session whose origin answered with a counter-offer (406)
// until the client's answer arrives by PATCH application/sdp.
const LabelAwaitingAnswer = "rtcedge.signaling/awaiting-answer"

// awaitingAnswer reports whether the session waits for the client's answer
// to a counter-offer.
func awaitingAnswer(rs registry.Session) bool { return rs.Labels[LabelAwaitingAnswer] != "" }

// newServerICE returns fresh server-side ICE credentials from the CSPRNG:
// an 8-character ufrag and a 32-character pwd of ice-chars (RFC 8839
// section 5.4 wants at least 4 and 22; 32 characters of 6 bits are 192
// bits).
func newServerICE() (registry.ICECredentials, error) {
	const iceChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var b [8 + 32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return registry.ICECredentials{}, fmt.Errorf("signaling: ICE credentials: %w", err)
	}
	for i := range b {
		b[i] = iceChars[b[i]&63]
	}
	return registry.ICECredentials{Ufrag: string(b[:8]), Pwd: string(b[8:])}, nil
}

// errRelayGone says a session's relay has no registration, cannot be
// reached, or no longer has the session.
var errRelayGone = errors.New("the session's relay is gone")

// errRelayRefused says the relay refused a request as invalid.
var errRelayRefused = errors.New("the relay refused the request")

// restartOnRelay moves the session to new ICE credentials on its relay,
// which records them in the registry, and returns its candidates. No
// origin address changes: the origin's side of the session stays as it is.
func (s *Server) restartOnRelay(ctx context.Context, rs registry.Session, keys registry.ICEKeys) ([]*relayv1.Candidate, error) {
	relay, err := s.cfg.Registry.GetRelay(ctx, rs.RelayID)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("relay %s has no registration: %w", rs.RelayID, errRelayGone)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up relay %s: %w", rs.RelayID, err)
	}
	rc, err := s.relayClient(relay.GRPCAddress)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayCallTimeout)
	defer cancel()
	restarted, err := rc.RestartSession(rctx, &relayv1.RestartSessionRequest{Id: rs.ID,
		ClientIce:       iceProto(keys.Client),
		ServerIce:       iceProto(keys.Server),
		OriginIce:       iceProto(keys.Origin),
		OriginClientIce: iceProto(keys.OriginClient)})
	switch status.Code(err) {
	case codes.OK:
		return restarted.GetCandidates(), nil
	case codes.Unavailable, codes.NotFound, codes.DeadlineExceeded:
		return nil, fmt.Errorf("relay %s: %s: %w", rs.RelayID, status.Convert(err).Message(), errRelayGone)
	case codes.InvalidArgument:
		return nil, fmt.Errorf("relay %s: %s: %w", rs.RelayID, status.Convert(err).Message(), errRelayRefused)
	}
	return nil, fmt.Errorf("relay %s: %s", rs.RelayID, status.Convert(err).Message())
}

// iceProto converts credentials for relay.v1.
func iceProto(c registry.ICECredentials) *relayv1.IceCredentials {
	return &relayv1.IceCredentials{Ufrag: c.Ufrag, Pwd: c.Pwd}
}

// rehome assigns the session, with its new ICE credentials, to another live
// relay in one registry transaction and returns that relay's candidates
// (from its registration: its UDP and ICE-TCP addresses).
// The origin addresses stay: the new relay reaches the same origin session.
func (s *Server) rehome(ctx context.Context, rs registry.Session, keys registry.ICEKeys) ([]*relayv1.Candidate, error) {
	relay, err := s.cfg.Registry.PickRelayExcept(ctx, s.cfg.Zone, rs.RelayID)
	if err != nil {
		return nil, fmt.Errorf("moving the session off relay %s: %w", rs.RelayID, err)
	}
	var addrs []netip.AddrPort
	for _, a := range relay.PublicAddresses {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			addrs = append(addrs, ap)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("relay %s advertises no address", relay.ID)
	}
	var tcpAddrs []netip.AddrPort
	for _, a := range relay.PublicTCPAddresses {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			tcpAddrs = append(tcpAddrs, ap)
		}
	}
	if _, err := s.cfg.Registry.RekeySession(ctx, rs.ID, keys, nil, relay.ID); err != nil {
		return nil, fmt.Errorf("moving the session to relay %s: %w", relay.ID, err)
	}
	s.metrics.rehomed.Inc()
	s.logger(ctx).Info("signaling: session moved to another relay", "session", rs.ID, "from", rs.RelayID, "to", relay.ID)
	// The candidates AllocateSession on that relay would return: UDP, then
	// ICE-TCP passive.
	return append(mediarelay.Candidates(addrs), mediarelay.TCPCandidates(tcpAddrs)...), nil
}

// statusOf is an origin response's status for logs, 0 without one.
func statusOf(resp *originadapter.Response) int {
	if resp == nil {
		return 0
	}
	return resp.Status
}

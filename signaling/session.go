package signaling

import (
	"cmp"
	"context"
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
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

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
		w.Header().Set("Allow", "PATCH, DELETE, OPTIONS, GET")
		problem(w, http.StatusMethodNotAllowed, "method not allowed", r.Method+" is not supported on a session")
		return
	}
	rs, err := s.cfg.Registry.GetSession(r.Context(), id)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrInvalid) {
			problem(w, http.StatusNotFound, "no such session", "session "+id+" does not exist")
			return
		}
		s.fail(w, s.registryError("session lookup failed", err))
		return
	}
	switch r.Method {
	case http.MethodGet:
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
				s.log.Warn("signaling: relay release failed", "session", rs.ID, "relay", rs.RelayID, "err", err)
			}
		}
	}
	if rs.OriginResource != "" {
		octx, cancel := context.WithTimeout(ctx, s.cfg.OriginTimeout)
		resp, err := s.origins.Do(octx, http.MethodDelete, rs.OriginResource, "", nil, nil)
		cancel()
		if err != nil || resp.Status >= 500 {
			s.metrics.originErrors.WithLabelValues("delete").Inc()
			s.log.Warn("signaling: origin DELETE failed", "session", rs.ID, "err", err)
		}
	}
	if err := s.cfg.Registry.DeleteSession(ctx, rs.ID); err != nil && !errors.Is(err, registry.ErrNotFound) {
		s.fail(w, s.registryError("session not removed", err))
		return
	}
	s.log.Info("signaling: session deleted", "session", rs.ID, "stream", rs.Stream)
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
// WHEP counter-offer (204).
func (s *Server) patchSession(w http.ResponseWriter, r *http.Request, rs registry.Session) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/trickle-ice-sdpfrag" && mt != "application/sdp" {
		w.Header().Set("Accept-Patch", "application/trickle-ice-sdpfrag")
		problem(w, http.StatusUnsupportedMediaType, "unsupported content type", "PATCH takes application/trickle-ice-sdpfrag")
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
		s.fail(w, herr)
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
	s.iceRestart(w, r, rs, frag, string(body))
}

// iceRestart forwards a restart to the origin, moves the relay session to
// the new credentials and answers with the new ETag. On failure the
// session is kept as it was.
func (s *Server) iceRestart(w http.ResponseWriter, r *http.Request, rs registry.Session, frag *sdpx.Frag, _ string) {
	ctx := r.Context()
	mid := "0"
	if len(frag.Mids) > 0 {
		mid = frag.Mids[0]
	}
	fwd := sdpx.RestartFrag(sdpx.ICE{Ufrag: frag.ICE.Ufrag, Pwd: frag.ICE.Pwd, Options: frag.ICE.Options}, mid, nil, nil)
	fwd = strings.Replace(fwd, "a=end-of-candidates\r\n", "", 1)
	ifMatch := rs.OriginETag
	if ifMatch == "" {
		ifMatch = "*"
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.OriginTimeout)
	resp, err := s.origins.Do(octx, http.MethodPatch, rs.OriginResource, "application/trickle-ice-sdpfrag", []byte(fwd), http.Header{"If-Match": {ifMatch}})
	cancel()
	if err != nil {
		s.metrics.originErrors.WithLabelValues("restart").Inc()
		problem(w, http.StatusBadGateway, "ICE restart failed", err.Error())
		return
	}
	if resp.Status != http.StatusOK {
		s.metrics.originErrors.WithLabelValues("restart").Inc()
		status := http.StatusBadGateway
		if resp.Status == http.StatusUnprocessableEntity || resp.Status == http.StatusNotImplemented || resp.Status == http.StatusMethodNotAllowed {
			status = http.StatusUnprocessableEntity
		}
		problem(w, status, "ICE restart failed", fmt.Sprintf("the origin answered %d to the restart", resp.Status))
		return
	}
	ofrag, err := sdpx.ParseFrag(string(resp.Body))
	if err != nil || ofrag.ICE.Ufrag == "" {
		problem(w, http.StatusBadGateway, "ICE restart failed", "the origin's restart answer has no new ICE credentials")
		return
	}
	var originAddrs []string
	origin, _ := s.cfg.Registry.GetOrigin(ctx, rs.OriginID)
	if len(origin.MediaAddresses) == 0 {
		for _, c := range ofrag.Candidates {
			if a, err := sdpx.ParseAnswer("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=ice-ufrag:" +
				ofrag.ICE.Ufrag + "\r\na=ice-pwd:" + ofrag.ICE.Pwd + "\r\na=candidate:" + c + "\r\n"); err == nil {
				for _, ap := range a.MediaAddresses {
					originAddrs = append(originAddrs, ap.String())
				}
			}
		}
	}
	originAddrs = originAddrs[:min(len(originAddrs), 8)]
	clientICE := registry.ICECredentials{Ufrag: frag.ICE.Ufrag, Pwd: frag.ICE.Pwd}
	originICE := registry.ICECredentials{Ufrag: ofrag.ICE.Ufrag, Pwd: ofrag.ICE.Pwd}
	relayCands, err := s.restartOnRelay(ctx, rs, clientICE, originICE, originAddrs)
	if errors.Is(err, errRelayGone) {
		// The session's relay is dead or has lost the session: move the
		// session to another relay, which adopts it from the registry on
		// the client's first verified STUN.
		relayCands, err = s.rehome(ctx, rs, clientICE, originICE, originAddrs)
	}
	if err != nil {
		s.fail(w, &httpError{status: http.StatusServiceUnavailable, title: "relay restart failed", retry: true, detail: err.Error()})
		return
	}
	cands, err := relayCandidates(relayCands)
	if err != nil {
		problem(w, http.StatusBadGateway, "relay error", err.Error())
		return
	}
	etag := newETag()
	if _, err := s.cfg.Registry.UpdateSession(ctx, rs.ID, func(x *registry.Session) error {
		x.ETag, x.OriginETag = etag, resp.ETag
		return nil
	}); err != nil {
		s.fail(w, s.registryError("restart not recorded", err))
		return
	}
	// RFC 9725 section 4.3.3: the reply repeats the ice-options,
	// ice-pacing and ice-lite of the original offer and answer, whether or
	// not the origin's reply does.
	reply := sdpx.RestartFrag(sdpx.ICE{Ufrag: ofrag.ICE.Ufrag, Pwd: ofrag.ICE.Pwd, Options: cmp.Or(ofrag.ICE.Options, rs.ICEOptions),
		Pacing: cmp.Or(ofrag.ICE.Pacing, rs.ICEPacing), Lite: ofrag.ICE.Lite || rs.ICELite}, mid, cands, nil)
	w.Header().Set("Content-Type", "application/trickle-ice-sdpfrag")
	w.Header().Set("ETag", etag)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, reply)
	s.log.Info("signaling: ICE restart", "session", rs.ID)
}

// counterOfferAnswer forwards the client's answer to a WHEP 406
// counter-offer (its addresses stripped) and moves the relay session to
// the client's ICE credentials.
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
		problem(w, http.StatusBadGateway, "origin rejected the answer", fmt.Sprint(err))
		return
	}
	relay, err := s.cfg.Registry.GetRelay(ctx, rs.RelayID)
	if err == nil {
		var rc relayv1.RelayServiceClient
		if rc, err = s.relayClient(relay.GRPCAddress); err == nil {
			rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayCallTimeout)
			_, err = rc.RestartSession(rctx, &relayv1.RestartSessionRequest{Id: rs.ID,
				ClientIce: &relayv1.IceCredentials{Ufrag: parsed.ICE.Ufrag, Pwd: parsed.ICE.Pwd},
				OriginIce: &relayv1.IceCredentials{Ufrag: rs.OriginICE.Ufrag, Pwd: rs.OriginICE.Pwd}})
			cancel()
		}
	}
	if err != nil {
		s.fail(w, &httpError{status: http.StatusServiceUnavailable, title: "relay unavailable", retry: true, detail: err.Error()})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// errRelayGone says a session's relay has no registration, cannot be
// reached, or no longer has the session.
var errRelayGone = errors.New("the session's relay is gone")

// restartOnRelay moves the session to new ICE credentials on its relay.
func (s *Server) restartOnRelay(ctx context.Context, rs registry.Session, client, origin registry.ICECredentials,
	originAddrs []string) ([]*relayv1.Candidate, error) {
	relay, err := s.cfg.Registry.GetRelay(ctx, rs.RelayID)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("relay %s has no registration: %w", rs.RelayID, errRelayGone)
	}
	if err != nil {
		return nil, err
	}
	rc, err := s.relayClient(relay.GRPCAddress)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayCallTimeout)
	defer cancel()
	restarted, err := rc.RestartSession(rctx, &relayv1.RestartSessionRequest{Id: rs.ID,
		ClientIce:       &relayv1.IceCredentials{Ufrag: client.Ufrag, Pwd: client.Pwd},
		OriginIce:       &relayv1.IceCredentials{Ufrag: origin.Ufrag, Pwd: origin.Pwd},
		OriginAddresses: originAddrs})
	switch status.Code(err) {
	case codes.OK:
		return restarted.GetCandidates(), nil
	case codes.Unavailable, codes.NotFound, codes.DeadlineExceeded:
		return nil, fmt.Errorf("relay %s: %s: %w", rs.RelayID, status.Convert(err).Message(), errRelayGone)
	}
	return nil, fmt.Errorf("relay %s: %s", rs.RelayID, status.Convert(err).Message())
}

// rehome assigns the session, with its new ICE credentials, to another live
// relay in one registry transaction and returns that relay's candidates.
func (s *Server) rehome(ctx context.Context, rs registry.Session, client, origin registry.ICECredentials,
	originAddrs []string) ([]*relayv1.Candidate, error) {
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
	if originAddrs == nil {
		originAddrs = rs.OriginAddresses
	}
	if _, err := s.cfg.Registry.RekeySession(ctx, rs.ID, registry.ICEKeys{Client: client, Origin: origin}, originAddrs, relay.ID); err != nil {
		return nil, fmt.Errorf("moving the session to relay %s: %w", relay.ID, err)
	}
	s.metrics.rehomed.Inc()
	s.log.Info("signaling: session moved to another relay", "session", rs.ID, "from", rs.RelayID, "to", relay.ID)
	return mediarelay.Candidates(addrs), nil
}

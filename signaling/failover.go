package signaling

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling/internal/originadapter"
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

// retryKind says whether a failed origin attempt is worth one more on
// another origin within the same request.
type retryKind int

const (
	retryNone          retryKind = iota
	retryUnreachable             // refused or timed out: re-pin elsewhere
	retryLiveElsewhere           // a play's origin lacks the stream, another has it
)

func (k retryKind) String() string {
	switch k {
	case retryUnreachable:
		return "unreachable"
	case retryLiveElsewhere:
		return "live_elsewhere"
	}
	return "none"
}

// originAttempt is one try of a setup at one origin: the origin picked,
// the pending-setup record and the origin's answer.
type originAttempt struct {
	origin   registry.Origin
	pending  registry.PendingSetup
	deadline time.Time
	resp     *originadapter.Response
}

// Stable details of the failures below.
const (
	detailNotLive      = "stream %s is not live on any origin yet"
	detailStreamBusy   = "stream %s already has a publisher"
	detailOriginClosed = "the stream's origin refused the offer (it closed the connection)"
)

// tryOrigin picks the stream's origin with opt, records the pending setup
// and sends the offer. On failure the pending record is gone again, and
// the retryKind says whether another origin is worth a try (attempt's
// origin is set whenever one was picked).
func (s *Server) tryOrigin(ctx context.Context, dir Dir, key, id string, offer *sdpx.Offer, hdr http.Header,
	opt registry.PickOptions) (*originAttempt, *httpError, retryKind) {
	a := &originAttempt{}
	// The record is written only if the stream's pin is still the one that
	// chose the origin (a reaper may release an idle stream's pin in
	// between: pick again).
	for attempt := 0; ; attempt++ {
		origin, pinRev, err := s.cfg.Registry.PickOriginFor(ctx, key, opt)
		if errors.Is(err, registry.ErrNotLive) {
			return a, &httpError{status: http.StatusConflict, title: "no publisher", retry: true,
				detail: fmt.Sprintf(detailNotLive, key)}, retryNone
		}
		if err != nil {
			return a, s.registryError("no origin available", err), retryNone
		}
		a.origin = origin
		a.deadline = time.Now().Add(s.setupSpan())
		a.pending, err = s.cfg.Registry.BeginSetup(ctx, registry.Setup{ID: id, Stream: key, Direction: dir.String(),
			OriginID: origin.ID, Deadline: a.deadline, PinRev: pinRev})
		if err == nil {
			break
		}
		if !errors.Is(err, registry.ErrConflict) || attempt == 2 {
			return a, s.registryError("setup not recorded", err), retryNone
		}
	}
	ok := false
	defer func() {
		if !ok {
			s.abandonSetup(ctx, a.pending)
		}
	}()
	origin := a.origin
	endpoint, err := originadapter.Endpoint(origin, streamFromKey(key), dir.adapter(), DefaultVhost)
	if err != nil {
		s.metrics.originErrors.WithLabelValues("config").Inc()
		return a, &httpError{status: http.StatusBadGateway, title: "origin misconfigured", detail: "the stream's origin is misconfigured",
			cause: fmt.Errorf("origin %s: %w", origin.ID, err)}, retryNone
	}
	sctx, cancel := context.WithDeadline(ctx, a.deadline)
	defer cancel()
	octx, ocancel := context.WithTimeout(sctx, s.cfg.OriginTimeout)
	resp, err := s.origins.Do(octx, http.MethodPost, endpoint, "application/sdp", []byte(offer.Sanitized), hdr)
	ocancel()
	if err != nil {
		s.metrics.originErrors.WithLabelValues("transport").Inc()
		cause := fmt.Errorf("origin %s: %w", origin.ID, err)
		if ctx.Err() != nil {
			// The client went away: nobody's fault, nothing to retry.
			return a, &httpError{status: http.StatusServiceUnavailable, title: "origin unreachable", retry: true,
				detail: detailOriginUnavailable, cause: cause}, retryNone
		}
		if unreachable(err) || s.deadOrigin(ctx, endpoint) {
			// Refused or timed out: no new pins for it until it answers
			// again (a probe) or the mark's lease ends; this request tries
			// another origin.
			if merr := s.cfg.Registry.MarkOriginSuspect(context.WithoutCancel(ctx), origin.ID, unreachableReason(err), origin.TTL); merr != nil {
				s.logger(ctx).Warn("signaling: could not mark the origin suspect", "origin", origin.ID, "err", merr)
			} else {
				s.logger(ctx).Warn("signaling: origin unreachable; marked suspect", "origin", origin.ID, "err", err)
			}
			return a, &httpError{status: http.StatusServiceUnavailable, title: "origin unreachable", retry: true,
				detail: detailOriginUnavailable, cause: cause}, retryUnreachable
		}
		// The origin took the connection and closed it on the offer, as SRS
		// does for a second publisher (RtcStreamBusy) or an offer it cannot
		// negotiate: a refusal, not an outage.
		s.metrics.originErrors.WithLabelValues("closed").Inc()
		if dir == DirPublish && s.liveOn(ctx, key, origin.ID) {
			return a, &httpError{status: http.StatusConflict, title: "stream busy", detail: fmt.Sprintf(detailStreamBusy, key),
				cause: cause}, retryNone
		}
		return a, &httpError{status: http.StatusBadGateway, title: "origin refused the offer", detail: detailOriginClosed,
			cause: cause}, retryNone
	}
	switch {
	case resp.Status == http.StatusCreated, resp.Status == http.StatusNotAcceptable && dir == DirPlay:
	case resp.Status == http.StatusConflict && dir == DirPublish:
		return a, &httpError{status: http.StatusConflict, title: "stream busy", detail: fmt.Sprintf(detailStreamBusy, key),
			cause: fmt.Errorf("origin %s answered 409: %s", origin.ID, snippet(resp.Body))}, retryNone
	case resp.Status == http.StatusNotFound && dir == DirPlay, resp.Status == http.StatusConflict:
		again := retryNone
		if dir == DirPlay && s.liveElsewhere(ctx, key, append(opt.Avoid, origin.ID)) {
			again = retryLiveElsewhere
		}
		return a, &httpError{status: http.StatusConflict, title: "no publisher", retry: true,
			detail: fmt.Sprintf("stream %s has no publisher yet", key)}, again
	case resp.Status == http.StatusUnauthorized, resp.Status == http.StatusForbidden:
		// With ForwardAuthorization the origin judges the client's token.
		s.metrics.originErrors.WithLabelValues("rejected").Inc()
		return a, &httpError{status: http.StatusForbidden, title: "origin refused",
			detail: fmt.Sprintf("the stream's origin answered %d: not authorised for this stream", resp.Status),
			cause:  fmt.Errorf("origin %s answered %d: %s", origin.ID, resp.Status, snippet(resp.Body))}, retryNone
	case resp.Status == http.StatusServiceUnavailable:
		return a, &httpError{status: http.StatusServiceUnavailable, title: "origin busy", retry: true, detail: detailOriginUnavailable,
			cause: fmt.Errorf("origin %s answered 503: %s", origin.ID, snippet(resp.Body))}, retryNone
	case resp.Status >= 400 && resp.Status < 500:
		// The origin's body may say why, but it is the origin's text (it
		// can name hosts and paths): it goes to the log only.
		s.metrics.originErrors.WithLabelValues("rejected").Inc()
		return a, &httpError{status: http.StatusUnprocessableEntity, title: "origin rejected the offer",
			detail: fmt.Sprintf("the stream's origin answered %d to the offer: check its codecs and media sections", resp.Status),
			cause:  fmt.Errorf("origin %s answered %d: %s", origin.ID, resp.Status, snippet(resp.Body))}, retryNone
	default:
		s.metrics.originErrors.WithLabelValues("status").Inc()
		return a, &httpError{status: http.StatusBadGateway, title: "origin error", detail: detailOriginFailed,
			cause: fmt.Errorf("origin %s answered %d: %s", origin.ID, resp.Status, snippet(resp.Body))}, retryNone
	}
	ok = true
	a.resp = resp
	return a, nil, retryNone
}

// unreachable reports whether an origin call failed before the origin
// could take the request: the connection was refused, or the call timed
// out (dial or answer).
func unreachable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.As(err, &oe) && oe.Op == "dial":
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}

// deadOrigin tells an origin that closed a connection on the offer (SRS
// refusing it: the origin is up) from one that died under a pooled
// connection: it dials the endpoint's host once, and a refused or timed
// out dial means dead.
func (s *Server) deadOrigin(ctx context.Context, endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return false
	}
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	d := net.Dialer{Timeout: min(time.Second, s.cfg.OriginTimeout)}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return ctx.Err() == nil && unreachable(err)
	}
	_ = conn.Close()
	return false
}

// unreachableReason names why an origin could not be reached, for its
// suspect mark (stored in etcd: no URL, which may carry a token).
func unreachableReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route"
	}
	return "connection lost"
}

// liveOn reports whether the registry says originID has stream live
// (discovered), or an edge session publishes it.
func (s *Server) liveOn(ctx context.Context, stream, originID string) bool {
	ls, err := s.cfg.Registry.LiveOrigins(ctx, stream)
	if err == nil {
		for _, l := range ls {
			if l.OriginID == originID {
				return true
			}
		}
	}
	ss, err := s.cfg.Registry.ListSessionsByStream(ctx, stream)
	if err == nil {
		for _, rs := range ss {
			if rs.Direction == registry.DirectionPublish && rs.OriginID == originID {
				return true
			}
		}
	}
	return false
}

// liveElsewhere reports whether an origin not in except has stream live.
func (s *Server) liveElsewhere(ctx context.Context, stream string, except []string) bool {
	ls, err := s.cfg.Registry.LiveOrigins(ctx, stream)
	if err != nil {
		return false
	}
	for _, l := range ls {
		found := false
		for _, id := range except {
			found = found || id == l.OriginID
		}
		if !found {
			return true
		}
	}
	return false
}

// checkOfferDirection refuses an offer whose media directions do not fit
// the endpoint, before any origin is contacted: a WHEP offer that would
// only send (sendonly) and a WHIP offer that would only receive
// (recvonly). inactive and sendrecv sections pass.
func checkOfferDirection(dir Dir, offer string) *httpError {
	bad := "sendonly"
	if dir == DirPublish {
		bad = "recvonly"
	}
	session, media := "", ""
	inMedia, isAV := false, false
	check := func() *httpError {
		d := media
		if d == "" {
			d = session
		}
		if inMedia && isAV && d == bad {
			want := "recvonly (the player receives)"
			if dir == DirPublish {
				want = "sendonly (the publisher sends)"
			}
			return &httpError{status: http.StatusUnprocessableEntity, title: "wrong direction",
				detail: fmt.Sprintf("a %s offer's media sections must be %s or sendrecv, not %s", dir.protocol(), want, bad)}
		}
		return nil
	}
	sc := bufio.NewScanner(strings.NewReader(offer))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, "m="):
			if herr := check(); herr != nil {
				return herr
			}
			inMedia, media = true, ""
			isAV = strings.HasPrefix(line, "m=audio ") || strings.HasPrefix(line, "m=video ")
		case line == "a=sendonly" || line == "a=recvonly" || line == "a=sendrecv" || line == "a=inactive":
			if inMedia {
				media = line[2:]
			} else {
				session = line[2:]
			}
		}
	}
	return check()
}

// failoverMetrics counts retries on another origin.
func newFailoverMetrics(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rtcedge_signaling_origin_failovers_total",
		Help: "Setups retried on another origin within the request: unreachable (refused or timed out; the origin is marked suspect) or live_elsewhere (a play's origin lacked the stream another origin has live).",
	}, []string{"reason"})
	c.WithLabelValues(retryUnreachable.String())
	c.WithLabelValues(retryLiveElsewhere.String())
	reg.MustRegister(c)
	return c
}

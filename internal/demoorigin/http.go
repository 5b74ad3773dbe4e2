package demoorigin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// Limits of the HTTP API.
const (
	maxSDPBytes      = 64 << 10
	maxStreamKeyLen  = 256
	contentTypeSDP   = "application/sdp"
	contentTypeFrag  = "application/trickle-ice-sdpfrag"
	endpointMethods  = "OPTIONS, POST"
	resourceMethods  = "OPTIONS, PATCH, DELETE"
	problemMediaType = "application/problem+json"
)

// Handler returns the WHIP/WHEP HTTP API and the inventory API
// (/v3/paths/list, /v3/paths/get/{name}). It can be mounted under a prefix
// with http.StripPrefix; Location headers keep the prefix.
func (o *Origin) Handler() http.Handler { return http.HandlerFunc(o.serveHTTP) }

func (o *Origin) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if o.serveInventory(w, r) {
		return
	}
	if kind, key, ok := cutEndpoint(r.URL.Path); ok {
		o.serveEndpoint(w, r, kind, key)
		return
	}
	if kind, key, id, ok := cutResource(r.URL.Path); ok {
		o.serveResource(w, r, kind, key, id)
		return
	}
	problem(w, http.StatusNotFound, "not a WHIP or WHEP URL: expected /{stream}/whip or /{stream}/whep")
}

// cutEndpoint splits "/{stream...}/whip" or "/{stream...}/whep".
func cutEndpoint(p string) (sessionKind, string, bool) {
	if key, ok := strings.CutSuffix(p, "/whip"); ok {
		return kindPublish, strings.TrimPrefix(key, "/"), true
	}
	if key, ok := strings.CutSuffix(p, "/whep"); ok {
		return kindPlay, strings.TrimPrefix(key, "/"), true
	}
	return 0, "", false
}

// cutResource splits "/{stream...}/whip/{id}" or "/{stream...}/whep/{id}".
func cutResource(p string) (sessionKind, string, string, bool) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 || i == len(p)-1 {
		return 0, "", "", false
	}
	kind, key, ok := cutEndpoint(p[:i])
	return kind, key, p[i+1:], ok
}

// ValidStreamKey reports whether key is a stream key the origin accepts.
func ValidStreamKey(key string) bool { return validStreamKey(key) }

// validStreamKey accepts 1-256 bytes of [A-Za-z0-9._~-] segments separated
// by single slashes, without "." or ".." segments.
func validStreamKey(key string) bool {
	if key == "" || len(key) > maxStreamKeyLen {
		return false
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for _, c := range []byte(seg) {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '~', c == '-':
			default:
				return false
			}
		}
	}
	return true
}

func (o *Origin) serveEndpoint(w http.ResponseWriter, r *http.Request, kind sessionKind, key string) {
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("Allow", endpointMethods)
		w.Header().Set("Accept-Post", contentTypeSDP)
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", endpointMethods)
		problem(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on a "+kind.String()+" endpoint")
		return
	}
	if !validStreamKey(key) {
		problem(w, http.StatusBadRequest, "invalid stream key "+quote(key)+": use 1-256 bytes of [A-Za-z0-9._~-] segments separated by '/'")
		return
	}
	if !hasContentType(r, contentTypeSDP) {
		problem(w, http.StatusUnsupportedMediaType, "Content-Type must be "+contentTypeSDP)
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), o.cfg.GatherTimeout+o.cfg.TrackWait)
	defer cancel()
	var (
		s      *session
		answer string
		err    error
	)
	if kind == kindPublish {
		s, answer, err = o.publish(ctx, key, string(body))
	} else {
		s, answer, err = o.play(ctx, key, string(body))
	}
	if err != nil {
		o.writeError(w, err)
		return
	}
	s.mu.Lock()
	etag := s.etag
	s.mu.Unlock()
	h := w.Header()
	h.Set("Content-Type", contentTypeSDP)
	h.Set("Location", requestPath(r)+"/"+s.id)
	h.Set("ETag", etag)
	h.Set("Accept-Patch", contentTypeFrag)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

func (o *Origin) serveResource(w http.ResponseWriter, r *http.Request, kind sessionKind, key, id string) {
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("Allow", o.resourceAllow())
		if o.cfg.PatchMode == PatchAccept {
			w.Header().Set("Accept-Patch", contentTypeFrag)
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		if err := o.deleteSession(kind, key, id); err != nil {
			o.writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		o.patches.Add(1)
		switch o.cfg.PatchMode {
		case PatchReject:
			w.Header().Set("Allow", o.resourceAllow())
			problem(w, http.StatusMethodNotAllowed, "PATCH is not supported by this origin (patch mode reject)")
			return
		case PatchClose:
			closeConnection(w)
			return
		}
		if !hasContentType(r, contentTypeFrag) {
			problem(w, http.StatusUnsupportedMediaType, "Content-Type must be "+contentTypeFrag)
			return
		}
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), o.cfg.GatherTimeout)
		defer cancel()
		res, err := o.patch(ctx, kind, key, id, r.Header.Get("If-Match"), body)
		if err != nil {
			o.writeError(w, err)
			return
		}
		if !res.restarted {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", contentTypeFrag)
		w.Header().Set("ETag", res.etag)
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, res.body)
	default:
		w.Header().Set("Allow", o.resourceAllow())
		problem(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on a "+kind.String()+" session")
	}
}

// resourceAllow is the Allow header of a session: without PATCH unless the
// origin accepts it.
func (o *Origin) resourceAllow() string {
	if o.cfg.PatchMode == PatchAccept {
		return resourceMethods
	}
	return "OPTIONS, DELETE"
}

// closeConnection drops the request's connection without an answer, as
// SRS does for a PATCH; without a hijackable connection (HTTP/2) the
// handler panics with http.ErrAbortHandler, which aborts the stream.
func closeConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// requestPath is the escaped path the client used (before any
// http.StripPrefix), so that Location keeps a mount prefix.
func requestPath(r *http.Request) string {
	if u, err := url.ParseRequestURI(r.RequestURI); err == nil && u.Path != "" {
		return u.EscapedPath()
	}
	return r.URL.EscapedPath()
}

func hasContentType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && strings.EqualFold(mt, want)
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSDPBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		problem(w, http.StatusRequestEntityTooLarge, "body larger than 64 KiB")
		return nil, false
	case err != nil:
		problem(w, http.StatusBadRequest, "reading body: "+err.Error())
		return nil, false
	case len(body) == 0:
		problem(w, http.StatusBadRequest, "empty body")
		return nil, false
	}
	return body, true
}

// writeError maps the package's errors to HTTP problems.
func (o *Origin) writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNoPublisher), errors.Is(err, ErrSessionNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrBadSDP), errors.Is(err, ErrBadStreamKey):
		status = http.StatusBadRequest
	case errors.Is(err, ErrPreconditionRequired):
		status = http.StatusPreconditionRequired
	case errors.Is(err, ErrPreconditionFailed):
		status = http.StatusPreconditionFailed
	case errors.Is(err, ErrNoTracks), errors.Is(err, ErrClosed), errors.Is(err, ErrTooManySessions):
		w.Header().Set("Retry-After", "1")
		status = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status = http.StatusServiceUnavailable
	}
	if status == http.StatusInternalServerError {
		o.log.Warn("request failed", "err", err)
	}
	problem(w, status, err.Error())
}

// problem writes an RFC 9457 problem+json body.
func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", problemMediaType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":   "about:blank",
		"title":  http.StatusText(status),
		"status": status,
		"detail": detail,
	})
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

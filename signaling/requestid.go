package signaling

import (
	"context"
	"log/slog"
	"net/http"
)

// RequestIDHeader is the response header that carries every request's id;
// the log lines about the request carry the same id as "request_id".
const RequestIDHeader = "X-Request-Id"

// maxRequestID bounds a client-chosen request id.
const maxRequestID = 64

type requestIDKey struct{}

// validRequestID reports whether a client-sent request id may be reused:
// 1-64 RFC 9110 token characters.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' ||
			c == '~' || c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' || c == '*' || c == '+' ||
			c == '^' || c == '`' || c == '|') {
			return false
		}
	}
	return true
}

// withRequestID wraps h: every request gets an id, the client's
// X-Request-Id when it is sane, else a fresh one; the response carries it
// in X-Request-Id, and the request's context in requestID.
func withRequestID(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newID()
		}
		w.Header().Set(RequestIDHeader, id)
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// requestID returns the id of the request ctx belongs to, or "".
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// logger returns the server's logger with the request id of ctx.
func (s *Server) logger(ctx context.Context) *slog.Logger {
	if id := requestID(ctx); id != "" {
		return s.log.With("request_id", id)
	}
	return s.log
}

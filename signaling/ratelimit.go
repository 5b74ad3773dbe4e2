package signaling

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxLimiters bounds the per-client table; past it, idle entries go first,
// then the whole table (a flood of distinct addresses resets it).
const maxLimiters = 65536

// limiter rate-limits state-changing requests (POST, PATCH, DELETE) per
// client IP (RFC 9725 section 5).
type limiter struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex // guards the following
	clients map[string]*clientLimiter
}

type clientLimiter struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(perSecond float64, burst int) *limiter {
	if perSecond <= 0 {
		return nil
	}
	return &limiter{rate: rate.Limit(perSecond), burst: max(burst, 1), clients: map[string]*clientLimiter{}}
}

// allow reports whether the client may make a request now.
func (l *limiter) allow(client string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[client]
	if c == nil {
		if len(l.clients) >= maxLimiters {
			l.evictLocked(now)
		}
		c = &clientLimiter{lim: rate.NewLimiter(l.rate, l.burst)}
		l.clients[client] = c
	}
	c.seen = now
	return c.lim.AllowN(now, 1)
}

// evictLocked drops clients idle for a minute, or everything if none is.
func (l *limiter) evictLocked(now time.Time) {
	for k, c := range l.clients {
		if now.Sub(c.seen) > time.Minute {
			delete(l.clients, k)
		}
	}
	if len(l.clients) >= maxLimiters {
		clear(l.clients)
	}
}

// limit wraps h: POST, PATCH and DELETE over the client's rate get 429 with
// Retry-After.
func (s *Server) limit(h http.Handler) http.Handler {
	if s.limiter == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost, http.MethodPatch, http.MethodDelete:
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				host = r.RemoteAddr
			}
			if !s.limiter.allow(host, time.Now()) {
				s.cors(w)
				w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(1/float64(s.limiter.rate))))))
				problem(w, http.StatusTooManyRequests, "too many requests", "this client exceeds its request rate; retry later")
				s.metrics.requests.WithLabelValues("rate-limited", "429").Inc()
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

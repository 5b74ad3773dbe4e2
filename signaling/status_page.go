package signaling

import (
	"embed"
	"net/http"
)

// statusFiles are the /status page: plain HTML and a few lines of JS that
// read the status API (no build step).
//
//go:embed statuspage/index.html statuspage/status.js
var statusFiles embed.FS

// statusPage serves /status (the HTML) and /status/status.js. The page
// holds no data: the script reads /v1/status and /v1/streams, which the
// status policy guards.
func statusPage(w http.ResponseWriter, r *http.Request) {
	name, ctype := "statuspage/index.html", "text/html; charset=utf-8"
	switch r.URL.Path {
	case "/status", "/status/":
	case "/status/status.js":
		name, ctype = "statuspage/status.js", "text/javascript; charset=utf-8"
	default:
		http.NotFound(w, r)
		return
	}
	b, err := statusFiles.ReadFile(name)
	if err != nil {
		http.Error(w, "status page missing", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	_, _ = w.Write(b)
}

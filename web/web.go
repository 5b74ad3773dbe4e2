// Package web is rtcedge's demo page: plain HTML, CSS and JavaScript (no
// build step, no external resources) that publishes a camera with WHIP,
// plays a stream with WHEP, stops, restarts ICE, and shows each
// PeerConnection's state, selected candidate pair, bitrate and frame
// counters. Tests drive it through window.rtcedge (see app.js).
package web

import (
	"embed"
	"net/http"
)

//go:embed index.html app.js style.css
var files embed.FS

// assets maps request paths to embedded files and their content types.
var assets = map[string]struct{ name, contentType string }{
	"/":           {"index.html", "text/html; charset=utf-8"},
	"/index.html": {"index.html", "text/html; charset=utf-8"},
	"/app.js":     {"app.js", "text/javascript; charset=utf-8"},
	"/style.css":  {"style.css", "text/css; charset=utf-8"},
}

// contentSecurityPolicy keeps the page to its own files; media and
// signaling may go to another server named in the page's Server field.
const contentSecurityPolicy = "default-src 'self'; connect-src 'self' http: https:; media-src 'self' blob: mediastream:; img-src 'self' data:"

// Handler serves the demo page at "/" ("/index.html", "/app.js",
// "/style.css"); any other path is 404. Mount it with http.StripPrefix to
// serve it under a prefix.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, err := files.ReadFile(a.name)
		if err != nil { // cannot happen: the files are embedded
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(b)
		}
	})
}

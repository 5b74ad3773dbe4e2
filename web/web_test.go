package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name, method, path string
		status             int
		contentType        string
		contains           string
	}{
		{"index", http.MethodGet, "/", 200, "text/html; charset=utf-8", `<script src="app.js"></script>`},
		{"index by name", http.MethodGet, "/index.html", 200, "text/html; charset=utf-8", `id="remote-video"`},
		{"script", http.MethodGet, "/app.js", 200, "text/javascript; charset=utf-8", "window.rtcedge = {"},
		{"style", http.MethodGet, "/style.css", 200, "text/css; charset=utf-8", "video {"},
		{"head", http.MethodHead, "/app.js", 200, "text/javascript; charset=utf-8", ""},
		{"unknown", http.MethodGet, "/secret.txt", 404, "", ""},
		{"post", http.MethodPost, "/", 405, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.contentType != "" && resp.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.contentType)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
		})
	}
}

// TestNoExternalResources checks that the page loads nothing from other
// origins (no CDN) and that the API the end-to-end tests use is there.
func TestNoExternalResources(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		b, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
	js, _ := files.ReadFile("app.js")
	for _, api := range []string{"publish:", "play:", "stop:", "restartIce:", "stats:", "selectedCandidatePairId", "If-Match", "application/trickle-ice-sdpfrag"} {
		if !strings.Contains(string(js), api) {
			t.Errorf("app.js lacks %q", api)
		}
	}
}

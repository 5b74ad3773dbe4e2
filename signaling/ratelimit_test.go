package signaling_test

import (
	"net/http"
	"testing"

	"github.com/rtcedge/rtcedge/signaling"
)

// TestRateLimit: past its burst, a client's POSTs get 429 with Retry-After
// while GET and OPTIONS are not limited.
func TestRateLimit(t *testing.T) {
	e := newEnv(t, 1, func(c *signaling.Config) { c.RateLimit, c.RateBurst = 0.5, 3 })
	base := e.sig[0].URL
	tests := []struct {
		name, method string
		want         int
	}{
		{name: "first", method: "POST", want: 415},
		{name: "second", method: "POST", want: 415},
		{name: "third", method: "POST", want: 415},
		{name: "over the burst", method: "POST", want: 429},
		{name: "delete counts too", method: "DELETE", want: 429},
		{name: "options is free", method: "OPTIONS", want: 204},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := base + "/whip/live/x"
			if tc.method == "DELETE" {
				url = base + "/sessions/abc"
			}
			r := do(t, tc.method, url, "text/plain", "x")
			if r.status != tc.want {
				t.Fatalf("%s = %d, want %d", tc.method, r.status, tc.want)
			}
			if tc.want == http.StatusTooManyRequests && (r.header.Get("Retry-After") != "2" || r.header.Get("Content-Type") != "application/problem+json") {
				t.Errorf("429 headers %v", r.header)
			}
		})
	}
}

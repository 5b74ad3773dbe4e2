package signaling

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// problem writes an RFC 9457 application/problem+json error.
func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Del("ETag")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail,omitempty"`
	}{Type: "about:blank", Title: title, Status: status, Detail: detail})
}

// retryProblem is problem with Retry-After.
func retryProblem(w http.ResponseWriter, status int, after time.Duration, title, detail string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(max(after, time.Second)/time.Second)))
	problem(w, status, title, detail)
}

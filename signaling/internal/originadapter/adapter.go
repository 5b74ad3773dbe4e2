package originadapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/rtcedge/rtcedge/registry"
)

// MaxBody bounds what is read from an origin's response.
const MaxBody = 256 << 10

// ErrOrigin wraps transport failures and unusable origin responses.
var ErrOrigin = errors.New("origin error")

// Direction of a session.
type Direction int

// Directions.
const (
	Publish Direction = iota // WHIP
	Play                     // WHEP
)

// Stream is a normalised stream key split as SRS does.
type Stream struct {
	Vhost, App, Name string
}

// Path is "app/name", with the vhost in front when it is not the default.
func (s Stream) Path(defaultVhost string) string {
	if s.Vhost != "" && s.Vhost != defaultVhost {
		return s.Vhost + "/" + s.App + "/" + s.Name
	}
	return s.App + "/" + s.Name
}

// Endpoint returns the origin's WHIP or WHEP URL for a stream.
func Endpoint(o registry.Origin, s Stream, dir Direction, defaultVhost string) (string, error) {
	tmpl := o.WHIPURLTemplate
	if dir == Play {
		tmpl = o.WHEPURLTemplate
	}
	path := s.Path(defaultVhost)
	if tmpl != "" {
		return strings.ReplaceAll(tmpl, "{stream}", path), nil
	}
	base := strings.TrimRight(o.APIBaseURL, "/")
	if base == "" {
		return "", fmt.Errorf("%w: origin %s has no API base URL or URL template", ErrOrigin, o.ID)
	}
	switch o.Kind {
	case registry.OriginKindSRS:
		kind := "whip"
		if dir == Play {
			kind = "whep"
		}
		q := url.Values{"app": {s.App}, "stream": {s.Name}}
		if s.Vhost != "" && s.Vhost != defaultVhost {
			q.Set("vhost", s.Vhost)
		}
		return base + "/rtc/v1/" + kind + "/?" + q.Encode(), nil
	case registry.OriginKindMediaMTX:
		if dir == Play {
			return base + "/" + path + "/whep", nil
		}
		return base + "/" + path + "/whip", nil
	}
	return "", fmt.Errorf("%w: origin %s (kind %s) needs URL templates", ErrOrigin, o.ID, o.Kind)
}

// Response is an origin's answer to a request.
type Response struct {
	Status      int
	ContentType string
	Body        []byte
	// Location is the session resource, resolved against the request URL.
	Location string
	// ETag is the origin's ETag as sent (MediaMTX sends a bare "*").
	ETag       string
	RetryAfter string
}

// Client talks to origins.
type Client struct {
	HTTP *http.Client
}

// Do sends one request to an origin and reads its bounded response.
func (c *Client) Do(ctx context.Context, method, target, contentType string, body []byte, header http.Header) (*Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOrigin, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %w", ErrOrigin, method, Redact(target), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrOrigin, Redact(target), err)
	}
	if len(b) > MaxBody {
		return nil, fmt.Errorf("%w: response from %s exceeds %d bytes", ErrOrigin, Redact(target), MaxBody)
	}
	out := &Response{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), Body: b,
		ETag: resp.Header.Get("ETag"), RetryAfter: resp.Header.Get("Retry-After")}
	if loc := resp.Header.Get("Location"); loc != "" {
		u, err := resp.Request.URL.Parse(loc)
		if err != nil {
			return nil, fmt.Errorf("%w: bad Location %q from %s", ErrOrigin, loc, Redact(target))
		}
		out.Location = u.String()
	}
	return out, nil
}

// Redact drops the query (it may carry tokens) from a URL for messages.
func Redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

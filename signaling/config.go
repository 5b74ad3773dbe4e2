package signaling

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rtcedge/rtcedge/registry"
)

// Defaults of Config.
const (
	DefaultBodyLimit        = 64 << 10
	DefaultOriginTimeout    = 10 * time.Second
	DefaultRelayCallTimeout = 5 * time.Second
	DefaultRetryAfter       = 5 * time.Second
	DefaultSetupMargin      = 10 * time.Second
	DefaultPinIdle          = time.Minute
)

// ICEServer is a STUN or TURN server advertised to clients in Link headers
// (RFC 9725 section 4.6).
type ICEServer struct {
	URL        string // stun:host:port, turn:host:port?transport=udp, turns:...
	Username   string
	Credential string
}

// Config configures a Server.
type Config struct {
	// Registry is the etcd layer; required.
	Registry *registry.Client
	// Zone is this instance's zone: origins and relays of the same zone are
	// preferred.
	Zone string
	// ICEServers are advertised in Link headers.
	ICEServers []ICEServer
	// Auth protects WHIP and WHEP; the zero value allows everything.
	Auth Auth
	// RegistrationToken, when set, is the bearer token origin registration
	// (gRPC, REST and the SRS heartbeat) must carry. Without it,
	// registration is accepted from loopback peers only (or, on gRPC, from
	// peers whose client certificate the TLS layer verified), unless
	// InsecureOpenRegistration is set.
	RegistrationToken string
	// InsecureOpenRegistration, without a RegistrationToken, accepts
	// registration from any peer: anyone who can reach signaling can then
	// register an origin and capture streams. For private networks only;
	// New logs a warning. It has no effect when RegistrationToken is set.
	InsecureOpenRegistration bool
	// StatusToken, when set, is the bearer token the status API
	// (status.v1.StatusService, GET /v1/streams and /v1/status, which the
	// /status page reads) requires; the registration token is accepted
	// too. Without it, the status API answers callers on this host (and,
	// on gRPC, peers whose client certificate the TLS layer verified) and
	// holders of the registration token.
	StatusToken string
	// RelayToken, when set, is sent as "authorization: Bearer <token>" on
	// every gRPC call signaling makes to relays (relays started with the
	// same token require it).
	RelayToken string
	// ForwardAuthorization passes the client's Authorization header to the
	// origin.
	ForwardAuthorization bool
	// AllowOrigin is the CORS Access-Control-Allow-Origin; default "*".
	AllowOrigin string
	// BodyLimit bounds request bodies; default DefaultBodyLimit.
	BodyLimit int64
	// OriginTimeout bounds each origin HTTP call; default
	// DefaultOriginTimeout.
	OriginTimeout time.Duration
	// RelayCallTimeout bounds each relay gRPC call; default
	// DefaultRelayCallTimeout.
	RelayCallTimeout time.Duration
	// RetryAfter is sent with 503 and 409; default DefaultRetryAfter.
	RetryAfter time.Duration
	// HTTPClient talks to origins; nil uses one with OriginTimeout and a
	// transport of its own that keeps up to 256 idle connections per origin
	// (Go's default keeps 2: under concurrent setups most origin requests
	// would dial a new connection and leave one in TIME_WAIT). Close
	// closes that transport's idle connections.
	HTTPClient *http.Client
	// Logger receives logs; nil uses slog.Default().
	Logger *slog.Logger
	// Version is reported in the legacy JSON API.
	Version string
	// PublicBaseURL, when set (e.g. "https://edge.example.com"), makes
	// session Locations absolute; otherwise they are relative paths
	// "/sessions/{id}".
	PublicBaseURL string
	// RateLimit is the requests per second each client IP may make with
	// POST, PATCH and DELETE (RFC 9725 section 5), with bursts of
	// RateBurst; 0 disables the limit.
	RateLimit float64
	RateBurst int
	// ReapInterval is how often RunReaper looks for orphaned sessions;
	// default DefaultReapInterval.
	ReapInterval time.Duration
	// OrphanGrace is how long a session may stay on a dead relay before the
	// reaper removes it; default DefaultOrphanGrace.
	OrphanGrace time.Duration
	// SetupMargin is added to OriginTimeout plus RelayCallTimeout to make a
	// setup's deadline (it covers the registry calls around them): a setup
	// is cut off at its deadline, and a pending setup record older than it
	// is reaped. Default DefaultSetupMargin.
	SetupMargin time.Duration
	// PinIdle is how old a stream's pin must be before the reaper may
	// release it once the stream has no session and no setup (its next
	// setup picks an origin again); default DefaultPinIdle.
	PinIdle time.Duration
	// Page, when set, serves the demo page (and anything else not routed)
	// at "/".
	Page http.Handler
}

func (c *Config) setDefaults() error {
	if c.Registry == nil {
		return errors.New("signaling: a registry is required")
	}
	if c.AllowOrigin == "" {
		c.AllowOrigin = "*"
	}
	if c.BodyLimit <= 0 {
		c.BodyLimit = DefaultBodyLimit
	}
	if c.OriginTimeout <= 0 {
		c.OriginTimeout = DefaultOriginTimeout
	}
	if c.RelayCallTimeout <= 0 {
		c.RelayCallTimeout = DefaultRelayCallTimeout
	}
	if c.ReapInterval <= 0 {
		c.ReapInterval = DefaultReapInterval
	}
	if c.OrphanGrace <= 0 {
		c.OrphanGrace = DefaultOrphanGrace
	}
	if c.SetupMargin <= 0 {
		c.SetupMargin = DefaultSetupMargin
	}
	if c.PinIdle <= 0 {
		c.PinIdle = DefaultPinIdle
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 256
		c.HTTPClient = &http.Client{Transport: tr, Timeout: c.OriginTimeout, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return nil
		}}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.PublicBaseURL = strings.TrimRight(c.PublicBaseURL, "/")
	if c.PublicBaseURL != "" {
		u, err := url.Parse(c.PublicBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("signaling: PublicBaseURL %q: want http(s)://host[:port][/path]", c.PublicBaseURL)
		}
	}
	for _, s := range c.ICEServers {
		if !(strings.HasPrefix(s.URL, "stun:") || strings.HasPrefix(s.URL, "turn:") || strings.HasPrefix(s.URL, "turns:")) {
			return fmt.Errorf("signaling: ICE server %q: want a stun:, turn: or turns: URL", s.URL)
		}
	}
	return nil
}

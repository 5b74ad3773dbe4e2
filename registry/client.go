package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults of Config.
const (
	DefaultPrefix         = "/rtcedge/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 3 * time.Second
)

// Config configures a Client. Zero values take the defaults.
type Config struct {
	// Endpoints are the etcd client URLs or host:port pairs; required.
	Endpoints []string
	// Prefix is prepended to every key; default DefaultPrefix. It must end
	// in "/".
	Prefix string
	// DialTimeout bounds connection set-up; default DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds every call; default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Username and Password enable etcd authentication.
	Username, Password string
	// TLS enables TLS toward etcd; nil is plaintext. See LoadTLS.
	TLS *tls.Config
	// Logger receives the registry's logs; nil uses slog.Default().
	Logger *slog.Logger
}

// LoadTLS builds a client TLS configuration from PEM files: caFile verifies
// the servers (empty: the system roots), certFile and keyFile authenticate
// the client (both or neither).
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificate found", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcd TLS: give both a client certificate and its key, or neither")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Client is the registry's handle on etcd. It is safe for concurrent use.
type Client struct {
	etcd    *clientv3.Client
	keys    keys
	timeout time.Duration
	log     *slog.Logger
	ctx     context.Context // ends at Close; parents the caches' watches
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the caches' goroutines

	mu          sync.Mutex // guards the following
	policy      OriginPolicy
	relayCache  *cache[Relay]
	originCache *cache[Origin]
	closed      bool

	pickMu sync.Mutex // guards the following
	// picks counts, per relay, the picks this client made since it last
	// saw that relay's record change (the record the count is against):
	// sessions allocated there that the record does not show yet.
	picks map[string]relayPicks
}

// relayPicks is a count of picks against one version of a relay's record.
type relayPicks struct {
	rec *Relay
	n   int
}

// New connects to etcd. It does not wait for etcd to be reachable: calls
// made while it is not fail with ErrUnavailable, and everything recovers
// when it comes back.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no etcd endpoints", ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("%w: prefix %q must end in /", ErrInvalid, cfg.Prefix)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             cfg.Username,
		Password:             cfg.Password,
		TLS:                  cfg.TLS,
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to 120s: after a long
		// outage the client would take minutes to notice etcd is back.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", mapErr(err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		etcd:    cli,
		keys:    keys{prefix: cfg.Prefix},
		timeout: cfg.RequestTimeout,
		log:     cfg.Logger,
		ctx:     ctx,
		cancel:  cancel,
		policy:  DefaultOriginPolicy{},
	}, nil
}

// Close stops the caches and the relay registrations' keepalives and closes
// the etcd connection. It does not revoke the registrations' leases: close
// them first (RelayRegistration.Close) for the keys to go at once, otherwise
// they expire after their TTL, as when the process dies.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return c.etcd.Close()
}

// ErrClosed is returned by calls that need the client's background work
// (caches, relay registrations) after Close.
var ErrClosed = errors.New("registry: client closed")

// goroutine runs fn in the background until Close, which waits for it; it
// reports false (and does not run fn) after Close.
func (c *Client) goroutine(fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

// Etcd returns the underlying etcd client.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }

// RequestTimeout is the bound of every call.
func (c *Client) RequestTimeout() time.Duration { return c.timeout }

// call derives the per-call context.
func (c *Client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// mapErr wraps etcd and context errors in the registry's sentinels.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case errors.Is(err, context.Canceled):
		return err
	}
	code := codes.OK
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		// clientv3 turns the server's gRPC statuses into EtcdError values
		// ("etcdserver: no leader", "request timed out", ...), which keep the
		// code but are not gRPC statuses any more.
		code = ee.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if errors.Is(err, clientv3.ErrNoAvailableEndpoints) || strings.Contains(err.Error(), "no available endpoints") ||
		strings.Contains(err.Error(), "connection refused") {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// encode and decode are the versioned value codec.
func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("registry: encode: %w", err)
	}
	return string(b), nil
}

func decode(key string, b []byte, v any) error {
	var head struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("registry: %s: %w", key, err)
	}
	if head.V > recordVersion {
		return fmt.Errorf("registry: %s: record version %d is newer than this binary's %d", key, head.V, recordVersion)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("registry: %s: %w", key, err)
	}
	return nil
}

// Prefix is the key prefix every key lives under.
func (c *Client) Prefix() string { return c.keys.prefix }

package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Config configures Start.
type Config struct {
	// Dir is the data directory; empty uses a temporary one removed by Close.
	Dir string
	// ClientURL is the client listen URL, e.g. "http://127.0.0.1:2379";
	// empty is "http://127.0.0.1:0": the kernel picks the port, and
	// Endpoints reports it. With port 0 etcd's gRPC gateway (REST under
	// /v3/) is off: etcd would dial the configured address, port 0.
	ClientURL string
	// PeerURL is the peer listen URL; empty is "http://127.0.0.1:0". A
	// single member never dials it.
	PeerURL string
	// Logger receives start/stop logs and etcd's own error-level logs
	// (without the harmless "mux: server closed"-style shutdown noise); nil
	// uses slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds how long Start waits for etcd to serve; default
	// 30s.
	StartTimeout time.Duration
	// UnsafeNoFsync skips etcd's fsyncs. The data still reaches the OS, so
	// it survives Stop/Restart within one machine's uptime but not a power
	// loss: for tests (StartForTest sets it), where fsync latency on a
	// shared disk would only add noise.
	UnsafeNoFsync bool
}

// Server is a running (or stopped) embedded etcd.
type Server struct {
	cfg     Config
	tempDir bool
	// clientURL and peerURL are what etcd listens on: the configured URLs
	// until the first start, then the addresses it bound, so Restart
	// binds the same ports.
	clientURL url.URL
	peerURL   url.URL
	// peerAdvertise is the peer URL recorded in the data dir (port 0 when
	// the port was picked); it must stay the same across restarts.
	peerAdvertise url.URL
	gateway       bool

	mu   sync.Mutex // guards the following
	etcd *embed.Etcd
}

// Start starts etcd and returns when it is ready to serve.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	s := &Server{cfg: cfg}
	if s.cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "rtcedge-etcd-")
		if err != nil {
			return nil, fmt.Errorf("embedetcd: %w", err)
		}
		s.cfg.Dir, s.tempDir = dir, true
	}
	var err error
	if s.clientURL, err = parseURL(cfg.ClientURL); err != nil {
		err = fmt.Errorf("embedetcd: client url: %w", err)
	} else if s.peerURL, err = parseURL(cfg.PeerURL); err != nil {
		err = fmt.Errorf("embedetcd: peer url: %w", err)
	} else {
		s.peerAdvertise = s.peerURL
		s.gateway = s.clientURL.Port() != "0"
		err = s.start(ctx)
	}
	if err != nil {
		if s.tempDir {
			_ = os.RemoveAll(s.cfg.Dir)
		}
		return nil, err
	}
	return s, nil
}

// parseURL parses raw; empty is loopback port 0.
func parseURL(raw string) (url.URL, error) {
	if raw == "" {
		return url.URL{Scheme: "http", Host: "127.0.0.1:0"}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return url.URL{}, err
	}
	return *u, nil
}

func (s *Server) start(ctx context.Context) error {
	ec := embed.NewConfig()
	ec.Name = "rtcedge"
	ec.Dir = s.cfg.Dir
	ec.ListenClientUrls = []url.URL{s.clientURL}
	ec.AdvertiseClientUrls = []url.URL{s.clientURL}
	ec.ListenPeerUrls = []url.URL{s.peerURL}
	ec.AdvertisePeerUrls = []url.URL{s.peerAdvertise}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.EnableGRPCGateway = s.gateway
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(s.cfg.Logger))
	ec.LogLevel = "error"
	ec.UnsafeNoFsync = s.cfg.UnsafeNoFsync
	// Keep five minutes of history: watchers resume within that, and the
	// store does not grow with every session ever made.
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "5m"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("embedetcd: start: %w", err)
	}
	t := time.NewTimer(s.cfg.StartTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("embedetcd: %w", err)
	case <-t.C:
		e.Close()
		return errors.New("embedetcd: not ready in time")
	case <-ctx.Done():
		e.Close()
		return ctx.Err()
	}
	// Keep the bound addresses (the ports picked for port 0) for
	// Endpoints and Restart; a restart binds the same ones, so they are
	// written only by the first start (Endpoints may run meanwhile).
	if len(e.Clients) > 0 {
		if a := e.Clients[0].Addr().String(); a != s.clientURL.Host {
			s.clientURL.Host = a
		}
	}
	if len(e.Peers) > 0 {
		if a := e.Peers[0].Listener.Addr().String(); a != s.peerURL.Host {
			s.peerURL.Host = a
		}
	}
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	s.cfg.Logger.Debug("embedded etcd ready", "client", s.clientURL.String(), "dir", s.cfg.Dir)
	return nil
}

// Endpoints returns the client endpoints, e.g. ["127.0.0.1:23791"].
func (s *Server) Endpoints() []string { return []string{s.clientURL.Host} }

// Stop stops etcd, keeping its data directory and ports for Restart. While
// clients hold watch streams open it takes etcd's request timeout (about
// 7s) before etcd cuts them.
func (s *Server) Stop() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts a stopped etcd again with the same directory and ports
// (the ones it bound, when they were picked).
func (s *Server) Restart(ctx context.Context) error {
	s.Stop()
	// The old listeners may linger for a moment after Close.
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = s.start(ctx); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Close stops etcd and removes a temporary data directory.
func (s *Server) Close() error {
	s.Stop()
	if s.tempDir {
		return os.RemoveAll(s.cfg.Dir)
	}
	return nil
}

// Package embedetcd runs a single-member etcd server in-process, on loopback
// ports, for the all-in-one binary and for tests that need a real etcd. It
// is a separate package so the service binaries link the etcd server only
// when they use it.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config configures Start.
type Config struct {
	// Dir is the data directory; empty uses a temporary one removed by Close.
	Dir string
	// ClientURL is the client listen URL, e.g. "http://127.0.0.1:2379";
	// empty picks a free loopback port.
	ClientURL string
	// PeerURL is the peer listen URL; empty picks a free loopback port.
	PeerURL string
	// Logger receives start/stop logs; etcd's own logs are discarded.
	Logger *slog.Logger
	// StartTimeout bounds how long Start waits for etcd to serve; default
	// 30s.
	StartTimeout time.Duration
}

// Server is a running (or stopped) embedded etcd.
type Server struct {
	cfg       Config
	tempDir   bool
	clientURL url.URL
	peerURL   url.URL

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
	var err error
	if s.clientURL, err = pickURL(cfg.ClientURL); err != nil {
		return nil, fmt.Errorf("embedetcd: client url: %w", err)
	}
	if s.peerURL, err = pickURL(cfg.PeerURL); err != nil {
		return nil, fmt.Errorf("embedetcd: peer url: %w", err)
	}
	if s.cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "rtcedge-etcd-")
		if err != nil {
			return nil, fmt.Errorf("embedetcd: %w", err)
		}
		s.cfg.Dir, s.tempDir = dir, true
	}
	if err := s.start(ctx); err != nil {
		if s.tempDir {
			_ = os.RemoveAll(s.cfg.Dir)
		}
		return nil, err
	}
	return s, nil
}

// pickURL parses raw, or picks a free loopback port when it is empty.
func pickURL(raw string) (url.URL, error) {
	if raw != "" {
		u, err := url.Parse(raw)
		if err != nil {
			return url.URL{}, err
		}
		return *u, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	return url.URL{Scheme: "http", Host: addr}, nil
}

func (s *Server) start(ctx context.Context) error {
	ec := embed.NewConfig()
	ec.Name = "rtcedge"
	ec.Dir = s.cfg.Dir
	ec.ListenClientUrls = []url.URL{s.clientURL}
	ec.AdvertiseClientUrls = []url.URL{s.clientURL}
	ec.ListenPeerUrls = []url.URL{s.peerURL}
	ec.AdvertisePeerUrls = []url.URL{s.peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	ec.LogLevel = "error"
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
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	s.cfg.Logger.Debug("embedded etcd ready", "client", s.clientURL.String(), "dir", s.cfg.Dir)
	return nil
}

// Endpoints returns the client endpoints, e.g. ["127.0.0.1:23791"].
func (s *Server) Endpoints() []string { return []string{s.clientURL.Host} }

// Stop stops etcd, keeping its data directory and ports for Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts a stopped etcd again with the same directory and ports.
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

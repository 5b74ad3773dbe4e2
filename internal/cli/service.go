package cli

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"

	"google.golang.org/grpc"

	"github.com/rtcedge/rtcedge/registry"
)

// EtcdFlags are the etcd connection flags of the service binaries.
type EtcdFlags struct {
	Endpoints          StringList
	CA, Cert, Key      string
	Username, Password string
}

// Register adds the -etcd-* flags to fs.
func (e *EtcdFlags) Register(fs *flag.FlagSet) {
	fs.Var(&e.Endpoints, "etcd-endpoints", "etcd endpoints, comma-separated (required)")
	fs.StringVar(&e.CA, "etcd-ca", "", "CA file verifying etcd's certificate (enables TLS)")
	fs.StringVar(&e.Cert, "etcd-cert", "", "client certificate file for etcd")
	fs.StringVar(&e.Key, "etcd-key", "", "client key file for etcd")
	fs.StringVar(&e.Username, "etcd-username", "", "etcd user name")
	fs.StringVar(&e.Password, "etcd-password", "", "etcd password")
}

// Validate checks the flags once parsed.
func (e *EtcdFlags) Validate() error {
	if len(e.Endpoints) == 0 {
		return errors.New("-etcd-endpoints is required")
	}
	if (e.Cert == "") != (e.Key == "") {
		return errors.New("-etcd-cert and -etcd-key go together")
	}
	return nil
}

// Client connects the registry with these flags.
func (e *EtcdFlags) Client(log *slog.Logger) (*registry.Client, error) {
	cfg := registry.Config{Endpoints: e.Endpoints, Username: e.Username, Password: e.Password, Logger: log}
	if e.CA != "" || e.Cert != "" {
		var err error
		if cfg.TLS, err = registry.LoadTLS(e.CA, e.Cert, e.Key); err != nil {
			return nil, err
		}
	}
	return registry.New(cfg)
}

// ServeHTTP serves s on l until it is shut down; a shutdown is not an error.
func ServeHTTP(s *http.Server, l net.Listener) error {
	if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ServeGRPC serves s on l until it is stopped; a stop is not an error.
func ServeGRPC(s *grpc.Server, l net.Listener) error {
	if err := s.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// StopGRPC stops s gracefully, forcing it when ctx ends first.
func StopGRPC(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
		<-done
	}
}

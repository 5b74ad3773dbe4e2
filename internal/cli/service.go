package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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
		if err := checkEtcdTLS(e.Endpoints, cfg.TLS, 3*time.Second); err != nil {
			return nil, err
		}
	}
	return registry.New(cfg)
}

// checkEtcdTLS completes a TLS handshake with each endpoint that answers
// within timeout and fails when one refuses the TLS set-up: an etcd
// certificate the CA does not verify, or a client certificate etcd does not
// accept. The etcd client would only time out on these, and retry forever
// when no user is set, hiding the cause. An endpoint that does not answer
// is not an error: etcd may start after the service.
func checkEtcdTLS(endpoints []string, cfg *tls.Config, timeout time.Duration) error {
	for _, ep := range endpoints {
		host := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			if u.Scheme == "unix" || u.Scheme == "unixs" {
				continue
			}
			host = u.Host
		}
		if _, _, err := net.SplitHostPort(host); err != nil {
			continue // let the etcd client report it
		}
		c := cfg.Clone()
		if c.ServerName == "" {
			c.ServerName, _, _ = net.SplitHostPort(host)
		}
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: c}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		conn, err := d.DialContext(ctx, "tcp", host)
		cancel()
		if err == nil {
			// TLS 1.3 reports a rejected client certificate on the first
			// read, not in the handshake.
			tc := conn.(*tls.Conn)
			_ = tc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, err = tc.Read(make([]byte, 1))
			_ = tc.Close()
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() || errors.Is(err, io.EOF) {
				continue
			}
		}
		var cve *tls.CertificateVerificationError
		var remote *net.OpError
		var ua x509.UnknownAuthorityError
		var he x509.HostnameError
		var ci x509.CertificateInvalidError
		switch {
		case errors.As(err, &cve), errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci):
			return fmt.Errorf("etcd TLS with %s: its certificate does not verify (check -etcd-ca): %w", host, err)
		case errors.As(err, &remote) && remote.Op == "remote error":
			// crypto/tls reports the peer's alert ("bad certificate",
			// "certificate required") as a "remote error".
			return fmt.Errorf("etcd TLS with %s: etcd refused the TLS set-up (check -etcd-cert and -etcd-key): %w", host, err)
		}
	}
	return nil
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

// ServerTLS loads a gRPC server certificate; with clientCA set, clients
// must present a certificate that CA signed (mTLS).
func ServerTLS(certFile, keyFile, clientCA string) (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pool, err := loadPool(clientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(cfg), nil
}

// ClientTLS builds gRPC client credentials: ca verifies the server (empty:
// the system roots); certFile and keyFile, when set, authenticate the client.
func ClientTLS(ca, certFile, keyFile string) (credentials.TransportCredentials, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pool, err := loadPool(ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate", file)
	}
	return pool, nil
}

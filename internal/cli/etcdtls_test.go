package cli

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/internal/testcerts"
	"github.com/rtcedge/rtcedge/registry"
)

// tlsServer accepts TLS connections requiring a client certificate signed
// by the test CA, and holds each open until the peer closes it.
func tlsServer(t *testing.T, f testcerts.Files) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(f.CA)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	return l.Addr().String()
}

func TestCheckEtcdTLS(t *testing.T) {
	f := testcerts.Write(t)
	other := testcerts.Write(t) // a CA that did not sign the server
	addr := tlsServer(t, f)
	load := func(ca, cert, key string) *tls.Config {
		cfg, err := registry.LoadTLS(ca, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	for _, c := range []struct {
		name      string
		endpoints []string
		cfg       *tls.Config
		want      string // "" is no error
	}{
		{"good", []string{"https://" + addr}, load(f.CA, f.ClientCert, f.ClientKey), ""},
		{"host:port", []string{addr}, load(f.CA, f.ClientCert, f.ClientKey), ""},
		{"unreachable", []string{"https://" + deadAddr}, load(f.CA, f.ClientCert, f.ClientKey), ""},
		{"wrong CA", []string{"https://" + addr}, load(other.CA, f.ClientCert, f.ClientKey), "-etcd-ca"},
		{"system roots", []string{"https://" + addr}, load("", f.ClientCert, f.ClientKey), "-etcd-ca"},
		{"foreign client cert", []string{"https://" + addr}, load(f.CA, other.ClientCert, other.ClientKey), "-etcd-cert"},
		{"no client cert", []string{"https://" + addr}, load(f.CA, "", ""), "-etcd-cert"},
	} {
		err := checkEtcdTLS(c.endpoints, c.cfg, 2*time.Second)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		}
	}
}

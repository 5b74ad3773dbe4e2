package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtcedge/rtcedge/internal/clitest"
	"github.com/rtcedge/rtcedge/internal/testcerts"
	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no etcd", wantErr: "-etcd-endpoints is required"},
		{name: "ok", args: []string{"-etcd-endpoints", "127.0.0.1:2379"}},
		{name: "tls half", args: []string{"-etcd-endpoints", "x", "-tls-cert", "a"}, wantErr: "go together"},
		{name: "bad hmac", args: []string{"-etcd-endpoints", "x", "-auth-hmac-key", "zz"}, wantErr: "hex"},
		{name: "write timeout too short", args: []string{"-etcd-endpoints", "x", "-http-write-timeout", "5s"}, wantErr: "must exceed"},
		{name: "negative timeout", args: []string{"-etcd-endpoints", "x", "-origin-timeout", "-1s"}, wantErr: "positive"},
		{name: "setup margin", args: []string{"-etcd-endpoints", "x", "-setup-margin", "0s"}, wantErr: "positive"},
		{name: "tiny body limit", args: []string{"-etcd-endpoints", "x", "-body-limit", "10"}, wantErr: "body-limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, func(string) string { return "" })
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestICEServers(t *testing.T) {
	got := iceServers([]string{"stun:stun.example:3478", "turn:user:secret@turn.example:3478?transport=udp"})
	if got[0].URL != "stun:stun.example:3478" || got[1].URL != "turn:turn.example:3478?transport=udp" || got[1].Username != "user" || got[1].Credential != "secret" {
		t.Fatalf("%+v", got)
	}
}

// TestRunRegistrationToken starts the binary's run function and registers
// an origin over gRPC with and without the registration token.
func TestRunRegistrationToken(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	ctx := t.Context()
	addrs := clitest.Run(t, func(ctx context.Context, ready chan<- [2]string) error {
		return run(ctx, []string{"-http-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-etcd-endpoints", etcd.Endpoints()[0],
			"-registration-token", "s3cret", "-log-level", "warn"}, func(string) string { return "" }, ready)
	})
	conn, err := grpc.NewClient(addrs[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := originv1.NewOriginRegistryClient(conn)
	req := &originv1.RegisterOriginRequest{Origin: &originv1.Origin{Id: "o1", Kind: originv1.OriginKind_ORIGIN_KIND_MEDIAMTX,
		ApiBaseUrl: "http://127.0.0.1:8889", Ttl: durationpb.New(10 * time.Second)}}
	if _, err := client.RegisterOrigin(ctx, req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without token: %v", err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	resp, err := client.RegisterOrigin(authed, req)
	if err != nil || !resp.Created {
		t.Fatalf("with token: %v %v", resp, err)
	}
	// REST: the same registry, the token in the Authorization header.
	for _, tc := range []struct {
		auth string
		code int
	}{{"", 401}, {"Bearer s3cret", 200}} {
		hreq, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addrs[0]+"/v1/origins", nil)
		if tc.auth != "" {
			hreq.Header.Set("Authorization", tc.auth)
		}
		hresp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(hresp.Body)
		hresp.Body.Close()
		if hresp.StatusCode != tc.code || tc.code == 200 && !strings.Contains(string(body), `"o1"`) {
			t.Errorf("GET /v1/origins auth=%q: %d %s", tc.auth, hresp.StatusCode, body)
		}
	}
}

// TestEnvFallback: RTCEDGE_* variables fill unset flags; a flag wins.
func TestEnvFallback(t *testing.T) {
	env := map[string]string{"RTCEDGE_ETCD_ENDPOINTS": "10.0.0.1:2379,10.0.0.2:2379", "RTCEDGE_ZONE": "eu", "RTCEDGE_BODY_LIMIT": "4096"}
	c, err := parseConfig([]string{"-zone", "us"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if len(c.etcd.Endpoints) != 2 || c.etcd.Endpoints[1] != "10.0.0.2:2379" || c.zone != "us" || c.bodyLimit != 4096 {
		t.Fatalf("%+v", c)
	}
}

// TestRunHTTPS serves WHIP/WHEP over TLS with -tls-cert/-tls-key.
func TestRunHTTPS(t *testing.T) {
	certs := testcerts.Write(t)
	etcd := embedetcd.StartForTest(t)
	addrs := clitest.Run(t, func(ctx context.Context, ready chan<- [2]string) error {
		return run(ctx, []string{"-http-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-etcd-endpoints", etcd.Endpoints()[0],
			"-tls-cert", certs.ServerCert, "-tls-key", certs.ServerKey, "-log-level", "warn"}, func(string) string { return "" }, ready)
	})
	pem, err := os.ReadFile(certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addrs[0] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("HTTPS /healthz: %d tls=%v", resp.StatusCode, resp.TLS != nil)
	}
	plain, err := http.Get("http://" + addrs[0] + "/healthz")
	if err == nil {
		plain.Body.Close()
		if plain.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
}

// TestSlowClientsAreCut: a client that trickles its request headers (a
// slowloris) is disconnected by the server's read timeout instead of
// holding the connection.
func TestSlowClientsAreCut(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	addrs := clitest.Run(t, func(ctx context.Context, ready chan<- [2]string) error {
		return run(ctx, []string{"-http-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0", "-etcd-endpoints", etcd.Endpoints()[0],
			"-http-read-timeout", "1s", "-log-level", "error"}, func(string) string { return "" }, ready)
	})
	conn, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("POST /whip/live/slow HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	// Keep trickling a header byte every 200 ms; the server must hang up.
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	closed := false
	for i := 0; i < 60 && !closed; i++ {
		time.Sleep(200 * time.Millisecond)
		if _, err := conn.Write([]byte("X")); err != nil {
			closed = true
		}
	}
	if !closed {
		// Writes may still succeed into a half-closed socket: reading tells.
		// The server may answer (408) before it closes; a read deadline means
		// it never hung up.
		buf := make([]byte, 512)
		for {
			if _, err := conn.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("the slow client still holds its connection")
				}
				break
			}
		}
	}
}

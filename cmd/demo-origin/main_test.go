package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "defaults"},
		{name: "env media", env: map[string]string{"RTCEDGE_MEDIA_LISTEN": "127.0.0.1:9999"}},
		{name: "bad env media", env: map[string]string{"RTCEDGE_MEDIA_LISTEN": "nope"}, wantErr: "-media-listen"},
		{name: "flag wins over env", args: []string{"-media-listen", "127.0.0.1:1"}, env: map[string]string{"RTCEDGE_MEDIA_LISTEN": "nope"}},
		{name: "bad public ip", args: []string{"-public-ip", "example.com"}, wantErr: "-public-ip"},
		{name: "bad origin id", args: []string{"-signaling-grpc", "127.0.0.1:9092", "-origin-id", "a b"}, wantErr: "-origin-id"},
		{name: "bad ttl", args: []string{"-ttl", "1s"}, wantErr: "-ttl"},
		{name: "bad advertise url", args: []string{"-advertise-url", "ftp://x"}, wantErr: "-advertise-url"},
		{name: "extra args", args: []string{"x"}, wantErr: "unexpected"},
		{name: "publish", args: []string{"-publish", "live/a", "-publish", "live/b,cam"}},
		{name: "publish from env", env: map[string]string{"RTCEDGE_PUBLISH": "live/a,live/b"}},
		{name: "bad publish key", args: []string{"-publish", "live/../a"}, wantErr: "-publish"},
		{name: "publish twice", args: []string{"-publish", "live/a,live/a"}, wantErr: "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, func(k string) string { return tc.env[k] })
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// registrySpy stands in for signaling's OriginRegistry (another package's
// work): it only records what the demo origin's heartbeat sends.
type registrySpy struct {
	originv1.UnimplementedOriginRegistryServer
	reg   chan *originv1.Origin
	dereg chan string
}

func (s *registrySpy) RegisterOrigin(_ context.Context, req *originv1.RegisterOriginRequest) (*originv1.RegisterOriginResponse, error) {
	select {
	case s.reg <- req.GetOrigin():
	default:
	}
	return &originv1.RegisterOriginResponse{Origin: req.GetOrigin(), Created: true}, nil
}

func (s *registrySpy) DeregisterOrigin(_ context.Context, req *originv1.DeregisterOriginRequest) (*originv1.DeregisterOriginResponse, error) {
	s.dereg <- req.GetId()
	return &originv1.DeregisterOriginResponse{}, nil
}

func TestRun(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	spy := &registrySpy{reg: make(chan *originv1.Origin, 1), dereg: make(chan string, 1)}
	gs := grpc.NewServer()
	originv1.RegisterOriginRegistryServer(gs, spy)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-http-listen", "127.0.0.1:0", "-media-listen", "127.0.0.1:0", "-signaling-grpc", lis.Addr().String(),
			"-origin-id", "demo-test", "-log-level", "warn", "-publish", "live/test"}, func(string) string { return "" }, ready)
	}()
	var addrs [2]string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	select {
	case o := <-spy.reg:
		if o.GetId() != "demo-test" || o.GetWhipUrlTemplate() != "http://"+addrs[0]+"/{stream}/whip" ||
			len(o.GetMediaAddresses()) != 1 || o.GetMediaAddresses()[0] != addrs[1] {
			t.Errorf("registration %v, addresses %v", o, addrs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no registration")
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodOptions, "/live/demo/whip", http.StatusNoContent},
	} {
		req, err := http.NewRequestWithContext(t.Context(), tc.method, "http://"+addrs[0]+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
	resp, err := http.Get("http://" + addrs[0] + "/v3/paths/list")
	if err != nil {
		t.Fatal(err)
	}
	var inv struct {
		ItemCount int `json:"itemCount"`
		Items     []struct {
			Name   string   `json:"name"`
			Ready  bool     `json:"ready"`
			Tracks []string `json:"tracks"`
		} `json:"items"`
	}
	err = json.NewDecoder(resp.Body).Decode(&inv)
	resp.Body.Close()
	if err != nil || inv.ItemCount != 1 || len(inv.Items) != 1 || inv.Items[0].Name != "live/test" || !inv.Items[0].Ready ||
		len(inv.Items[0].Tracks) != 1 || inv.Items[0].Tracks[0] != "VP8" {
		t.Fatalf("inventory %+v (%v), want live/test ready with a VP8 track", inv, err)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	select {
	case id := <-spy.dereg:
		if id != "demo-test" {
			t.Errorf("deregistered %q", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no deregistration")
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

package demoorigin

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	originv1 "github.com/rtcedge/rtcedge/proto/origin/v1"
)

// registrySpy is a test double of signaling's OriginRegistry: the real one
// belongs to the signaling package (another work item), and the heartbeat
// only needs a peer that records what it receives over real gRPC.
type registrySpy struct {
	originv1.UnimplementedOriginRegistryServer
	failFirst int // RegisterOrigin calls to fail with UNAVAILABLE

	mu         sync.Mutex // guards the following
	calls      int
	registered []*originv1.Origin
	auth       []string
	regCh      chan struct{}
	deregCh    chan string
}

func (s *registrySpy) RegisterOrigin(ctx context.Context, req *originv1.RegisterOriginRequest) (*originv1.RegisterOriginResponse, error) {
	s.mu.Lock()
	s.calls++
	fail := s.calls <= s.failFirst
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		s.auth = append(s.auth, md.Get("authorization")...)
	}
	if !fail {
		s.registered = append(s.registered, req.GetOrigin())
	}
	s.mu.Unlock()
	if fail {
		return nil, status.Error(codes.Unavailable, "etcd is down")
	}
	select {
	case s.regCh <- struct{}{}:
	default:
	}
	return &originv1.RegisterOriginResponse{Origin: req.GetOrigin(), Created: true}, nil
}

func (s *registrySpy) DeregisterOrigin(_ context.Context, req *originv1.DeregisterOriginRequest) (*originv1.DeregisterOriginResponse, error) {
	s.deregCh <- req.GetId()
	return &originv1.DeregisterOriginResponse{}, nil
}

func startRegistry(t *testing.T, spy *registrySpy) originv1.OriginRegistryClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	originv1.RegisterOriginRegistryServer(srv, spy)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return originv1.NewOriginRegistryClient(cc)
}

func TestHeartbeat(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failFirst int
		token     string
	}{
		{"registers and deregisters", 0, "s3cret"},
		{"retries after failures", 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spy := &registrySpy{failFirst: tc.failFirst, regCh: make(chan struct{}, 16), deregCh: make(chan string, 1)}
			client := startRegistry(t, spy)
			want := NewRegistration("demo-1", "http://127.0.0.1:8888/", []string{"127.0.0.1:8189"}, 0)
			hb := &Heartbeat{
				Client:   client,
				Origin:   want,
				Interval: 20 * time.Millisecond,
				Token:    tc.token,
				Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- hb.Run(ctx) }()
			for range 3 {
				select {
				case <-spy.regCh:
				case <-time.After(20 * time.Second):
					t.Fatal("no registration arrived")
				}
			}
			cancel()
			select {
			case id := <-spy.deregCh:
				if id != "demo-1" {
					t.Errorf("deregistered %q", id)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no deregistration")
			}
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}

			spy.mu.Lock()
			defer spy.mu.Unlock()
			if spy.calls < 3+tc.failFirst {
				t.Errorf("%d RegisterOrigin calls, want at least %d", spy.calls, 3+tc.failFirst)
			}
			got := spy.registered[0]
			if !proto.Equal(got, want) {
				t.Errorf("registered %v, want %v", got, want)
			}
			if got.GetKind() != originv1.OriginKind_ORIGIN_KIND_WHIP ||
				got.GetWhipUrlTemplate() != "http://127.0.0.1:8888/{stream}/whip" ||
				got.GetWhepUrlTemplate() != "http://127.0.0.1:8888/{stream}/whep" ||
				got.GetTtl().AsDuration() != 15*time.Second {
				t.Errorf("registration fields: %v", got)
			}
			for _, a := range spy.auth {
				if tc.token == "" || a != "Bearer "+tc.token {
					t.Errorf("authorization metadata %q with token %q", a, tc.token)
				}
			}
			if tc.token != "" && len(spy.auth) == 0 {
				t.Error("no authorization metadata sent")
			}
		})
	}
}

func TestHeartbeatNeedsClient(t *testing.T) {
	if err := (&Heartbeat{}).Run(t.Context()); err == nil {
		t.Fatal("Run without Client succeeded")
	}
}

//go:build linux

package loadgen

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	origin := netip.MustParseAddrPort("127.0.0.1:5000")
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"direct defaults to the origin", Config{Target: TargetDirect, Origin: origin, Sessions: 1, Rate: 1, Duration: time.Second}, ""},
		{"unknown target", Config{Target: "whip", Origin: origin, Sessions: 1, Rate: 1, Duration: time.Second}, "want relay"},
		{"relay without grpc", Config{Target: TargetRelay, Origin: origin, Sessions: 1, Rate: 1, Duration: time.Second}, "gRPC"},
		{"cforward without address", Config{Target: TargetCForward, Sessions: 1, Rate: 1, Duration: time.Second}, "UDP address"},
		{"no sessions", Config{Target: TargetDirect, Origin: origin, Rate: 1, Duration: time.Second}, "sessions"},
		{"neither rate nor window", Config{Target: TargetDirect, Origin: origin, Sessions: 1, Duration: time.Second}, "window"},
		{"tiny packets", Config{Target: TargetDirect, Origin: origin, Sessions: 1, Rate: 1, Size: 20, Duration: time.Second}, "size"},
		{"no duration", Config{Target: TargetDirect, Origin: origin, Sessions: 1, Rate: 1}, "duration"},
		{"relay over tcp", Config{Target: TargetRelay, Transport: TransportTCP, RelayGRPC: "127.0.0.1:9090", Origin: origin, Sessions: 1, Rate: 1, Duration: time.Second}, ""},
		{"idle needs no rate", Config{Target: TargetDirect, Origin: origin, Sessions: 1, Idle: true, Duration: time.Second}, ""},
		{"unknown transport", Config{Target: TargetRelay, Transport: "quic", RelayGRPC: "127.0.0.1:9090", Origin: origin, Sessions: 1, Rate: 1, Duration: time.Second}, "want udp or tcp"},
		{"tcp to the echo origin", Config{Target: TargetDirect, Transport: TransportTCP, Origin: origin, Sessions: 1, Rate: 1, Duration: time.Second}, "only target relay"},
		{"tcp to cforward", Config{Target: TargetCForward, Transport: TransportTCP, Addr: origin, Sessions: 1, Rate: 1, Duration: time.Second}, "only target relay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.setDefaults()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunDirect(t *testing.T) {
	e := startEcho(t, "")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"paced", Config{Sessions: 4, Rate: 200}},
		{"closed loop", Config{Sessions: 3, Window: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Target, cfg.Origin = TargetDirect, e.Addr()
			cfg.Warmup, cfg.Duration = 500*time.Millisecond, 1500*time.Millisecond
			cfg.PID = os.Getpid()
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.SetupFailed != 0 || res.Sent == 0 || res.Received == 0 {
				t.Fatalf("setup failed %d, sent %d, received %d", res.SetupFailed, res.Sent, res.Received)
			}
			if res.RTTP50us <= 0 || res.CPUSeconds <= 0 {
				t.Fatalf("RTT p50 %vµs, CPU %vs: not measured", res.RTTP50us, res.CPUSeconds)
			}
		})
	}
}

func TestRunCancelled(t *testing.T) {
	e := startEcho(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Run(ctx, Config{Target: TargetDirect, Origin: e.Addr(), Sessions: 2, Rate: 100, Duration: time.Minute})
	if err == nil {
		t.Fatal("Run ignored its context")
	}
}

func TestRunCForward(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	ctx := context.Background()
	bin, err := BuildCForward(ctx, filepath.Join("..", "..", "test", "cforward", "cforward.c"), filepath.Join(t.TempDir(), "cforward"))
	if err != nil {
		t.Fatal(err)
	}
	e := startEcho(t, "")
	c, addr, err := startCForward(ctx, CompareConfig{CForwardBin: bin, CPUTarget: -1, SocketBuffer: 1 << 20}, e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, Config{Target: TargetCForward, Addr: addr, Origin: e.Addr(), Sessions: 3, Rate: 100,
		Warmup: 200 * time.Millisecond, Duration: 800 * time.Millisecond, PID: c.pid()})
	if stopErr := c.stop(); stopErr != nil {
		t.Errorf("cforward did not exit cleanly: %v", stopErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Received == 0 || res.CPUSeconds <= 0 {
		t.Fatalf("received %d, cforward CPU %vs", res.Received, res.CPUSeconds)
	}
	if tail := c.stderrTail(); !strings.Contains(tail, "sessions=3") {
		t.Fatalf("cforward's exit line %q does not count 3 sessions", tail)
	}
}

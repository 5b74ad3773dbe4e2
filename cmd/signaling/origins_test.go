package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

// TestRunRefusesBadOriginsFile: signaling does not start with an origins
// file that has an error; the error names the file, line and field.
func TestRunRefusesBadOriginsFile(t *testing.T) {
	etcd := embedetcd.StartForTest(t)
	tests := []struct {
		name, content, wantErr string
	}{
		{name: "bad kind", content: "origins:\n  - id: a\n    kind: janus\n    url: http://127.0.0.1:1\n", wantErr: "origins.yaml:3: origins[0].kind"},
		{name: "missing file", wantErr: "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "origins.yaml")
			if tc.content != "" {
				if err := os.WriteFile(file, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ready := make(chan [2]string, 1)
			err := run(context.Background(), []string{"-http-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0",
				"-etcd-endpoints", etcd.Endpoints()[0], "-origins-file", file, "-log-level", "error"}, func(string) string { return "" }, ready)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			select {
			case <-ready:
				t.Fatal("signaling listened with a bad origins file")
			default:
			}
		})
	}
}

func TestParseProbeFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "defaults", args: nil},
		{name: "interval too short", args: []string{"-probe-interval", "1ms"}, wantErr: "-probe-interval"},
		{name: "failures", args: []string{"-probe-failures", "0"}, wantErr: "-probe-failures"},
		{name: "leader ttl fraction", args: []string{"-probe-leader-ttl", "1500ms"}, wantErr: "-probe-leader-ttl"},
		{name: "max streams", args: []string{"-probe-max-streams", "20000"}, wantErr: "-probe-max-streams"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(append([]string{"-etcd-endpoints", "127.0.0.1:2379"}, tc.args...), func(string) string { return "" })
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

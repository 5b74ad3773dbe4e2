//go:build linux

package main

import (
	"context"
	"strings"
	"testing"
)

func TestArgumentErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no subcommand", wantErr: "usage"},
		{name: "unknown subcommand", args: []string{"bench"}, wantErr: "unknown subcommand"},
		{name: "whip target", args: []string{"run", "-target", "whip"}, wantErr: "rtcedge-load setups"},
		{name: "unknown transport", args: []string{"run", "-target", "relay", "-transport", "quic"}, wantErr: "want udp or tcp"},
		{name: "tcp to the echo origin", args: []string{"run", "-transport", "tcp"}, wantErr: "only target relay"},
		{name: "compare over an unknown transport", args: []string{"compare", "-transport", "udp,quic"}, wantErr: "want udp or tcp"},
		{name: "zero clients", args: []string{"setups", "-clients", "16,0"}, wantErr: "not a client count"},
		{name: "clients not a number", args: []string{"setups", "-clients", "many"}, wantErr: "not a client count"},
		{name: "missing offer", args: []string{"setups", "-offer", "/nonexistent/offer.sdp"}, wantErr: "-offer"},
		{name: "unknown setups flag", args: []string{"setups", "-sessions", "3"}, wantErr: "not defined"},
	}
	getenv := func(string) string { return "" }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, getenv)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run(%q) = %v, want an error mentioning %q", tt.args, err, tt.wantErr)
			}
		})
	}
}

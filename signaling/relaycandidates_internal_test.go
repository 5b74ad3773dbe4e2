package signaling

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/rtcedge/rtcedge/mediarelay"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
	"github.com/rtcedge/rtcedge/signaling/internal/sdpx"
)

func TestRelayCandidates(t *testing.T) {
	udp := mediarelay.Candidates([]netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:8000"), netip.MustParseAddrPort("[2001:db8::7]:8000")})
	tcp := mediarelay.TCPCandidates([]netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443")})
	active := &relayv1.Candidate{Foundation: "9", Component: 1, Protocol: "tcp", TcpType: "active", Priority: 1, Address: "198.51.100.7", Port: 9, Type: "host"}
	quic := &relayv1.Candidate{Foundation: "9", Component: 1, Protocol: "quic", Priority: 1, Address: "198.51.100.7", Port: 9, Type: "host"}
	tests := []struct {
		name    string
		in      []*relayv1.Candidate
		want    []string // rendered lines, component 1
		wantErr bool
	}{
		{name: "udp only", in: udp, want: []string{
			udp[0].Foundation + " 1 udp 2130706431 198.51.100.7 8000 typ host",
			udp[1].Foundation + " 1 udp 2130706175 2001:db8::7 8000 typ host"}},
		{name: "udp then tcp passive", in: append(append([]*relayv1.Candidate{}, udp...), tcp...), want: []string{
			udp[0].Foundation + " 1 udp 2130706431 198.51.100.7 8000 typ host",
			udp[1].Foundation + " 1 udp 2130706175 2001:db8::7 8000 typ host",
			tcp[0].Foundation + " 1 tcp 2124414975 198.51.100.7 443 typ host tcptype passive"}},
		{name: "tcp listed first goes last", in: []*relayv1.Candidate{tcp[0], udp[0]}, want: []string{
			udp[0].Foundation + " 1 udp 2130706431 198.51.100.7 8000 typ host",
			tcp[0].Foundation + " 1 tcp 2124414975 198.51.100.7 443 typ host tcptype passive"}},
		{name: "tcp active and unknown transports left out", in: []*relayv1.Candidate{udp[0], active, quic}, want: []string{
			udp[0].Foundation + " 1 udp 2130706431 198.51.100.7 8000 typ host"}},
		{name: "tcp only", in: tcp, want: []string{
			tcp[0].Foundation + " 1 tcp 2124414975 198.51.100.7 443 typ host tcptype passive"}},
		{name: "nothing usable", in: []*relayv1.Candidate{active}, wantErr: true},
		{name: "none", wantErr: true},
		{name: "bad tcp address", in: []*relayv1.Candidate{udp[0], {Protocol: "tcp", TcpType: "passive", Address: "relay.example", Port: 443}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := relayCandidates(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lines := sdpx.CandidateLines(got, nil)
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("lines\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

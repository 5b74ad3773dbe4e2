package sdpx

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
)

// relayTCPCands are a relay's candidates with ICE-TCP passive ones, in the
// relay's order (UDP first; priorities as mediarelay computes them: host
// type preference 126, RFC 6544 local preference 2^13*4 + 8191 - rank).
var relayTCPCands = []Candidate{
	{Foundation: "1234", Priority: 2130706431, Addr: netip.MustParseAddrPort("198.51.100.7:8000")},
	{Foundation: "5678", Priority: 2130706175, Addr: netip.MustParseAddrPort("[2001:db8::7]:8000")},
	{Foundation: "4321", Priority: 2124414975, Addr: netip.MustParseAddrPort("198.51.100.7:443"), TCPType: TCPPassive},
	{Foundation: "8765", Priority: 2124414719, Addr: netip.MustParseAddrPort("[2001:db8::7]:8000"), TCPType: TCPPassive},
}

func TestCandidateLine(t *testing.T) {
	tests := []struct {
		name      string
		cand      Candidate
		component uint16
		want      string
		network   ice.NetworkType
	}{
		{name: "udp ipv4", cand: relayTCPCands[0], component: 1,
			want: "1234 1 udp 2130706431 198.51.100.7 8000 typ host", network: ice.NetworkTypeUDP4},
		{name: "udp ipv6", cand: relayTCPCands[1], component: 1,
			want: "5678 1 udp 2130706175 2001:db8::7 8000 typ host", network: ice.NetworkTypeUDP6},
		{name: "tcp passive ipv4", cand: relayTCPCands[2], component: 1,
			want: "4321 1 tcp 2124414975 198.51.100.7 443 typ host tcptype passive", network: ice.NetworkTypeTCP4},
		{name: "tcp passive ipv6", cand: relayTCPCands[3], component: 1,
			want: "8765 1 tcp 2124414719 2001:db8::7 8000 typ host tcptype passive", network: ice.NetworkTypeTCP6},
		{name: "tcp passive rtcp component", cand: relayTCPCands[2], component: 2,
			want: "4321 2 tcp 2124414974 198.51.100.7 443 typ host tcptype passive", network: ice.NetworkTypeTCP4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines := CandidateLines([]Candidate{tc.cand}, []uint16{1, 2})
			got := lines[tc.component-1]
			if got != tc.want {
				t.Fatalf("line\n got %q\nwant %q", got, tc.want)
			}
			// pion/ice reads it as a browser would.
			c, err := ice.UnmarshalCandidate(got)
			if err != nil {
				t.Fatalf("pion/ice: %v", err)
			}
			if c.NetworkType() != tc.network || c.Type() != ice.CandidateTypeHost || c.Component() != tc.component {
				t.Errorf("pion/ice read %s %s component %d", c.NetworkType(), c.Type(), c.Component())
			}
			wantTCPType := ice.TCPTypeUnspecified
			if tc.cand.IsTCP() {
				wantTCPType = ice.TCPTypePassive
			}
			if c.TCPType() != wantTCPType {
				t.Errorf("tcptype %s, want %s", c.TCPType(), wantTCPType)
			}
			if c.Address() != tc.cand.Addr.Addr().String() || c.Port() != int(tc.cand.Addr.Port()) || c.Foundation() != tc.cand.Foundation {
				t.Errorf("pion/ice read %s:%d foundation %s", c.Address(), c.Port(), c.Foundation())
			}
			// Same shape as the TCP candidates real peers send (fixtures):
			// "<foundation> 1 tcp <prio> <ip> <port> typ host tcptype <type>".
			if f := strings.Fields(got); tc.cand.IsTCP() && (len(f) != 10 || f[2] != "tcp" || f[6] != "typ" || f[7] != "host" || f[8] != "tcptype") {
				t.Errorf("fields %q", f)
			}
		})
	}
}

// TestCandidateLineLikeFixtures checks the rendering against the ICE-TCP
// candidate lines real peers wrote (shared/reference/sdp): what pion/ice
// reads from ours matches what it reads from theirs, field by field.
func TestCandidateLineLikeFixtures(t *testing.T) {
	tests := []struct {
		name string
		line string // a line of a fixture
	}{
		{name: "chromium active", line: "296476274 1 tcp 1518280447 10.88.0.2 9 typ host tcptype active generation 0 network-id 1"},
		{name: "gstreamer passive", line: "3 1 TCP 1010827519 10.88.0.2 42331 typ host tcptype passive"},
		{name: "gstreamer passive ipv6", line: "6 1 TCP 1010827775 fe80::b4d2:ecff:fe24:a1f7 42833 typ host tcptype passive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			theirs, err := ice.UnmarshalCandidate(tc.line)
			if err != nil {
				t.Fatal(err)
			}
			ap := netip.AddrPortFrom(netip.MustParseAddr(theirs.Address()), uint16(theirs.Port()))
			c := Candidate{Foundation: theirs.Foundation(), Priority: theirs.Priority(), Addr: ap, TCPType: theirs.TCPType().String()}
			line := CandidateLines([]Candidate{c}, nil)[0]
			ours, err := ice.UnmarshalCandidate(line)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if ours.NetworkType() != theirs.NetworkType() || ours.TCPType() != theirs.TCPType() || ours.Priority() != theirs.Priority() ||
				ours.Address() != theirs.Address() || ours.Port() != theirs.Port() || ours.Component() != theirs.Component() {
				t.Errorf("ours %q reads as %s, theirs %q as %s", line, ours, tc.line, theirs)
			}
			if !strings.HasPrefix(strings.ToLower(tc.line), strings.ToLower(line)) {
				t.Errorf("ours %q is not a prefix of theirs %q", line, tc.line)
			}
		})
	}
}

// candidateAttrs returns the candidate attribute values of d, in order.
func candidateAttrs(d *sdp.SessionDescription) []string {
	var out []string
	for _, m := range append([]*sdp.MediaDescription{{Attributes: d.Attributes}}, d.MediaDescriptions...) {
		for _, a := range m.Attributes {
			if a.Key == "candidate" {
				out = append(out, a.Value)
			}
		}
	}
	return out
}

func TestRewriteAnswerTCP(t *testing.T) {
	tcpFirst := []Candidate{relayTCPCands[2], relayTCPCands[0]}
	tests := []struct {
		name      string
		file      string // a fixture of shared/reference/sdp, or testdata/<name>
		cands     []Candidate
		wantComps int
		wantPort  string // the m= port of the section with the candidates
	}{
		{name: "mediamtx whip to chrome", file: "mediamtx-whip-answer-to-chrome.sdp", cands: relayTCPCands, wantComps: 2, wantPort: "8000"},
		{name: "mediamtx whep to gstreamer trickle", file: "mediamtx-whep-answer-to-gstreamer-trickle.sdp", cands: relayTCPCands, wantComps: 2, wantPort: "8000"},
		{name: "srs style with origin tcp", file: "testdata/srs-answer.sdp", cands: relayTCPCands, wantComps: 1, wantPort: "8000"},
		{name: "pion style", file: "testdata/pion-answer.sdp", cands: relayTCPCands, wantComps: 1, wantPort: "8000"},
		// The default candidate is UDP even when TCP comes first.
		{name: "tcp listed first", file: "testdata/pion-answer.sdp", cands: tcpFirst, wantComps: 1, wantPort: "8000"},
		{name: "tcp only", file: "testdata/pion-answer.sdp", cands: relayTCPCands[2:3], wantComps: 1, wantPort: "443"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var raw string
			if strings.HasPrefix(tc.file, "testdata/") {
				b, err := os.ReadFile(tc.file)
				if err != nil {
					t.Fatal(err)
				}
				raw = string(b)
			} else {
				raw = fixture(t, tc.file)
			}
			a, err := ParseAnswer(raw)
			if err != nil {
				t.Fatal(err)
			}
			origin := a.MediaAddresses[0].Addr().String()
			out, err := a.RewriteAnswer(tc.cands)
			if err != nil {
				t.Fatal(err)
			}
			var d sdp.SessionDescription
			if err := d.UnmarshalString(out); err != nil {
				t.Fatalf("pion/sdp: %v\n%s", err, out)
			}
			if strings.Contains(out, origin) {
				t.Errorf("origin address %s survives", origin)
			}
			var want []string
			for _, c := range tc.cands {
				for comp := 1; comp <= tc.wantComps; comp++ {
					want = append(want, c.line(uint16(comp), c.Priority-uint32(comp-1)))
				}
			}
			got := candidateAttrs(&d)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("candidates\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			for _, v := range got {
				c, err := ice.UnmarshalCandidate(v)
				if err != nil {
					t.Errorf("pion/ice %q: %v", v, err)
					continue
				}
				if c.NetworkType().IsTCP() && c.TCPType() != ice.TCPTypePassive {
					t.Errorf("%q: tcptype %s", v, c.TCPType())
				}
			}
			// The section with the candidates has the default candidate's
			// port; every other live section 9.
			for _, m := range d.MediaDescriptions {
				if _, ok := m.Attribute("candidate"); ok {
					if p := m.MediaName.Port.Value; p != mustAtoi(tc.wantPort) {
						t.Errorf("m=%s port %d, want %s", m.MediaName.Media, p, tc.wantPort)
					}
				}
			}
		})
	}
}

func mustAtoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestRestartFragTCP(t *testing.T) {
	tests := []struct {
		name  string
		cands []Candidate
		comps []uint16
		tcp   int
	}{
		{name: "udp only", cands: relayTCPCands[:2], tcp: 0},
		{name: "udp and tcp", cands: relayTCPCands, tcp: 2},
		{name: "udp and tcp, two components", cands: relayTCPCands, comps: []uint16{1, 2}, tcp: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := RestartFrag(ICE{Ufrag: "abcd", Pwd: "0123456789012345678901"}, "0", tc.cands, tc.comps)
			f, err := ParseFrag(body)
			if err != nil {
				t.Fatalf("%v\n%s", err, body)
			}
			tcp, seenTCP := 0, false
			for _, v := range f.Candidates {
				c, err := ice.UnmarshalCandidate(v)
				if err != nil {
					t.Fatalf("pion/ice %q: %v", v, err)
				}
				if c.NetworkType().IsTCP() {
					tcp++
					seenTCP = true
					if c.TCPType() != ice.TCPTypePassive {
						t.Errorf("%q: tcptype %s", v, c.TCPType())
					}
				} else if seenTCP {
					t.Errorf("UDP candidate %q after a TCP one", v)
				}
			}
			if tcp != tc.tcp {
				t.Errorf("%d TCP candidates, want %d:\n%s", tcp, tc.tcp, body)
			}
			if !f.End {
				t.Error("no end-of-candidates")
			}
		})
	}
}

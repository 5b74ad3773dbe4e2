package sdpx

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
)

// Errors returned for SDP the edge refuses. Callers map ErrMalformed to 400
// and ErrUnsupported to 422.
var (
	ErrMalformed   = errors.New("malformed SDP")
	ErrUnsupported = errors.New("unsupported SDP")
)

// MaxMediaSections bounds the m-lines an offer may carry.
const MaxMediaSections = 16

// ICE is one side's ICE credentials and options.
type ICE struct {
	Ufrag, Pwd string
	Options    string // a=ice-options value, e.g. "trickle"
	Pacing     string // a=ice-pacing value (ms), RFC 8839
	Lite       bool
}

// Offer is a validated client offer.
type Offer struct {
	ICE ICE
	// Sanitized is the offer to forward to the origin: no candidates, no
	// end-of-candidates, every m= port 9 and every c= 0.0.0.0.
	Sanitized string
	// Kinds lists the m-line media types in order ("audio", "video").
	Kinds []string
}

// parse unmarshals s, mapping failures to ErrMalformed.
func parse(s string) (*sdp.SessionDescription, error) {
	if !strings.HasPrefix(s, "v=") {
		return nil, fmt.Errorf("%w: a session description starts with v=", ErrMalformed)
	}
	// Lines end in CRLF or LF (RFC 8866 section 5) and hold no other
	// control character. A bare CR inside a line would pass the parser
	// here as part of a value, and another parser could take it for a line
	// break: "a=x\ra=candidate:..." must not smuggle a line past the
	// checks and the sanitizing.
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\r' && (i+1 == len(s) || s[i+1] != '\n'):
			return nil, fmt.Errorf("%w: a CR not followed by LF (byte %d)", ErrMalformed, i)
		case c < 0x20 && c != '\r' && c != '\n' && c != '\t', c == 0x7f:
			return nil, fmt.Errorf("%w: control character 0x%02x (byte %d)", ErrMalformed, c, i)
		}
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &d, nil
}

// attr returns a media-level attribute, else the session-level one.
func attr(d *sdp.SessionDescription, m *sdp.MediaDescription, key string) string {
	if m != nil {
		if v, ok := m.Attribute(key); ok {
			return v
		}
	}
	v, _ := d.Attribute(key)
	return v
}

// iceOf reads the ICE credentials of the first m-line (BUNDLE shares them).
func iceOf(d *sdp.SessionDescription) ICE {
	var m *sdp.MediaDescription
	if len(d.MediaDescriptions) > 0 {
		m = d.MediaDescriptions[0]
	}
	_, lite := d.Attribute("ice-lite")
	return ICE{Ufrag: attr(d, m, "ice-ufrag"), Pwd: attr(d, m, "ice-pwd"), Options: attr(d, m, "ice-options"),
		Pacing: attr(d, m, "ice-pacing"), Lite: lite}
}

// ParseOffer validates a client's offer and sanitizes it for the origin.
func ParseOffer(raw string) (*Offer, error) {
	d, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if len(d.MediaDescriptions) == 0 {
		return nil, fmt.Errorf("%w: the offer has no media section", ErrUnsupported)
	}
	if len(d.MediaDescriptions) > MaxMediaSections {
		return nil, fmt.Errorf("%w: %d media sections, at most %d", ErrUnsupported, len(d.MediaDescriptions), MaxMediaSections)
	}
	o := &Offer{ICE: iceOf(d)}
	media := 0
	for _, m := range d.MediaDescriptions {
		o.Kinds = append(o.Kinds, m.MediaName.Media)
		if m.MediaName.Media == "audio" || m.MediaName.Media == "video" {
			media++
		}
	}
	if media == 0 {
		return nil, fmt.Errorf("%w: the offer has no audio or video section", ErrUnsupported)
	}
	if ids := mediaStreams(d); len(ids) > 1 {
		return nil, fmt.Errorf("%w: the offer carries %d MediaStreams (%s); WHIP and WHEP take one", ErrUnsupported, len(ids), strings.Join(ids, ", "))
	}
	if o.ICE.Ufrag == "" || o.ICE.Pwd == "" {
		return nil, fmt.Errorf("%w: the offer has no a=ice-ufrag / a=ice-pwd", ErrMalformed)
	}
	if !validUfrag(o.ICE.Ufrag) || !validPwd(o.ICE.Pwd) {
		return nil, fmt.Errorf("%w: ice-ufrag must be 4-256 and ice-pwd 22-256 ice-chars", ErrMalformed)
	}
	for _, m := range d.MediaDescriptions {
		if u := attr(d, m, "ice-ufrag"); u != o.ICE.Ufrag && m.MediaName.Port.Value != 0 {
			if _, bundleOnly := m.Attribute("bundle-only"); !bundleOnly {
				return nil, fmt.Errorf("%w: media sections with different ICE credentials (not max-bundle)", ErrUnsupported)
			}
		}
	}
	stripAddresses(d)
	b, err := d.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	o.Sanitized = string(b)
	return o, nil
}

// mediaStreams returns the distinct MediaStream ids of the offer's a=msid
// lines (RFC 8830), or of its a=ssrc msid attributes where a section has no
// a=msid. The id "-" (no stream) is ignored.
func mediaStreams(d *sdp.SessionDescription) []string {
	var ids []string
	add := func(id string) {
		if id == "" || id == "-" {
			return
		}
		for _, x := range ids {
			if x == id {
				return
			}
		}
		ids = append(ids, id)
	}
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Port.Value == 0 {
			if _, bundleOnly := m.Attribute("bundle-only"); !bundleOnly {
				continue // rejected section
			}
		}
		found := false
		for _, a := range m.Attributes {
			if a.Key == "msid" {
				found = true
				id, _, _ := strings.Cut(a.Value, " ")
				add(id)
			}
		}
		if found {
			continue
		}
		for _, a := range m.Attributes {
			if a.Key != "ssrc" {
				continue
			}
			if _, rest, ok := strings.Cut(a.Value, " msid:"); ok {
				id, _, _ := strings.Cut(rest, " ")
				add(id)
			}
		}
	}
	return ids
}

func isIceChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

func validUfrag(u string) bool { return len(u) >= 4 && len(u) <= 256 && isIceChars(u) }
func validPwd(p string) bool   { return len(p) >= 22 && len(p) <= 256 && isIceChars(p) }

// stripAddresses removes candidates and end-of-candidates, sets every m=
// port that is not 0 to 9 and every c= to IN IP4 0.0.0.0, and drops
// a=rtcp lines that carry an address.
func stripAddresses(d *sdp.SessionDescription) {
	d.Attributes = dropAttrs(d.Attributes, "candidate", "end-of-candidates", "rtcp")
	if d.ConnectionInformation != nil {
		d.ConnectionInformation = nullConnection()
	}
	for _, m := range d.MediaDescriptions {
		m.Attributes = dropAttrs(m.Attributes, "candidate", "end-of-candidates", "rtcp")
		if m.MediaName.Port.Value != 0 {
			m.MediaName.Port = sdp.RangedPort{Value: 9}
		}
		if m.ConnectionInformation != nil {
			m.ConnectionInformation = nullConnection()
		}
	}
}

func nullConnection() *sdp.ConnectionInformation {
	return &sdp.ConnectionInformation{NetworkType: "IN", AddressType: "IP4", Address: &sdp.Address{Address: "0.0.0.0"}}
}

func dropAttrs(attrs []sdp.Attribute, keys ...string) []sdp.Attribute {
	out := attrs[:0]
	for _, a := range attrs {
		drop := false
		for _, k := range keys {
			if a.Key == k {
				drop = true
			}
		}
		if !drop {
			out = append(out, a)
		}
	}
	return out
}

// Answer is what the edge needs from an origin's answer.
type Answer struct {
	ICE ICE
	// MediaAddresses are the UDP addresses of the answer's candidates (IP
	// literals only; mDNS names and TCP candidates are skipped), in order,
	// without duplicates.
	MediaAddresses []netip.AddrPort
	// Components are the ICE components the candidates used (1, or 1 and 2).
	Components []uint16
	// EndOfCandidates is true when the answer carried a=end-of-candidates.
	EndOfCandidates bool

	desc *sdp.SessionDescription
}

// ParseAnswer reads an origin's answer (or counter-offer).
func ParseAnswer(raw string) (*Answer, error) {
	d, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if len(d.MediaDescriptions) == 0 {
		return nil, fmt.Errorf("%w: the answer has no media section", ErrMalformed)
	}
	a := &Answer{ICE: iceOf(d), desc: d}
	if a.ICE.Ufrag == "" || a.ICE.Pwd == "" {
		return nil, fmt.Errorf("%w: the answer has no a=ice-ufrag / a=ice-pwd", ErrMalformed)
	}
	if !validUfrag(a.ICE.Ufrag) || !validPwd(a.ICE.Pwd) {
		return nil, fmt.Errorf("%w: the answer's ice-ufrag must be 4-256 and ice-pwd 22-256 ice-chars", ErrMalformed)
	}
	seenAddr := map[netip.AddrPort]bool{}
	seenComp := map[uint16]bool{}
	scan := func(attrs []sdp.Attribute) {
		for _, at := range attrs {
			switch at.Key {
			case "end-of-candidates":
				a.EndOfCandidates = true
			case "candidate":
				c, err := ice.UnmarshalCandidate(at.Value)
				if err != nil || c.NetworkType().IsTCP() {
					continue
				}
				ip, err := netip.ParseAddr(c.Address())
				if err != nil || c.Port() <= 0 || c.Port() > 65535 {
					continue // mDNS names and nonsense
				}
				if !seenComp[c.Component()] {
					seenComp[c.Component()] = true
					a.Components = append(a.Components, c.Component())
				}
				ap := netip.AddrPortFrom(ip.Unmap(), uint16(c.Port()))
				if !seenAddr[ap] {
					seenAddr[ap] = true
					a.MediaAddresses = append(a.MediaAddresses, ap)
				}
			}
		}
	}
	scan(d.Attributes)
	for _, m := range d.MediaDescriptions {
		scan(m.Attributes)
	}
	return a, nil
}

// Candidate is a relay candidate to put in an answer: a host candidate,
// UDP unless TCPType is set.
type Candidate struct {
	Foundation string
	Priority   uint32
	Addr       netip.AddrPort
	// TCPType makes it an ICE-TCP candidate (RFC 6544) of that type:
	// TCPPassive for a relay's TCP port. Empty is UDP.
	TCPType string
}

// TCPPassive is the tcptype of a candidate that accepts connections and
// never opens one (RFC 6544 section 4.5), as a relay's TCP port does.
const TCPPassive = "passive"

// IsTCP reports whether c is an ICE-TCP candidate.
func (c Candidate) IsTCP() bool { return c.TCPType != "" }

// line renders a candidate attribute value (RFC 8839 section 5.1; an
// ICE-TCP candidate takes the "tcp" transport and the tcptype extension
// attribute of RFC 6544 section 4.5, e.g. "1 1 tcp 1518280447 192.0.2.7
// 8000 typ host tcptype passive").
func (c Candidate) line(component uint16, priority uint32) string {
	if c.IsTCP() {
		return fmt.Sprintf("%s %d tcp %d %s %d typ host tcptype %s", c.Foundation, component, priority, c.Addr.Addr().String(), c.Addr.Port(), c.TCPType)
	}
	return fmt.Sprintf("%s %d udp %d %s %d typ host", c.Foundation, component, priority, c.Addr.Addr().String(), c.Addr.Port())
}

// CandidateLines returns the candidate attribute values for cands, for each
// component (component 2 one priority step lower, RFC 8445 5.1.2.1).
func CandidateLines(cands []Candidate, components []uint16) []string {
	if len(components) == 0 {
		components = []uint16{1}
	}
	var out []string
	for _, c := range cands {
		for _, comp := range components {
			prio := c.Priority
			if comp > 1 {
				prio = c.Priority - uint32(comp-1)
			}
			out = append(out, c.line(comp, prio))
		}
	}
	return out
}

// RewriteAnswer replaces every candidate of the answer with the relay's, in
// their order (UDP, then the relay's ICE-TCP passive ones): they go where
// the origin's first candidates were (the first m-section that had any,
// else the first m-section), with a=end-of-candidates; the origin's TCP
// candidates are gone; the m= port
// and c= of that section point at the first relay UDP address, every other
// non-zero m= port is 9 with c= 0.0.0.0.
func (a *Answer) RewriteAnswer(cands []Candidate) (string, error) {
	if len(cands) == 0 {
		return "", errors.New("sdpx: no relay candidate")
	}
	d := a.desc
	target := -1
	for i, m := range d.MediaDescriptions {
		for _, at := range m.Attributes {
			if at.Key == "candidate" && target < 0 {
				target = i
			}
		}
	}
	if target < 0 {
		target = 0
	}
	d.Attributes = dropAttrs(d.Attributes, "candidate", "end-of-candidates", "rtcp")
	lines := CandidateLines(cands, a.Components)
	// The default candidate (m= port and c=) is the first UDP one: the m=
	// line's UDP/TLS/RTP/SAVPF says UDP (RFC 8839 section 4.2.1.2).
	first := cands[0].Addr
	for _, c := range cands {
		if !c.IsTCP() {
			first = c.Addr
			break
		}
	}
	for i, m := range d.MediaDescriptions {
		m.Attributes = dropAttrs(m.Attributes, "candidate", "end-of-candidates", "rtcp")
		if m.MediaName.Port.Value != 0 {
			m.MediaName.Port = sdp.RangedPort{Value: 9}
			m.ConnectionInformation = nullConnection()
		}
		if i != target {
			continue
		}
		if m.MediaName.Port.Value != 0 {
			m.MediaName.Port = sdp.RangedPort{Value: int(first.Port())}
			m.ConnectionInformation = connectionFor(first.Addr())
		}
		for _, l := range lines {
			m.Attributes = append(m.Attributes, sdp.Attribute{Key: "candidate", Value: l})
		}
		m.Attributes = append(m.Attributes, sdp.Attribute{Key: "end-of-candidates"})
	}
	if d.ConnectionInformation != nil {
		d.ConnectionInformation = nullConnection()
	}
	b, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("sdpx: %w", err)
	}
	return string(b), nil
}

func connectionFor(a netip.Addr) *sdp.ConnectionInformation {
	if a.Is4() {
		return &sdp.ConnectionInformation{NetworkType: "IN", AddressType: "IP4", Address: &sdp.Address{Address: a.String()}}
	}
	return &sdp.ConnectionInformation{NetworkType: "IN", AddressType: "IP6", Address: &sdp.Address{Address: a.String()}}
}

// Frag is a parsed application/trickle-ice-sdpfrag body (RFC 8840).
type Frag struct {
	ICE        ICE
	Candidates []string // candidate attribute values
	Mids       []string
	End        bool // a=end-of-candidates
}

// fragHeader turns a fragment into a session description pion/sdp parses.
const fragHeader = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"

// ParseFrag parses a trickle-ice-sdpfrag body.
func ParseFrag(raw string) (*Frag, error) {
	raw = strings.TrimLeft(raw, "\r\n")
	if raw == "" {
		return nil, fmt.Errorf("%w: empty sdpfrag", ErrMalformed)
	}
	if strings.HasPrefix(raw, "v=") {
		return nil, fmt.Errorf("%w: a trickle-ice-sdpfrag is not a full session description", ErrMalformed)
	}
	if !strings.HasSuffix(raw, "\n") {
		raw += "\r\n"
	}
	d, err := parse(fragHeader + raw)
	if err != nil {
		return nil, err
	}
	f := &Frag{ICE: iceOf(d)}
	collect := func(attrs []sdp.Attribute) {
		for _, a := range attrs {
			switch a.Key {
			case "candidate":
				f.Candidates = append(f.Candidates, a.Value)
			case "end-of-candidates":
				f.End = true
			case "mid":
				f.Mids = append(f.Mids, a.Value)
			}
		}
	}
	collect(d.Attributes)
	for _, m := range d.MediaDescriptions {
		collect(m.Attributes)
	}
	// A trickle fragment may name its ufrag without the pwd (RFC 8840);
	// whether that is a restart is the caller's business.
	if f.ICE.Pwd != "" && f.ICE.Ufrag == "" {
		return nil, fmt.Errorf("%w: a=ice-pwd without a=ice-ufrag", ErrMalformed)
	}
	if f.ICE.Ufrag != "" && !validUfrag(f.ICE.Ufrag) || f.ICE.Pwd != "" && !validPwd(f.ICE.Pwd) {
		return nil, fmt.Errorf("%w: ice-ufrag must be 4-256 and ice-pwd 22-256 ice-chars", ErrMalformed)
	}
	return f, nil
}

// RestartFrag renders the reply to an ICE restart: the new credentials, the
// options the offer and answer used, the relay candidates and
// end-of-candidates, in an m-section for mid.
func RestartFrag(ice ICE, mid string, cands []Candidate, components []uint16) string {
	var b strings.Builder
	if ice.Lite {
		b.WriteString("a=ice-lite\r\n")
	}
	if ice.Options != "" {
		b.WriteString("a=ice-options:" + ice.Options + "\r\n")
	}
	if ice.Pacing != "" {
		b.WriteString("a=ice-pacing:" + ice.Pacing + "\r\n")
	}
	b.WriteString("a=group:BUNDLE " + mid + "\r\n")
	b.WriteString("m=audio 9 RTP/AVP 0\r\n")
	b.WriteString("a=mid:" + mid + "\r\n")
	b.WriteString("a=ice-ufrag:" + ice.Ufrag + "\r\n")
	b.WriteString("a=ice-pwd:" + ice.Pwd + "\r\n")
	for _, l := range CandidateLines(cands, components) {
		b.WriteString("a=candidate:" + l + "\r\n")
	}
	b.WriteString("a=end-of-candidates\r\n")
	return b.String()
}

// FirstMid returns the first a=mid of an SDP, or "0".
func FirstMid(raw string) string {
	d, err := parse(raw)
	if err != nil {
		return "0"
	}
	for _, m := range d.MediaDescriptions {
		if v, ok := m.Attribute("mid"); ok {
			return v
		}
	}
	return "0"
}

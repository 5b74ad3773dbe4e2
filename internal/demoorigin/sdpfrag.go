package demoorigin

import (
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"
)

// maxFragLines bounds the lines of an SDP fragment.
const maxFragLines = 256

// sdpFrag is what a trickle-ice-sdpfrag (RFC 8840) body carries.
type sdpFrag struct {
	ufrag, pwd      string
	candidates      []string // "candidate:..." attribute lines without "a="
	endOfCandidates bool
}

// fragHeader makes a fragment a complete session description so that
// pion/sdp can parse it: fragments carry session-level a= lines then m=
// sections, which is what may follow t= in a full description.
const fragHeader = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"

// parseFrag parses an application/trickle-ice-sdpfrag body.
func parseFrag(body []byte) (sdpFrag, error) {
	var b strings.Builder
	b.WriteString(fragHeader)
	n := 0
	for line := range strings.SplitSeq(string(body), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		if n++; n > maxFragLines {
			return sdpFrag{}, fmt.Errorf("%w: fragment has more than %d lines", ErrBadSDP, maxFragLines)
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(b.String()); err != nil {
		return sdpFrag{}, fmt.Errorf("%w: fragment: %w", ErrBadSDP, err)
	}
	var f sdpFrag
	collect := func(attrs []sdp.Attribute) {
		for _, a := range attrs {
			switch a.Key {
			case "ice-ufrag":
				f.ufrag = a.Value
			case "ice-pwd":
				f.pwd = a.Value
			case "candidate":
				f.candidates = append(f.candidates, a.String())
			case "end-of-candidates":
				f.endOfCandidates = true
			}
		}
	}
	collect(sd.Attributes)
	for _, m := range sd.MediaDescriptions {
		collect(m.Attributes)
	}
	return f, nil
}

// iceCredentials returns the first ice-ufrag and ice-pwd of sd (session
// level first, then media level).
func iceCredentials(sd *sdp.SessionDescription) (ufrag, pwd string) {
	ufrag, _ = sd.Attribute("ice-ufrag")
	pwd, _ = sd.Attribute("ice-pwd")
	for _, m := range sd.MediaDescriptions {
		if ufrag == "" {
			ufrag, _ = m.Attribute("ice-ufrag")
		}
		if pwd == "" {
			pwd, _ = m.Attribute("ice-pwd")
		}
	}
	return ufrag, pwd
}

// restartedOffer rebuilds the stored offer with the new ICE credentials and
// without the old candidates.
func restartedOffer(stored, ufrag, pwd string) (string, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(stored); err != nil {
		return "", fmt.Errorf("%w: stored offer: %w", ErrBadSDP, err)
	}
	rewrite := func(attrs []sdp.Attribute) []sdp.Attribute {
		out := attrs[:0]
		for _, a := range attrs {
			switch a.Key {
			case "ice-ufrag":
				a.Value = ufrag
			case "ice-pwd":
				a.Value = pwd
			case "candidate", "end-of-candidates":
				continue
			}
			out = append(out, a)
		}
		return out
	}
	sd.Attributes = rewrite(sd.Attributes)
	for _, m := range sd.MediaDescriptions {
		m.Attributes = rewrite(m.Attributes)
	}
	sd.Origin.SessionVersion++
	b, err := sd.Marshal()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadSDP, err)
	}
	return string(b), nil
}

// answerFrag builds the sdpfrag answering an ICE restart from the local
// description: credentials, then the first (bundled) m-section with its mid
// and candidates, then a=end-of-candidates.
func answerFrag(local string) (string, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(local); err != nil {
		return "", fmt.Errorf("demoorigin: local description: %w", err)
	}
	ufrag, pwd := iceCredentials(&sd)
	var b strings.Builder
	line := func(a sdp.Attribute) { b.WriteString("a=" + a.String() + "\r\n") }
	line(sdp.NewAttribute("ice-ufrag", ufrag))
	line(sdp.NewAttribute("ice-pwd", pwd))
	if len(sd.MediaDescriptions) > 0 {
		m := sd.MediaDescriptions[0]
		b.WriteString("m=" + m.MediaName.String() + "\r\n")
		if mid, ok := m.Attribute("mid"); ok {
			line(sdp.NewAttribute("mid", mid))
		}
		for _, a := range m.Attributes {
			if a.Key == "candidate" {
				line(a)
			}
		}
	}
	line(sdp.NewPropertyAttribute("end-of-candidates"))
	return b.String(), nil
}

// matchETag reports whether the If-Match header value matches etag.
func matchETag(ifMatch, etag string) bool {
	for v := range strings.SplitSeq(ifMatch, ",") {
		v = strings.TrimSpace(v)
		if v == "*" || v == etag {
			return true
		}
	}
	return false
}

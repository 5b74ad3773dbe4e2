package signaling

import (
	"fmt"
	"strings"

	"github.com/rtcedge/rtcedge/signaling/internal/originadapter"
)

// DefaultVhost is SRS's default virtual host.
const DefaultVhost = "__defaultVhost__"

const maxSegment = 128

func validSegment(s string) bool {
	if len(s) == 0 || len(s) > maxSegment || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

// NormalizeStream turns a request path's stream part into vhost/app/stream
// (see the package doc).
func NormalizeStream(path string) (key string, s originadapter.Stream, err error) {
	path = strings.Trim(path, "/")
	segs := strings.Split(path, "/")
	for _, seg := range segs {
		if !validSegment(seg) {
			return "", s, fmt.Errorf("stream %q: segments must be 1-%d of [A-Za-z0-9._~-]", path, maxSegment)
		}
	}
	switch len(segs) {
	case 1:
		s = originadapter.Stream{Vhost: DefaultVhost, App: "live", Name: segs[0]}
	case 2:
		s = originadapter.Stream{Vhost: DefaultVhost, App: segs[0], Name: segs[1]}
	default:
		s = originadapter.Stream{Vhost: segs[0], App: strings.Join(segs[1:len(segs)-1], "/"), Name: segs[len(segs)-1]}
	}
	return s.Vhost + "/" + s.App + "/" + s.Name, s, nil
}

// streamFromKey splits a normalised key.
func streamFromKey(key string) originadapter.Stream {
	segs := strings.Split(key, "/")
	if len(segs) < 3 {
		return originadapter.Stream{Vhost: DefaultVhost, App: "live", Name: key}
	}
	return originadapter.Stream{Vhost: segs[0], App: strings.Join(segs[1:len(segs)-1], "/"), Name: segs[len(segs)-1]}
}

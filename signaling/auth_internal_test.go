package signaling

import (
	"strings"
	"testing"
	"time"
)

// FuzzAuthCheck feeds hostile Authorization headers and stream paths to
// the token check and the stream normaliser: no panic, and only a token
// minted for the exact stream and direction passes.
func FuzzAuthCheck(f *testing.F) {
	key := []byte("0123456789abcdef0123456789abcdef")
	good, _ := MintToken(key, "live/cam1", "publish", time.Unix(2e9, 0))
	f.Add("Bearer "+good, "live/cam1")
	f.Add("Bearer a.b", "cam1")
	f.Add("Bearer ", "a/b/c/d")
	f.Add("Basic x", "../x")
	a := Auth{HMACKey: key}
	now := time.Unix(1e9, 0)
	f.Fuzz(func(t *testing.T, header, path string) {
		key, _, err := NormalizeStream(path)
		if err != nil {
			return
		}
		if strings.Count(key, "/") < 2 {
			t.Fatalf("key %q is not vhost/app/stream", key)
		}
		if a.check(header, key, "publish", now) && header != "Bearer "+good {
			// A forged token would need the HMAC key.
			t.Fatalf("accepted %q for %q", header, key)
		}
	})
}

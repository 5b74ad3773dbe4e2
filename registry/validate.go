package registry

import (
	"fmt"
	"strings"
)

// validID reports whether s is 1..max characters of letters, digits and the
// given punctuation.
func validID(s string, max int, punct string) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte(punct, b) >= 0 {
			continue
		}
		return false
	}
	return true
}

// CheckOriginID validates an origin id: 1-128 of [A-Za-z0-9._:-].
func CheckOriginID(id string) error { return checkOriginID(id) }

func checkOriginID(id string) error {
	if !validID(id, 128, "._:-") {
		return fmt.Errorf("%w: origin id %q: want 1-128 of [A-Za-z0-9._:-]", ErrInvalid, id)
	}
	return nil
}

func checkRelayID(id string) error {
	if !validID(id, 64, "._-") {
		return fmt.Errorf("%w: relay id %q: want 1-64 of [A-Za-z0-9._-]", ErrInvalid, id)
	}
	return nil
}

func checkSessionID(id string) error {
	if !validID(id, 64, "._-") {
		return fmt.Errorf("%w: session id %q: want 1-64 of [A-Za-z0-9._-]", ErrInvalid, id)
	}
	return nil
}

// CheckStream validates a normalised stream key: 1-512 bytes, no NUL, no
// empty segment, no leading or trailing "/".
func CheckStream(s string) error {
	switch {
	case len(s) == 0 || len(s) > 512:
		return fmt.Errorf("%w: stream key must be 1-512 bytes", ErrInvalid)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%w: stream key contains NUL", ErrInvalid)
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//"):
		return fmt.Errorf("%w: stream key %q has an empty segment", ErrInvalid, s)
	}
	return nil
}

func checkUfrag(side, u string) error {
	if u == "" || len(u) > 256 || strings.ContainsAny(u, ": \t\r\n\x00") {
		return fmt.Errorf("%w: %s ufrag %q: want 1-256 characters without ':'", ErrInvalid, side, u)
	}
	return nil
}

// CheckUsername validates a STUN USERNAME used as a ufrag-index key:
// "<origin-ufrag>:<client-ufrag>", both parts valid ufrags.
func CheckUsername(username string) error {
	o, c, ok := strings.Cut(username, ":")
	if !ok {
		return fmt.Errorf("%w: username %q: want <origin-ufrag>:<client-ufrag>", ErrInvalid, username)
	}
	if err := checkUfrag("origin", o); err != nil {
		return err
	}
	return checkUfrag("client", c)
}

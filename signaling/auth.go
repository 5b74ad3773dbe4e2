package signaling

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Auth configures WHIP/WHEP bearer tokens. With neither field set, every
// request is allowed (the demo default).
type Auth struct {
	// Tokens are static bearer tokens good for any stream and direction.
	Tokens []string
	// HMACKey verifies signed tokens scoped to a stream and direction (see
	// MintToken).
	HMACKey []byte
}

func (a Auth) enabled() bool { return len(a.Tokens) > 0 || len(a.HMACKey) > 0 }

// tokenClaims are what a signed token grants.
type tokenClaims struct {
	Stream    string `json:"stream"` // normalised stream key
	Direction string `json:"dir"`    // "publish" or "play"
	Expires   int64  `json:"exp"`    // unix seconds
}

// MintToken signs a token for stream (a normalised key or a path that
// NormalizeStream accepts) and direction ("publish" or "play") valid until
// exp. Its form is base64url(JSON claims) "." base64url(HMAC-SHA256).
func MintToken(key []byte, stream, direction string, exp time.Time) (string, error) {
	norm, _, err := NormalizeStream(stream)
	if err != nil {
		return "", err
	}
	if direction != "publish" && direction != "play" {
		return "", errors.New("direction must be publish or play")
	}
	body, _ := json.Marshal(tokenClaims{Stream: norm, Direction: direction, Expires: exp.Unix()})
	p := base64.RawURLEncoding.EncodeToString(body)
	return p + "." + base64.RawURLEncoding.EncodeToString(sign(key, p)), nil
}

func sign(key []byte, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// check reports whether the request's Authorization grants stream and
// direction at now.
func (a Auth) check(header, stream, direction string, now time.Time) bool {
	if !a.enabled() {
		return true
	}
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || tok == "" || len(tok) > 4096 {
		return false
	}
	for _, t := range a.Tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
			return true
		}
	}
	if len(a.HMACKey) == 0 {
		return false
	}
	payload, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, sign(a.HMACKey, payload)) {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return false
	}
	var c tokenClaims
	if json.Unmarshal(raw, &c) != nil {
		return false
	}
	return c.Stream == stream && c.Direction == direction && now.Unix() < c.Expires
}

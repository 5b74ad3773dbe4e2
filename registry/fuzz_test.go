package registry

import (
	"errors"
	"strings"
	"testing"
)

// FuzzCheckUsername feeds hostile STUN USERNAMEs to the ufrag-index key
// validation: it must never panic, and what it accepts must be a safe
// index key.
func FuzzCheckUsername(f *testing.F) {
	for _, s := range []string{"abcd:efgh", "a:b", ":", "a:", ":b", "a:b:c", "", "x\x00:y", "3Fk/+q:9zZ", strings.Repeat("a", 300) + ":b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, username string) {
		err := CheckUsername(username)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		o, c, _ := strings.Cut(username, ":")
		if o == "" || c == "" || strings.Contains(c, ":") || strings.ContainsRune(username, 0) || len(username) > 513 {
			t.Fatalf("accepted %q", username)
		}
	})
}

// FuzzCheckStream checks the stream-key validation against its contract.
func FuzzCheckStream(f *testing.F) {
	for _, s := range []string{"__defaultVhost__/live/stream", "a", "/a", "a/", "a//b", "", "a\x00b", strings.Repeat("x", 513)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckStream(s)
		ok := len(s) >= 1 && len(s) <= 512 && !strings.ContainsRune(s, 0) &&
			!strings.HasPrefix(s, "/") && !strings.HasSuffix(s, "/") && !strings.Contains(s, "//")
		if (err == nil) != ok {
			t.Fatalf("CheckStream(%q) = %v, want ok=%v", s, err, ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
	})
}

// FuzzDecode feeds arbitrary stored values to the versioned decoder: it
// must never panic, and must refuse any record newer than it knows.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"v":1,"id":"s1"}`, `{"v":2}`, `{"v":-1}`, `{}`, `null`, `[]`, `{"v":"1"}`, `{"v":1e9}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Session
		err := decode("k", b, &s)
		if err == nil && s.V > recordVersion {
			t.Fatalf("accepted version %d", s.V)
		}
	})
}

func TestDecodeVersions(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		wantErr string
	}{
		{name: "current", value: `{"v":1,"id":"o1"}`},
		{name: "unversioned", value: `{"id":"o1"}`},
		{name: "newer", value: `{"v":2,"id":"o1"}`, wantErr: "record version 2 is newer than this binary's 1"},
		{name: "not json", value: `v=1`, wantErr: "invalid character"},
		{name: "version not a number", value: `{"v":"2"}`, wantErr: "cannot unmarshal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o Origin
			err := decode("origins/o1", []byte(tc.value), &o)
			if tc.wantErr == "" {
				if err != nil || o.ID != "o1" {
					t.Fatalf("decode: %+v %v", o, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

package mediarelay

import (
	"math"
	"net/netip"
	"testing"

	"github.com/pion/stun/v2"
)

// TestChecksToOriginRaisePriorityAfterMoves: a session that moved to this
// relay (registry.Session.Moves > 0) forwards the client's checks to the
// origin with PRIORITY raised by its moves, re-signed with the origin's pwd
// and with a valid FINGERPRINT, so that the origin prefers the new relay's
// path; without moves the check goes out as it came (untranslated) or only
// re-signed (translated).
func TestChecksToOriginRaisePriorityAfterMoves(t *testing.T) {
	const (
		clientU, clientP = "cliu", "clientpasswordclientpassword"
		originU, originP = "orgu", "originpasswordoriginpassword"
		serverU, serverP = "srvu", "serverpasswordserverpassword"
	)
	tests := []struct {
		name       string
		translated bool
		moves      uint32
		priority   uint32
		want       uint32
		same       bool // the raw bytes go out unchanged
	}{
		{name: "never moved, untranslated", priority: 1000, want: 1000, same: true},
		{name: "never moved, translated", translated: true, priority: 1000, want: 1000},
		{name: "moved once, untranslated", moves: 1, priority: 1000, want: 1001},
		{name: "moved three times, translated", translated: true, moves: 3, priority: 1000, want: 1003},
		{name: "saturates", translated: true, moves: 5, priority: math.MaxUint32 - 2, want: math.MaxUint32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCredentials(clientU, clientP, originU, originP)
			if tc.translated {
				c = newTranslatedCredentials(clientU, clientP, serverU, serverP, originU, originP, clientU, clientP)
			}
			c.priorityBoost = tc.moves
			key := stun.NewShortTermIntegrity(originP)
			if tc.translated {
				key = stun.NewShortTermIntegrity(serverP)
			}
			raw := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(c.username),
				stun.RawAttribute{Type: stun.AttrPriority, Value: be32(tc.priority)},
				stun.RawAttribute{Type: stun.AttrUseCandidate}, key, stun.Fingerprint).Raw
			var in stun.Message
			in.Raw = append([]byte(nil), raw...)
			if err := in.Decode(); err != nil {
				t.Fatal(err)
			}
			sc := newSTUNScratch()
			out := sc.toOrigin(&in, in.Raw, c, netip.AddrPort{})
			if tc.same != (string(out) == string(raw)) {
				t.Fatalf("output unchanged = %v, want %v", string(out) == string(raw), tc.same)
			}
			var got stun.Message
			got.Raw = append([]byte(nil), out...)
			if err := got.Decode(); err != nil {
				t.Fatal(err)
			}
			if !verifies(&got, stun.NewShortTermIntegrity(originP)) {
				t.Fatal("the forwarded check does not verify with the origin's pwd and FINGERPRINT")
			}
			var u stun.Username
			if err := u.GetFrom(&got); err != nil || u.String() != originU+":"+clientU {
				t.Errorf("USERNAME %q (%v), want %s:%s", u.String(), err, originU, clientU)
			}
			p, err := got.Get(stun.AttrPriority)
			if err != nil || len(p) != 4 {
				t.Fatalf("PRIORITY: %v %v", p, err)
			}
			if v := uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3]); v != tc.want {
				t.Errorf("PRIORITY %d, want %d", v, tc.want)
			}
			if !got.Contains(stun.AttrUseCandidate) {
				t.Error("USE-CANDIDATE lost")
			}
		})
	}
}

func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

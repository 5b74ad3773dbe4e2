//go:build race

package mediarelay

// raceEnabled: the race detector is on. sync.Pool drops a share of what is
// put back under it, so pooled HMAC state (STUN integrity) allocates.
const raceEnabled = true

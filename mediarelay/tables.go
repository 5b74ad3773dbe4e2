package mediarelay

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync/atomic"
)

// tableShards is how many copy-on-write shards each lookup table has: a
// change copies one shard (about sessions/64 entries), not the table.
const tableShards = 64

// tables are the relay's lookup tables: verified client paths by address
// and sessions by STUN USERNAME "<origin-ufrag>:<client-ufrag>". Each shard is an
// immutable map behind an atomic pointer, so the socket loops look up
// without locks or allocation; writers hold Relay.mu and publish a
// modified copy of the one shard they change (the methods ending in
// Locked).
type tables struct {
	seed  maphash.Seed
	addr  [tableShards]atomic.Pointer[map[netip.AddrPort]*path]
	ufrag [tableShards]atomic.Pointer[map[string]*session]
}

func newTables() *tables {
	t := &tables{seed: maphash.MakeSeed()}
	for i := range tableShards {
		t.addr[i].Store(&map[netip.AddrPort]*path{})
		t.ufrag[i].Store(&map[string]*session{})
	}
	return t
}

// addrShard spreads addresses over the shards. Only verified clients are
// ever stored, so the shard choice needs no secret seed.
func addrShard(a netip.AddrPort) int {
	b := a.Addr().As16()
	h := binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])*0x9e3779b97f4a7c15 ^ uint64(a.Port())
	h *= 0xff51afd7ed558ccd
	return int(h >> 58) // top 6 bits: 64 shards
}

func (t *tables) usernameShard(u string) int { return int(maphash.String(t.seed, u) % tableShards) }

// byAddr returns the verified client path at address a.
func (t *tables) byAddr(a netip.AddrPort) *path { return (*t.addr[addrShard(a)].Load())[a] }

// byUsername returns the session of a STUN USERNAME, without copying it.
func (t *tables) byUsername(u []byte) *session {
	return (*t.ufrag[int(maphash.Bytes(t.seed, u)%tableShards)].Load())[string(u)]
}

// byUfrag returns the session of a USERNAME string.
func (t *tables) byUfrag(u string) *session { return (*t.ufrag[t.usernameShard(u)].Load())[u] }

// setAddrLocked indexes path p at address a (nil removes a).
func (t *tables) setAddrLocked(a netip.AddrPort, p *path) {
	sh := &t.addr[addrShard(a)]
	m := make(map[netip.AddrPort]*path, len(*sh.Load())+1)
	for k, v := range *sh.Load() {
		m[k] = v
	}
	if p == nil {
		delete(m, a)
	} else {
		m[a] = p
	}
	sh.Store(&m)
}

// setUfragLocked indexes s by USERNAME u (nil removes u).
func (t *tables) setUfragLocked(u string, s *session) {
	p := &t.ufrag[t.usernameShard(u)]
	m := make(map[string]*session, len(*p.Load())+1)
	for k, v := range *p.Load() {
		m[k] = v
	}
	if s == nil {
		delete(m, u)
	} else {
		m[u] = s
	}
	p.Store(&m)
}

// clearLocked empties both tables.
func (t *tables) clearLocked() {
	for i := range tableShards {
		t.addr[i].Store(&map[netip.AddrPort]*path{})
		t.ufrag[i].Store(&map[string]*session{})
	}
}

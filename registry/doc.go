// Package registry is rtcedge's etcd layer: the only code that talks to etcd,
// and everything the signaling and relay tiers share.
//
// # Key layout
//
// Every key lives under a configurable prefix (default "/rtcedge/"); keys.go
// builds all of them. Values are JSON objects whose "v" field is the encoding
// version; a reader rejects a version newer than it knows.
//
//	origins/<origin-id>                        Origin, on the origin's own lease
//	relays/<relay-id>                          Relay, on the relay process's lease
//	pins/<stream>                              Pin: the origin a stream is served by
//	sessions/<session-id>                      Session
//	ufrags/<origin-ufrag>:<client-ufrag>       session id (the STUN USERNAME index)
//	relaysessions/<relay-id>/<session-id>      "" (index: sessions by relay)
//	streamsessions/<stream>/<session-id>       "" (index: sessions by stream)
//
// Stream keys contain "/" (vhost/app/stream); they are stored as they are,
// and prefix scans of the stream index add a trailing "/" so that "a/b" does
// not match "a/bc".
//
// Origins and relays are leased: a registration that is not refreshed
// disappears when its TTL runs out, with nobody deleting it. Sessions are
// not leased: a session names its relay, so a dead relay's sessions can be
// found (ListSessionsByRelay) and re-homed; they are removed on release.
//
// Every call is bounded by Config.RequestTimeout. Errors wrap the sentinel
// errors in errors.go: a caller maps ErrNotFound, ErrConflict, ErrNoOrigin,
// ErrNoRelay and ErrUnavailable to its own status codes.
package registry

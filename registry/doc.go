// Package registry is rtcedge's etcd layer: the only code that talks to etcd,
// and everything the signaling and relay tiers share.
//
// # Key layout
//
// Every key lives under a configurable prefix (Config.Prefix, default
// "/rtcedge/"); keys.go builds all of them. Values are JSON objects whose "v"
// field is the encoding version; a reader rejects a version newer than it
// knows with an error naming both versions (lists skip and log such records).
//
//	origins/<origin-id>                        Origin, on the origin's own lease
//	relays/<relay-id>                          Relay, on the relay process's lease
//	pins/<stream>                              Pin: the origin a stream is served by
//	originpins/<origin-id>/<stream>            "" (index: pins by origin, counted for load)
//	sessions/<session-id>                      Session (not leased)
//	ufrags/<origin-ufrag>:<client-ufrag>       session id (the STUN USERNAME index)
//	relaysessions/<relay-id>/<session-id>      "" (index: sessions by relay)
//	streamsessions/<stream>/<session-id>       "" (index: sessions by stream)
//	setups/<session-id>                        Setup: a setup in progress (not leased)
//	streamsetups/<stream>/<session-id>         "" (index: setups by stream)
//
// Origin ids are 1-128 of [A-Za-z0-9._:-], relay and session ids 1-64 of
// [A-Za-z0-9._-]; none contains "/". Stream keys (1-512 bytes, no NUL, no
// empty segment) contain "/" (vhost/app/stream) and are stored as they are:
// a scan of streamsessions/<stream>/ keeps only direct children, so neither
// "a/bc" nor the nested "a/b/c" is listed as a session of "a/b". Ufrags are
// non-empty, at most 256 bytes, without ':'.
//
// # Leases
//
// Origins and relays are leased: a registration that is not refreshed
// disappears when its TTL runs out, with nobody deleting it.
//
// An origin heartbeat (RegisterOrigin) may reach any signaling instance: it
// finds the stored key's lease, keeps it alive (KeepAliveOnce) and puts the
// value again under it, on the condition that the key is still on that
// lease (concurrent heartbeats all succeed, the last write wins). It grants
// a new lease only when that one is gone or the TTL changed; the first
// registration is a create-if-absent transaction (concurrent first
// heartbeats: one creates, the others refresh, their spare leases are
// revoked). RegisterTime survives refreshes.
//
// A relay registration (RegisterRelay) consumes the etcd client's KeepAlive
// channel. When etcd is unreachable for longer than the TTL the channel
// closes; the registration then grants a new lease and puts the record again
// as soon as etcd answers, with no action from the caller. Updates made
// meanwhile (RelayRegistration.Update) are written then too.
//
// Sessions are not leased: a session names its relay, so a dead relay's
// sessions can be found (ListSessionsByRelay) and re-homed; they are removed
// on release (DeleteSession), with every index key, in one transaction.
// DeleteSessionIf removes a record only if the caller's condition holds for
// it (the relay that released it still named, the same creation), with a
// compare-and-swap on the revision it judged.
//
// A setup in progress is recorded at setups/<session-id> (BeginSetup)
// before signaling contacts the origin, gets the origin's session URL as soon
// as the origin answers (NoteSetupOrigin), and is deleted in the same
// transaction that completes the session record (FinishSetup), or after a
// failed setup was undone (DeleteSetup). It is not leased either: a record
// past its Deadline is a setup whose signaling instance died, and a reaper
// undoes what it recorded (ListStaleSetups, ClaimSetup, DeleteSetup).
//
// Pins are not leased either: a stream stays pinned while it has a session
// or a setup, and ReleaseIdlePins (run by signaling's reaper) removes the
// pins of idle streams, so an origin's load counts the streams it serves,
// not every stream it ever served.
//
// # Transactions
//
// PickOrigin pins a stream with a create-if-absent transaction (or a
// compare-and-swap on the old pin's mod revision when its origin is dead),
// guarded by the chosen origin's key still existing: of concurrent callers
// exactly one pin wins and all return its origin. CreateSession is a
// create-if-absent transaction over the record and the ufrag index;
// RekeySession deletes the old ufrag key and creates the new one in one
// transaction, so a reader never sees both or neither.
//
// The setups/ calls after BeginSetup are compare-and-swaps on the revision
// the caller last wrote or read (PendingSetup.Rev). FinishSetup commits the
// session update and the setup key's deletion only if the setup record is
// unchanged, and ClaimSetup rewrites a stale record only if it is unchanged:
// a setup that finishes and a reaper that claims it exclude each other, and
// of concurrent reapers exactly one claim wins.
//
// # Caches
//
// PickRelay, RelayAlive, Relays and Origins read watch-fed local caches
// (list, then watch from the list's revision+1; list again after a
// compaction or a broken watch), started on first use: no etcd round trip
// once warm. While etcd is unreachable the caches keep serving what they
// last saw; a cold cache waits for its first list at most RequestTimeout.
//
// # Errors and timeouts
//
// Every call is bounded by Config.RequestTimeout (default 3s). Errors wrap
// the sentinel errors in errors.go, keeping the cause visible: an
// unreachable etcd (deadline, gRPC Unavailable, no leader, no endpoints) is
// ErrUnavailable, a missing record ErrNotFound, a lost transaction
// ErrConflict, a record or key that fails validation ErrInvalid (before any
// call to etcd). A caller maps them to its own status codes.
//
// New does not wait for etcd: a service can start while etcd is down and
// recovers when it comes up. Exception: with Username/Password set, the etcd
// client authenticates inside New (bounded by DialTimeout) and New fails if
// etcd is unreachable then.
package registry

package registry

import "strings"

// keys builds every etcd key of the layout in the package doc.
type keys struct{ prefix string }

func (k keys) origins() string          { return k.prefix + "origins/" }
func (k keys) origin(id string) string  { return k.origins() + id }
func (k keys) relays() string           { return k.prefix + "relays/" }
func (k keys) relay(id string) string   { return k.relays() + id }
func (k keys) pins() string             { return k.prefix + "pins/" }
func (k keys) pin(stream string) string { return k.pins() + stream }
func (k keys) originPins(originID string) string {
	return k.prefix + "originpins/" + originID + "/"
}
func (k keys) originPin(originID, stream string) string { return k.originPins(originID) + stream }
func (k keys) sessions() string                         { return k.prefix + "sessions/" }
func (k keys) session(id string) string                 { return k.sessions() + id }
func (k keys) ufrag(username string) string             { return k.prefix + "ufrags/" + username }
func (k keys) setups() string                           { return k.prefix + "setups/" }
func (k keys) setup(id string) string                   { return k.setups() + id }
func (k keys) relaySessions(relayID string) string {
	return k.prefix + "relaysessions/" + relayID + "/"
}
func (k keys) relaySession(relayID, id string) string { return k.relaySessions(relayID) + id }
func (k keys) streamSessionsRoot() string             { return k.prefix + "streamsessions/" }
func (k keys) streamSessions(stream string) string {
	return k.streamSessionsRoot() + stream + "/"
}
func (k keys) streamSession(stream, id string) string { return k.streamSessions(stream) + id }
func (k keys) streamSetupsRoot() string               { return k.prefix + "streamsetups/" }
func (k keys) streamSetups(stream string) string {
	return k.streamSetupsRoot() + stream + "/"
}
func (k keys) streamSetup(stream, id string) string { return k.streamSetups(stream) + id }

// lastSegment returns what follows the last "/" of key.
func lastSegment(key string) string { return key[strings.LastIndexByte(key, '/')+1:] }

// containsLeaseNotFound matches the lease-not-found error text, which etcd's
// client returns in more than one type.
func containsLeaseNotFound(s string) bool { return strings.Contains(s, "requested lease not found") }

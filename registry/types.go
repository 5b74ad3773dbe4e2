package registry

import "time"

// recordVersion is the encoding version stored in every value's "v" field.
// Readers reject values with a larger version than they know.
const recordVersion = 1

// Direction values of Session.Direction.
const (
	DirectionPublish = "publish"
	DirectionPlay    = "play"
)

// Origin kinds of Origin.Kind.
const (
	OriginKindSRS      = "srs"
	OriginKindMediaMTX = "mediamtx"
	OriginKindWHIP     = "whip"
)

// ICECredentials is one side's ICE username fragment and password.
type ICECredentials struct {
	Ufrag string `json:"ufrag"`
	Pwd   string `json:"pwd"`
}

// Origin is a leased origin registration, stored at origins/<id>.
type Origin struct {
	V               int               `json:"v"`
	ID              string            `json:"id"`
	Kind            string            `json:"kind"` // OriginKind*
	APIBaseURL      string            `json:"api_base_url,omitempty"`
	WHIPURLTemplate string            `json:"whip_url_template,omitempty"`
	WHEPURLTemplate string            `json:"whep_url_template,omitempty"`
	MediaAddresses  []string          `json:"media_addresses,omitempty"` // "ip:port"
	Zone            string            `json:"zone,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Capacity        uint32            `json:"capacity,omitempty"` // max pinned streams; 0 = unlimited
	TTL             time.Duration     `json:"ttl"`
	RegisterTime    time.Time         `json:"register_time"`
	HeartbeatTime   time.Time         `json:"heartbeat_time"`
}

// Relay is a relay's self-registration, stored at relays/<id> under the
// relay's own lease.
type Relay struct {
	V               int       `json:"v"`
	ID              string    `json:"id"`
	GRPCAddress     string    `json:"grpc_address"`     // "host:port" signaling dials
	PublicAddresses []string  `json:"public_addresses"` // advertised UDP "ip:port"
	Zone            string    `json:"zone,omitempty"`
	Draining        bool      `json:"draining,omitempty"`
	Sessions        int       `json:"sessions"`
	MaxSessions     int       `json:"max_sessions,omitempty"` // 0 = unlimited
	Version         string    `json:"version,omitempty"`
	UpdateTime      time.Time `json:"update_time"`

	// PublicTCPAddresses are the advertised ICE-TCP "ip:port" (passive
	// candidates, RFC 6544); none when the relay takes no TCP.
	PublicTCPAddresses []string `json:"public_tcp_addresses,omitempty"`

	// Instance identifies the process that wrote the record (random, set by
	// RegisterRelay): a relay writes its key again only while the record is
	// its own, so a successor started with takeover keeps it.
	Instance string `json:"instance,omitempty"`
}

// Load is the relay's load in [0, +inf): sessions over capacity when a
// capacity is set, otherwise the session count.
func (r Relay) Load() float64 {
	if r.MaxSessions > 0 {
		return float64(r.Sessions) / float64(r.MaxSessions)
	}
	return float64(r.Sessions)
}

// Pin records which origin serves a stream, stored at pins/<stream>.
type Pin struct {
	V        int       `json:"v"`
	Stream   string    `json:"stream"`
	OriginID string    `json:"origin_id"`
	PinTime  time.Time `json:"pin_time"`
}

// Session is the shared record of one edge session, stored at
// sessions/<id>, with index keys ufrags/<origin-ufrag>:<client-ufrag>,
// relaysessions/<relay-id>/<id> and streamsessions/<stream>/<id>.
//
// The relay creates it at allocation (relay fields) and signaling completes
// it (origin resource, ETag) with UpdateSession. It is not tied to the
// relay's lease: a dead relay's sessions stay listed under its id so that
// they can be found and re-homed.
type Session struct {
	V         int    `json:"v"`
	ID        string `json:"id"`
	Stream    string `json:"stream"`
	Direction string `json:"direction"` // DirectionPublish or DirectionPlay

	// Relay side.
	RelayID   string         `json:"relay_id"`
	ClientICE ICECredentials `json:"client_ice"` // the client's own, as it uses them now
	OriginICE ICECredentials `json:"origin_ice"` // the origin's own; an edge-answered restart keeps them
	// ServerICE are the credentials the client uses for the server side
	// (the first half of its USERNAME, the key of its checks) when they are
	// not the origin's: the edge answered an ICE restart itself. Zero:
	// OriginICE.
	ServerICE ICECredentials `json:"server_ice,omitzero"`
	// OriginClientICE are the client's credentials as the origin knows them
	// (from the offer it answered) when they are not ClientICE. Zero:
	// ClientICE.
	OriginClientICE ICECredentials `json:"origin_client_ice,omitzero"`
	// ClientPaths are the client addresses that passed MESSAGE-INTEGRITY on
	// the session's relay, with the selected one marked, as the relay last
	// wrote them (rate-limited): a relay restarted with the same id forwards
	// from them at once, consent checks or not.
	ClientPaths     []ClientPath      `json:"client_paths,omitempty"`
	OriginAddresses []string          `json:"origin_addresses"` // "ip:port"
	Labels          map[string]string `json:"labels,omitempty"`
	// RelayOriginAddress is the relay's own "ip:port" toward the origin:
	// the source address the origin sees and has selected as its ICE
	// peer. A relay restarted with the same id binds its socket to it again
	// so the origin's packets keep arriving. Empty when unknown; cleared
	// when the session moves to another relay or to other origin addresses.
	RelayOriginAddress string `json:"relay_origin_address,omitempty"`
	// Moves counts the times the session moved to another relay. The
	// origin saw each relay's address as a new peer-reflexive candidate of
	// the client; the relay raises the PRIORITY of the checks it forwards
	// by Moves so that an origin's ICE agent that switches to a newly
	// nominated pair only when its priority is strictly higher (pion/ice,
	// and so MediaMTX and the demo origin) takes the new relay's path.
	Moves uint32 `json:"moves,omitempty"`

	// Signaling side.
	OriginID       string `json:"origin_id,omitempty"`
	OriginResource string `json:"origin_resource,omitempty"` // absolute URL of the origin's session
	OriginETag     string `json:"origin_etag,omitempty"`
	ETag           string `json:"etag,omitempty"` // the edge's strong ETag for the ICE session
	// ICEOptions, ICEPacing and ICELite repeat what the offer/answer used, for
	// the ICE restart reply (RFC 9725 section 4.3.3).
	ICEOptions string `json:"ice_options,omitempty"`
	ICEPacing  string `json:"ice_pacing,omitempty"`
	ICELite    bool   `json:"ice_lite,omitempty"`

	CreateTime time.Time `json:"create_time"`
	UpdateTime time.Time `json:"update_time"`
}

// UfragKey is the ufrag-index key of a session: the STUN USERNAME the client
// sends toward the relay, "<server-ufrag>:<client-ufrag>" (the server ufrag
// is the origin's until the edge answers an ICE restart itself).
func (s Session) UfragKey() string { return s.Server().Ufrag + ":" + s.ClientICE.Ufrag }

// Server returns the credentials the client uses for the server side.
func (s Session) Server() ICECredentials {
	if s.ServerICE.Ufrag == "" {
		return s.OriginICE
	}
	return s.ServerICE
}

// OriginClient returns the client's credentials as the origin knows them.
func (s Session) OriginClient() ICECredentials {
	if s.OriginClientICE.Ufrag == "" {
		return s.ClientICE
	}
	return s.OriginClientICE
}

// ClientPath is one verified client address of a session, as its relay
// recorded it.
type ClientPath struct {
	Addr     string `json:"addr"`          // the client's "ip:port" as the relay sees it
	Via      string `json:"via,omitempty"` // the relay's public socket it arrived on, "ip:port"
	Selected bool   `json:"selected,omitempty"`
}

// ICEKeys are a session's ICE credentials as RekeySession installs them.
type ICEKeys struct {
	Client       ICECredentials // the client's own
	Origin       ICECredentials // the origin's own
	Server       ICECredentials // what the client uses for the server side; zero: Origin
	OriginClient ICECredentials // the client's as the origin knows them; zero: Client
}

// Setup is a session setup in progress, stored at setups/<session-id> from
// before signaling contacts the origin until the session record is complete
// (FinishSetup deletes it in the transaction that completes the session) or
// the setup failed and was undone. A record still there after its Deadline
// belongs to a setup whose signaling instance died: a reaper claims it
// (ClaimSetup), deletes the origin's session at OriginResource, releases the
// relay session of the same id if the relay recorded one, and deletes it.
type Setup struct {
	V         int    `json:"v"`
	ID        string `json:"id"` // the session id
	Stream    string `json:"stream"`
	Direction string `json:"direction"` // DirectionPublish or DirectionPlay
	OriginID  string `json:"origin_id"`
	// OriginResource is the absolute URL of the origin's session, set as
	// soon as the origin answered (NoteSetupOrigin); empty before.
	OriginResource string `json:"origin_resource,omitempty"`
	OriginETag     string `json:"origin_etag,omitempty"`
	// RelayID is the relay picked for the session, when known. The relay's
	// session record (sessions/<id>) names it too.
	RelayID    string    `json:"relay_id,omitempty"`
	CreateTime time.Time `json:"create_time"`
	// Deadline is when the setup has certainly ended, one way or the
	// other; a claim moves it to the claim's expiry.
	Deadline time.Time `json:"deadline"`
	// ClaimedBy and ClaimTime name the reaper cleaning the setup up.
	ClaimedBy string    `json:"claimed_by,omitempty"`
	ClaimTime time.Time `json:"claim_time,omitzero"`

	// PinRev, when positive, is the mod revision of the stream's pin that
	// chose OriginID (PickOriginPin): BeginSetup fails with ErrConflict if
	// the pin changed or was released since. Not stored.
	PinRev int64 `json:"-"`
}

// PendingSetup is a Setup with the etcd revision it was stored or read at,
// the condition of the compare-and-swap calls that follow.
type PendingSetup struct {
	Setup
	Rev int64
}

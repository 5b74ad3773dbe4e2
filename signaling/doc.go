// Package signaling is rtcedge's WHIP (RFC 9725) and WHEP
// (draft-ietf-wish-whep) front end.
//
// # Endpoints
//
//	POST   /whip/{stream...}                 WHIP publish (application/sdp)
//	POST   /whep/{stream...}                 WHEP play
//	POST   /rtc/v1/whip/?app=A&stream=S      SRS-style WHIP (also vhost=)
//	POST   /rtc/v1/whep/?app=A&stream=S      SRS-style WHEP
//	POST   /rtc/v1/publish/, /rtc/v1/play/   SRS's legacy JSON API
//	DELETE /sessions/{id}                    end a session (200)
//	PATCH  /sessions/{id}                    trickle (204) or ICE restart (200)
//	OPTIONS any of the above                 CORS, Accept-Post, ICE servers
//	POST   /api/v1/srs/register              SRS's origin heartbeat
//	       /v1/origins, /v1/streams          origin.v1.OriginRegistry over REST
//	GET    /metrics, /healthz, /readyz
//
// # Stream keys
//
// Stream keys are normalised to vhost/app/stream as SRS does: a path of one
// segment gets the app "live", two segments are app/stream, three or more
// are vhost/app.../stream; the default vhost is "__defaultVhost__". So
// /whip/cam1, /whip/live/cam1 and /rtc/v1/whip/?app=live&stream=cam1 all
// name __defaultVhost__/live/cam1. Segments are 1-128 of [A-Za-z0-9._~-].
//
// # Sessions
//
// A session's state lives in etcd (package registry), so any signaling
// instance serves DELETE and PATCH for a session created on another. The
// session id comes from a CSPRNG. The client's own candidates never reach
// the origin: the origin learns the relay's per-session address as a
// peer-reflexive candidate from the checks that come through it.
package signaling

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
//	PATCH  /sessions/{id}                    trickle (204), ICE restart (200),
//	                                         answer to a WHEP 406 counter-offer (204)
//	GET    endpoint or session               204, no body (RFC 9725 section 4.1), Allow
//	other methods                            405 with Allow
//	HEAD   /whep/...                         200, Content-Type: application/sdp
//	OPTIONS any of the above                 CORS; a plain OPTIONS adds Accept-Post and
//	                                         the ICE servers as Link headers
//	POST   /api/v1/srs/register              SRS's origin heartbeat
//	POST   /api/v1/srs/hooks                 SRS's http_hooks on_publish/on_unpublish
//	       /v1/origins                       origin.v1.OriginRegistry over REST
//	GET    /v1/streams, /v1/status           status.v1.StatusService over REST (status.go)
//	GET    /status                           the operators' status page (HTML + JS reading the above)
//	GET    /metrics, /healthz, /readyz
//
// # Status
//
// The status API (status.v1.StatusService on gRPC and REST) tells operators
// which streams are live, on which origin, who publishes them (through the
// edge or discovered on an origin), how many watch and at what bitrate, and
// how the origins (health, load) and relays (sessions, packets/s) are
// doing. It is read from the registry and, for the rates, from every live
// relay's ListSessions and GetStatus at call time (2 s per relay; a relay
// that does not answer makes the answer partial). Callers need
// Config.StatusToken or the registration token, or must be on this host.
// The rtcedge_signaling_streams, _viewers and _publishers gauges count by
// origin at scrape time, with at most 50 origin label values.
//
// # Stream keys
//
// Stream keys are normalised to vhost/app/stream as SRS does: a path of one
// segment gets the app "live", two segments are app/stream, three or more
// are vhost/app.../stream; the default vhost is "__defaultVhost__". So
// /whip/cam1, /whip/live/cam1 and /rtc/v1/whip/?app=live&stream=cam1 all
// name __defaultVhost__/live/cam1. Segments are 1-128 of [A-Za-z0-9._~-].
// Origins get the stream as "app/stream" (the vhost in front when it is not
// the default).
//
// # Sessions
//
// Every session resource is /sessions/{id} (absolute when
// Config.PublicBaseURL is set), whatever endpoint created it; the id is 16
// bytes from the CSPRNG, base64url. A session's state lives in etcd
// (package registry), so any signaling instance serves DELETE and PATCH for
// a session created on another.
//
// A POST is handled in this order: the body is read up to Config.BodyLimit
// (413 beyond) and parsed before anything is contacted (415, 400, 422); the
// client's candidates, m= ports and c= addresses are removed from the offer;
// an offer whose directions do not fit the endpoint (sendonly to WHEP,
// recvonly to WHIP) is refused (422); the registry picks the stream's
// origin (503 + Retry-After if none; for WHEP an origin that has the
// stream live, 409 + Retry-After if none can have it); the origin's adapter
// forwards the offer (an origin that refuses the connection or times out
// is marked suspect and the setup retried once on another origin; a WHEP
// 404 from an origin while another has the stream live is retried there
// once: failover.go); a relay is picked and
// AllocateSession called over gRPC; every candidate of the answer is
// replaced by the relay's; the registry session is completed. Any failure
// after the origin accepted the offer deletes the origin's session and
// releases the relay's. The origin never sees a client address: it learns
// the relay's per-session address as a peer-reflexive candidate, and
// trickled client candidates are answered 204 without being forwarded.
//
// # ICE restarts
//
// Signaling answers every ICE restart itself and never contacts the origin
// (SRS, for one, has no PATCH handler): the 200 carries new server
// credentials made here (crypto/rand: 8 and 32 ice-chars) and the relay's
// candidates, with the ice-options, ice-pacing and ice-lite of the original
// offer and answer, and a new ETag. Toward the origin the session keeps the
// credentials of the offer and answer the origin saw (registry.Session
// OriginICE and OriginClient()); the relay translates the client's
// USERNAME "<server ufrag>:<client ufrag>" to the origin's pair and
// re-signs checks and responses in both directions, so a restart, on the
// same relay or onto another one when the session's relay is gone, is
// invisible to the origin. The answer to a WHEP counter-offer is different:
// the origin receives it, so it becomes what the origin knows of the client.
// A session awaits that answer (PATCH application/sdp) from the 406 until
// the answer is accepted, marked by the LabelAwaitingAnswer label; any other
// PATCH must be application/trickle-ice-sdpfrag (415 with Accept-Patch).
//
// Status codes: 201 (or 406 with the origin's counter-offer) with
// Location, ETag and Content-Type: application/sdp; 400 malformed SDP or
// stream; 401 with WWW-Authenticate: Bearer; 403 when the origin refuses
// the forwarded Authorization; 404 unknown session; 405 with Allow;
// 409 + Retry-After for WHEP without a publisher (an origin's 404 or 409,
// or live on no origin); 409 without Retry-After for WHIP to a stream that
// has a publisher at its origin (its 409, or a closed connection while
// the stream is live there);
// 412 stale If-Match and 428 missing If-Match on PATCH ("*" matches any);
// 413; 415 (PATCH: with Accept-Patch); 422 unsupported offer (no
// audio/video, more than one MediaStream, sections with different ICE
// credentials, a direction that does not fit the endpoint); 502 origin
// errors, an origin that closed the connection on the offer, or a relay
// that refuses a request;
// 503 + Retry-After when no origin or relay is available or reachable. Errors carry an RFC 9457
// application/problem+json body. A failed ICE restart keeps the session.
//
// # Errors and request ids
//
// Every response carries X-Request-Id: the client's own X-Request-Id when
// it is 1-64 token characters (RFC 9110), else a fresh random id. The
// request's log lines carry the same id as request_id. An error's detail
// describes what was wrong with the client's input (a malformed offer, a
// bad stream name or sdpfrag), or else is a stable sentence such as "the
// stream's origin is unavailable; retry" or "no relay is available;
// retry": it never names an origin or relay, an internal address or URL,
// nor carries Go or gRPC error text. The cause is logged at Warn (Error
// for a 500) with the request id.
//
// # Authentication
//
// Off by default. Config.Auth takes static bearer tokens and/or an
// HMAC-SHA256 key. A signed token is
//
//	base64url(JSON {"stream":"__defaultVhost__/live/cam1","dir":"publish","exp":1767225600})
//	"." base64url(HMAC-SHA256(key, <the first part as sent>))
//
// (base64url without padding; dir is "publish" for WHIP or "play" for
// WHEP; exp in Unix seconds), minted by MintToken and sent as
// "Authorization: Bearer <token>".
//
// # Origin registration
//
// Registering origins controls where streams go, so it is closed by
// default. Origin registration (origin.v1.OriginRegistry over gRPC and
// REST under /v1/, and the SRS heartbeat POST /api/v1/srs/register) is
// allowed:
//
//   - with Config.RegistrationToken (-registration-token) set: to callers
//     that send it as "Authorization: Bearer <token>" (gRPC metadata
//     "authorization"; the SRS heartbeat, which cannot set headers, may
//     put it in ?token=), compared in constant time, whatever their
//     address; otherwise 401 with WWW-Authenticate (gRPC Unauthenticated);
//   - without a token: to loopback peers only (127.0.0.0/8, ::1), and on
//     gRPC to peers whose client certificate the TLS layer verified (mTLS,
//     -grpc-client-ca); any other peer gets 403 (gRPC PermissionDenied)
//     with a detail naming -registration-token and
//     -insecure-open-registration;
//   - without a token and with Config.InsecureOpenRegistration
//     (-insecure-open-registration): to everyone, for private networks
//     only; New logs a warning.
//
// SRS's http_hooks (POST /api/v1/srs/hooks) follow the same policy.
//
// # Configured origins and probes
//
// A Prober (NewProber, Run) reads the origins file (LoadOriginsFile),
// takes part in an etcd election among signaling instances and, while it
// leads, probes every configured origin: it keeps healthy ones registered,
// deregisters one after ProbeConfig.Failures failed probes in a row, and
// records the streams live on each origin with a stream list (SRS
// /api/v1/streams/, MediaMTX /v3/paths/list) for the registry's pick
// (registry.PickOriginFor). Heartbeat-registered SRS origins' stream lists
// are read too.
//
// The HTTP peer is the connection's address (http.Request.RemoteAddr):
// X-Forwarded-For is not trusted, so behind a reverse proxy on the same
// host every caller looks local; set a token there. A refused
// registration writes nothing to etcd. The gRPC health and reflection
// services stay open.
//
// # Relay calls
//
// With Config.RelayToken set, every gRPC call to a relay carries
// "authorization: Bearer <token>" (the relay's admin token), on top of
// the transport credentials of SetRelayCredentials.
package signaling

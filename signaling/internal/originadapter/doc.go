// Package originadapter speaks to WebRTC origins over HTTP: SRS (its
// /rtc/v1/whip/ and /rtc/v1/whep/ endpoints), MediaMTX (/{path}/whip,
// /{path}/whep) and any WHIP/WHEP server reached through URL templates. All
// three answer a WHIP-style POST; they differ in how the endpoint URL is
// built and in small liberties (relative Locations, bare "Etag: *").
package originadapter

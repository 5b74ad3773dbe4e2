// Package demoorigin is a small WebRTC origin for demos and tests, NOT a
// production media server. It speaks plain WHIP (RFC 9725) and WHEP like
// MediaMTX does, so rtcedge's generic "whip" origin adapter can drive it:
//
//	POST   {base}/{stream...}/whip        publish (application/sdp, 201)
//	POST   {base}/{stream...}/whep        play (404 when nobody publishes)
//	DELETE {base}/{stream...}/whip/{id}   end a session (200)
//	PATCH  {base}/{stream...}/whip/{id}   trickle (204) or ICE restart (200)
//
// It forwards RTP from a publisher's tracks to every player of the same
// stream without transcoding, asks the publisher for key frames (PLI) when a
// player joins and every two seconds, and answers with non-trickle SDP whose
// only candidates are its single media UDP address. It is a full-ICE
// answerer, so it learns a relay's per-session address as a peer-reflexive
// candidate.
//
// PublishTestPattern makes a stream live without any WHIP client: a VP8
// test pattern produced by a minimal key-frame encoder in this package
// (flat macroblocks, frame number in the top row; DecodeTestPattern reads
// it back). The inventory API lists the live streams like MediaMTX's
// control API does:
//
//	GET    {base}/v3/paths/list               pageCount, itemCount, items[name, ready, source, tracks, readers]
//	GET    {base}/v3/paths/get/{stream...}    one item
//
// Heartbeat keeps the origin registered with rtcedge's signaling through the
// origin.v1.OriginRegistry gRPC service.
package demoorigin

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
// Heartbeat keeps the origin registered with rtcedge's signaling through the
// origin.v1.OriginRegistry gRPC service.
package demoorigin

// Package sdpx does signaling's SDP work with pion/sdp: validating a
// client's offer and stripping every trace of the client's addresses from
// it, reading the origin's ICE credentials and media addresses from its
// answer, replacing the answer's candidates with the relay's, and reading
// and writing trickle-ice-sdpfrag bodies (RFC 8840).
package sdpx

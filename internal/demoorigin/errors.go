package demoorigin

import "errors"

// Sentinel errors; the HTTP layer maps them to status codes.
var (
	// ErrClosed is returned once the Origin has been closed.
	ErrClosed = errors.New("demoorigin: origin closed")
	// ErrNoPublisher means a player asked for a stream nobody publishes.
	ErrNoPublisher = errors.New("demoorigin: stream has no publisher")
	// ErrBadStreamKey means the stream key in the URL is not acceptable.
	ErrBadStreamKey = errors.New("demoorigin: invalid stream key")
	// ErrBadSDP means an offer or SDP fragment could not be used.
	ErrBadSDP = errors.New("demoorigin: invalid SDP")
	// ErrSessionNotFound means the resource id is unknown.
	ErrSessionNotFound = errors.New("demoorigin: session not found")
)

// Errors of the PATCH precondition (If-Match) check.
var (
	// ErrPreconditionRequired means a PATCH came without If-Match.
	ErrPreconditionRequired = errors.New("demoorigin: If-Match required")
	// ErrPreconditionFailed means If-Match did not match the resource's ETag.
	ErrPreconditionFailed = errors.New("demoorigin: If-Match does not match the current ETag")
	// ErrNoTracks means the publisher has not sent any media yet, so there is
	// nothing to play.
	ErrNoTracks = errors.New("demoorigin: publisher has no tracks yet")
	// ErrTooManySessions means Config.MaxSessions is reached.
	ErrTooManySessions = errors.New("demoorigin: too many sessions")
)

package mediarelay

import "errors"

// Sentinel errors of the relay's API; the gRPC layer maps them to codes.
var (
	// ErrInvalid is returned for a request that fails validation.
	ErrInvalid = errors.New("mediarelay: invalid request")
	// ErrSessionNotFound is returned for an unknown session id.
	ErrSessionNotFound = errors.New("mediarelay: session not found")
	// ErrSessionExists is returned when the session id or its ufrag pair is
	// taken.
	ErrSessionExists = errors.New("mediarelay: session exists")
	// ErrDraining is returned by Allocate while the relay drains.
	ErrDraining = errors.New("mediarelay: draining, not taking new sessions")
	// ErrFull is returned by Allocate at the session limit.
	ErrFull = errors.New("mediarelay: session limit reached")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("mediarelay: closed")
	// ErrFrameTooLarge is returned by the RFC 4571 frame reader for a frame
	// longer than MaxPacketSize; the TCP connection is closed.
	ErrFrameTooLarge = errors.New("mediarelay: TCP frame larger than the maximum packet size")
	// ErrTakeoverUnsupported is returned by ListenUDPTakeover and ListenTCP
	// where SO_REUSEPORT is unavailable: a successor cannot share the
	// running relay's ports.
	ErrTakeoverUnsupported = errors.New("mediarelay: takeover needs SO_REUSEPORT (Linux)")
)

package registry

import "errors"

// Sentinel errors. Callers test them with errors.Is and map them to their own
// status codes at the edge (HTTP 404/409/503, gRPC NotFound/AlreadyExists/
// Unavailable).
var (
	// ErrNotFound is returned when a record does not exist.
	ErrNotFound = errors.New("registry: not found")
	// ErrNoOrigin is returned by PickOrigin when no live origin can take the
	// stream.
	ErrNoOrigin = errors.New("registry: no origin available")
	// ErrNoRelay is returned by PickRelay when no live, non-draining relay is
	// known.
	ErrNoRelay = errors.New("registry: no relay available")
	// ErrConflict is returned when a create-if-absent or compare-and-swap
	// transaction loses: the id or ufrag pair is taken, or the record changed.
	ErrConflict = errors.New("registry: conflict")
	// ErrUnavailable is returned when etcd cannot be reached within the
	// request timeout.
	ErrUnavailable = errors.New("registry: etcd unavailable")
	// ErrInvalid is returned for a record that fails validation before any
	// call to etcd.
	ErrInvalid = errors.New("registry: invalid record")
	// ErrSuperseded is returned by a relay registration whose key another
	// process of the same relay id has taken over (a relay started with
	// takeover beside it): it no longer writes the key.
	ErrSuperseded = errors.New("registry: relay registration taken over by another process")
)

package mediarelay

import (
	"time"

	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// subscriberBuffer is how many events a watcher may lag behind before it is
// cut off (its stream ends with RESOURCE_EXHAUSTED).
const subscriberBuffer = 256

// subscriber is one WatchSessions stream.
type subscriber struct {
	stream string // filter; "" is every stream
	ch     chan *relayv1.WatchSessionsResponse
	lagged bool // set (under Relay.mu) when it was cut off
}

// subscribe registers a watcher. The channel is closed when the watcher
// lags too far, or the relay closes; cancel unregisters it.
func (r *Relay) subscribe(stream string) (*subscriber, func()) {
	sub := &subscriber{stream: stream, ch: make(chan *relayv1.WatchSessionsResponse, subscriberBuffer)}
	r.mu.Lock()
	if r.closed {
		close(sub.ch)
	} else {
		r.subs[sub] = struct{}{}
	}
	r.mu.Unlock()
	return sub, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, ok := r.subs[sub]; ok {
			delete(r.subs, sub)
			close(sub.ch)
		}
	}
}

// emit sends an event about s to the watchers.
func (r *Relay) emit(typ relayv1.SessionEventType, s *session) {
	r.mu.Lock()
	n := len(r.subs)
	r.mu.Unlock()
	if n == 0 {
		return
	}
	r.emitSnapshot(typ, s.snapshot(r.cfg.RelayID, 0))
}

func (r *Relay) emitSnapshot(typ relayv1.SessionEventType, snap *relayv1.Session) {
	ev := &relayv1.WatchSessionsResponse{Type: typ, Session: snap, Time: timestamp(time.Now())}
	r.mu.Lock()
	defer r.mu.Unlock()
	for sub := range r.subs {
		if sub.stream != "" && sub.stream != snap.GetStream() {
			continue
		}
		select {
		case sub.ch <- ev:
		default:
			sub.lagged = true
			delete(r.subs, sub)
			close(sub.ch)
		}
	}
}

package amiproto

import "sync"

// ActionIDs maps the wire ActionIDs of a client's requests to their
// callers' own, so that events which carry one (an async Originate's
// OriginateResponse, a UserEvent) get the caller's back. Every Client has
// its own unless WithActionIDs gives several the same one: Asterisk sends
// such events to every session with events on, so with one session for
// events and others for actions, the session that reads the event is not
// the one that asked. It holds the latest 4096 requests that had an
// ActionID. It is safe for concurrent use.
type ActionIDs struct {
	mu   sync.Mutex
	ring idRing
}

// NewActionIDs returns an empty map for WithActionIDs.
func NewActionIDs() *ActionIDs { return &ActionIDs{} }

// WithActionIDs makes the client record its requests' ActionIDs in ids and
// look events' ActionIDs up there, sharing them with the other clients
// given the same ids.
func WithActionIDs(ids *ActionIDs) Option { return func(o *options) { o.ids = ids } }

func (a *ActionIDs) put(wire, caller string) {
	a.mu.Lock()
	a.ring.put(wire, caller)
	a.mu.Unlock()
}

func (a *ActionIDs) get(wire string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ring.get(wire)
}

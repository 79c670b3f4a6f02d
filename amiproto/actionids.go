package amiproto

import (
	"context"
	"strings"
	"sync"
)

// ActionIDs maps the wire ActionIDs of a client's requests to their
// callers' own, so that events which carry one (an async Originate's
// OriginateResponse, a UserEvent) get the caller's back. Every Client has
// its own unless WithActionIDs gives several the same one: Asterisk sends
// such events to every session with events on, so with one session for
// events and others for actions, the session that reads the event is not
// the one that asked. It holds the latest 4096 requests that had an
// ActionID, and the expected events of RequestExpect. It is safe for
// concurrent use.
type ActionIDs struct {
	mu      sync.Mutex
	ring    idRing
	expects map[string]*Expect // by wire ActionID; see RequestExpect
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

// resolve is get for the event m, which carries the wire ActionID wire:
// an Expect waiting for it gets a copy, with the caller's ActionID or
// none. With no Expect registered it costs get's one lookup.
func (a *ActionIDs) resolve(wire string, m *Message) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	caller, ok := a.ring.get(wire)
	if len(a.expects) == 0 || wire == "" {
		return caller, ok
	}
	e, waits := a.expects[wire]
	if !waits || !strings.EqualFold(m.EventName(), e.event) {
		return caller, ok
	}
	delete(a.expects, wire)
	ev := m.Clone()
	if e.hasCaller {
		ev.Set("ActionID", e.caller)
	} else {
		ev.Del("ActionID")
	}
	e.c <- ev // buffered for one, and only sent to once: deleted above
	return caller, ok
}

// Expect waits for the event of one request; see RequestExpect.
type Expect struct {
	// C receives the expected event once, if it comes.
	C <-chan *Message

	ids       *ActionIDs
	wire      string
	event     string
	caller    string
	hasCaller bool
	c         chan *Message
}

// Stop ends the wait: an event that comes later goes only to the event
// stream. It may be called more than once.
func (e *Expect) Stop() {
	e.ids.mu.Lock()
	if e.ids.expects[e.wire] == e {
		delete(e.ids.expects, e.wire)
	}
	e.ids.mu.Unlock()
}

// RequestExpect is Request that also catches the first event named event
// (an async Originate's OriginateResponse) that carries the request's
// ActionID, whichever client sharing this client's ActionIDs (see
// WithActionIDs), this one included, reads it. The wait is registered
// before the action leaves, so an event read before the response is not
// missed. The event on the Expect's C has the caller's ActionID, or none
// when the caller gave none; the reading client delivers it to its event
// stream as well. The caller waits on C as long as it likes, then calls
// Stop. When the request fails the Expect is stopped and nil.
func (c *Client) RequestExpect(ctx context.Context, action *Message, event string) (*Response, *Expect, error) {
	e := &Expect{ids: c.answered, event: event, c: make(chan *Message, 1)}
	e.C = e.c
	e.caller, e.hasCaller = action.Lookup("ActionID")
	resp, err := c.requestExpect(ctx, action, e)
	if err != nil {
		e.Stop()
		return resp, nil, err
	}
	return resp, e, nil
}

// register records e under its request's wire ActionID.
func (a *ActionIDs) register(wire string, e *Expect) {
	a.mu.Lock()
	if a.expects == nil {
		a.expects = make(map[string]*Expect)
	}
	e.wire = wire
	a.expects[wire] = e
	a.mu.Unlock()
}

package amitest

import (
	"strconv"
	"strings"
	"sync"
	"time"
)

// Asterisk runs a session's actions on the thread that writes that
// session's events (capture 17_sync_action_stalls_events): while one of its
// actions runs, none of the session's events leave; they all follow the
// action's response at once. Other sessions are not held. The server does
// the same for every action, built in or installed with Handle, so a
// handler that blocks, or a synchronous Originate that rings unanswered,
// stalls its own session's events exactly as on a real PBX.

// eventHold keeps the events of a session whose action is running.
type eventHold struct {
	mu   sync.Mutex
	busy bool
	held []byte
}

// beginAction starts holding the session's events.
func (ss *session) beginAction() {
	ss.hold.mu.Lock()
	ss.hold.busy = true
	ss.hold.mu.Unlock()
}

// endAction queues, behind the action's answer, the events held while it
// ran. It keeps the lock while queueing, so that no later event overtakes
// them.
func (ss *session) endAction() {
	ss.hold.mu.Lock()
	defer ss.hold.mu.Unlock()
	ss.hold.busy = false
	if len(ss.hold.held) > 0 {
		ss.enqueue(ss.hold.held)
		ss.hold.held = nil
	}
}

// releaseHeldEvents queues the events held so far, ahead of the running
// action's answer, and keeps holding later ones: a list action calls it
// as it reads the live model, so that the events its answer reflects
// come before it.
func (ss *session) releaseHeldEvents() {
	ss.hold.mu.Lock()
	defer ss.hold.mu.Unlock()
	if len(ss.hold.held) > 0 {
		ss.enqueue(ss.hold.held)
		ss.hold.held = nil
	}
}

// holdEvent keeps b and reports true while an action of the session runs.
func (ss *session) holdEvent(b []byte) bool {
	ss.hold.mu.Lock()
	defer ss.hold.mu.Unlock()
	if !ss.hold.busy {
		return false
	}
	ss.hold.held = append(ss.hold.held, b...)
	return true
}

// defaultOriginateTimeout is how long Asterisk lets an originated channel
// ring when Originate gives no Timeout.
const defaultOriginateTimeout = 30 * time.Second

// ringsUnanswered reports whether an Originate of channel rings until its
// timeout: the extension "noanswer" of capture 17 (Local/noanswer@test).
func ringsUnanswered(channel string) bool {
	_, res, _ := strings.Cut(channel, "/")
	exten, _, _ := strings.Cut(res, "@")
	return exten == "noanswer"
}

// ringTimeout lets a synchronous Originate ring for its Timeout (in ms,
// 30 s by default) or until the session ends. It runs on the session's
// read goroutine, so the session's next action and its events wait for it.
func (ss *session) ringTimeout(r *Request) {
	d := defaultOriginateTimeout
	if ms, err := strconv.Atoi(strings.TrimSpace(r.Get("Timeout"))); err == nil && ms > 0 {
		d = time.Duration(ms) * time.Millisecond
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ss.done:
	}
}

package bridge

import "time"

// The bounds of the event session reader's waits for room in a full ring.
// One wait lasts maxRoomWait at most, far below Asterisk's writetimeout
// (100 ms by default), which cuts a session that stops reading; and the
// reader waits at most roomWaitRatio times as long as it reads, so that it
// reads at least a tenth of the time: over 100,000 events/s, far more than
// a PBX sends.
const (
	maxRoomWait   = 5 * time.Millisecond
	roomWaitRatio = 9
)

// roomWait lets the event session's reader wait briefly, when the ring
// refuses an event, for the publisher to free room, instead of dropping
// the event at once. Meanwhile TCP holds what the PBX sends. In a flood
// this paces the reader by the publisher: an overloaded bridge keeps its
// CPU for publishing rather than for reading events it must then drop.
//
// It waits once per refusal (the ring starts refusing when it is full and
// stops when the publisher acknowledges), within the bounds above, so the
// PBX is never held up for long and its events never back up: while NATS
// is down or slow, the waits run out and the reader drops and counts the
// events, as before.
//
// Only the reader goroutine uses it.
type roomWait struct {
	refusal uint64        // the last refusal waited for
	budget  time.Duration // what may be waited now; see roomWaitRatio
	end     time.Time     // when the last wait ended
	timer   *time.Timer   // reused; made by the first wait
}

// wait waits for r to stop refusing, once per refusal, and reports
// whether it did.
func (w *roomWait) wait(r *ring) bool {
	n, room := r.refusal()
	if n == w.refusal {
		return false
	}
	w.refusal = n
	select {
	case <-room: // maybe stale
	default:
	}
	if !r.refusing() {
		return true
	}
	start := time.Now()
	w.budget = min(maxRoomWait, w.budget+roomWaitRatio*start.Sub(w.end))
	if w.budget <= 0 {
		w.end = start
		return false
	}
	if w.timer == nil {
		w.timer = time.NewTimer(w.budget)
	} else {
		w.timer.Reset(w.budget)
	}
	ok := false
	select {
	case <-room:
		ok = !r.refusing()
	case <-w.timer.C:
	}
	w.timer.Stop()
	w.end = time.Now()
	w.budget -= w.end.Sub(start)
	return ok
}

package amitest

import (
	"crypto/rand"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// faults holds the server-wide misbehaviours. Each is read on the hot path
// through an atomic or a short lock, so tests can flip them at any time.
type faults struct {
	slow       atomic.Bool
	stallUntil atomic.Int64 // UnixNano; 0 = no stall

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced when the stall changes
	never      map[string]bool
	dropDuring map[string]int
	batch      int
	shuffle    bool
	batchFast  atomic.Int32

	// For tests that must prove nothing was written: writers now held by
	// a stall, and actions a half-open session has read and dropped.
	stalledWriters atomic.Int32
	ignoredInput   atomic.Int64
}

func (f *faults) init() {
	f.changed = make(chan struct{})
	f.never = map[string]bool{}
	f.dropDuring = map[string]int{}
}

// waitStall blocks while a stall is on. It reports false when done closes.
func (f *faults) waitStall(done <-chan struct{}) bool {
	for {
		until := f.stallUntil.Load()
		if until == 0 {
			return true
		}
		d := time.Until(time.Unix(0, until))
		if d <= 0 {
			return true
		}
		f.mu.Lock()
		changed := f.changed
		f.mu.Unlock()
		t := time.NewTimer(d)
		f.stalledWriters.Add(1)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-done:
			t.Stop()
			f.stalledWriters.Add(-1)
			return false
		}
		f.stalledWriters.Add(-1)
	}
}

func (f *faults) ignores(lowerAction string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.never[lowerAction]
}

func (f *faults) takeDropDuring(lowerAction string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dropDuring[lowerAction] > 0 {
		f.dropDuring[lowerAction]--
		return true
	}
	return false
}

func (f *faults) outOfOrder() (batch int, shuffle bool) {
	if f.batchFast.Load() == 0 {
		return 0, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.batch, f.shuffle
}

func (f *faults) outOfOrderBatch() int { return int(f.batchFast.Load()) }

// Stall makes every session stop writing for d from now: output queues up
// (up to Config.MaxQueue per session) and leaves when the stall ends. A
// zero or negative d ends a stall at once.
func (s *Server) Stall(d time.Duration) {
	var until int64
	if d > 0 {
		until = time.Now().Add(d).UnixNano()
	}
	s.faults.stallUntil.Store(until)
	s.faults.mu.Lock()
	close(s.faults.changed)
	s.faults.changed = make(chan struct{})
	s.faults.mu.Unlock()
}

// SlowWrites makes every session write one byte per socket write while on,
// so clients see messages cut at every byte boundary.
func (s *Server) SlowWrites(on bool) { s.faults.slow.Store(on) }

// NeverAnswer makes the server swallow the named actions (matched
// case-insensitively): they get no response and do nothing. It replaces
// the previous list; with no names every action is answered again.
func (s *Server) NeverAnswer(actions ...string) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.never = map[string]bool{}
	for _, a := range actions {
		s.faults.never[strings.ToLower(a)] = true
	}
}

// AnswerOutOfOrder makes every session hold its answers and release them
// in batches of batch, in reverse order, or shuffled when shuffle is set.
// A partial batch leaves 5 ms after its first answer, so a batch no larger
// than the number of actions the client keeps in flight keeps things fast.
// Events are not held, so they may also overtake answers. Zero or less
// turns it off.
func (s *Server) AnswerOutOfOrder(batch int, shuffle bool) {
	batch = max(batch, 0)
	s.faults.mu.Lock()
	s.faults.batch, s.faults.shuffle = batch, shuffle
	s.faults.batchFast.Store(int32(batch))
	s.faults.mu.Unlock()
}

// DropDuring arms a one-shot fault: the next answer to action, on any
// session, is cut in its middle and the connection closed. With a
// collection (CoreShowChannels with Config.Channels set) the client sees
// the start and some entries but never the complete event.
func (s *Server) DropDuring(action string) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.dropDuring[strings.ToLower(action)]++
}

// DropMidMessage makes each current session cut its next write in the
// middle of a message and close the connection.
func (s *Server) DropMidMessage() {
	for _, ss := range s.allSessions() {
		ss.dropNext.Store(true)
	}
}

// WriteGarbage writes b to every current session, between two messages.
// A nil b writes 64 random bytes followed by "\r\n\r\n".
func (s *Server) WriteGarbage(b []byte) {
	if b == nil {
		b = make([]byte, 64, 68)
		rand.Read(b)
		b = append(b, "\r\n\r\n"...)
	}
	for _, ss := range s.allSessions() {
		if !ss.halfOpen.Load() {
			ss.enqueue(b)
		}
	}
}

// HalfOpen turns every current session into a half-open connection: the
// socket stays open, the client's bytes are read and ignored, and nothing
// is written any more, as when the PBX host vanished. Only keepalives can
// tell. Later connections are served normally.
func (s *Server) HalfOpen() {
	for _, ss := range s.allSessions() {
		ss.halfOpen.Store(true)
	}
}

// ClearFaults turns off Stall, SlowWrites, NeverAnswer, AnswerOutOfOrder
// and armed DropDuring faults. Half-open sessions stay so.
func (s *Server) ClearFaults() {
	s.Stall(0)
	s.SlowWrites(false)
	s.NeverAnswer()
	s.AnswerOutOfOrder(0, false)
	s.faults.mu.Lock()
	s.faults.dropDuring = map[string]int{}
	s.faults.mu.Unlock()
	for _, ss := range s.allSessions() {
		ss.dropNext.Store(false)
	}
}

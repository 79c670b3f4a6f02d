package integration

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// inbox collects every message of a subscription, in arrival order, and
// lets a test wait for one that matches.
type inbox struct {
	mu      sync.Mutex
	msgs    []*nats.Msg
	changed chan struct{} // closed and replaced on every message
}

// collect subscribes to subject with an inbox.
func (w *world) collect(subject string) *inbox {
	w.t.Helper()
	in := &inbox{changed: make(chan struct{})}
	sub, err := w.nc.Subscribe(subject, in.add)
	if err != nil {
		w.t.Fatalf("subscribe %s: %v", subject, err)
	}
	// A burst must never be dropped by the test's own client.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		w.t.Fatal(err)
	}
	if err := w.nc.Flush(); err != nil {
		w.t.Fatal(err)
	}
	return in
}

func (in *inbox) add(m *nats.Msg) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs = append(in.msgs, m)
	close(in.changed)
	in.changed = make(chan struct{})
}

func (in *inbox) snapshot() []*nats.Msg {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*nats.Msg(nil), in.msgs...)
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.msgs)
}

// waitFor returns the first message at index from or later that matches,
// and its index. It fails the test after timeout.
func (in *inbox) waitFor(t testing.TB, from int, timeout time.Duration, what string, match func(*nats.Msg) bool) (int, *nats.Msg) {
	t.Helper()
	i, m, ok := in.find(from, timeout, match)
	if !ok {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
	return i, m
}

// find returns the first message at index from or later that matches,
// and its index; false after timeout.
func (in *inbox) find(from int, timeout time.Duration, match func(*nats.Msg) bool) (int, *nats.Msg, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i := from; ; {
		in.mu.Lock()
		msgs, changed := in.msgs, in.changed
		in.mu.Unlock()
		for ; i < len(msgs); i++ {
			if match(msgs[i]) {
				return i, msgs[i], true
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			return i, nil, false
		}
	}
}

// status is a message of ami.<server>.status.
type status struct {
	Server string `json:"server"`
	State  string `json:"state"`
	Since  string `json:"since"`
	Error  string `json:"error"`

	raw map[string]any
}

func parseStatus(m *nats.Msg) (status, error) {
	var s status
	if err := json.Unmarshal(m.Data, &s); err != nil {
		return s, fmt.Errorf("status on %s is not JSON: %v: %s", m.Subject, err, m.Data)
	}
	if err := json.Unmarshal(m.Data, &s.raw); err != nil {
		return s, err
	}
	return s, nil
}

// waitState waits for a status of server in one of states, published at
// or after index from of the status inbox, and returns its index.
func (w *world) waitState(server string, from int, timeout time.Duration, states ...string) (int, status) {
	w.t.Helper()
	var got status
	i, _ := w.status.waitFor(w.t, from, timeout, fmt.Sprintf("status %v of %s", states, server), func(m *nats.Msg) bool {
		if m.Subject != "ami."+server+".status" {
			return false
		}
		s, err := parseStatus(m)
		if err != nil {
			w.t.Error(err)
			return false
		}
		for _, st := range states {
			if s.State == st {
				got = s
				return true
			}
		}
		return false
	})
	return i, got
}

// waitConnected waits until every named server has published the status
// "connected" and returns the status inbox length at that point.
func (w *world) waitConnected(servers ...string) int {
	w.t.Helper()
	last := 0
	for _, name := range servers {
		i, _ := w.waitState(name, 0, readyTimeout, "connected")
		last = max(last, i+1)
	}
	return last
}

// statesOf returns the states server published, in order, from index
// from of the status inbox.
func (w *world) statesOf(server string, from int) []string {
	var out []string
	for _, m := range w.status.snapshot()[from:] {
		if m.Subject != "ami."+server+".status" {
			continue
		}
		if s, err := parseStatus(m); err == nil {
			out = append(out, s.State)
		}
	}
	return out
}

// waitReady waits until every named server is connected and its AMI
// session takes events. Asterisk (and amitest) adds a session to the event
// stream only after answering its Login, so "connected" alone does not
// promise that an event emitted next reaches the bridge; the session's own
// SuccessfulAuth event, sent once it is in the stream, does.
//
// A PBX is "connected" once its event session and one action session are
// up; waitReady also waits for every action session, because each login
// sends the event session a SuccessfulAuth, and a late one would land among
// the events a test counts. amitest sends it before the login's answer, so
// once the status shows every session up, any event emitted next comes
// after them all.
func (w *world) waitReady(servers ...string) {
	w.t.Helper()
	w.waitConnected(servers...)
	for _, name := range servers {
		w.status.waitFor(w.t, 0, readyTimeout, "every AMI session of "+name+" up", func(m *nats.Msg) bool {
			s, err := parseStatus(m)
			return m.Subject == "ami."+name+".status" && err == nil && allSessionsUp(s)
		})
		w.waitEvent(0, "ami."+name+".event.SuccessfulAuth")
	}
}

// allSessionsUp reports whether every AMI session the status lists is
// connected.
func allSessionsUp(s status) bool {
	sessions, _ := s.raw["sessions"].([]any)
	for _, x := range sessions {
		if st, _ := x.(map[string]any); st["state"] != "connected" {
			return false
		}
	}
	return len(sessions) > 0
}

// waitEvent waits for an event on subject, at or after index from of the
// event inbox.
func (w *world) waitEvent(from int, subject string) (int, *nats.Msg) {
	w.t.Helper()
	return w.events.waitFor(w.t, from, eventTimeout, "an event on "+subject, func(m *nats.Msg) bool {
		return m.Subject == subject
	})
}

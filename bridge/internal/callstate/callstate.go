// Package callstate is the live state of one PBX, built from its events
// and reconciled with its lists, and the records of its calls.
//
// STUB of the wiring branch: the model branch owns this package and
// replaces it at merge. It has the API of /work/wt/callstate-design.md
// and tracks channels (Newchannel, Hangup) and their calls only.
package callstate

import (
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Model is the state of one PBX; safe for concurrent use.
type Model struct {
	server string

	mu       sync.Mutex
	channels map[string]*subjects.StateChannel // by Uniqueid
	calls    map[string]*subjects.CallRecord   // by Linkedid
	dirty    map[string]bool                   // keys (without the server) changed since the last Flush
	finished []subjects.CallRecord
	syncing  bool
	touched  map[string]bool // Uniqueids an event touched since BeginSync
}

// New returns the empty state of server.
func New(server string) *Model {
	return &Model{server: server, channels: map[string]*subjects.StateChannel{}, calls: map[string]*subjects.CallRecord{}, dirty: map[string]bool{}}
}

// Uses reports whether Apply needs events called name.
func Uses(name string) bool { return name == "Newchannel" || name == "Hangup" }

func key(kind, id string) string { return kind + "." + subjects.EscapeKeyToken(id) }

// Apply applies one event, in the order the PBX sent them.
func (m *Model) Apply(e *amiproto.Message) {
	name := e.EventName()
	if !Uses(name) {
		return
	}
	uid := strings.Clone(e.Get("Uniqueid"))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.syncing {
		m.touched[uid] = true
	}
	switch name {
	case "Newchannel":
		m.addLocked(uid, strings.Clone(e.Get("Channel")), strings.Clone(e.Get("Linkedid")), strings.Clone(e.Get("CallerIDNum")), time.Now())
	case "Hangup":
		m.removeLocked(uid, time.Now(), true)
	}
}

func (m *Model) addLocked(uid, channel, linkedid, cid string, now time.Time) {
	if _, ok := m.channels[uid]; ok {
		return
	}
	if linkedid == "" {
		linkedid = uid
	}
	m.channels[uid] = &subjects.StateChannel{Server: m.server, Uniqueid: uid, Channel: channel, Linkedid: linkedid, Created: now.UTC()}
	m.dirty[key(subjects.KindChannels, uid)] = true
	c := m.calls[linkedid]
	if c == nil {
		c = &subjects.CallRecord{Server: m.server, Linkedid: linkedid, Start: now.UTC(), Caller: subjects.CallParty{Number: cid, Channel: channel}}
		m.calls[linkedid] = c
	}
	c.Channels = append(c.Channels, channel)
	m.dirty[key(subjects.KindCalls, linkedid)] = true
}

func (m *Model) removeLocked(uid string, now time.Time, seen bool) {
	ch, ok := m.channels[uid]
	if !ok {
		return
	}
	delete(m.channels, uid)
	m.dirty[key(subjects.KindChannels, uid)] = true
	for _, other := range m.channels {
		if other.Linkedid == ch.Linkedid {
			return
		}
	}
	m.closeLocked(ch.Linkedid, now, seen)
}

// closeLocked finishes a call: its record goes out with the next Flush;
// the writer deletes its key once the record is published.
func (m *Model) closeLocked(linkedid string, now time.Time, seen bool) {
	c, ok := m.calls[linkedid]
	if !ok {
		return
	}
	delete(m.calls, linkedid)
	delete(m.dirty, key(subjects.KindCalls, linkedid))
	c.End, c.EndSeen = now.UTC(), seen
	m.finished = append(m.finished, *c)
}

// Lists are the PBX's answers to the list actions sent after a login.
type Lists struct {
	Channels   []*amiproto.Message
	Bridges    []*amiproto.Message
	BridgeInfo map[string][]*amiproto.Message
	Queues     []*amiproto.Message
	Devices    []*amiproto.Message
	Version    string
}

// Sync marks the start of a reconciliation.
type Sync struct{ started bool }

// BeginSync starts a reconciliation.
func (m *Model) BeginSync() Sync {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncing, m.touched = true, map[string]bool{}
	return Sync{started: true}
}

// Summary is what a reconciliation changed, per kind.
type Summary struct {
	Added, Removed map[string]int
	Closed         int
	Skipped        []string
}

// EndSync ends a reconciliation with what the lists returned.
func (m *Model) EndSync(s Sync, l *Lists, now time.Time) Summary {
	m.mu.Lock()
	defer m.mu.Unlock()
	sum := Summary{Added: map[string]int{}, Removed: map[string]int{}}
	touched := m.touched
	m.syncing, m.touched = false, nil
	for _, k := range []struct {
		kind string
		l    []*amiproto.Message
	}{{subjects.KindBridges, l.Bridges}, {subjects.KindQueues, l.Queues}, {subjects.KindDevices, l.Devices}} {
		if k.l == nil {
			sum.Skipped = append(sum.Skipped, k.kind)
		}
	}
	if l.Channels == nil {
		sum.Skipped = append(sum.Skipped, subjects.KindChannels)
		return sum
	}
	listed := map[string]bool{}
	for _, e := range l.Channels {
		uid := e.Get("Uniqueid")
		listed[uid] = true
		if _, ok := m.channels[uid]; !ok && !touched[uid] {
			m.addLocked(strings.Clone(uid), strings.Clone(e.Get("Channel")), strings.Clone(e.Get("Linkedid")), strings.Clone(e.Get("CallerIDNum")), now)
			sum.Added[subjects.KindChannels]++
		}
	}
	closed := len(m.finished)
	for uid := range m.channels {
		if !listed[uid] && !touched[uid] {
			m.removeLocked(uid, now, false)
			sum.Removed[subjects.KindChannels]++
		}
	}
	sum.Closed = len(m.finished) - closed
	return sum
}

// Adopt hands the model the calls in progress found in the bucket.
func (m *Model) Adopt(calls []subjects.CallRecord, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range calls {
		if mine, ok := m.calls[c.Linkedid]; ok {
			if !c.Start.IsZero() && c.Start.Before(mine.Start) {
				mine.Start = c.Start
			}
			continue
		}
		c := c
		m.calls[c.Linkedid] = &c
		m.closeLocked(c.Linkedid, now, false)
	}
}

// Change is one key's new value; Value nil means delete.
type Change struct {
	Key   string
	Value []byte
}

// Flush calls put for every key changed since the last Flush, or every
// live key with all, and returns the call records finished since.
func (m *Model) Flush(all bool, put func(Change)) []subjects.CallRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	if all {
		clear(m.dirty)
		for uid := range m.channels {
			m.dirty[key(subjects.KindChannels, uid)] = true
		}
		for id := range m.calls {
			m.dirty[key(subjects.KindCalls, id)] = true
		}
	}
	for k := range m.dirty {
		kind, tok, _ := strings.Cut(k, ".")
		id, _ := subjects.UnescapeKeyToken(tok)
		var v any
		switch kind {
		case subjects.KindChannels:
			if c, ok := m.channels[id]; ok {
				v = c
			}
		case subjects.KindCalls:
			if c, ok := m.calls[id]; ok {
				v = c
			}
		}
		var b []byte
		if v != nil {
			b, _ = json.Marshal(v)
		}
		put(Change{Key: k, Value: b})
	}
	clear(m.dirty)
	recs := m.finished
	m.finished = nil
	return recs
}

// Counts is the number of live entries per kind.
func (m *Model) Counts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return map[string]int{subjects.KindChannels: len(m.channels), subjects.KindCalls: len(m.calls)}
}

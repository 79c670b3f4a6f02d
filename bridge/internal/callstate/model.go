// Package callstate is the live state of one PBX and the records of its
// calls, built from its AMI events and reconciled with its list actions.
// It is pure: no NATS, no goroutines, no clock of its own beyond
// Model.SetClock. The bridge feeds it events (Apply), lists after each
// login (BeginSync, EndSync), the calls found in the bucket when it becomes
// the writer (Adopt), and writes what Flush hands out.
package callstate

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Model is the state of one PBX. Apply runs on the event reader
// goroutine; every other method may run on another goroutine. Methods
// are safe for concurrent use (one mutex inside).
type Model struct {
	mu     sync.Mutex
	server string
	clock  func() time.Time

	channels map[string]*channel
	bridges  map[string]*bridge
	queues   map[string]*queue
	devices  map[string]*device
	calls    map[string]*call

	// gen is the generation of the last BeginSync; an object an event
	// touches takes the current gen, so EndSync knows it is newer than
	// the lists. tomb holds the objects events removed since BeginSync:
	// a list answered before their end must not bring them back.
	gen     uint64
	syncing bool
	tomb    map[objKey]struct{}

	dirty map[objKey]struct{} // keys changed since the last Flush
	done  []*call             // calls finished since the last Flush

	ended  fifo[string]             // Uniqueid → Linkedid of channels that hung up lately, for late Cdr events
	closed fifo[string]             // Linkedids closed lately (→ the call merged into), so that Adopt closes a call once
	early  fifo[[]subjects.CallCdr] // Cdr events of Uniqueids not seen yet: Asterisk may send them before the call's channel events

	synced  bool                  // an EndSync has reconciled the channels
	pending []subjects.CallRecord // adopted before the first sync of the channels
}

type objKey struct {
	kind string
	id   string
}

// New returns the empty model of server.
func New(server string) *Model {
	return &Model{
		server:   server,
		clock:    time.Now,
		channels: map[string]*channel{},
		bridges:  map[string]*bridge{},
		queues:   map[string]*queue{},
		devices:  map[string]*device{},
		calls:    map[string]*call{},
		tomb:     map[objKey]struct{}{},
		dirty:    map[objKey]struct{}{},
		ended:    newFIFO[string](4096),
		closed:   newFIFO[string](4096),
		early:    newFIFO[[]subjects.CallCdr](1024),
	}
}

// SetClock sets the clock the model reads for an event without a
// Timestamp header (timestampevents=yes gives one); time.Now by default.
func (m *Model) SetClock(now func() time.Time) {
	m.mu.Lock()
	m.clock = now
	m.mu.Unlock()
}

type handler func(m *Model, e *amiproto.Message, now time.Time)

// handlers holds every event the model uses.
var handlers = map[string]handler{
	"Newchannel":           (*Model).onSnapshot,
	"Newstate":             (*Model).onSnapshot,
	"NewCallerid":          (*Model).onSnapshot,
	"NewConnectedLine":     (*Model).onSnapshot,
	"NewAccountCode":       (*Model).onSnapshot,
	"Newexten":             (*Model).onNewexten,
	"VarSet":               (*Model).onVarSet,
	"Rename":               (*Model).onRename,
	"HangupRequest":        (*Model).onSnapshot,
	"Hangup":               (*Model).onHangup,
	"LocalBridge":          (*Model).onLocalBridge,
	"DialBegin":            (*Model).onDialBegin,
	"DialEnd":              (*Model).onDialEnd,
	"BridgeCreate":         (*Model).onBridgeCreate,
	"BridgeEnter":          (*Model).onBridgeEnter,
	"BridgeLeave":          (*Model).onBridgeLeave,
	"BridgeDestroy":        (*Model).onBridgeDestroy,
	"BridgeMerge":          (*Model).onBridgeMerge,
	"BlindTransfer":        (*Model).onBlindTransfer,
	"AttendedTransfer":     (*Model).onAttendedTransfer,
	"QueueCallerJoin":      (*Model).onQueueCallerJoin,
	"QueueCallerLeave":     (*Model).onQueueCallerLeave,
	"QueueCallerAbandon":   (*Model).onQueueCallerAbandon,
	"AgentCalled":          (*Model).onAgentSnapshots,
	"AgentRingNoAnswer":    (*Model).onAgentSnapshots,
	"AgentComplete":        (*Model).onAgentSnapshots,
	"AgentDump":            (*Model).onAgentSnapshots,
	"AgentConnect":         (*Model).onAgentConnect,
	"QueueMemberAdded":     (*Model).onQueueMember,
	"QueueMemberStatus":    (*Model).onQueueMember,
	"QueueMemberPause":     (*Model).onQueueMember,
	"QueueMemberPaused":    (*Model).onQueueMember, // Asterisk 11's name
	"QueueMemberPenalty":   (*Model).onQueueMember,
	"QueueMemberRinginuse": (*Model).onQueueMember,
	"QueueMemberRemoved":   (*Model).onQueueMemberRemoved,
	"DeviceStateChange":    (*Model).onDeviceState,
	"Cdr":                  (*Model).onCdr,
}

// Uses reports whether Apply needs events called name: the bridge's
// event filter does not apply to the model (the state needs Newchannel
// even when nobody publishes it).
func Uses(name string) bool {
	_, ok := handlers[name]
	return ok
}

// Apply applies one event, in the order the PBX sent them. Events the
// model does not use cost one map lookup on the event name.
func (m *Model) Apply(e *amiproto.Message) {
	h, ok := handlers[e.EventName()]
	if !ok {
		return
	}
	m.mu.Lock()
	h(m, e, m.eventTime(e))
	m.mu.Unlock()
}

// eventTime is the event's Timestamp header (Unix seconds with
// microseconds, timestampevents=yes), else the clock's time.
func (m *Model) eventTime(e *amiproto.Message) time.Time {
	// Asterisk writes it right after Event and Privilege.
	for i := 1; i < 4 && i < e.Len(); i++ {
		f := e.Field(i)
		if f.Key != "Timestamp" {
			continue
		}
		ts := f.Value
		sec, frac, _ := strings.Cut(ts, ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		var ns int64
		var err2 error
		if frac != "" {
			if len(frac) > 9 {
				frac = frac[:9]
			}
			ns, err2 = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		}
		if err1 == nil && err2 == nil {
			return time.Unix(s, ns)
		}
		break
	}
	return m.clock()
}

// markDirty marks the object's key changed: it goes out at the next Flush.
func (m *Model) markDirty(kind, id string) {
	m.dirty[objKey{kind, id}] = struct{}{}
}

// removed records that an event ended the object while a sync is under
// way, so that the sync's lists do not bring it back.
func (m *Model) removed(kind, id string) {
	m.markDirty(kind, id)
	if m.syncing {
		m.tomb[objKey{kind, id}] = struct{}{}
	}
}

// Change is one key's new value; Value nil means delete.
type Change struct {
	Key   string // without the server: "channels.<escaped Uniqueid>"; the writer prefixes server+"."
	Value []byte // JSON
}

// Flush calls put for every key changed since the last Flush (each key
// once, with its latest value: that is the coalescing), and returns the
// call records finished since. With all=true it gives every live key,
// for a full write after this process becomes the writer.
//
// The same Flush that returns a record gives the delete of its
// calls.<Linkedid> key to put: a writer that publishes a record before it
// deletes the key (so that a crash in between leaves the key for Adopt)
// holds those deletes until the records are out.
//
// Changes and finished records accumulate until Flush: a process that
// does not write (an HA standby) still calls it and drops what it gets.
// put runs after the model's lock is released, so it may block.
func (m *Model) Flush(all bool, put func(Change)) []subjects.CallRecord {
	m.mu.Lock()
	var changes []Change
	if all {
		changes = make([]Change, 0, m.countLocked())
		for id, c := range m.channels {
			changes = append(changes, change(subjects.KindChannels, id, &c.v))
		}
		for id, b := range m.bridges {
			changes = append(changes, change(subjects.KindBridges, id, &b.v))
		}
		for id, q := range m.queues {
			changes = append(changes, change(subjects.KindQueues, id, &q.v))
		}
		for id, d := range m.devices {
			changes = append(changes, change(subjects.KindDevices, id, &d.v))
		}
		for id, c := range m.calls {
			r := c.progress(m.server)
			changes = append(changes, change(subjects.KindCalls, id, &r))
		}
	} else {
		changes = make([]Change, 0, len(m.dirty))
		for k := range m.dirty {
			changes = append(changes, m.changeOf(k))
		}
	}
	clear(m.dirty)
	var recs []subjects.CallRecord
	if len(m.done) > 0 {
		recs = make([]subjects.CallRecord, len(m.done))
		for i, c := range m.done {
			recs[i] = c.rec
		}
		clear(m.done)
		m.done = m.done[:0]
	}
	m.mu.Unlock()
	for _, c := range changes {
		put(c)
	}
	return recs
}

func (m *Model) changeOf(k objKey) Change {
	switch k.kind {
	case subjects.KindChannels:
		if c, ok := m.channels[k.id]; ok {
			return change(k.kind, k.id, &c.v)
		}
	case subjects.KindBridges:
		if b, ok := m.bridges[k.id]; ok {
			return change(k.kind, k.id, &b.v)
		}
	case subjects.KindQueues:
		if q, ok := m.queues[k.id]; ok {
			return change(k.kind, k.id, &q.v)
		}
	case subjects.KindDevices:
		if d, ok := m.devices[k.id]; ok {
			return change(k.kind, k.id, &d.v)
		}
	case subjects.KindCalls:
		if c, ok := m.calls[k.id]; ok {
			r := c.progress(m.server)
			return change(k.kind, k.id, &r)
		}
	}
	return Change{Key: keyOf(k.kind, k.id)}
}

func keyOf(kind, id string) string {
	b := make([]byte, 0, len(kind)+1+len(id)+8)
	b = append(b, kind...)
	b = append(b, '.')
	return string(subjects.AppendKeyToken(b, id))
}

func change(kind, id string, v any) Change {
	b, err := json.Marshal(v)
	if err != nil {
		// The values are plain structs of strings, numbers and times:
		// only a time outside years 0-9999 fails, which no PBX sends.
		panic("callstate: " + err.Error())
	}
	return Change{Key: keyOf(kind, id), Value: b}
}

// Counts is the number of live entries per kind (for metrics).
func (m *Model) Counts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return map[string]int{
		subjects.KindChannels: len(m.channels),
		subjects.KindBridges:  len(m.bridges),
		subjects.KindQueues:   len(m.queues),
		subjects.KindDevices:  len(m.devices),
		subjects.KindCalls:    len(m.calls),
	}
}

func (m *Model) countLocked() int {
	return len(m.channels) + len(m.bridges) + len(m.queues) + len(m.devices) + len(m.calls)
}

// fifo is a bounded map that forgets its oldest entries first.
type fifo[V any] struct {
	m    map[string]V
	ring []string
	next int
}

func newFIFO[V any](n int) fifo[V] { return fifo[V]{m: make(map[string]V), ring: make([]string, n)} }

func (f *fifo[V]) put(k string, v V) {
	if k == "" {
		return
	}
	if _, ok := f.m[k]; ok {
		f.m[k] = v
		return
	}
	if old := f.ring[f.next]; old != "" {
		delete(f.m, old)
	}
	f.ring[f.next] = k
	f.next = (f.next + 1) % len(f.ring)
	f.m[k] = v
}

func (f *fifo[V]) get(k string) (V, bool) {
	v, ok := f.m[k]
	return v, ok
}

// take returns and forgets k's value.
func (f *fifo[V]) take(k string) (V, bool) {
	v, ok := f.m[k]
	if ok {
		delete(f.m, k)
	}
	return v, ok
}

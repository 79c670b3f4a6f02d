package bridge

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// Stats is a snapshot of one PBX's counters and gauges, plain numbers for
// an exporter to read at its own pace. The event path pays only atomic
// operations for them; the status subject reads the same counters.
type Stats struct {
	Server string
	State  string // as subjects.PBXStatus.State

	// Up is true while State is connected: the event session and at
	// least one action session are logged in, so the bridge serves the
	// PBX's actions. With HA it holds for a standby too, which reads the
	// events without publishing them (see HAActive).
	Up bool

	EventsReceived  uint64    // read from AMI: filtered plus numbered
	EventsFiltered  uint64    // left out by the event filter; they take no Ami-Seq
	EventsPublished uint64    // as subjects.PBXStatus.EventsPublished
	EventsDropped   uint64    // as subjects.PBXStatus.EventsDropped
	LastSeq         uint64    // as subjects.PBXStatus.LastSeq: the Ami-Seq of the last event this process published
	LastEvent       time.Time // to the second; zero before the first event

	BufferEvents        int // events waiting for the publisher (with JetStream: for their ack)
	BufferCapacity      int // the buffer's bound, in events
	BufferBytes         int // the bytes of AMI text of BufferEvents
	BufferCapacityBytes int // the buffer's bound, in bytes

	Reconnects    uint64 // as subjects.PBXStatus.Reconnects: event sessions established after the first
	LoginFailures uint64 // logins Asterisk refused

	// JetStream is set when events go into a stream; the JS fields are
	// zero otherwise.
	JetStream        bool
	JSRetries        uint64 // publishes sent again, with the same Nats-Msg-Id, after a failure or a lost ack
	JSFailures       uint64 // events the stream had not acknowledged at the shutdown deadline
	JSPublishLatency Histogram

	// HA is set when the PBX runs with HAOptions; the HA fields are zero
	// otherwise.
	HA        bool
	HAActive  bool   // this process publishes the PBX's events
	Takeovers uint64 // as subjects.HAStatus.Takeovers
	Gaps      uint64 // Ami-Seq ranges found lost at this process's takeovers, all of them (subjects.HAStatus.Gaps lists the newest)

	// Requests dropped, never sent to Asterisk: over an action session's
	// MaxPendingRequests (no reply; the requester times out), or found
	// past their requester's deadline when their session was free (a
	// 504, which Actions counts too).
	RequestsOverLimit uint64
	RequestsExpired   uint64

	// RepliesRefused counts the requests dropped unanswered because their
	// reply subject is not an inbox (see Options.ReplyPrefixes).
	RepliesRefused uint64

	// LiveState is set with StateOptions; nil otherwise.
	LiveState *StateStats

	Actions       []ActionCount // the requests answered, by action and code; only counts above zero
	ActionLatency Histogram     // request to first reply
}

// ActionCount is how many requests for Action were answered with Code.
// Action is one of some sixty common action names, as Asterisk spells
// them, or "other" for any other name, so that the label set of a metric
// stays bounded whatever requesters send; Code is 200 for a success,
// else the error code of the reply.
type ActionCount struct {
	Action string
	Code   int
	Count  uint64
}

// Histogram is a snapshot of a latency histogram. Counts[i] is the number
// of observations at or below Bounds[i]; Count includes those above the
// last bound.
type Histogram struct {
	Bounds []float64 // upper bounds in seconds, ascending; the same for every histogram
	Counts []uint64  // cumulative
	Count  uint64
	Sum    float64 // seconds
}

// latencyBounds are the upper bounds, in seconds, of every latency
// histogram: from a JetStream ack on loopback to an action near its
// default timeout.
var latencyBounds = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// knownActions are the action names that metrics count by name; any other
// counts as otherAction, which keeps the label set bounded whatever
// requesters send. Matching ignores case, as Asterisk does.
var knownActions = [...]string{
	"AbsoluteTimeout", "AgentLogoff", "Agents", "Atxfer", "BlindTransfer", "Bridge", "BridgeInfo", "BridgeList",
	"Challenge", "Command", "ConfbridgeKick", "ConfbridgeList", "ConfbridgeListRooms", "ConfbridgeMute",
	"ConfbridgeUnmute", "CoreSettings", "CoreShowChannels", "CoreStatus", "DBDel", "DBGet", "DBPut",
	"DeviceStateList", "Events", "ExtensionState", "ExtensionStateList", "GetConfig", "Getvar", "Hangup",
	"ListCommands", "Login", "Logoff", "MixMonitor", "Monitor", "Originate", "Park", "ParkedCalls", "Ping",
	"PJSIPShowContacts", "PJSIPShowEndpoint", "PJSIPShowEndpoints", "PJSIPShowRegistrationsOutbound",
	"PlayDTMF", "QueueAdd", "QueuePause", "QueueRemove", "Queues", "QueueStatus", "QueueSummary", "Redirect",
	"Reload", "SendText", "Setvar", "ShowDialPlan", "SIPpeers", "SIPshowpeer", "Status", "StopMixMonitor",
	"UserEvent", "VoicemailUsersList",
}

// otherAction is the action label of every name outside knownActions,
// and of a request too malformed to name one.
const otherAction = "other"

// actionCodes are the reply codes counted, 200 first; a code outside
// them is counted as the last, 503.
var actionCodes = [...]int{200, subjects.CodeBadRequest, subjects.CodeForbidden, subjects.CodeTooLarge, subjects.CodeAMIError, subjects.CodeTimeout, subjects.CodeUnavailable}

var knownActionIndex = func() map[string]int {
	m := make(map[string]int, len(knownActions))
	for i, a := range &knownActions {
		m[a] = i
	}
	return m
}()

// actionIndex returns the row of name in the action counters: its index
// in knownActions, or len(knownActions) for "other".
func actionIndex(name string) int {
	if i, ok := knownActionIndex[name]; ok {
		return i
	}
	for i, a := range &knownActions { // a name spelt in another case
		if strings.EqualFold(a, name) {
			return i
		}
	}
	return len(knownActions)
}

func codeIndex(code int) int {
	for i, c := range actionCodes {
		if c == code {
			return i
		}
	}
	return len(actionCodes) - 1
}

// pbxStats are the counters of a PBX that only Stats reads; the status
// shares the others (published, dropped, …) with Stats.
type pbxStats struct {
	filtered  atomic.Uint64
	lastEvent atomic.Int64 // Unix seconds of the last event read, 0 before the first
	jsRetries atomic.Uint64
	jsLatency latencyHistogram
	// actions is made by the first request: 3.6 KiB that an idle PBX of
	// a large fan-in does without.
	actions        atomic.Pointer[actionCounts]
	actionLatency  latencyHistogram
	expired        atomic.Uint64 // requests dropped past their deadline
	repliesRefused atomic.Uint64
	// lastPublished is the Ami-Seq of the last event published (with
	// JetStream: acknowledged), as the event carries it. The publisher
	// stores it before it counts the event published.
	lastPublished atomic.Uint64
}

// actionCounts are the requests answered, [actionIndex][codeIndex].
type actionCounts [len(knownActions) + 1][len(actionCodes)]atomic.Uint64

// eventRead records the time of an event read from AMI, filtered or not,
// to the second: it stores at most once a second, since a Load is a plain
// read and a Store a locked exchange.
func (st *pbxStats) eventRead(at time.Time) {
	if sec := at.Unix(); sec != st.lastEvent.Load() {
		st.lastEvent.Store(sec)
	}
}

// latencyHistogram counts durations into latencyBounds with atomic adds.
type latencyHistogram struct {
	buckets [len(latencyBounds) + 1]atomic.Uint64 // per bucket, not cumulative; the last is above every bound
	sum     atomic.Int64                          // nanoseconds
}

var latencyBoundsNanos = func() []int64 {
	out := make([]int64, len(latencyBounds))
	for i, s := range latencyBounds {
		out[i] = int64(s * float64(time.Second))
	}
	return out
}()

func (h *latencyHistogram) observe(d time.Duration) {
	i := 0
	for i < len(latencyBoundsNanos) && int64(d) > latencyBoundsNanos[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sum.Add(int64(d))
}

func (h *latencyHistogram) snapshot() Histogram {
	out := Histogram{Bounds: slices.Clone(latencyBounds[:]), Counts: make([]uint64, len(latencyBounds))}
	for i := range h.buckets {
		out.Count += h.buckets[i].Load()
		if i < len(out.Counts) {
			out.Counts[i] = out.Count
		}
	}
	out.Sum = float64(h.sum.Load()) / float64(time.Second)
	return out
}

// Stats returns a snapshot of every PBX, in configuration order.
func (b *Bridge) Stats() []Stats {
	out := make([]Stats, len(b.pbxes))
	for i, p := range b.pbxes {
		out[i] = p.stats.snapshot(p)
	}
	return out
}

func (st *pbxStats) snapshot(p *pbx) Stats {
	p.mu.Lock()
	state := p.state
	p.mu.Unlock()
	u := p.ring.usage()
	out := Stats{
		Server:              p.name,
		State:               state,
		Up:                  state == subjects.StateConnected,
		EventsFiltered:      st.filtered.Load(),
		EventsPublished:     p.published.Load(),
		EventsDropped:       p.dropped.Load(),
		BufferEvents:        u.pending,
		BufferCapacity:      p.ring.maxEvents,
		BufferBytes:         u.pendingBytes,
		BufferCapacityBytes: p.ring.maxBytes,
		Reconnects:          p.events.reconnects.Load(), // as the status: event sessions, where events may be lost
		JetStream:           p.ns.jsOpts.Enabled,
		ActionLatency:       st.actionLatency.snapshot(),
		RepliesRefused:      st.repliesRefused.Load(),
		RequestsOverLimit:   p.service.dropped(),
		RequestsExpired:     st.expired.Load(),
	}
	out.LoginFailures = p.events.loginFailures.Load()
	for _, l := range p.actions {
		out.LoginFailures += l.loginFailures.Load()
	}
	// The events numbered, by this process's own count: with HA it
	// differs from the PBX's Ami-Seq, which goes on across takeovers.
	out.EventsReceived = out.EventsFiltered + p.lastSeq.Load()
	_, out.LastSeq = p.lastPublished()
	if sec := st.lastEvent.Load(); sec != 0 {
		out.LastEvent = time.Unix(sec, 0)
	}
	if p.ha != nil {
		out.HA = true
		out.HAActive, out.Takeovers, out.Gaps = p.ha.counts()
	}
	if p.st != nil {
		out.LiveState = p.st.stats()
	}
	if out.JetStream {
		out.JSRetries = st.jsRetries.Load()
		out.JSFailures = p.jsFailures.Load()
		out.JSPublishLatency = st.jsLatency.snapshot()
	}
	counts := st.actions.Load()
	if counts == nil {
		return out
	}
	for a := range counts {
		row := &counts[a]
		for c := range row {
			if n := row[c].Load(); n > 0 {
				name := otherAction
				if a < len(knownActions) {
					name = knownActions[a]
				}
				out.Actions = append(out.Actions, ActionCount{Action: name, Code: actionCodes[c], Count: n})
			}
		}
	}
	return out
}

// actionMeter counts one request when its first reply goes out, by
// action name and reply code, and times it from arrival to that reply.
// Later replies (streamed parts) are not counted again.
type actionMeter struct {
	st     *pbxStats
	action string // set once the request is decoded; "" counts as other
	start  time.Time
	done   bool
}

// meter starts timing a request that arrived at start: its wait for a
// free session counts.
func (st *pbxStats) meter(start time.Time) *actionMeter {
	return &actionMeter{st: st, start: start}
}

func (m *actionMeter) replied(hdr nats.Header) {
	if m.done {
		return
	}
	m.done = true
	code := 200
	if v := hdr.Get(micro.ErrorCodeHeader); v != "" {
		code, _ = strconv.Atoi(v)
	}
	m.st.actionLatency.observe(time.Since(m.start))
	counts := m.st.actions.Load()
	if counts == nil {
		m.st.actions.CompareAndSwap(nil, new(actionCounts))
		counts = m.st.actions.Load()
	}
	counts[actionIndex(m.action)][codeIndex(code)].Add(1)
}

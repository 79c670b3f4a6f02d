package amitest

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// liveModel is what the fake PBX has right now, as the scenario events
// built it: channels, bridges, the queue and the cached device states.
// A scenario step changes it and queues the step's event to the sessions
// under mu, and a list action reads it under mu (see lockForList), so a
// list answer reflects exactly the events in front of it in its
// session's stream.
//
// The Config.Channels channels and the burst generator (StartCalls) stay
// outside: the first are fixed, the second's calls begin and end within
// one batch and change nothing a list reports.
type liveModel struct {
	mu       sync.Mutex
	seq      uint64 // creation order of channels and bridges
	chans    map[string]*liveChan
	bridges  map[string]*liveBridge
	queue    liveQueue
	devices  map[string]string              // cached device states
	devSeq   []string                       // devices in first-seen order
	cdrs     map[string][]*amiproto.Message // by Linkedid
	cdrOrder []string                       // the Linkedids of cdrs, oldest first
}

// maxCdrCalls bounds the calls whose Cdr events Cdrs remembers.
const maxCdrCalls = 100000

// liveChan is one channel as its latest snapshot showed it.
type liveChan struct {
	seq                              uint64
	name, uniqueid, linkedid         string
	state                            int
	cidNum, cidName, conNum, conName string
	language, accountCode            string
	context, exten                   string
	priority                         int
	chanVars                         []string // "FOO=value", the channelvars
	app, appData                     string
	bridge                           string
	created                          time.Time
}

type liveBridge struct {
	seq                                uint64
	uniqueid, typ, tech, creator, name string
	video                              string
	members                            []string // Uniqueids, in entry order
}

// liveQueue is the queue "support" of capture 06c with its members and
// the callers waiting in it.
type liveQueue struct {
	name, strategy       string
	members              []liveMember
	callers              []liveCaller
	completed, abandoned int
	completedInSL        int // completed calls answered within the service level
	holdtime, talktime   int // app_queue's weighted averages
	loginTime            int64
}

type liveMember struct {
	name, location string
	callsTaken     int
	lastCall       int64
	lastPause      int64
	inCall, paused bool
	status         int
	connectCalls   int  // callsTaken when its current call connected
	connectInSL    bool // and whether it connected within the service level
	pausedReason   string
	wrapupTime     string
	penalty        string
}

type liveCaller struct {
	uniqueid string
	joined   time.Time
}

func (m *liveModel) init(started time.Time) {
	m.chans = map[string]*liveChan{}
	m.bridges = map[string]*liveBridge{}
	m.devices = map[string]string{}
	m.cdrs = map[string][]*amiproto.Message{}
	q := &m.queue
	q.name, q.strategy, q.loginTime = fakeQueue.name, fakeQueue.strategy, started.Unix()
	for _, fm := range fakeQueue.members {
		q.members = append(q.members, liveMember{name: fm.name, location: fm.location, inCall: fm.inCall,
			status: fm.status, penalty: "0", wrapupTime: "0"})
	}
	// The device states Asterisk caches for the queue (capture 06c's
	// DeviceStateList). Local channels' states are never cached.
	for _, d := range []string{"Queue:support_pause_Local/agent@test", "Queue:support_pause_Local/busy@test",
		"Queue:support_avail", "Queue:support"} {
		m.setDevice(d, "NOT_INUSE")
	}
}

func (m *liveModel) setDevice(dev, state string) {
	if _, ok := m.devices[dev]; !ok {
		m.devSeq = append(m.devSeq, dev)
	}
	m.devices[dev] = state
}

// field is one header of an event being played.
type field struct{ key, value string }

func get(fs []field, key string) (string, bool) {
	for _, f := range fs {
		if f.key == key {
			return f.value, true
		}
	}
	return "", false
}

// snapshotPrefixes are the channel blocks an event may carry.
var snapshotPrefixes = []string{"", "Dest", "LocalOne", "LocalTwo", "Transferer", "Transferee"}

// apply changes the model as Asterisk's state changed when it sent ev.
// It runs under m.mu.
func (m *liveModel) apply(fs []field, linkedid string, now time.Time) {
	name, _ := get(fs, "Event")
	if name == "Newchannel" {
		uid, _ := get(fs, "Uniqueid")
		m.seq++
		m.chans[uid] = &liveChan{seq: m.seq, uniqueid: uid, created: now}
	}
	for _, p := range snapshotPrefixes {
		// Only a channel block carries ChannelState: OriginateResponse's
		// Channel, Uniqueid and Context are the action's, not a snapshot.
		if _, ok := get(fs, p+"ChannelState"); !ok {
			continue
		}
		if uid, ok := get(fs, p+"Uniqueid"); ok {
			if c := m.chans[uid]; c != nil {
				c.update(fs, p)
			}
		}
	}
	switch name {
	case "Newexten":
		uid, _ := get(fs, "Uniqueid")
		if c := m.chans[uid]; c != nil {
			c.app, _ = get(fs, "Application")
			c.appData, _ = get(fs, "AppData")
		}
	case "OriginateResponse":
		// An Originate to an application runs it on the channel with no
		// Newexten; the lists show it from then on (capture 06c: the ;1
		// half of an originated Local channel in Wait(20)).
		uid, _ := get(fs, "Uniqueid")
		app, ok := get(fs, "Application")
		if r, _ := get(fs, "Response"); r == "Success" && ok {
			if c := m.chans[uid]; c != nil {
				c.app = app
				c.appData, _ = get(fs, "Data")
			}
		}
	case "Hangup":
		uid, _ := get(fs, "Uniqueid")
		if c := m.chans[uid]; c != nil && c.bridge != "" {
			m.leave(c.bridge, uid)
		}
		delete(m.chans, uid)
	case "BridgeCreate":
		b := &liveBridge{}
		b.uniqueid, _ = get(fs, "BridgeUniqueid")
		b.typ, _ = get(fs, "BridgeType")
		b.tech, _ = get(fs, "BridgeTechnology")
		b.creator, _ = get(fs, "BridgeCreator")
		b.name, _ = get(fs, "BridgeName")
		b.video, _ = get(fs, "BridgeVideoSourceMode")
		m.seq++
		b.seq = m.seq
		m.bridges[b.uniqueid] = b
	case "BridgeEnter":
		bid, _ := get(fs, "BridgeUniqueid")
		uid, _ := get(fs, "Uniqueid")
		if b := m.bridges[bid]; b != nil && !slices.Contains(b.members, uid) {
			b.members = append(b.members, uid)
		}
		if c := m.chans[uid]; c != nil {
			c.bridge = bid
		}
	case "BridgeLeave":
		bid, _ := get(fs, "BridgeUniqueid")
		uid, _ := get(fs, "Uniqueid")
		m.leave(bid, uid)
	case "BridgeDestroy":
		bid, _ := get(fs, "BridgeUniqueid")
		delete(m.bridges, bid)
	case "QueueCallerJoin":
		uid, _ := get(fs, "Uniqueid")
		m.queue.callers = append(m.queue.callers, liveCaller{uniqueid: uid, joined: now})
	case "QueueCallerLeave":
		uid, _ := get(fs, "Uniqueid")
		m.queue.callers = slices.DeleteFunc(m.queue.callers, func(c liveCaller) bool { return c.uniqueid == uid })
	case "QueueCallerAbandon":
		m.queue.abandoned++
	case "AgentConnect":
		// app_queue marks the member in a call (InCall) when it connects,
		// with no event of its own (capture 19b: the lists say InCall 1
		// while the last QueueMemberStatus said 0), and recalc_holdtime
		// takes the first hold time as it is, then a weighted average.
		h, _ := get(fs, "HoldTime")
		n, _ := strconv.Atoi(h)
		q := &m.queue
		if q.completed+q.abandoned == 0 {
			q.holdtime = n
		} else {
			q.holdtime = ((q.holdtime << 2) - q.holdtime + n) >> 2
		}
		if mb := m.memberAt(fs); mb != nil {
			mb.inCall, mb.connectCalls = true, mb.callsTaken
			// Within the service level (0 s here) when it waited no
			// longer.
			mb.connectInSL = n <= 0
		}
	case "AgentComplete":
		// update_queue: the member's call ends, its count and last call
		// move (unless a QueueMemberStatus already told so), and the
		// queue's completed calls and talk time.
		t, _ := get(fs, "TalkTime")
		n, _ := strconv.Atoi(t)
		q := &m.queue
		q.completed++
		if q.completed == 1 {
			q.talktime = n
		} else {
			q.talktime = ((q.talktime << 2) - q.talktime + n) >> 2
		}
		if mb := m.memberAt(fs); mb != nil {
			if mb.inCall && mb.connectInSL {
				q.completedInSL++
			}
			mb.inCall = false
			if mb.callsTaken == mb.connectCalls {
				mb.callsTaken++
				mb.lastCall = now.Unix()
			}
		}
	case "QueueMemberStatus", "QueueMemberPause":
		iface, _ := get(fs, "Interface")
		for i := range m.queue.members {
			if mb := &m.queue.members[i]; mb.location == iface {
				mb.update(fs)
			}
		}
	case "DeviceStateChange":
		dev, _ := get(fs, "Device")
		// Local channels publish their device state as not cachable, so
		// DeviceStateList (the cache) never shows them (capture 06c).
		if !strings.HasPrefix(dev, "Local/") {
			st, _ := get(fs, "State")
			m.setDevice(dev, st)
		}
	case "Cdr":
		msg := amiproto.NewMessage()
		for _, f := range fs {
			msg.Add(f.key, f.value)
		}
		if _, ok := m.cdrs[linkedid]; !ok {
			m.cdrOrder = append(m.cdrOrder, linkedid)
			if len(m.cdrOrder) > maxCdrCalls {
				delete(m.cdrs, m.cdrOrder[0])
				m.cdrOrder = m.cdrOrder[1:]
			}
		}
		m.cdrs[linkedid] = append(m.cdrs[linkedid], msg)
	}
}

func (m *liveModel) leave(bid, uid string) {
	if b := m.bridges[bid]; b != nil {
		b.members = slices.DeleteFunc(b.members, func(u string) bool { return u == uid })
	}
	if c := m.chans[uid]; c != nil && c.bridge == bid {
		c.bridge = ""
	}
}

func (c *liveChan) update(fs []field, p string) {
	var vars []string
	for _, f := range fs {
		k, ok := strings.CutPrefix(f.key, p)
		if !ok {
			continue
		}
		switch k {
		case "Channel":
			c.name = f.value
		case "ChannelState":
			c.state, _ = strconv.Atoi(f.value)
		case "CallerIDNum":
			c.cidNum = f.value
		case "CallerIDName":
			c.cidName = f.value
		case "ConnectedLineNum":
			c.conNum = f.value
		case "ConnectedLineName":
			c.conName = f.value
		case "Language":
			c.language = f.value
		case "AccountCode":
			c.accountCode = f.value
		case "Context":
			c.context = f.value
		case "Exten":
			c.exten = f.value
		case "Priority":
			c.priority, _ = strconv.Atoi(f.value)
		case "Linkedid":
			c.linkedid = f.value
		case "ChanVariable":
			vars = append(vars, f.value)
		}
	}
	if vars != nil {
		c.chanVars = vars
	}
}

func (mb *liveMember) update(fs []field) {
	for _, f := range fs {
		switch f.key {
		case "CallsTaken":
			mb.callsTaken, _ = strconv.Atoi(f.value)
		case "LastCall":
			mb.lastCall, _ = strconv.ParseInt(f.value, 10, 64)
		case "LastPause":
			mb.lastPause, _ = strconv.ParseInt(f.value, 10, 64)
		case "InCall":
			mb.inCall = f.value == "1"
		case "Status":
			mb.status, _ = strconv.Atoi(f.value)
		case "Paused":
			mb.paused = f.value == "1"
		case "PausedReason":
			mb.pausedReason = f.value
		case "Penalty":
			mb.penalty = f.value
		case "Wrapuptime":
			mb.wrapupTime = f.value
		}
	}
}

// memberAt is the member an agent event names by its Interface.
func (m *liveModel) memberAt(fs []field) *liveMember {
	iface, _ := get(fs, "Interface")
	for i := range m.queue.members {
		if m.queue.members[i].location == iface {
			return &m.queue.members[i]
		}
	}
	return nil
}

func (m *liveModel) member(name string) *liveMember {
	for i := range m.queue.members {
		if m.queue.members[i].name == name {
			return &m.queue.members[i]
		}
	}
	return nil
}

// channels returns the live channels in creation order.
func (m *liveModel) channels() []*liveChan {
	out := make([]*liveChan, 0, len(m.chans))
	for _, c := range m.chans {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *liveChan) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

func (m *liveModel) bridgeList() []*liveBridge {
	out := make([]*liveBridge, 0, len(m.bridges))
	for _, b := range m.bridges {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *liveBridge) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

func (m *liveModel) chanByName(name string) *liveChan {
	for _, c := range m.chans {
		if c.name == name {
			return c
		}
	}
	return nil
}

var channelStateDesc = []string{"Down", "Rsrvd", "OffHook", "Dialing", "Ring", "Ringing", "Up", "Busy",
	"Dialing Offhook", "Pre-ring"}

func stateDesc(n int) string {
	if n >= 0 && n < len(channelStateDesc) {
		return channelStateDesc[n]
	}
	return "Unknown"
}

// appendLiveSnapshot appends a channel block as
// ast_manager_build_channel_state_string writes it; legacyStatus is the
// Asterisk 13 Status item (Accountcode, no Language, no ChanVariable).
func appendLiveSnapshot(b []byte, c *liveChan, legacyStatus bool) []byte {
	b = appendField(b, "Channel", c.name)
	b = appendInt(appendKey(b, "ChannelState"), c.state)
	b = append(b, '\r', '\n')
	b = appendField(b, "ChannelStateDesc", stateDesc(c.state))
	b = appendField(b, "CallerIDNum", c.cidNum)
	b = appendField(b, "CallerIDName", c.cidName)
	b = appendField(b, "ConnectedLineNum", c.conNum)
	b = appendField(b, "ConnectedLineName", c.conName)
	if legacyStatus {
		b = appendField(b, "Accountcode", c.accountCode)
	} else {
		b = appendField(b, "Language", c.language)
		b = appendField(b, "AccountCode", c.accountCode)
	}
	b = appendField(b, "Context", c.context)
	b = appendField(b, "Exten", c.exten)
	b = appendInt(appendKey(b, "Priority"), c.priority)
	b = append(b, '\r', '\n')
	b = appendField(b, "Uniqueid", c.uniqueid)
	b = appendField(b, "Linkedid", c.linkedid)
	if !legacyStatus {
		for _, v := range c.chanVars {
			b = appendField(b, "ChanVariable", v)
		}
	}
	return b
}

func hms(d time.Duration) string {
	secs := int(d / time.Second)
	return leftPad(strconv.Itoa(secs/3600), 2) + ":" + leftPad(strconv.Itoa(secs/60%60), 2) + ":" + leftPad(strconv.Itoa(secs%60), 2)
}

func appendBridgeState(b []byte, br *liveBridge) []byte {
	b = appendField(b, "BridgeUniqueid", br.uniqueid)
	b = appendField(b, "BridgeType", br.typ)
	b = appendField(b, "BridgeTechnology", br.tech)
	b = appendField(b, "BridgeCreator", br.creator)
	b = appendField(b, "BridgeName", br.name)
	b = appendInt(appendKey(b, "BridgeNumChannels"), len(br.members))
	b = append(b, '\r', '\n')
	return appendField(b, "BridgeVideoSourceMode", br.video)
}

// Snapshot is the fake PBX's live state at one moment: what its list
// actions report, for tests that derive "what should be" from the PBX.
type Snapshot struct {
	Channels []ChannelState // the Config.Channels ones first, then by creation
	Bridges  []BridgeState  // by creation
	Queues   []QueueState
	Devices  map[string]string // the cached device states, by device
}

// ChannelState is one live channel.
type ChannelState struct {
	Name, Uniqueid, Linkedid            string
	State                               int
	CallerIDNum, CallerIDName           string
	ConnectedLineNum, ConnectedLineName string
	Context, Exten                      string
	Priority                            int
	Application, ApplicationData        string
	BridgeID                            string   // "" when not bridged
	ChanVars                            []string // "NAME=value", the channelvars
	Created                             time.Time
}

// BridgeState is one live bridge.
type BridgeState struct {
	Uniqueid, Type, Technology string
	Members                    []string // Uniqueids, in entry order
}

// QueueState is one queue with its members and waiting callers.
type QueueState struct {
	Name                 string
	Completed, Abandoned int
	Members              []QueueMemberState
	Callers              []string // the waiting callers' Uniqueids, by position
}

// QueueMemberState is one member of a queue.
type QueueMemberState struct {
	Name, Interface string
	CallsTaken      int
	LastCall        int64
	InCall, Paused  bool
	Status          int // ast_device_state: 1 not in use, 2 in use, ...
}

// Live returns the live state. It is consistent in itself; a session's
// list answer taken at the same time may differ by the events still on
// their way to that session.
func (s *Server) Live() Snapshot {
	var out Snapshot
	s.liveChannels(func(c fakeChan) bool {
		vars := make([]string, 0, len(s.cfg.ChannelVars))
		for n, v := range s.cfg.ChannelVars {
			vars = append(vars, v+"="+s.chanVarValue(c, n, v))
		}
		out.Channels = append(out.Channels, ChannelState{Name: c.name, Uniqueid: c.uniqueid, Linkedid: c.linkedid,
			State: 6, CallerIDNum: c.cidNum, CallerIDName: c.cidName, ConnectedLineNum: c.cidNum,
			ConnectedLineName: c.cidName, Context: "test", Exten: "long", Priority: c.side,
			Application: c.app, ApplicationData: c.appData, ChanVars: vars, Created: s.started})
		return true
	})
	m := &s.live
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.channels() {
		out.Channels = append(out.Channels, ChannelState{Name: c.name, Uniqueid: c.uniqueid, Linkedid: c.linkedid,
			State: c.state, CallerIDNum: c.cidNum, CallerIDName: c.cidName, ConnectedLineNum: c.conNum,
			ConnectedLineName: c.conName, Context: c.context, Exten: c.exten, Priority: c.priority,
			Application: c.app, ApplicationData: c.appData, BridgeID: c.bridge,
			ChanVars: slices.Clone(c.chanVars), Created: c.created})
	}
	for _, b := range m.bridgeList() {
		out.Bridges = append(out.Bridges, BridgeState{Uniqueid: b.uniqueid, Type: b.typ, Technology: b.tech,
			Members: slices.Clone(b.members)})
	}
	q := QueueState{Name: m.queue.name, Completed: m.queue.completed, Abandoned: m.queue.abandoned}
	for _, mb := range m.queue.members {
		q.Members = append(q.Members, QueueMemberState{Name: mb.name, Interface: mb.location,
			CallsTaken: mb.callsTaken, LastCall: mb.lastCall, InCall: mb.inCall, Paused: mb.paused, Status: mb.status})
	}
	for _, c := range m.queue.callers {
		q.Callers = append(q.Callers, c.uniqueid)
	}
	out.Queues = []QueueState{q}
	out.Devices = make(map[string]string, len(m.devices))
	for d, st := range m.devices {
		out.Devices[d] = st
	}
	return out
}

// Cdrs returns the Cdr events the scenarios sent for the call whose
// Linkedid is linkedid, in the order they were sent. The burst generator
// (StartCalls, PlayCall) does not record its Cdrs.
func (s *Server) Cdrs(linkedid string) []*amiproto.Message {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	return slices.Clone(s.live.cdrs[linkedid])
}

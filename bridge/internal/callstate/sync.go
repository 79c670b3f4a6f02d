package callstate

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Lists are the PBX's answers to the list actions sent after a login.
// Each is the collection's entries as the client returned them; a nil
// slice means "not asked or refused" (the model then keeps that kind as
// it is and says so in the Summary).
type Lists struct {
	Channels   []*amiproto.Message            // CoreShowChannels → CoreShowChannel
	Bridges    []*amiproto.Message            // BridgeList → BridgeListItem
	BridgeInfo map[string][]*amiproto.Message // BridgeUniqueid → BridgeInfo's entries (BridgeInfoChannel …)
	Queues     []*amiproto.Message            // QueueStatus → QueueParams, QueueMember, QueueEntry
	Devices    []*amiproto.Message            // DeviceStateList → DeviceStateChange
	Version    string                         // CoreSettings AsteriskVersion, for the differences
}

// Sync marks the start of a reconciliation: call BeginSync just before
// sending the first list action (on the event session), and EndSync with
// what they returned. Objects an event touched or removed after BeginSync
// win over the lists; objects the lists lack that no event touched since
// are removed; objects the lists have and the model lacks are added.
type Sync struct{ gen uint64 }

// Summary is what a reconciliation changed, per kind.
type Summary struct {
	Added, Removed map[string]int // by subjects.Kind…
	Closed         int            // calls closed without their end seen (by the lists, or adopted before this sync and gone)
	Skipped        []string       // kinds not reconciled (list refused)
}

// BeginSync starts a reconciliation. A BeginSync without its EndSync (the
// session dropped during the lists) is forgotten by the next one.
func (m *Model) BeginSync() Sync {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.syncing = true
	clear(m.tomb)
	return Sync{gen: m.gen}
}

// EndSync reconciles the model with the lists. now is the time of the
// login: channels the lists bring take their creation from their
// Duration, and calls closed here end at now.
func (m *Model) EndSync(s Sync, l *Lists, now time.Time) Summary {
	m.mu.Lock()
	defer m.mu.Unlock()
	sum := Summary{Added: map[string]int{}, Removed: map[string]int{}}
	if s.gen != m.gen {
		// A later BeginSync superseded this one: its tombstones are gone,
		// so these lists cannot be applied safely.
		sum.Skipped = append(sum.Skipped, subjects.KindChannels, subjects.KindBridges, subjects.KindQueues, subjects.KindDevices)
		return sum
	}
	if l == nil {
		l = &Lists{}
	}
	if l.Channels == nil {
		sum.Skipped = append(sum.Skipped, subjects.KindChannels)
	} else {
		m.syncChannels(s, l.Channels, now, &sum)
	}
	if l.Bridges == nil {
		sum.Skipped = append(sum.Skipped, subjects.KindBridges)
	} else {
		m.syncBridges(s, l, now, &sum)
	}
	if l.Queues == nil {
		sum.Skipped = append(sum.Skipped, subjects.KindQueues)
	} else {
		m.syncQueues(s, l.Queues, now, &sum)
	}
	if l.Devices == nil {
		sum.Skipped = append(sum.Skipped, subjects.KindDevices)
	} else {
		m.syncDevices(s, l.Devices, &sum)
	}
	m.syncing = false
	clear(m.tomb)
	for _, q := range m.queues {
		clear(q.removed)
	}
	if l.Channels != nil {
		m.synced = true
		pending := m.pending
		m.pending = nil
		n := len(m.done)
		for _, r := range pending {
			m.adopt(r, now)
		}
		sum.Closed += len(m.done) - n
	}
	return sum
}

// gone reports whether an event removed the object since the sync began:
// the lists, which may be older, must not bring it back.
func (m *Model) gone(kind, id string) bool {
	_, ok := m.tomb[objKey{kind, id}]
	return ok
}

func (m *Model) syncChannels(s Sync, list []*amiproto.Message, now time.Time, sum *Summary) {
	seen := make(map[string]struct{}, len(list))
	for _, e := range list {
		uid := e.Get("Uniqueid")
		if uid == "" {
			continue
		}
		seen[uid] = struct{}{}
		if c := m.channels[uid]; c != nil {
			if c.touched >= s.gen {
				continue
			}
			m.fromList(c, e, now)
			continue
		}
		if m.gone(subjects.KindChannels, uid) {
			continue
		}
		created := now.Add(-parseDuration(e.Get("Duration")))
		c := &channel{v: subjects.StateChannel{Uniqueid: strings.Clone(uid), Created: ms(created)}}
		c.touched = s.gen - 1 // the lists' own, not an event's
		c.update(e, kSelf, now)
		c.openPeriod(now)
		if c.v.Linkedid == "" {
			c.v.Linkedid = c.v.Uniqueid
		}
		m.channels[c.v.Uniqueid] = c
		m.listExtras(c, e)
		m.attach(c, now)
		if cl := m.calls[c.v.Linkedid]; cl != nil {
			cl.answered(m, c)
		}
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
		sum.Added[subjects.KindChannels]++
	}
	var stale []*channel
	for uid, c := range m.channels {
		if _, ok := seen[uid]; !ok && c.touched < s.gen {
			stale = append(stale, c)
		}
	}
	// Oldest first, so that a call's record does not depend on map order.
	slices.SortFunc(stale, func(a, b *channel) int { return a.v.Created.Compare(b.v.Created) })
	for _, c := range stale {
		n := len(m.done)
		m.endChannel(c, now, 0, "", false)
		sum.Removed[subjects.KindChannels]++
		sum.Closed += len(m.done) - n
	}
}

// fromList takes a listed channel's fields over the model's.
func (m *Model) fromList(c *channel, e *amiproto.Message, now time.Time) {
	old := c.v.Linkedid
	ch := c.update(e, kSelf, now)
	ch = m.listExtras(c, e) || ch
	if c.v.Linkedid != old && c.v.Linkedid != "" {
		m.relink(c, old, now)
	}
	if ch {
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
	}
}

// listExtras reads what CoreShowChannel has beyond a snapshot: the
// application and the bridge (BridgeId, 13 and later; "" outside one).
func (m *Model) listExtras(c *channel, e *amiproto.Message) bool {
	ch := setIf(&c.v.Application, e, "Application")
	ch = setIf(&c.v.AppData, e, "ApplicationData") || ch
	return setIf(&c.v.Bridge, e, "BridgeId") || ch
}

// parseDuration reads CoreShowChannel's Duration, HH:MM:SS.
func parseDuration(s string) time.Duration {
	var d time.Duration
	for part := range strings.SplitSeq(s, ":") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return 0
		}
		d = d*60 + time.Duration(n)*time.Second
	}
	return d
}

func (m *Model) syncBridges(s Sync, l *Lists, now time.Time, sum *Summary) {
	seen := make(map[string]struct{}, len(l.Bridges))
	for _, e := range l.Bridges {
		id := e.Get("BridgeUniqueid")
		if id == "" {
			continue
		}
		seen[id] = struct{}{}
		b := m.bridges[id]
		if b != nil && b.touched >= s.gen || b == nil && m.gone(subjects.KindBridges, id) {
			continue
		}
		members := m.listMembers(id, l)
		if b == nil {
			b = &bridge{v: subjects.StateBridge{BridgeUniqueid: strings.Clone(id), Created: ms(now)}, touched: s.gen - 1}
			m.bridges[b.v.BridgeUniqueid] = b
			sum.Added[subjects.KindBridges]++
		}
		ch := setIf(&b.v.Type, e, "BridgeType")
		ch = setIf(&b.v.Technology, e, "BridgeTechnology") || ch
		ch = setParty(&b.v.Creator, e, "BridgeCreator") || ch
		ch = setParty(&b.v.Name, e, "BridgeName") || ch
		if !slices.Equal(members, b.v.Members) {
			b.v.Members = members
			ch = true
		}
		for _, x := range members {
			if c := m.channels[x.Uniqueid]; c != nil {
				if set(&c.v.Bridge, id) {
					m.markDirty(subjects.KindChannels, c.v.Uniqueid)
				}
				if cl := m.calls[c.v.Linkedid]; cl != nil {
					cl.addBridge(m, b.v.BridgeUniqueid)
				}
			}
		}
		if ch {
			m.markDirty(subjects.KindBridges, b.v.BridgeUniqueid)
		}
	}
	for id, b := range m.bridges {
		if _, ok := seen[id]; !ok && b.touched < s.gen {
			delete(m.bridges, id)
			m.markDirty(subjects.KindBridges, id)
			sum.Removed[subjects.KindBridges]++
		}
	}
}

// listMembers is a listed bridge's channels: BridgeInfo's entries when it
// was asked, else the channels whose CoreShowChannel named the bridge.
func (m *Model) listMembers(id string, l *Lists) []subjects.BridgeMember {
	members := []subjects.BridgeMember{}
	if info, ok := l.BridgeInfo[id]; ok {
		for _, e := range info {
			if uid := e.Get("Uniqueid"); uid != "" {
				members = append(members, subjects.BridgeMember{Uniqueid: strings.Clone(uid), Channel: strings.Clone(e.Get("Channel"))})
			}
		}
		return members
	}
	for _, c := range m.channels {
		if c.v.Bridge == id {
			members = append(members, subjects.BridgeMember{Uniqueid: c.v.Uniqueid, Channel: c.v.Channel})
		}
	}
	slices.SortFunc(members, func(a, b subjects.BridgeMember) int { return strings.Compare(a.Uniqueid, b.Uniqueid) })
	return members
}

func (m *Model) syncQueues(s Sync, list []*amiproto.Message, now time.Time, sum *Summary) {
	listed := map[string]*subjects.StateQueue{}
	var order []string
	get := func(name string) *subjects.StateQueue {
		q := listed[name]
		if q == nil {
			q = &subjects.StateQueue{Queue: strings.Clone(name), Members: []subjects.QueueMember{}, Callers: []subjects.QueueCaller{}}
			listed[name] = q
			order = append(order, name)
		}
		return q
	}
	for _, e := range list {
		name := e.Get("Queue")
		if name == "" {
			continue
		}
		q := get(name)
		switch e.EventName() {
		case "QueueParams":
			setIf(&q.Strategy, e, "Strategy")
			setInt(&q.Max, e, "Max")
			setInt(&q.Calls, e, "Calls")
			setInt(&q.Holdtime, e, "Holdtime")
			setInt(&q.TalkTime, e, "TalkTime")
			setInt(&q.Completed, e, "Completed")
			setInt(&q.Abandoned, e, "Abandoned")
			setInt(&q.ServiceLevel, e, "ServiceLevel")
			setIf(&q.ServiceLevelPerf, e, "ServicelevelPerf")
			setInt(&q.Weight, e, "Weight")
		case "QueueMember":
			q.Members = append(q.Members, memberFrom(e))
		case "QueueEntry":
			var qc subjects.QueueCaller
			setIf(&qc.Uniqueid, e, "Uniqueid")
			setIf(&qc.Channel, e, "Channel")
			setInt(&qc.Position, e, "Position")
			setParty(&qc.CallerID.Number, e, "CallerIDNum")
			setParty(&qc.CallerID.Name, e, "CallerIDName")
			wait, _ := strconv.Atoi(e.Get("Wait"))
			qc.Joined = ms(now.Add(-time.Duration(wait) * time.Second))
			q.Callers = append(q.Callers, qc)
		}
	}
	for _, name := range order {
		v := listed[name]
		q := m.queues[name]
		if q == nil {
			q = newQueue(name)
			m.queues[q.v.Queue] = q
			sum.Added[subjects.KindQueues]++
		}
		// The list's members and callers, but those an event touched
		// since BeginSync as the model has them, without those an event
		// removed, and with those an event added that the list lacks.
		members := make([]subjects.QueueMember, 0, len(v.Members))
		for _, lm := range v.Members {
			key := "m:" + lm.Interface
			if _, gone := q.removed[key]; gone {
				continue
			}
			if q.touched[key] >= s.gen {
				if i := slices.IndexFunc(q.v.Members, func(x subjects.QueueMember) bool { return x.Interface == lm.Interface }); i >= 0 {
					lm = q.v.Members[i]
				}
			} else {
				q.touched[key] = s.gen - 1
			}
			members = append(members, lm)
		}
		for _, mm := range q.v.Members {
			if q.touched["m:"+mm.Interface] >= s.gen && !slices.ContainsFunc(members, func(x subjects.QueueMember) bool { return x.Interface == mm.Interface }) {
				members = append(members, mm)
			}
		}
		callers := make([]subjects.QueueCaller, 0, len(v.Callers))
		for _, lc := range v.Callers {
			key := "c:" + lc.Uniqueid
			if _, gone := q.removed[key]; gone {
				continue
			}
			i := slices.IndexFunc(q.v.Callers, func(x subjects.QueueCaller) bool { return x.Uniqueid == lc.Uniqueid })
			switch {
			case i >= 0 && q.touched[key] >= s.gen:
				lc = q.v.Callers[i]
			case i >= 0 && !q.v.Callers[i].Joined.IsZero():
				lc.Joined = q.v.Callers[i].Joined // the model saw the join: more exact than Wait
			}
			if q.touched[key] < s.gen {
				q.touched[key] = s.gen - 1
			}
			callers = append(callers, lc)
		}
		for _, mc := range q.v.Callers {
			if q.touched["c:"+mc.Uniqueid] >= s.gen && !slices.ContainsFunc(callers, func(x subjects.QueueCaller) bool { return x.Uniqueid == mc.Uniqueid }) {
				callers = append(callers, mc)
			}
		}
		slices.SortStableFunc(callers, func(a, b subjects.QueueCaller) int { return a.Position - b.Position })
		// Forget what neither the list nor a recent event has.
		for key, gen := range q.touched {
			if gen >= s.gen {
				continue
			}
			kind, id, _ := strings.Cut(key, ":")
			if kind == "m" && !slices.ContainsFunc(members, func(x subjects.QueueMember) bool { return x.Interface == id }) ||
				kind == "c" && !slices.ContainsFunc(callers, func(x subjects.QueueCaller) bool { return x.Uniqueid == id }) {
				delete(q.touched, key)
			}
		}
		v.Members, v.Callers, v.Calls = members, callers, len(callers)
		q.v = *v
		m.markDirty(subjects.KindQueues, v.Queue)
	}
	for name, q := range m.queues {
		if _, ok := listed[name]; !ok && !q.recent(s.gen) {
			delete(m.queues, name)
			m.markDirty(subjects.KindQueues, name)
			sum.Removed[subjects.KindQueues]++
		}
	}
}

func (m *Model) syncDevices(s Sync, list []*amiproto.Message, sum *Summary) {
	seen := make(map[string]struct{}, len(list))
	for _, e := range list {
		name := e.Get("Device")
		if name == "" {
			continue
		}
		seen[name] = struct{}{}
		d := m.devices[name]
		if d != nil && d.touched >= s.gen || d == nil && m.gone(subjects.KindDevices, name) {
			continue
		}
		if d == nil {
			d = &device{v: subjects.StateDevice{Device: strings.Clone(name)}, touched: s.gen - 1}
			m.devices[d.v.Device] = d
			sum.Added[subjects.KindDevices]++
		}
		if set(&d.v.State, e.Get("State")) {
			m.markDirty(subjects.KindDevices, d.v.Device)
		}
	}
	for name, d := range m.devices {
		if _, ok := seen[name]; !ok && d.touched < s.gen {
			delete(m.devices, name)
			m.markDirty(subjects.KindDevices, name)
			sum.Removed[subjects.KindDevices]++
		}
	}
}

// Adopt hands the model the calls in progress found in the bucket when
// this process becomes the writer (start, answer, parties the lists
// cannot tell). A call whose channels are all gone is closed at once
// with EndSeen false. Calls adopted before the first reconciliation of
// the channels wait for it: until then the model cannot tell which are
// gone.
func (m *Model) Adopt(calls []subjects.CallRecord, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range calls {
		if !m.synced {
			m.pending = append(m.pending, r)
			continue
		}
		m.adopt(r, now)
	}
}

func (m *Model) adopt(r subjects.CallRecord, now time.Time) {
	if r.Linkedid == "" {
		return
	}
	if cl := m.calls[r.Linkedid]; cl != nil {
		cl.merge(r, now)
		m.markDirty(subjects.KindCalls, r.Linkedid)
		return
	}
	if _, ok := m.closed.get(r.Linkedid); ok {
		return // closed here already: its record is out or waiting for Flush
	}
	cl := &call{rec: r}
	cl.rec.Server = m.server
	cl.rec.Channels = slices.Clone(r.Channels)
	cl.rec.Callees = slices.Clone(r.Callees)
	cl.rec.Bridges = slices.Clone(r.Bridges)
	cl.rec.Transfers = slices.Clone(r.Transfers)
	cl.rec.Cdr = slices.Clone(r.Cdr)
	if r.Queue != nil {
		q := *r.Queue
		cl.rec.Queue = &q
	}
	if !r.Answer.IsZero() {
		cl.spans = []span{{r.Answer, now}}
	}
	m.finish(cl, now, false)
}

// merge takes from an adopted record what the model, which may have seen
// the call only from the lists, lacks.
func (cl *call) merge(r subjects.CallRecord, now time.Time) {
	if !r.Start.IsZero() && r.Start.Before(cl.rec.Start) {
		cl.rec.Start = r.Start
	}
	if !r.Answer.IsZero() && (cl.rec.Answer.IsZero() || r.Answer.Before(cl.rec.Answer)) {
		// Answered before the model saw it: billable from then until the
		// model's own answer (a listed channel is up from the sync on).
		to := cl.rec.Answer
		if to.IsZero() {
			to = now
		}
		cl.spans = append(cl.spans, span{r.Answer, to})
		cl.rec.Answer = r.Answer
	}
	if cl.rec.Caller.Number == "" && cl.rec.Caller.Name == "" {
		cl.rec.Caller = r.Caller
	}
	for _, p := range r.Callees {
		if !slices.ContainsFunc(cl.rec.Callees, func(x subjects.CallParty) bool { return x.Channel == p.Channel }) {
			cl.rec.Callees = append(cl.rec.Callees, p)
		}
	}
	for _, ch := range r.Channels {
		if !slices.Contains(cl.rec.Channels, ch) {
			cl.rec.Channels = append(cl.rec.Channels, ch)
		}
	}
	for _, b := range r.Bridges {
		if !slices.Contains(cl.rec.Bridges, b) {
			cl.rec.Bridges = append(cl.rec.Bridges, b)
		}
	}
	if cl.rec.Queue == nil && r.Queue != nil {
		q := *r.Queue
		cl.rec.Queue = &q
	}
	if len(cl.rec.Transfers) == 0 {
		cl.rec.Transfers = slices.Clone(r.Transfers)
	}
}

package callstate

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

type bridge struct {
	v       subjects.StateBridge
	touched uint64
}

// queue is one queue. A sync merges its members and callers one by one:
// touched holds the gen at which an event last changed each live one
// ("m:"+Interface, "c:"+Uniqueid), removed those an event removed during
// the sync under way.
type queue struct {
	v       subjects.StateQueue
	touched map[string]uint64
	removed map[string]struct{}
}

func newQueue(name string) *queue {
	return &queue{
		v:       subjects.StateQueue{Queue: strings.Clone(name), Members: []subjects.QueueMember{}, Callers: []subjects.QueueCaller{}},
		touched: map[string]uint64{},
		removed: map[string]struct{}{},
	}
}

// recent reports whether an event touched one of the queue's members or
// callers since the sync of generation gen began.
func (q *queue) recent(gen uint64) bool {
	for _, g := range q.touched {
		if g >= gen {
			return true
		}
	}
	return false
}

func (m *Model) touchPart(q *queue, key string) {
	q.touched[key] = m.gen
	delete(q.removed, key)
}

func (m *Model) removePart(q *queue, key string) {
	delete(q.touched, key)
	if m.syncing {
		q.removed[key] = struct{}{}
	}
}

type device struct {
	v       subjects.StateDevice
	touched uint64
}

func (b *bridge) remove(uid string) bool {
	i := slices.IndexFunc(b.v.Members, func(x subjects.BridgeMember) bool { return x.Uniqueid == uid })
	if i < 0 {
		return false
	}
	b.v.Members = slices.Delete(b.v.Members, i, i+1)
	return true
}

func (b *bridge) add(c *channel) bool {
	for i, x := range b.v.Members {
		if x.Uniqueid == c.v.Uniqueid {
			if x.Channel == c.v.Channel {
				return false
			}
			b.v.Members[i].Channel = c.v.Channel
			return true
		}
	}
	b.v.Members = append(b.v.Members, subjects.BridgeMember{Uniqueid: c.v.Uniqueid, Channel: c.v.Channel})
	return true
}

// bridgeSnap finds (or adds) the bridge an event's snapshot names, with
// header prefix p ("" or "To", "From" for BridgeMerge), and updates it.
func (m *Model) bridgeSnap(e *amiproto.Message, p string, now time.Time) *bridge {
	id := e.Get(p + "BridgeUniqueid")
	if id == "" {
		return nil
	}
	b := m.bridges[id]
	ch := false
	if b == nil {
		b = &bridge{v: subjects.StateBridge{BridgeUniqueid: strings.Clone(id), Created: ms(now), Members: []subjects.BridgeMember{}}}
		m.bridges[b.v.BridgeUniqueid] = b
		ch = true
	}
	ch = setIf(&b.v.Type, e, p+"BridgeType") || ch
	ch = setIf(&b.v.Technology, e, p+"BridgeTechnology") || ch
	ch = setParty(&b.v.Creator, e, p+"BridgeCreator") || ch
	ch = setParty(&b.v.Name, e, p+"BridgeName") || ch
	b.touched = m.gen
	if ch {
		m.markDirty(subjects.KindBridges, b.v.BridgeUniqueid)
	}
	return b
}

func (m *Model) onBridgeCreate(e *amiproto.Message, now time.Time) { m.bridgeSnap(e, "", now) }

func (m *Model) onBridgeEnter(e *amiproto.Message, now time.Time) {
	b := m.bridgeSnap(e, "", now)
	c := m.snapshot(e, kSelf, now, true)
	if b == nil || c == nil {
		return
	}
	if b.add(c) {
		m.markDirty(subjects.KindBridges, b.v.BridgeUniqueid)
	}
	if set(&c.v.Bridge, b.v.BridgeUniqueid) {
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
	}
	if cl := m.calls[c.v.Linkedid]; cl != nil {
		cl.addBridge(m, b.v.BridgeUniqueid)
	}
}

func (m *Model) onBridgeLeave(e *amiproto.Message, now time.Time) {
	b := m.bridgeSnap(e, "", now)
	c := m.snapshot(e, kSelf, now, true)
	if b != nil && c != nil && b.remove(c.v.Uniqueid) {
		m.markDirty(subjects.KindBridges, b.v.BridgeUniqueid)
	}
	if c != nil && b != nil && c.v.Bridge == b.v.BridgeUniqueid {
		c.v.Bridge = ""
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
	}
	// Leaving a bridge ends the channel's CDR; a new one starts if it goes
	// on in the dialplan.
	if c != nil {
		if cl := m.calls[c.v.Linkedid]; cl != nil {
			cl.closePeriod(c, now, 0, false)
		}
	}
}

func (m *Model) onBridgeDestroy(e *amiproto.Message, now time.Time) {
	id := e.Get("BridgeUniqueid")
	b := m.bridges[id]
	if b == nil {
		if id != "" && m.syncing {
			m.tomb[objKey{subjects.KindBridges, strings.Clone(id)}] = struct{}{}
		}
		return
	}
	for _, x := range b.v.Members {
		if c := m.channels[x.Uniqueid]; c != nil && c.v.Bridge == id {
			c.v.Bridge = ""
			m.markDirty(subjects.KindChannels, c.v.Uniqueid)
		}
	}
	delete(m.bridges, id)
	m.removed(subjects.KindBridges, b.v.BridgeUniqueid)
}

// onBridgeMerge moves the members of the From bridge into the To bridge;
// Asterisk sends no BridgeLeave/BridgeEnter for them.
func (m *Model) onBridgeMerge(e *amiproto.Message, now time.Time) {
	to := m.bridgeSnap(e, "To", now)
	from := m.bridges[e.Get("FromBridgeUniqueid")]
	if to == nil || from == nil {
		return
	}
	for _, x := range from.v.Members {
		c := m.channels[x.Uniqueid]
		if c == nil {
			continue
		}
		to.add(c)
		c.v.Bridge = to.v.BridgeUniqueid
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
		if cl := m.calls[c.v.Linkedid]; cl != nil {
			cl.addBridge(m, to.v.BridgeUniqueid)
		}
	}
	from.v.Members = from.v.Members[:0]
	from.touched = m.gen
	m.markDirty(subjects.KindBridges, from.v.BridgeUniqueid)
	m.markDirty(subjects.KindBridges, to.v.BridgeUniqueid)
}

// getQueue finds or adds the queue an event names.
func (m *Model) getQueue(e *amiproto.Message) *queue {
	name := e.Get("Queue")
	if name == "" {
		return nil
	}
	q := m.queues[name]
	if q == nil {
		q = newQueue(name)
		m.queues[q.v.Queue] = q
	}
	m.markDirty(subjects.KindQueues, q.v.Queue)
	return q
}

func (m *Model) onQueueCallerJoin(e *amiproto.Message, now time.Time) {
	q := m.getQueue(e)
	c := m.snapshot(e, kSelf, now, true)
	if q == nil || c == nil {
		return
	}
	pos, _ := strconv.Atoi(e.Get("Position"))
	setInt(&q.v.Calls, e, "Count")
	m.touchPart(q, "c:"+c.v.Uniqueid)
	q.v.Callers = slices.DeleteFunc(q.v.Callers, func(x subjects.QueueCaller) bool { return x.Uniqueid == c.v.Uniqueid })
	q.v.Callers = append(q.v.Callers, subjects.QueueCaller{
		Uniqueid: c.v.Uniqueid, Channel: c.v.Channel, Position: pos, CallerID: c.v.CallerID, Joined: ms(now)})
	slices.SortStableFunc(q.v.Callers, func(a, b subjects.QueueCaller) int { return a.Position - b.Position })
	if cl := m.calls[c.v.Linkedid]; cl != nil {
		cl.rec.Queue = &subjects.CallQueue{Name: q.v.Queue}
		cl.joined = now
		m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
	}
}

// onQueueCallerLeave removes the caller; Asterisk moves the callers behind
// it one place up without telling each.
func (m *Model) onQueueCallerLeave(e *amiproto.Message, now time.Time) {
	q := m.getQueue(e)
	c := m.snapshot(e, kSelf, now, true)
	if q == nil {
		return
	}
	setInt(&q.v.Calls, e, "Count")
	uid := e.Get("Uniqueid")
	m.removePart(q, "c:"+uid)
	i := slices.IndexFunc(q.v.Callers, func(x subjects.QueueCaller) bool { return x.Uniqueid == uid })
	if i >= 0 {
		pos := q.v.Callers[i].Position
		q.v.Callers = slices.Delete(q.v.Callers, i, i+1)
		for j := range q.v.Callers {
			if q.v.Callers[j].Position > pos {
				q.v.Callers[j].Position--
			}
		}
	}
	if c == nil {
		return
	}
	if cl := m.calls[c.v.Linkedid]; cl != nil && cl.rec.Queue != nil && cl.rec.Queue.Agent == "" && cl.rec.Queue.WaitS == 0 && !cl.joined.IsZero() {
		cl.rec.Queue.WaitS = int(now.Sub(cl.joined) / time.Second)
		m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
	}
}

func (m *Model) onQueueCallerAbandon(e *amiproto.Message, now time.Time) {
	c := m.snapshot(e, kSelf, now, true)
	if c == nil {
		return
	}
	if cl := m.calls[c.v.Linkedid]; cl != nil && cl.rec.Queue != nil {
		setInt(&cl.rec.Queue.WaitS, e, "HoldTime")
		m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
	}
}

func (m *Model) onAgentSnapshots(e *amiproto.Message, now time.Time) {
	m.snapshot(e, kSelf, now, true)
	m.snapshot(e, kDest, now, true)
}

// onAgentConnect: the agent answered the caller after HoldTime seconds.
func (m *Model) onAgentConnect(e *amiproto.Message, now time.Time) {
	c := m.snapshot(e, kSelf, now, true)
	m.snapshot(e, kDest, now, true)
	if c == nil {
		return
	}
	cl := m.calls[c.v.Linkedid]
	if cl == nil {
		return
	}
	agent := e.Get("MemberName")
	if agent == "" {
		agent = e.Get("Interface")
	}
	hold, _ := strconv.Atoi(e.Get("HoldTime"))
	cl.rec.Queue = &subjects.CallQueue{Name: strings.Clone(e.Get("Queue")), WaitS: hold, Agent: strings.Clone(agent)}
	m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
}

// memberFrom reads a queue member from a QueueMember* event or a
// QueueStatus QueueMember entry (Location and Name there, Interface and
// MemberName in events).
func memberFrom(e *amiproto.Message) subjects.QueueMember {
	var qm subjects.QueueMember
	qm.Interface = e.Get("Interface")
	if qm.Interface == "" {
		qm.Interface = e.Get("Location")
	}
	qm.Name = e.Get("MemberName")
	if qm.Name == "" {
		qm.Name = e.Get("Name")
	}
	qm.Interface, qm.Name = strings.Clone(qm.Interface), strings.Clone(qm.Name)
	setIf(&qm.StateInterface, e, "StateInterface")
	setIf(&qm.Membership, e, "Membership")
	setInt(&qm.Penalty, e, "Penalty")
	setInt(&qm.CallsTaken, e, "CallsTaken")
	qm.LastCall, _ = strconv.ParseInt(e.Get("LastCall"), 10, 64)
	qm.InCall = e.Get("InCall") == "1"
	setInt(&qm.Status, e, "Status")
	qm.Paused = e.Get("Paused") == "1"
	setIf(&qm.PausedReason, e, "PausedReason")
	return qm
}

func (m *Model) onQueueMember(e *amiproto.Message, now time.Time) {
	q := m.getQueue(e)
	if q == nil {
		return
	}
	qm := memberFrom(e)
	m.touchPart(q, "m:"+qm.Interface)
	for i := range q.v.Members {
		if q.v.Members[i].Interface == qm.Interface {
			// A Pause event carries the member's every field in 13 and
			// later; keep the old ones an older version leaves out.
			old := q.v.Members[i]
			if !e.Has("CallsTaken") {
				qm.CallsTaken, qm.LastCall, qm.InCall, qm.Status = old.CallsTaken, old.LastCall, old.InCall, old.Status
			}
			if !e.Has("Penalty") {
				qm.Penalty = old.Penalty
			}
			if qm.Name == "" {
				qm.Name = old.Name
			}
			q.v.Members[i] = qm
			return
		}
	}
	q.v.Members = append(q.v.Members, qm)
}

func (m *Model) onQueueMemberRemoved(e *amiproto.Message, now time.Time) {
	q := m.getQueue(e)
	if q == nil {
		return
	}
	iface := e.Get("Interface")
	m.removePart(q, "m:"+iface)
	q.v.Members = slices.DeleteFunc(q.v.Members, func(x subjects.QueueMember) bool { return x.Interface == iface })
}

func (m *Model) onDeviceState(e *amiproto.Message, now time.Time) {
	name := e.Get("Device")
	if name == "" {
		return
	}
	d := m.devices[name]
	if d == nil {
		d = &device{v: subjects.StateDevice{Device: strings.Clone(name)}}
		m.devices[d.v.Device] = d
	}
	d.touched = m.gen
	if set(&d.v.State, e.Get("State")) {
		m.markDirty(subjects.KindDevices, d.v.Device)
	}
}

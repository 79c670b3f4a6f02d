package amitest

import (
	"strconv"
	"strings"
	"time"
)

// The list actions answered from the live model. Each takes the model's
// lock for its whole answer, after moving the events held for its session
// (stall.go) in front of it: the answer then shows exactly the state the
// events before its Response line built, and every later event follows
// its completing event, as on Asterisk, which writes a list response
// between two events of the session.

// lockForList locks the live model for one list answer of w's session.
// The caller unlocks s.live.mu.
func (w *ResponseWriter) lockForList() *liveModel {
	m := &w.ss.srv.live
	m.mu.Lock()
	w.ss.releaseHeldEvents()
	return m
}

func serveCoreShowChannels(w *ResponseWriter, _ *Request) {
	srv := w.ss.srv
	m := w.lockForList()
	defer m.mu.Unlock()
	w.Success("EventList", "start", "Message", "Channels will follow")
	now := time.Now()
	n := 0
	item := func(c *liveChan) {
		w.buf = appendField(w.buf, "Event", "CoreShowChannel")
		w.appendActionID()
		w.buf = appendLiveSnapshot(w.buf, c, false)
		w.buf = appendField(w.buf, "Application", c.app)
		w.buf = appendField(w.buf, "ApplicationData", c.appData)
		w.buf = appendField(w.buf, "Duration", hms(now.Sub(c.created)))
		w.buf = appendField(w.buf, "BridgeId", c.bridge)
		w.end()
		n++
	}
	srv.liveChannels(func(c fakeChan) bool {
		item(srv.asLive(c))
		w.maybeFlush()
		return !w.dead
	})
	for _, c := range m.channels() {
		item(c)
	}
	w.listComplete("CoreShowChannelsComplete", n)
}

func serveStatus(w *ResponseWriter, r *Request) {
	srv := w.ss.srv
	var vars []string
	if v := r.Get("Variables"); v != "" {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				vars = append(vars, name)
			}
		}
	}
	m := w.lockForList()
	defer m.mu.Unlock()
	now := time.Now()
	if name := r.Get("Channel"); name != "" {
		c, ok := srv.lookupChannel(name)
		lc := m.chanByName(name)
		if !ok && lc == nil {
			w.Error("No such channel")
			return
		}
		w.Success("EventList", "start", "Message", "Channel status will follow")
		if ok {
			lc = srv.asLive(c)
		}
		w.buf = srv.appendLiveStatus(w.buf, lc, w, vars, now)
		w.listComplete("StatusComplete", 1, "Items", "1")
		return
	}
	w.Success("EventList", "start", "Message", "Channel status will follow")
	n := 0
	srv.liveChannels(func(c fakeChan) bool {
		w.buf = srv.appendLiveStatus(w.buf, srv.asLive(c), w, vars, now)
		n++
		w.maybeFlush()
		return !w.dead
	})
	for _, c := range m.channels() {
		w.buf = srv.appendLiveStatus(w.buf, c, w, vars, now)
		n++
	}
	w.listComplete("StatusComplete", n, "Items", strconv.Itoa(n))
}

// appendLiveStatus appends one Status list item; its ActionID is the
// last line, after the requested Variable lines. A variable that is not
// one of the channelvars is what Setvar gave the channel, or "(null)".
func (s *Server) appendLiveStatus(b []byte, c *liveChan, w *ResponseWriter, vars []string, now time.Time) []byte {
	b = appendField(b, "Event", "Status")
	b = appendField(b, "Privilege", "Call")
	b = appendLiveSnapshot(b, c, s.profile == Asterisk13)
	tech, _, _ := strings.Cut(c.name, "/")
	b = appendField(b, "Type", tech)
	b = appendField(b, "DNID", "")
	b = appendField(b, "EffectiveConnectedLineNum", c.conNum)
	b = appendField(b, "EffectiveConnectedLineName", c.conName)
	b = appendField(b, "TimeToHangup", "0")
	b = appendField(b, "BridgeID", c.bridge)
	b = appendField(b, "Application", c.app)
	b = appendField(b, "Data", c.appData)
	b = appendField(b, "Nativeformats", "(slin)")
	b = appendField(b, "Readformat", "slin")
	b = appendField(b, "Readtrans", "")
	b = appendField(b, "Writeformat", "slin")
	b = appendField(b, "Writetrans", "")
	b = appendField(b, "Callgroup", "0")
	b = appendField(b, "Pickupgroup", "0")
	b = appendInt(appendKey(b, "Seconds"), int(now.Sub(c.created)/time.Second))
	b = append(b, '\r', '\n')
	for _, v := range vars {
		val := "(null)"
		switch {
		case v == "CHANNEL":
			val = c.name
		default:
			found := false
			for _, cv := range c.chanVars {
				if k, x, _ := strings.Cut(cv, "="); k == v && x != "" {
					val, found = x, true
				}
			}
			if x, ok := s.channelVar(c.name, v); ok && !found {
				val = x
			}
		}
		b = appendField(b, "Variable", v+"="+val)
	}
	if w.hasID {
		b = appendField(b, "ActionID", w.actionID)
	}
	return append(b, '\r', '\n')
}

// serveBridgeList answers as manager_bridges.c does: a BridgeListItem
// (ActionID second) per bridge whose technology the BridgeType filter
// takes.
func serveBridgeList(w *ResponseWriter, r *Request) {
	m := w.lockForList()
	defer m.mu.Unlock()
	w.Success("EventList", "start", "Message", "Bridge listing will follow")
	filter := r.Get("BridgeType")
	n := 0
	for _, b := range m.bridgeList() {
		if filter != "" && filter != b.tech {
			continue
		}
		w.buf = appendField(w.buf, "Event", "BridgeListItem")
		w.appendActionID()
		w.buf = appendBridgeState(w.buf, b)
		w.end()
		n++
	}
	w.listComplete("BridgeListComplete", n)
}

// serveBridgeInfo answers as manager_bridges.c does, the same on 13 and
// 22: a BridgeInfoChannel per member, then BridgeInfoComplete carrying
// the bridge's own fields.
func serveBridgeInfo(w *ResponseWriter, r *Request) {
	id := r.Get("BridgeUniqueid")
	if id == "" {
		w.Error("BridgeUniqueid must be provided")
		return
	}
	m := w.lockForList()
	defer m.mu.Unlock()
	b := m.bridges[id]
	if b == nil {
		w.Error("Specified BridgeUniqueid not found")
		return
	}
	w.Success("EventList", "start", "Message", "Bridge channel listing will follow")
	n := 0
	for _, uid := range b.members {
		c := m.chans[uid]
		if c == nil {
			continue
		}
		w.buf = appendField(w.buf, "Event", "BridgeInfoChannel")
		w.appendActionID()
		w.buf = appendLiveSnapshot(w.buf, c, false)
		w.end()
		n++
	}
	state := appendBridgeState(nil, b)
	var kv []string
	for _, l := range strings.Split(strings.TrimSuffix(string(state), "\r\n"), "\r\n") {
		k, v, _ := strings.Cut(l, ": ")
		kv = append(kv, k, v)
	}
	w.listComplete("BridgeInfoComplete", n, kv...)
}

// serveDeviceStateList lists the cached device states, as
// devicestate.c's action_devicestatelist does (capture 06c): the queue's
// devices; never a Local channel's, which is published not cachable.
func serveDeviceStateList(w *ResponseWriter, _ *Request) {
	m := w.lockForList()
	defer m.mu.Unlock()
	w.Success("EventList", "start", "Message", "Device State Changes will follow")
	n := 0
	for _, d := range m.devSeq {
		w.buf = appendField(w.buf, "Event", "DeviceStateChange")
		w.appendActionID()
		w.buf = appendField(w.buf, "Device", d)
		w.buf = appendField(w.buf, "State", m.devices[d])
		w.end()
		n++
	}
	w.listComplete("DeviceStateListComplete", n)
}

// serveQueueStatus answers as app_queue does: QueueParams for each queue
// the Queue filter takes (case-insensitive), QueueMember for each member
// whose interface or name equals the Member filter, QueueEntry for each
// waiting caller, ActionID last in each item, and QueueStatusComplete.
// An unknown queue gives an empty list.
func serveQueueStatus(w *ResponseWriter, r *Request) {
	srv := w.ss.srv
	m := w.lockForList()
	defer m.mu.Unlock()
	w.Success("EventList", "start", "Message", "Queue status will follow")
	n := 0
	q := &m.queue
	if f := r.Get("Queue"); f == "" || strings.EqualFold(f, q.name) {
		// The shares of calls answered within the service level (0 s).
		sl := "0.0"
		if q.completed > 0 {
			sl = strconv.FormatFloat(100*float64(q.completedInSL)/float64(q.completed), 'f', 1, 64)
		}
		w.fields("Event", "QueueParams", "Queue", q.name, "Max", "0", "Strategy", q.strategy,
			"Calls", strconv.Itoa(len(q.callers)), "Holdtime", strconv.Itoa(q.holdtime),
			"TalkTime", strconv.Itoa(q.talktime), "Completed", strconv.Itoa(q.completed),
			"Abandoned", strconv.Itoa(q.abandoned), "ServiceLevel", "0", "ServicelevelPerf", sl)
		if srv.profile == Asterisk22 {
			sl2 := "0.0"
			if q.completed+q.abandoned > 0 {
				sl2 = strconv.FormatFloat(100*float64(q.completedInSL)/float64(q.completed+q.abandoned), 'f', 1, 64)
			}
			w.buf = appendField(w.buf, "ServicelevelPerf2", sl2)
		}
		w.buf = appendField(w.buf, "Weight", "0")
		w.appendActionID()
		w.end()
		n++
		member := r.Get("Member")
		login := strconv.FormatInt(q.loginTime, 10)
		for _, mb := range q.members {
			if member != "" && member != mb.location && member != mb.name {
				continue
			}
			w.fields("Event", "QueueMember", "Queue", q.name, "Name", mb.name, "Location", mb.location,
				"StateInterface", mb.location, "Membership", "static", "Penalty", mb.penalty,
				"CallsTaken", strconv.Itoa(mb.callsTaken), "LastCall", strconv.FormatInt(mb.lastCall, 10))
			if srv.profile == Asterisk22 {
				w.buf = appendField(w.buf, "LastPause", strconv.FormatInt(mb.lastPause, 10))
				w.buf = appendField(w.buf, "LoginTime", login)
			}
			w.fields("InCall", boolDigit(mb.inCall), "Status", strconv.Itoa(mb.status),
				"Paused", boolDigit(mb.paused), "PausedReason", mb.pausedReason)
			if srv.profile == Asterisk22 {
				w.buf = appendField(w.buf, "Wrapuptime", mb.wrapupTime)
			}
			w.appendActionID()
			w.end()
			n++
		}
		now := time.Now()
		for i, c := range q.callers {
			lc := m.chans[c.uniqueid]
			if lc == nil {
				continue
			}
			w.fields("Event", "QueueEntry", "Queue", q.name, "Position", strconv.Itoa(i+1),
				"Channel", lc.name, "Uniqueid", lc.uniqueid,
				"CallerIDNum", orValue(lc.cidNum, "unknown"), "CallerIDName", orValue(lc.cidName, "unknown"),
				"ConnectedLineNum", orValue(lc.conNum, "unknown"), "ConnectedLineName", orValue(lc.conName, "unknown"),
				"Wait", strconv.FormatInt(now.Unix()-c.joined.Unix(), 10), "Priority", "0")
			w.appendActionID()
			w.end()
			n++
		}
	}
	w.listComplete("QueueStatusComplete", n)
}

// orValue is v, or def for an unset caller ID ("<unknown>" in a snapshot).
func orValue(v, def string) string {
	if v == "" || v == "<unknown>" {
		return def
	}
	return v
}

// serveQueueSummary answers one QueueSummary item per queue the Queue
// filter takes, ActionID last, then QueueSummaryComplete.
func serveQueueSummary(w *ResponseWriter, r *Request) {
	m := w.lockForList()
	defer m.mu.Unlock()
	w.Success("EventList", "start", "Message", "Queue summary will follow")
	n := 0
	q := &m.queue
	if f := r.Get("Queue"); f == "" || strings.EqualFold(f, q.name) {
		loggedIn, available := 0, 0
		for _, mb := range q.members {
			// app_queue (13 and 22): a member is logged in unless its
			// device is invalid (4) or unavailable (5), and available
			// when its device is not in use (1) or unknown (0) and it is
			// not paused; InCall plays no part.
			if mb.status == 4 || mb.status == 5 {
				continue
			}
			loggedIn++
			if !mb.paused && (mb.status == 1 || mb.status == 0) {
				available++
			}
		}
		longest := int64(0)
		now := time.Now()
		for _, c := range q.callers {
			longest = max(longest, now.Unix()-c.joined.Unix())
		}
		w.buf = appendField(w.buf, "Event", "QueueSummary")
		w.buf = appendField(w.buf, "Queue", q.name)
		w.buf = appendField(w.buf, "LoggedIn", strconv.Itoa(loggedIn))
		w.buf = appendField(w.buf, "Available", strconv.Itoa(available))
		w.buf = appendField(w.buf, "Callers", strconv.Itoa(len(q.callers)))
		w.buf = appendField(w.buf, "HoldTime", strconv.Itoa(q.holdtime))
		w.buf = appendField(w.buf, "TalkTime", strconv.Itoa(q.talktime))
		w.buf = appendField(w.buf, "LongestHoldTime", strconv.FormatInt(longest, 10))
		w.appendActionID()
		w.end()
		n++
	}
	w.listComplete("QueueSummaryComplete", n)
}

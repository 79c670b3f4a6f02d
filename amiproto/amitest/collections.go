package amitest

import (
	"strconv"
	"strings"
)

// The fixed PBX configuration the queue and dialplan actions list: the
// queue, members and dialplan of the Asterisk that recorded capture 06c.

// queueMember is a static member of the fake queue, with the state it had
// in capture 06c.
type queueMember struct {
	name, location string
	inCall         bool
	status         int // ast_device_state: 1 not in use, 2 in use
}

// fakeQueue is the capture's one queue, "support", with no callers.
var fakeQueue = struct {
	name, strategy string
	members        []queueMember
}{
	name:     "support",
	strategy: "ringall",
	members: []queueMember{
		{name: "Agent One", location: "Local/agent@test", inCall: true, status: 2},
		{name: "Busy Agent", location: "Local/busy@test", status: 1},
	},
}

// serveQueueStatus answers as app_queue does: QueueParams for each queue
// the Queue filter takes (case-insensitive), QueueMember for each member
// whose interface or name equals the Member filter, ActionID last in each
// item, and QueueStatusComplete. An unknown queue gives an empty list.
func serveQueueStatus(w *ResponseWriter, r *Request) {
	srv := w.ss.srv
	w.Success("EventList", "start", "Message", "Queue status will follow")
	n := 0
	q := &fakeQueue
	if f := r.Get("Queue"); f == "" || strings.EqualFold(f, q.name) {
		w.fields("Event", "QueueParams", "Queue", q.name, "Max", "0", "Strategy", q.strategy,
			"Calls", "0", "Holdtime", "0", "TalkTime", "0", "Completed", "0", "Abandoned", "0",
			"ServiceLevel", "0", "ServicelevelPerf", "0.0")
		if srv.profile == Asterisk22 {
			w.buf = appendField(w.buf, "ServicelevelPerf2", "0.0")
		}
		w.buf = appendField(w.buf, "Weight", "0")
		w.appendActionID()
		w.end()
		n++
		member := r.Get("Member")
		login := strconv.FormatInt(srv.started.Unix(), 10)
		for _, m := range q.members {
			if member != "" && member != m.location && member != m.name {
				continue
			}
			w.fields("Event", "QueueMember", "Queue", q.name, "Name", m.name, "Location", m.location,
				"StateInterface", m.location, "Membership", "static", "Penalty", "0",
				"CallsTaken", "0", "LastCall", "0")
			if srv.profile == Asterisk22 {
				w.buf = appendField(w.buf, "LastPause", "0")
				w.buf = appendField(w.buf, "LoginTime", login)
			}
			w.fields("InCall", boolDigit(m.inCall), "Status", strconv.Itoa(m.status), "Paused", "0", "PausedReason", "")
			if srv.profile == Asterisk22 {
				w.buf = appendField(w.buf, "Wrapuptime", "0")
			}
			w.appendActionID()
			w.end()
			n++
		}
	}
	w.listComplete("QueueStatusComplete", n)
}

// serveQueueSummary answers one QueueSummary item per queue the Queue
// filter takes, ActionID last, then QueueSummaryComplete.
func serveQueueSummary(w *ResponseWriter, r *Request) {
	w.Success("EventList", "start", "Message", "Queue summary will follow")
	n := 0
	q := &fakeQueue
	if f := r.Get("Queue"); f == "" || strings.EqualFold(f, q.name) {
		loggedIn, available := 0, 0
		for _, m := range q.members {
			loggedIn++
			if m.status == 1 && !m.inCall {
				available++
			}
		}
		w.buf = appendField(w.buf, "Event", "QueueSummary")
		w.buf = appendField(w.buf, "Queue", q.name)
		w.buf = appendField(w.buf, "LoggedIn", strconv.Itoa(loggedIn))
		w.buf = appendField(w.buf, "Available", strconv.Itoa(available))
		w.buf = appendField(w.buf, "Callers", "0")
		w.buf = appendField(w.buf, "HoldTime", "0")
		w.buf = appendField(w.buf, "TalkTime", "0")
		w.buf = appendField(w.buf, "LongestHoldTime", "0")
		w.appendActionID()
		w.end()
		n++
	}
	w.listComplete("QueueSummaryComplete", n)
}

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// serveBridgeList answers with no bridges: the fake's calls are Local
// channels that never stay bridged, and capture 06c's list was empty too.
func serveBridgeList(w *ResponseWriter, _ *Request) {
	w.Success("EventList", "start", "Message", "Bridge listing will follow")
	w.listComplete("BridgeListComplete", 0)
}

// dialplanEntry is one priority of the fake dialplan.
type dialplanEntry struct {
	context, exten, priority, app, data, registrar string
}

// dialplan22 is capture 06c's ShowDialPlan of Asterisk 22, in its order.
// Asterisk 13 has parkedcalls extension 700 (Park) in front of it.
var dialplan22 = func() []dialplanEntry {
	var d []dialplanEntry
	for i := 701; i <= 720; i++ {
		n := strconv.Itoa(i)
		d = append(d, dialplanEntry{"parkedcalls", n, "1", "ParkedCall", "default," + n, "res_parking/default"})
	}
	// context, extension: application(data) per priority.
	for _, e := range [][]string{
		{"agent", "Answer", "", "Wait", "3", "Hangup", ""},
		{"burst", "Answer", "", "Wait", "1", "Hangup", ""},
		{"busy", "Busy", "2"},
		{"dial", "NoOp", "dialing echo", "Set", "FOO=dialer", "Dial", "Local/echo@test,10", "Hangup", ""},
		{"echo", "Answer", "", "Wait", "2", "Hangup", ""},
		{"h", "NoOp", "hangup handler ${CHANNEL}"},
		{"long", "Answer", "", "Wait", "30", "Hangup", ""},
		{"noanswer", "Wait", "30"},
		{"play", "Answer", "", "Playback", "test-tone", "Hangup", ""},
		{"queue", "Answer", "", "Queue", "support,,,,8", "Hangup", ""},
		{"realecho", "Answer", "", "Set", "TIMEOUT(absolute)=3", "Echo", "", "Hangup", ""},
		{"vars", "Answer", "", "Set", "FOO=foo-value", "Set", "BAR=bar: with colon", "Set", "__INHERITED=yes",
			"UserEvent", "TestEvent,Header1: value1,Header2: value with: colon,Header1: dup",
			"Verbose", "1,vars extension ran on ${CHANNEL}", "Wait", "1", "Hangup", ""},
	} {
		for i := 1; i+1 < len(e); i += 2 {
			d = append(d, dialplanEntry{"test", e[0], strconv.Itoa((i + 1) / 2), e[i], e[i+1], "pbx_config"})
		}
	}
	return d
}()

var dialplan13 = append([]dialplanEntry{{"parkedcalls", "700", "1", "Park", "", "res_parking"}}, dialplan22...)

// serveShowDialPlan answers as pbx.c's manager_show_dialplan: one
// ListDialplan per priority the Context and Extension filters take
// (ActionID second), then ShowDialPlanComplete with the counts. A filter
// that takes nothing gives an error and no list, as in Asterisk.
func serveShowDialPlan(w *ResponseWriter, r *Request) {
	plan := dialplan22
	if w.ss.srv.profile == Asterisk13 {
		plan = dialplan13
	}
	context, exten := r.Get("Context"), r.Get("Extension")
	var items, extens, contexts int
	contextSeen := false
	lastContext, lastExten := "", ""
	for _, e := range plan {
		if context != "" && e.context != context {
			continue
		}
		contextSeen = true
		if exten != "" && e.exten != exten {
			continue
		}
		if items == 0 {
			w.Success("EventList", "start", "Message", "DialPlan list will follow")
		}
		items++
		if e.context != lastContext {
			contexts++
			lastContext, lastExten = e.context, ""
		}
		if e.exten != lastExten {
			extens++
			lastExten = e.exten
		}
		w.buf = appendField(w.buf, "Event", "ListDialplan")
		w.appendActionID()
		w.buf = appendField(w.buf, "Context", e.context)
		w.buf = appendField(w.buf, "Extension", e.exten)
		w.buf = appendField(w.buf, "Priority", e.priority)
		w.buf = appendField(w.buf, "Application", e.app)
		w.buf = appendField(w.buf, "AppData", e.data)
		w.buf = appendField(w.buf, "Registrar", e.registrar)
		w.end()
	}
	switch {
	case context != "" && !contextSeen:
		w.Error("Did not find context " + context)
	case exten != "" && items == 0 && context != "":
		w.Error("Did not find extension " + exten + "@" + context)
	case exten != "" && items == 0:
		w.Error("Did not find extension " + exten + " in any context")
	case items == 0:
		w.Error("No dialplan items found")
	default:
		w.listComplete("ShowDialPlanComplete", items,
			"ListExtensions", strconv.Itoa(extens),
			"ListPriorities", strconv.Itoa(items),
			"ListContexts", strconv.Itoa(contexts))
	}
}

package amitest

import (
	"strconv"
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

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
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

package amitest_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var updateTemplates = flag.Bool("update-scenarios", false, "rewrite data/scenarios from the captures")

// templateSpec says how a scenario template is made from a capture: which
// events are the call's, where its phases are, and which values are
// clocks.
type templateSpec struct {
	profile, kind string
	capture       string   // under captures
	keys          []string // nil: every event of an observer session but the login's and list items
	comment       string
	// rules insert "@…" lines before the first event, at or after the
	// previous rule's, whose name is event ("" for any) and whose text
	// matches re.
	rules []templateRule
	// cdrs are the marks of each Cdr event, in order: start, answer (""
	// for none), end.
	cdrs [][3]string
	// vars are the placeholders of VarSet values that are clocks.
	vars map[string]string
}

type templateRule struct{ directives, event, re string }

var dialVars = map[string]string{"DIALEDTIME": "{D callee now}", "DIALEDTIME_MS": "{MS callee now}",
	"ANSWEREDTIME": "{D answer now}", "ANSWEREDTIME_MS": "{MS answer now}"}

var queueVars = map[string]string{"QUEUEWAIT": "{DS join now}", "QUEUEWAIT_MS": "{MS join now}",
	"ANSWEREDTIME": "{D connect now}", "ANSWEREDTIME_MS": "{MS connect now}",
	"DIALEDTIME": "{D join now}", "DIALEDTIME_MS": "{MS join now}"}

func queueSpec(profile, busyRule string, busyAfterRing bool) templateSpec {
	rules := []templateRule{{"@mark start", "Newchannel", ";1"}, {"@mark join", "QueueCallerJoin", ""},
		{"@mark agentcalled", "AgentCalled", "Agent One"}}
	ring := templateRule{"@wait ring\n@mark agentup", "Newexten", "agent@test.*Application: Answer"}
	busy := templateRule{"@mark busy", "DialEnd", busyRule}
	if busyAfterRing {
		rules = append(rules, ring, busy)
	} else {
		rules = append(rules, busy, ring)
	}
	rules = append(rules, templateRule{"@mark connect", "AgentConnect", ""},
		templateRule{"@wait talk", "Newexten", "Application: Hangup"})
	return templateSpec{profile: profile, kind: "queue", capture: profile + "/06b_setup_originate_long_channels.recv.bin",
		keys: []string{"queue@test-00000003", "busy@test-00000004", "agent@test-00000005", "Device: Queue:",
			"Device: Local/queue@test", "Device: Local/agent@test", "Device: Local/busy@test", "QueueMemberStatus",
			"BridgeCreate", "BridgeDestroy"},
		comment: "# Capture 06b's queue call (" + profile + "): Local/queue@test originated with\n" +
			"# CallerID \"Queue Caller\" <2000>; Queue(support) rings both members, Busy Agent\n" +
			"# is busy, Agent One answers and talks.",
		rules: rules,
		cdrs: [][3]string{{"agentcalled", "agentup", "now"}, {"start", "start", "busy"}, {"start", "start", "now"},
			{"start", "start", "now"}},
		vars: queueVars}
}

// templateSpecs are the templates of data/scenarios: the queue call of
// capture 06b, and the issue-19 calls, recorded with the same script on
// both versions, whose phases and Cdrs are marked alike.
var templateSpecs = append([]templateSpec{
	queueSpec("asterisk-22", "DialStatus: BUSY", false),
	queueSpec("asterisk-13", "DialStatus: CANCEL", true),
}, append(issue19Specs("asterisk-22"), issue19Specs("asterisk-13")...)...)

func issue19Specs(profile string) []templateSpec {
	busyCdrs := [][3]string{{"start", "start", "start"}, {"start", "start", "start"}, {"start", "start", "start"}}
	talk := templateRule{"@wait talk", "Cdr", ""} // 22: echo's Cdr came before its Newexten of Hangup
	if profile == "asterisk-13" {
		talk = templateRule{"@wait talk", "Newexten", "Application: Hangup"}
	}
	return []templateSpec{
		{profile: profile, kind: "dial", capture: profile + "/19a_local_pair_observer.recv.bin",
			comment: "# Capture 19a_local_pair (" + profile + "): Originate Local/dial@test (Application Wait 20,\n" +
				"# CallerID Alice <100>); dial Dials Local/echo@test, which answers after Timing.Ring\n" +
				"# and hangs up after Timing.Talk.",
			rules: []templateRule{{"@mark start", "Newchannel", ";1"}, {"@mark callee", "Newchannel", "echo@test"},
				{"@wait ring\n@mark answer", "Newexten", "Application: Answer"}, talk},
			cdrs: [][3]string{{"callee", "answer", "now"}, {"start", "answer", "now"}, {"start", "answer", "now"}},
			vars: dialVars},
		{profile: profile, kind: "queuewait", capture: profile + "/19b_queue_agent_observer.recv.bin",
			comment: "# Capture 19b_queue_agent (" + profile + "): Agent One is paused; Originate\n" +
				"# Local/queue@test (Application Wait 20, CallerID Alice <100>), whose ;2 half runs\n" +
				"# Queue(support); Busy Agent is rung and busy while the caller waits Timing.Ring;\n" +
				"# Agent One is unpaused, both are rung, the agent answers and talks Timing.Talk.",
			rules: []templateRule{{"@mark start", "", ""}, {"@mark join", "QueueCallerJoin", ""},
				{"@mark busy", "DialEnd", "DialStatus: BUSY"},
				{"@wait ring\n@mark unpause", "DeviceStateChange", "support_pause_Local/agent@test\nState: NOT_INUSE"},
				{"@mark agentcalled", "Newchannel", "agent@test"},
				{"@mark agentup", "Newexten", "agent@test.*Application: Answer"},
				{"@mark connect", "AgentConnect", ""},
				{"@wait talk", "Newexten", "agent@test.*Application: Hangup"}},
			cdrs: [][3]string{{"agentcalled", "agentup", "now"}, {"start", "start", "busy"},
				{"unpause", "unpause", "connect"}, {"unpause", "unpause", "now"}, {"start", "start", "now"}},
			vars: queueVars},
		{profile: profile, kind: "blindtransfer", capture: profile + "/19c_blind_transfer_observer.recv.bin",
			comment: "# Capture 19c_blind_transfer (" + profile + "): as 19a, then after Timing.Talk a\n" +
				"# BlindTransfer of the callee's half (Local/echo@test-…;1) to echo@test: the caller's\n" +
				"# half runs echo (Answer, Wait for Timing.Talk, Hangup).",
			rules: []templateRule{{"@mark start", "Newchannel", ";1"}, {"@mark callee", "Newchannel", "echo@test"},
				{"@wait ring\n@mark answer", "Newexten", "Application: Answer"}, {"@wait talk\n@mark xfer", "Unhold", ""},
				{"@wait talk", "Newexten", "Extension: echo.*Application: Hangup"}},
			cdrs: [][3]string{{"callee", "answer", "now"}, {"start", "answer", "xfer"}, {"xfer", "xfer", "now"},
				{"start", "answer", "now"}},
			vars: dialVars},
		{profile: profile, kind: "busy", capture: profile + "/19d_busy_observer.recv.bin",
			comment: "# Capture 19d_busy (" + profile + "): Originate Local/long@test with Application Dial,\n" +
				"# Data Local/busy@test,5: the answered long half Dials busy, which answers Busy().\n" +
				"# The events come in the captured order, Cdrs included (on 22 they came first).",
			rules: []templateRule{{"@mark start", "", ""}},
			cdrs:  busyCdrs, vars: dialVars},
		{profile: profile, kind: "noanswer", capture: profile + "/19e_noanswer_observer.recv.bin",
			comment: "# Capture 19e_noanswer (" + profile + "): Originate Local/long@test with Application Dial,\n" +
				"# Data Local/noanswer@test,3: the long half Dials noanswer, which rings unanswered\n" +
				"# for Timing.Ring (3 s when captured) until the Dial gives up.",
			rules: []templateRule{{"@mark start", "Newchannel", ";1"}, {"@mark dial", "DialBegin", "noanswer@test-"},
				{"@wait ring", "DialEnd", "NOANSWER"}},
			cdrs: [][3]string{{"start", "start", "dial"}, {"start", "start", "now"}, {"start", "start", "now"}},
			vars: dialVars},
		{profile: profile, kind: "originate-busy", capture: profile + "/19f_originate_busy_observer.recv.bin",
			comment: "# Capture 19f_originate_busy (" + profile + "): Originate Local/busy@test (Application\n" +
				"# Wait 5): the originated channel is busy, the Originate fails (Reason 5), no Cdr.",
			rules: []templateRule{{"@mark start", "", ""}}},
	}
}

var (
	tmplChanRe = regexp.MustCompile(`(Local/[a-z]+@test)-([0-9a-f]{8})`)
	tmplNewRe  = regexp.MustCompile(`Event: Newchannel\n(?:.*\n)*?Uniqueid: (\S+)`)
)

// makeTemplate builds a scenario template from its capture.
func makeTemplate(t *testing.T, sp templateSpec) string {
	t.Helper()
	raw := strings.ReplaceAll(string(readFile(t, filepath.Join(captures, sp.capture))), "\r", "")
	var blocks []string
	for _, b := range strings.Split(raw, "\n\n") {
		if !strings.HasPrefix(b, "Event: ") || strings.HasPrefix(b, "Event: FullyBooted\n") ||
			strings.HasPrefix(b, "Event: SuccessfulAuth\n") {
			continue
		}
		if sp.keys == nil {
			// An observer session: drop the list items, keep the events
			// (the Originate's ActionID is the driver's, not the call's).
			if strings.Contains(b, "\nActionID: ") && !strings.Contains(b, "\nActionID: orig") {
				continue
			}
		} else if !containsAny(b+"\n", sp.keys) {
			continue
		}
		blocks = append(blocks, regexp.MustCompile(`\nActionID: .*`).ReplaceAllString(b, ""))
	}
	text := strings.Join(blocks, "\n\n")
	ids := map[string]string{}
	number := func(kind, v string) string {
		if n, ok := ids[v]; ok {
			return n
		}
		n := 0
		for _, x := range ids {
			if strings.HasPrefix(x, "{"+kind) {
				n++
			}
		}
		ids[v] = "{" + kind + strconv.Itoa(n) + "}"
		return ids[v]
	}
	text = tmplChanRe.ReplaceAllStringFunc(text, func(m string) string {
		p := tmplChanRe.FindStringSubmatch(m)
		return p[1] + "-" + number("N", p[2])
	})
	// Uniqueids are numbered in their channels' creation order, so that
	// U0 is the first channel's: the call's Linkedid.
	for _, m := range tmplNewRe.FindAllStringSubmatch(text, -1) {
		number("U", m[1])
	}
	text = uidRe.ReplaceAllStringFunc(text, func(m string) string { return number("U", m) })
	text = uuidRe.ReplaceAllStringFunc(text, func(m string) string { return number("B", m) })
	text = regexp.MustCompile(`LoginTime: [0-9]+`).ReplaceAllString(text, "LoginTime: {LOGIN}")
	text = regexp.MustCompile(`(LastCall|LastPause): 1[0-9]+`).ReplaceAllString(text, "$1: {NOW}")

	var out []string
	rule, cdr, ct1 := 0, 0, false
	for _, b := range strings.Split(text, "\n\n") {
		for rule < len(sp.rules) {
			r := sp.rules[rule]
			if (r.event != "" && !strings.HasPrefix(b, "Event: "+r.event+"\n")) || !regexp.MustCompile("(?s)"+r.re).MatchString(b) {
				break
			}
			out = append(out, r.directives)
			rule++
		}
		switch strings.SplitN(b, "\n", 2)[0] {
		case "Event: Cdr":
			if cdr >= len(sp.cdrs) {
				t.Fatalf("%s/%s: more Cdr events than marks", sp.profile, sp.kind)
			}
			m := sp.cdrs[cdr]
			cdr++
			b = setField(b, "StartTime", "{T "+m[0]+"}")
			b = setField(b, "EndTime", "{T "+m[2]+"}")
			b = setField(b, "Duration", "{D "+m[0]+" "+m[2]+"}")
			if m[1] == "" {
				b = setField(b, "AnswerTime", "")
				b = setField(b, "BillableSeconds", "0")
			} else {
				b = setField(b, "AnswerTime", "{T "+m[1]+"}")
				b = setField(b, "BillableSeconds", "{D "+m[1]+" "+m[2]+"}")
			}
		case "Event: AgentConnect":
			b = setField(b, "HoldTime", "{DS join now}")
			b = setField(b, "RingTime", "{DS agentcalled now}")
		case "Event: AgentComplete":
			b = setField(b, "HoldTime", "{DS join connect}")
			b = setField(b, "TalkTime", "{DS connect now}")
		case "Event: VarSet":
			if v, ok := sp.vars[fieldOf(b, "Variable")]; ok && fieldOf(b, "Value") != "" {
				b = setField(b, "Value", v)
			}
		case "Event: QueueMemberStatus", "Event: QueueMemberPause":
			// The first count of Agent One's answered call adds one to
			// what the member had; the others repeat it.
			if n, _ := strconv.Atoi(fieldOf(b, "CallsTaken")); n > 0 && !ct1 && strings.Contains(b, "Agent One") {
				ct1 = true
				b = setField(b, "CallsTaken", "{CT1}")
			} else {
				b = setField(b, "CallsTaken", "{CT}")
			}
			b = regexp.MustCompile(`(?m)^LastCall: 0$`).ReplaceAllString(b, "LastCall: {LC}")
		}
		out = append(out, b)
	}
	if rule < len(sp.rules) || cdr < len(sp.cdrs) {
		t.Fatalf("%s/%s: rule %d of %d and Cdr %d of %d matched", sp.profile, sp.kind, rule, len(sp.rules), cdr, len(sp.cdrs))
	}
	return sp.comment + "\n\n" + strings.Join(out, "\n\n") + "\n"
}

func containsAny(s string, keys []string) bool {
	for _, k := range keys {
		if strings.Contains(s, k) {
			return true
		}
	}
	return false
}

func setField(b, key, value string) string {
	return regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(key)+`: .*$`).ReplaceAllLiteralString(b, key+": "+value)
}

func fieldOf(b, key string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `: (.*)$`).FindStringSubmatch(b)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestScenarioTemplates checks that every template in data/scenarios is
// what its capture and its spec make, so a template is the capture with
// placeholders and nothing else. With -update-scenarios it rewrites them
// (after a new capture, or a new spec).
func TestScenarioTemplates(t *testing.T) {
	for _, sp := range templateSpecs {
		want := makeTemplate(t, sp)
		files := map[string]string{sp.profile: want}
		for profile, text := range files {
			path := filepath.Join("data", "scenarios", profile, sp.kind+".txt")
			if *updateTemplates {
				if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got := string(readFile(t, path)); got != text {
				t.Errorf("%s is not what %s makes: run go test -run TestScenarioTemplates -update-scenarios\n%s",
					path, sp.capture, firstDiff(got, text))
			}
		}
	}
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d: %q, want %q", i+1, la[i], lb[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d", len(la), len(lb))
}

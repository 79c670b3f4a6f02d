package amitest_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

var profiles = []struct {
	dir     string
	profile amitest.Profile
}{{"asterisk-22", amitest.Asterisk22}, {"asterisk-13", amitest.Asterisk13}}

// scenarioCaptures names, per profile and scenario, the capture its call
// comes from and what picks that call's events out of it: with keys, the
// events that contain one of them (the capture's other calls interleave
// with it); without, every event but the login's and the list items (an
// observer session of a capture of that one call).
var scenarioCaptures = map[string]map[amitest.ScenarioKind]struct {
	file string
	keys []string
}{
	"asterisk-22": issue19Captures(),
	"asterisk-13": issue19Captures(),
}

func issue19Captures() map[amitest.ScenarioKind]struct {
	file string
	keys []string
} {
	return map[amitest.ScenarioKind]struct {
		file string
		keys []string
	}{
		amitest.ScenarioQueue:         {"06b_setup_originate_long_channels", queueKeys},
		amitest.ScenarioDial:          {"19a_local_pair_observer", nil},
		amitest.ScenarioQueueWait:     {"19b_queue_agent_observer", nil},
		amitest.ScenarioBlindTransfer: {"19c_blind_transfer_observer", nil},
		amitest.ScenarioBusy:          {"19d_busy_observer", nil},
		amitest.ScenarioNoAnswer:      {"19e_noanswer_observer", nil},
		amitest.ScenarioOriginateBusy: {"19f_originate_busy_observer", nil},
	}
}

var queueKeys = []string{"queue@test-00000003", "busy@test-00000004", "agent@test-00000005", "Device: Queue:",
	"Device: Local/queue@test", "Device: Local/agent@test", "Device: Local/busy@test", "QueueMemberStatus",
	"BridgeCreate", "BridgeDestroy"}

// clockKeys hold times, durations and counters that depend on when and
// how long a call ran, so they differ from the capture's.
var clockKeys = map[string]bool{"StartTime": true, "AnswerTime": true, "EndTime": true, "Duration": true,
	"BillableSeconds": true, "HoldTime": true, "TalkTime": true, "RingTime": true, "LoginTime": true,
	"LastCall": true, "LastPause": true}

var (
	chanNumRe = regexp.MustCompile(`(Local/[a-z]+@test)-([0-9a-f]{8})`)
	uidRe     = regexp.MustCompile(`\b1[0-9]{9}\.[0-9]+\b`)
	uuidRe    = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
)

// normaliseCall renders events one per string with channel numbers,
// Uniqueids and bridge ids numbered by first appearance, and clock values
// masked, keeping the order: two plays of the same call compare equal.
func normaliseCall(events []*amiproto.Message) []string {
	ids := map[string]string{}
	name := func(kind, v string) string {
		if n, ok := ids[v]; ok {
			return n
		}
		n := fmt.Sprintf("<%s%d>", kind, len(ids))
		ids[v] = n
		return n
	}
	norm := func(s string) string {
		s = chanNumRe.ReplaceAllStringFunc(s, func(m string) string {
			p := chanNumRe.FindStringSubmatch(m)
			return p[1] + "-" + name("N", p[2])
		})
		s = uidRe.ReplaceAllStringFunc(s, func(m string) string { return name("U", m) })
		return uuidRe.ReplaceAllStringFunc(s, func(m string) string { return name("B", m) })
	}
	var out []string
	for _, ev := range events {
		var b strings.Builder
		variable := ev.Get("Variable")
		for _, f := range ev.Fields() {
			if f.Key == "ActionID" {
				continue // the Originate's, which the scenario has none of
			}
			v := norm(f.Value)
			if clockKeys[f.Key] || (f.Key == "Value" && strings.HasSuffix(variable, "TIME") || f.Key == "Value" && strings.Contains(variable, "TIME_MS") || f.Key == "Value" && strings.HasPrefix(variable, "QUEUEWAIT")) {
				if _, err := strconv.Atoi(v); err == nil || f.Key == "StartTime" || f.Key == "AnswerTime" || f.Key == "EndTime" {
					v = "#"
				}
			}
			fmt.Fprintf(&b, "%s: %s\n", norm(f.Key), v)
		}
		out = append(out, b.String())
	}
	return out
}

// captureCall picks one call's events out of a capture.
func captureCall(t *testing.T, dir string, kind amitest.ScenarioKind) []*amiproto.Message {
	t.Helper()
	sc := scenarioCaptures[dir][kind]
	raw := readFile(t, filepath.Join(captures, dir, sc.file+".recv.bin"))
	_, all, err := readAll(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var out []*amiproto.Message
	for _, m := range all {
		if m.Kind() != amiproto.KindEvent {
			continue
		}
		if sc.keys == nil {
			id := m.Get("ActionID")
			if (id == "" || strings.HasPrefix(id, "orig")) && m.EventName() != "FullyBooted" && m.EventName() != "SuccessfulAuth" {
				out = append(out, m)
			}
			continue
		}
		b, _ := amiproto.AppendMessage(nil, m)
		for _, k := range sc.keys {
			if bytes.Contains(b, []byte(k)) {
				out = append(out, m)
				break
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("picked %d events of %s from %s", len(out), kind, sc.file)
	}
	return out
}

// readEvents reads n events, skipping responses.
func (c *rawClient) readEvents(n int) []*amiproto.Message {
	c.t.Helper()
	var out []*amiproto.Message
	for len(out) < n {
		if m := c.read(); m.Kind() == amiproto.KindEvent {
			out = append(out, m)
		}
	}
	return out
}

// TestScenario_MatchesCapturedCall plays each scenario and checks that
// its events are the captured call's, in order and field for field, but
// for ids and clocks.
func TestScenario_MatchesCapturedCall(t *testing.T) {
	for _, p := range profiles {
		for kind := range scenarioCaptures[p.dir] {
			t.Run(p.dir+"/"+string(kind), func(t *testing.T) {
				t.Parallel()
				want := normaliseCall(captureCall(t, p.dir, kind))
				srv := start(t, amitest.Config{Profile: p.profile})
				c := dial(t, srv.Addr())
				c.login("admin", "s3cret!", "call,agent,dialplan,cdr,system")
				c.readEvent("FullyBooted")
				info, err := srv.PlayScenario(context.Background(), kind, amitest.Timing{})
				if err != nil {
					t.Fatal(err)
				}
				got := normaliseCall(c.readEvents(info.Events))
				if len(got) != len(want) {
					t.Errorf("%d events, the capture has %d", len(got), len(want))
				}
				for i := range min(len(got), len(want)) {
					if got[i] != want[i] {
						t.Fatalf("event %d:\n%s\nthe capture has\n%s", i, got[i], want[i])
					}
				}
			})
		}
	}
}

// TestScenario_Cdr checks each scenario's Cdr events: dispositions as the
// profile's Asterisk gave them, and durations and billable seconds from
// the phases' lengths as cdr.c computes them (whole seconds, truncated).
func TestScenario_Cdr(t *testing.T) {
	// A ring over a second tells durations (from the start) from billable
	// seconds (from the answer).
	const ring, talk = 1100 * time.Millisecond, 1100 * time.Millisecond
	type cdr struct {
		channel, disposition string
		duration, billsec    int
	}
	// Queue: the agent's ;2 (ring then talk), the caller's ;2 towards the
	// busy member (22: BUSY at once; 13: NO ANSWER when the agent
	// answered), towards the agent, and the caller's ;1.
	// The same on both profiles but for busy's order.
	common := map[amitest.ScenarioKind][]cdr{
		// The agent's ;2 (talk), the caller's ;2 towards the busy member
		// (first ring), towards it again (cancelled when the agent
		// answered), towards the agent (talk), the caller's ;1 (wait and
		// talk).
		amitest.ScenarioQueueWait: {{"agent@test", "ANSWERED", 1, 1}, {"queue@test", "BUSY", 0, 0},
			{"queue@test", "NO ANSWER", 0, 0}, {"queue@test", "ANSWERED", 1, 1}, {"queue@test", "ANSWERED", 2, 2}},
		amitest.ScenarioOriginateBusy: nil,
		// The callee's ;2 (ring then talk), the caller's ;2 that ran
		// Dial, and its ;1.
		amitest.ScenarioDial: {{"echo@test", "ANSWERED", 2, 1}, {"dial@test", "ANSWERED", 2, 1},
			{"dial@test", "ANSWERED", 2, 1}},
		// The callee's ;2 at the transfer, the caller's ;2 up to the
		// transfer, then after it (talk), and its ;1 (ring, two talks).
		amitest.ScenarioBlindTransfer: {{"echo@test", "ANSWERED", 2, 1}, {"dial@test", "ANSWERED", 2, 1},
			{"dial@test", "ANSWERED", 1, 1}, {"dial@test", "ANSWERED", 3, 2}},
		// The same with the Dial ringing unanswered.
		amitest.ScenarioNoAnswer: {{"long@test", "ANSWERED", 0, 0}, {"long@test", "NO ANSWER", 1, 1},
			{"long@test", "ANSWERED", 1, 1}},
	}
	// Queue: the agent's ;2 (ring then talk), the caller's ;2 towards the
	// busy member (22: BUSY at once; 13: NO ANSWER when the agent
	// answered), towards the agent, and the caller's ;1.
	want := map[string]map[amitest.ScenarioKind][]cdr{
		// Busy: the caller's ;1 before its Dial, its Dial, its ;2 (13:
		// ;2 first); no ring.
		"asterisk-22": {amitest.ScenarioQueue: {{"agent@test", "ANSWERED", 2, 1}, {"queue@test", "BUSY", 0, 0},
			{"queue@test", "ANSWERED", 2, 2}, {"queue@test", "ANSWERED", 2, 2}},
			amitest.ScenarioBusy: {{"long@test-", "ANSWERED", 0, 0}, {"long@test-", "BUSY", 0, 0},
				{"long@test-", "ANSWERED", 0, 0}}},
		"asterisk-13": {amitest.ScenarioQueue: {{"agent@test", "ANSWERED", 2, 1}, {"queue@test", "NO ANSWER", 1, 1},
			{"queue@test", "ANSWERED", 2, 2}, {"queue@test", "ANSWERED", 2, 2}},
			amitest.ScenarioBusy: {{"long@test-", "ANSWERED", 0, 0}, {"long@test-", "ANSWERED", 0, 0},
				{"long@test-", "BUSY", 0, 0}}},
	}
	for _, w := range want {
		for k, v := range common {
			w[k] = v
		}
	}
	for _, p := range profiles {
		for kind, cdrs := range want[p.dir] {
			t.Run(p.dir+"/"+string(kind), func(t *testing.T) {
				t.Parallel()
				srv := start(t, amitest.Config{Profile: p.profile})
				c := dial(t, srv.Addr())
				c.login("admin", "s3cret!", "cdr")
				info, err := srv.PlayScenario(context.Background(), kind, amitest.Timing{Ring: ring, Talk: talk})
				if err != nil {
					t.Fatal(err)
				}
				if len(info.Cdrs) != len(cdrs) {
					t.Fatalf("%d Cdr events, want %d", len(info.Cdrs), len(cdrs))
				}
				sent := srv.Cdrs(info.Linkedid)
				for i, w := range cdrs {
					got := c.readEvent("Cdr")
					if got.String() != sent[i].String() || got.String() != info.Cdrs[i].String() {
						t.Errorf("Cdr %d on the wire:\n%s\nrecorded:\n%s", i, got, sent[i])
					}
					if !strings.Contains(got.Get("Channel"), w.channel) || got.Get("Disposition") != w.disposition ||
						got.Get("Duration") != strconv.Itoa(w.duration) || got.Get("BillableSeconds") != strconv.Itoa(w.billsec) {
						t.Errorf("Cdr %d:\n%s\nwant %+v", i, got, w)
					}
					start, err1 := time.ParseInLocation("2006-01-02 15:04:05", got.Get("StartTime"), time.Local)
					end, err2 := time.ParseInLocation("2006-01-02 15:04:05", got.Get("EndTime"), time.Local)
					if err1 != nil || err2 != nil || end.Before(start) || end.Sub(start) > ring+talk+2*time.Second {
						t.Errorf("Cdr %d times %q to %q", i, got.Get("StartTime"), got.Get("EndTime"))
					}
				}
			})
		}
	}
}

// TestScenario_QueueListsMatchCapture stops the queue call where capture
// 06c listed it (the agent in Wait, bridged with the caller) and checks
// that CoreShowChannels lists its four channels as Asterisk did, field
// for field but for ids and the Duration clock.
func TestScenario_QueueListsMatchCapture(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.dir, func(t *testing.T) {
			t.Parallel()
			_, all, err := readAll(bytes.NewReader(readFile(t, filepath.Join(captures, p.dir, "06c_collections_with_channels.recv.bin"))))
			if err != nil {
				t.Fatal(err)
			}
			var want []*amiproto.Message
			for _, m := range all {
				if m.EventName() == "CoreShowChannel" && m.Get("ActionID") == "csc-n" && !strings.Contains(m.Get("Channel"), "long@") {
					want = append(want, m)
				}
			}
			if len(want) != 4 {
				t.Fatalf("%d queue call channels in the capture", len(want))
			}
			srv := start(t, amitest.Config{Profile: p.profile})
			c := dial(t, srv.Addr())
			c.login("admin", "s3cret!", "on")
			ctx, cancel := context.WithCancel(context.Background())
			played := make(chan error, 1)
			go func() {
				_, err := srv.PlayScenario(ctx, amitest.ScenarioQueue, amitest.Timing{Talk: time.Hour})
				played <- err
			}()
			for {
				ev := c.read()
				if ev.EventName() == "Newexten" && ev.Get("Application") == "Wait" && strings.Contains(ev.Get("Channel"), "agent@") {
					break
				}
			}
			c.send("CoreShowChannels", "ActionID", "csc-n")
			var got []*amiproto.Message
			for m := c.read(); m.EventName() != "CoreShowChannelsComplete"; m = c.read() {
				if m.EventName() == "CoreShowChannel" {
					got = append(got, m)
				}
			}
			cancel()
			if err := <-played; err != context.Canceled {
				t.Errorf("PlayScenario: %v", err)
			}
			// Asterisk lists channels in hash order; compare them by name.
			byName := func(ms []*amiproto.Message) []*amiproto.Message {
				out := slices.Clone(ms)
				slices.SortFunc(out, func(a, b *amiproto.Message) int { return strings.Compare(a.Get("Channel"), b.Get("Channel")) })
				return out
			}
			g, w := normaliseList(byName(got), false), normaliseList(byName(want), false)
			if !slices.Equal(g, w) {
				t.Errorf("CoreShowChannels:\n%s\nthe capture has\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
			}
		})
	}
}

// normaliseList is normaliseCall for list items, with their clocks masked
// too, and with maskPlace where the channels are in the dialplan.
func normaliseList(items []*amiproto.Message, maskPlace bool) []string {
	var ms []*amiproto.Message
	for _, it := range items {
		m := amiproto.NewMessage()
		for _, f := range it.Fields() {
			switch f.Key {
			case "Duration", "Seconds", "Wait", "LongestHoldTime", "Holdtime":
				f.Value = "#"
			case "Application", "ApplicationData", "Data", "Priority":
				if maskPlace {
					f.Value = "#"
				}
			}
			m.Add(f.Key, f.Value)
		}
		ms = append(ms, m)
	}
	return normaliseCall(ms)
}

// TestScenario_DialListsMatchCapture stops the dial scenario where
// capture 19a took its lists (caller and callee bridged) and checks that
// CoreShowChannels, BridgeList, BridgeInfo and Status answer as Asterisk
// 22 did: the same messages, keys in order and values but for ids,
// clocks and where the callee's half is in its dialplan (the capture's
// lists overtook its Newexten of Wait; ours come after it).
func TestScenario_DialListsMatchCapture(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.dir, func(t *testing.T) {
			t.Parallel()
			testDialLists(t, p.dir, p.profile)
		})
	}
}

func testDialLists(t *testing.T, dir string, profile amitest.Profile) {
	_, all, err := readAll(bytes.NewReader(readFile(t, filepath.Join(captures, dir, "19a_local_pair_observer.recv.bin"))))
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, amitest.Config{Profile: profile})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "on")
	ctx, cancel := context.WithCancel(context.Background())
	played := make(chan error, 1)
	go func() {
		_, err := srv.PlayScenario(ctx, amitest.ScenarioDial, amitest.Timing{Talk: time.Hour})
		played <- err
	}()
	for peers := 0; peers < 2; {
		if ev := c.read(); ev.EventName() == "VarSet" && ev.Get("Variable") == "BRIDGEPEER" && ev.Get("Value") != "" {
			peers++
		}
	}
	var bridge string
	for _, a := range []struct{ action, id string }{
		{"CoreShowChannels", "talk-coreshowchannels"}, {"BridgeList", "talk-bridgelist"},
		{"BridgeInfo", "talk-bridgeinfo-1"}, {"Status", "talk-status"},
	} {
		var want, got []*amiproto.Message
		for _, m := range all {
			if m.Get("ActionID") == a.id {
				want = append(want, m)
			}
		}
		kv := []string{"ActionID", a.id}
		if a.action == "BridgeInfo" {
			kv = append(kv, "BridgeUniqueid", bridge)
		}
		c.send(a.action, kv...)
		for len(got) == 0 || got[len(got)-1].Get("EventList") != "Complete" {
			if m := c.read(); m.Get("ActionID") == a.id {
				got = append(got, m)
				if m.EventName() == "BridgeListItem" {
					bridge = m.Get("BridgeUniqueid")
				}
			}
		}
		g, w := normaliseList(sortItems(got), true), normaliseList(sortItems(want), true)
		if len(w) < 3 || !slices.Equal(g, w) {
			t.Errorf("%s:\n%s\nthe capture has\n%s", a.action, strings.Join(g, "\n"), strings.Join(w, "\n"))
		}
	}
	cancel()
	if err := <-played; err != context.Canceled {
		t.Errorf("PlayScenario: %v", err)
	}
}

// sortItems sorts a list's items by channel name, between its response
// and its completing event: Asterisk lists channels in hash order.
func sortItems(ms []*amiproto.Message) []*amiproto.Message {
	out := slices.Clone(ms)
	items := out[1 : len(out)-1]
	slices.SortStableFunc(items, func(a, b *amiproto.Message) int { return strings.Compare(a.Get("Channel"), b.Get("Channel")) })
	return out
}

// TestScenario_QueueWaitingListsMatchCapture stops the queue call while
// its caller waits (the agent rings) and checks QueueStatus and
// QueueSummary against capture 19b's, taken while a caller waited: the
// same messages and keys, the queue's counters and the caller's entry
// equal but for ids, the waits and the caller ID (19b's caller is Alice,
// 06b's "Queue Caller"), and the members' keys (19b's agent was paused).
func TestScenario_QueueWaitingListsMatchCapture(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.dir, func(t *testing.T) {
			t.Parallel()
			testQueueWaitingLists(t, p.dir, p.profile)
		})
	}
}

func testQueueWaitingLists(t *testing.T, dir string, profile amitest.Profile) {
	_, all, err := readAll(bytes.NewReader(readFile(t, filepath.Join(captures, dir, "19b_queue_agent_observer.recv.bin"))))
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, amitest.Config{Profile: profile})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "on")
	ctx, cancel := context.WithCancel(context.Background())
	played := make(chan error, 1)
	go func() {
		_, err := srv.PlayScenario(ctx, amitest.ScenarioQueue, amitest.Timing{Ring: time.Hour})
		played <- err
	}()
	for {
		if ev := c.read(); ev.EventName() == "AgentCalled" && ev.Get("MemberName") == "Agent One" {
			break
		}
	}
	masked := map[string]bool{"Wait": true, "LongestHoldTime": true, "CallerIDNum": true, "CallerIDName": true,
		"ConnectedLineNum": true, "ConnectedLineName": true}
	for _, a := range []struct{ action, id string }{{"QueueStatus", "wait-queuestatus"}, {"QueueSummary", "wait-queuesummary"}} {
		var want, got []*amiproto.Message
		for _, m := range all {
			if m.Get("ActionID") == a.id {
				want = append(want, m)
			}
		}
		c.send(a.action, "ActionID", a.id)
		for len(got) == 0 || got[len(got)-1].Get("EventList") != "Complete" {
			if m := c.read(); m.Get("ActionID") == a.id {
				got = append(got, m)
			}
		}
		norm := func(ms []*amiproto.Message) []string {
			var out []*amiproto.Message
			for _, m := range ms {
				n := amiproto.NewMessage()
				for _, f := range m.Fields() {
					if masked[f.Key] || m.EventName() == "QueueMember" || (m.EventName() == "QueueSummary" && f.Key == "Available") {
						f.Value = "#"
					}
					n.Add(f.Key, f.Value)
				}
				out = append(out, n)
			}
			return normaliseCall(out)
		}
		if g, w := norm(got), norm(want); len(w) < 3 || !slices.Equal(g, w) {
			t.Errorf("%s:\n%s\nthe capture has\n%s", a.action, strings.Join(g, "\n"), strings.Join(w, "\n"))
		}
	}
	cancel()
	if err := <-played; err != context.Canceled {
		t.Errorf("PlayScenario: %v", err)
	}
}

// TestScenario_QueueWaitListsMatchCapture parks the queuewait call where
// capture 19b took its lists, while the caller waits and while it talks
// with the agent, and checks every list against the capture's: the same
// messages, keys and values but for ids and clocks.
func TestScenario_QueueWaitListsMatchCapture(t *testing.T) {
	for _, p := range profiles {
		for _, at := range []struct {
			phase, prefix string
			timing        amitest.Timing
		}{{"ring", "wait-", amitest.Timing{Ring: time.Hour}}, {"talk", "talk-", amitest.Timing{Talk: time.Hour}}} {
			t.Run(p.dir+"/"+at.phase, func(t *testing.T) {
				t.Parallel()
				listsAt(t, p.dir, p.profile, amitest.ScenarioQueueWait, "19b_queue_agent_observer", at.phase, at.prefix, at.timing)
			})
		}
	}
}

// listsAt plays kind until its wait of phase (which timing makes last an
// hour), reads the events sent before it, and asks for the lists the
// capture asked for with ActionIDs starting with prefix, in the same
// order, comparing each answer with the capture's.
func listsAt(t *testing.T, dir string, profile amitest.Profile, kind amitest.ScenarioKind, capture, phase, prefix string, timing amitest.Timing) {
	t.Helper()
	tmpl := string(readFile(t, filepath.Join("data", "scenarios", dir, string(kind)+".txt")))
	before, _, ok := strings.Cut(tmpl, "@wait "+phase)
	if !ok {
		t.Fatalf("no @wait %s in the %s template", phase, kind)
	}
	events := strings.Count(before, "\nEvent: ")
	_, all, err := readAll(bytes.NewReader(readFile(t, filepath.Join(captures, dir, capture+".recv.bin"))))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	want := map[string][]*amiproto.Message{}
	for _, m := range all {
		id := m.Get("ActionID")
		if !strings.HasPrefix(id, prefix) {
			continue
		}
		if want[id] == nil {
			ids = append(ids, id)
		}
		want[id] = append(want[id], m)
	}
	srv := start(t, amitest.Config{Profile: profile})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call,agent,dialplan,cdr")
	ctx, cancel := context.WithCancel(context.Background())
	played := make(chan error, 1)
	go func() {
		_, err := srv.PlayScenario(ctx, kind, timing)
		played <- err
	}()
	c.readEvents(events)
	var bridge string
	for _, id := range ids {
		kv := []string{"ActionID", id}
		action := listActionNames[strings.TrimRight(strings.TrimPrefix(id, prefix), "-0123456789")]
		if action == "BridgeInfo" {
			kv = append(kv, "BridgeUniqueid", bridge)
		}
		c.send(action, kv...)
		var got []*amiproto.Message
		for len(got) == 0 || (got[len(got)-1].Get("EventList") != "Complete" && got[0].Get("EventList") == "start") {
			m := c.read()
			if m.Get("ActionID") != id {
				t.Fatalf("%s: an event among the answers:\n%s", id, m)
			}
			got = append(got, m)
			if m.EventName() == "BridgeListItem" {
				bridge = m.Get("BridgeUniqueid")
			}
		}
		g, w := normaliseList(sortItems(got), phase == "talk"), normaliseList(sortItems(want[id]), phase == "talk")
		if !slices.Equal(g, w) {
			t.Errorf("%s:\n%s\nthe capture has\n%s", id, strings.Join(g, "\n"), strings.Join(w, "\n"))
		}
	}
	cancel()
	if err := <-played; err != context.Canceled {
		t.Errorf("PlayScenario: %v", err)
	}
}

// listActionNames maps the captures' ActionID stems to their actions.
var listActionNames = map[string]string{"coreshowchannels": "CoreShowChannels", "bridgelist": "BridgeList",
	"bridgeinfo": "BridgeInfo", "queuestatus": "QueueStatus",
	"queuesummary": "QueueSummary", "devicestatelist": "DeviceStateList", "status": "Status"}

// TestScenario_CoreShowChannelsCommand: "core show channels concise"
// lists a scenario's live channels too.
func TestScenario_CoreShowChannelsCommand(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")
	ctx, cancel := context.WithCancel(context.Background())
	played := make(chan struct{})
	go func() {
		defer close(played)
		srv.PlayScenario(ctx, amitest.ScenarioDial, amitest.Timing{Talk: time.Hour})
	}()
	defer func() { cancel(); <-played }()
	for entered := 0; entered < 2; {
		if c.read().EventName() == "BridgeEnter" {
			entered++
		}
	}
	c.send("Command", "Command", "core show channels concise", "ActionID", "cli")
	resp := c.readResponse()
	var dialLegs, echoLegs int
	for _, f := range resp.Fields() {
		if f.Key != "Output" {
			continue
		}
		switch {
		case strings.HasPrefix(f.Value, "Local/dial@test-"):
			dialLegs++
		case strings.HasPrefix(f.Value, "Local/echo@test-"):
			echoLegs++
		}
	}
	if dialLegs != 2 || echoLegs != 2 {
		t.Errorf("core show channels concise:\n%s", resp)
	}
}

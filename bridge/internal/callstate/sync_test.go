package callstate

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func ev(name string, kv ...string) *amiproto.Message {
	m := amiproto.NewMessage(amiproto.Field{Key: "Event", Value: name})
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

// chanEv is an event of channel uid of call linked, as Asterisk spells its
// snapshot.
func chanEv(name, uid, linked, state string, kv ...string) *amiproto.Message {
	code := map[string]string{"Down": "0", "Ring": "4", "Ringing": "5", "Up": "6"}[state]
	return ev(name, append([]string{"Channel", "PJSIP/" + uid, "ChannelState", code, "ChannelStateDesc", state,
		"CallerIDNum", "100", "CallerIDName", "Alice", "ConnectedLineNum", "<unknown>", "ConnectedLineName", "<unknown>",
		"Context", "default", "Exten", "200", "Priority", "1", "Uniqueid", uid, "Linkedid", linked}, kv...)...)
}

// listed is a CoreShowChannel entry.
func listed(uid, linked string) *amiproto.Message {
	e := chanEv("CoreShowChannel", uid, linked, "Up", "Application", "Dial", "ApplicationData", "PJSIP/200", "Duration", "00:01:00", "BridgeId", "")
	return e
}

type clock struct{ now time.Time }

func (c *clock) tick(d time.Duration) time.Time { c.now = c.now.Add(d); return c.now }

func newModel() (*Model, *clock) {
	m := New("pbx1")
	c := &clock{now: t0}
	m.SetClock(func() time.Time { return c.now })
	return m, c
}

// live flushes m and returns its live keys after applying the changes to
// the map a writer keeps (the bucket).
func flushInto(m *Model, bucket map[string][]byte) []subjects.CallRecord {
	return m.Flush(false, func(c Change) {
		if c.Value == nil {
			delete(bucket, c.Key)
		} else {
			bucket[c.Key] = c.Value
		}
	})
}

func keyList(bucket map[string][]byte) []string {
	return slices.Sorted(maps.Keys(bucket))
}

// TestSync_Rules: the reconciliation's rules, one per row. Each starts
// from a model that saw channel 1.1 (call 1.1) and device SIP/1 before the
// login, then runs events after BeginSync and ends with the given lists.
func TestSync_Rules(t *testing.T) {
	type row struct {
		name        string
		during      []*amiproto.Message // events after BeginSync, before EndSync
		lists       Lists
		wantKeys    []string
		wantAdded   map[string]int
		wantRemoved map[string]int
		wantClosed  int
		wantSkipped []string
	}
	dev := func(name, state string) *amiproto.Message {
		return ev("DeviceStateChange", "Device", name, "State", state)
	}
	qlist := []*amiproto.Message{ev("QueueParams", "Queue", "support", "Strategy", "ringall"), ev("QueueMember", "Queue", "support", "Location", "SIP/1", "Name", "One", "Status", "1")}
	blist := []*amiproto.Message{ev("BridgeListItem", "BridgeUniqueid", "br0", "BridgeType", "basic", "BridgeNumChannels", "0")}
	rows := []row{
		{
			name:      "lists equal to the model change nothing",
			lists:     Lists{Channels: []*amiproto.Message{listed("1.1", "1.1")}, Bridges: blist, Queues: qlist, Devices: []*amiproto.Message{dev("SIP/1", "INUSE")}},
			wantKeys:  []string{"bridges.br0", "calls.1=2E1", "channels.1=2E1", "devices.SIP/1", "queues.support"},
			wantAdded: map[string]int{}, wantRemoved: map[string]int{},
		},
		{
			name:        "untouched objects missing from the lists are removed, and their call closed",
			lists:       Lists{Channels: []*amiproto.Message{}, Bridges: []*amiproto.Message{}, Queues: []*amiproto.Message{}, Devices: []*amiproto.Message{}},
			wantKeys:    []string{},
			wantAdded:   map[string]int{},
			wantRemoved: map[string]int{subjects.KindChannels: 1, subjects.KindDevices: 1, subjects.KindQueues: 1, subjects.KindBridges: 1},
			wantClosed:  1,
		},
		{
			name:        "objects the lists have and the model lacks are added",
			lists:       Lists{Channels: []*amiproto.Message{listed("1.1", "1.1"), listed("2.1", "2.1")}, Bridges: blist, Queues: qlist, Devices: []*amiproto.Message{dev("SIP/1", "INUSE"), dev("SIP/2", "RINGING")}},
			wantKeys:    []string{"bridges.br0", "calls.1=2E1", "calls.2=2E1", "channels.1=2E1", "channels.2=2E1", "devices.SIP/1", "devices.SIP/2", "queues.support"},
			wantAdded:   map[string]int{subjects.KindChannels: 1, subjects.KindDevices: 1},
			wantRemoved: map[string]int{},
		},
		{
			name:        "an object an event touched after BeginSync wins over lists that lack it",
			during:      []*amiproto.Message{chanEv("Newchannel", "3.1", "3.1", "Down"), dev("SIP/3", "INUSE")},
			lists:       Lists{Channels: []*amiproto.Message{listed("1.1", "1.1")}, Bridges: blist, Queues: qlist, Devices: []*amiproto.Message{dev("SIP/1", "INUSE")}},
			wantKeys:    []string{"bridges.br0", "calls.1=2E1", "calls.3=2E1", "channels.1=2E1", "channels.3=2E1", "devices.SIP/1", "devices.SIP/3", "queues.support"},
			wantAdded:   map[string]int{},
			wantRemoved: map[string]int{},
		},
		{
			name:        "an object removed by an event after BeginSync is not brought back by the lists (tombstone)",
			during:      []*amiproto.Message{chanEv("Hangup", "1.1", "1.1", "Up", "Cause", "16", "Cause-txt", "Normal Clearing")},
			lists:       Lists{Channels: []*amiproto.Message{listed("1.1", "1.1")}, Bridges: blist, Queues: qlist, Devices: []*amiproto.Message{dev("SIP/1", "INUSE")}},
			wantKeys:    []string{"bridges.br0", "devices.SIP/1", "queues.support"},
			wantAdded:   map[string]int{},
			wantRemoved: map[string]int{},
		},
		{
			name:        "objects the model never saw that end after BeginSync are not added from the lists",
			during:      []*amiproto.Message{chanEv("Hangup", "5.1", "5.1", "Up", "Cause", "16"), ev("BridgeDestroy", "BridgeUniqueid", "br5")},
			lists:       Lists{Channels: []*amiproto.Message{listed("1.1", "1.1"), listed("5.1", "5.1")}, Bridges: append([]*amiproto.Message{ev("BridgeListItem", "BridgeUniqueid", "br5")}, blist...), Queues: qlist, Devices: []*amiproto.Message{dev("SIP/1", "INUSE")}},
			wantKeys:    []string{"bridges.br0", "calls.1=2E1", "channels.1=2E1", "devices.SIP/1", "queues.support"},
			wantAdded:   map[string]int{},
			wantRemoved: map[string]int{},
		},
		{
			name:        "a refused list is skipped: that kind stays as it was",
			lists:       Lists{Channels: nil, Bridges: blist, Queues: nil, Devices: nil},
			wantKeys:    []string{"bridges.br0", "calls.1=2E1", "channels.1=2E1", "devices.SIP/1", "queues.support"},
			wantAdded:   map[string]int{},
			wantRemoved: map[string]int{},
			wantSkipped: []string{subjects.KindChannels, subjects.KindQueues, subjects.KindDevices},
		},
		{
			name:        "every list refused: nothing changes",
			lists:       Lists{},
			wantKeys:    []string{"bridges.br0", "calls.1=2E1", "channels.1=2E1", "devices.SIP/1", "queues.support"},
			wantAdded:   map[string]int{},
			wantRemoved: map[string]int{},
			wantSkipped: []string{subjects.KindChannels, subjects.KindBridges, subjects.KindQueues, subjects.KindDevices},
		},
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			m, clk := newModel()
			bucket := map[string][]byte{}
			m.Apply(chanEv("Newchannel", "1.1", "1.1", "Ring"))
			m.Apply(dev("SIP/1", "INUSE"))
			m.Apply(ev("BridgeCreate", "BridgeUniqueid", "br0", "BridgeType", "basic"))
			m.Apply(ev("QueueMemberAdded", "Queue", "support", "Interface", "SIP/1", "MemberName", "One", "Status", "1"))
			flushInto(m, bucket)
			s := m.BeginSync()
			for _, e := range tt.during {
				clk.tick(time.Second)
				m.Apply(e)
			}
			sum := m.EndSync(s, &tt.lists, clk.tick(time.Second))
			recs := flushInto(m, bucket)
			if got := keyList(bucket); !slices.Equal(got, tt.wantKeys) {
				t.Errorf("keys %q, want %q", got, tt.wantKeys)
			}
			if !maps.Equal(sum.Added, tt.wantAdded) || !maps.Equal(sum.Removed, tt.wantRemoved) || sum.Closed != tt.wantClosed || !slices.Equal(sum.Skipped, tt.wantSkipped) {
				t.Errorf("summary %+v, want added %v removed %v closed %d skipped %v", sum, tt.wantAdded, tt.wantRemoved, tt.wantClosed, tt.wantSkipped)
			}
			closed := 0
			for _, r := range recs {
				if !r.EndSeen {
					closed++
				}
			}
			if closed != tt.wantClosed {
				t.Errorf("%d records with end_seen false, want %d: %+v", closed, tt.wantClosed, recs)
			}
			// The model says what the bucket says.
			if c := m.Counts(); c[subjects.KindChannels]+c[subjects.KindCalls]+c[subjects.KindDevices]+c[subjects.KindQueues]+c[subjects.KindBridges] != len(bucket) {
				t.Errorf("counts %v, bucket %q", c, keyList(bucket))
			}
		})
	}
}

// TestSync_ListUpdatesUntouchedObject: the lists are the truth for what no
// event has touched since BeginSync, and events after it win.
func TestSync_ListUpdatesUntouchedObject(t *testing.T) {
	m, clk := newModel()
	m.Apply(chanEv("Newchannel", "1.1", "1.1", "Ring"))
	m.Apply(chanEv("Newchannel", "1.2", "1.1", "Ring"))
	s := m.BeginSync()
	m.Apply(chanEv("Newexten", "1.2", "1.1", "Ring", "Application", "Playback", "AppData", "hello"))
	up := listed("1.1", "1.1")
	stale := listed("1.2", "1.1") // answered before the Newexten: older than the event
	sum := m.EndSync(s, &Lists{Channels: []*amiproto.Message{up, stale}}, clk.tick(time.Second))
	if sum.Added[subjects.KindChannels] != 0 || sum.Removed[subjects.KindChannels] != 0 {
		t.Errorf("summary %+v", sum)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.channels["1.1"]; c.v.State != "Up" || c.v.Application != "Dial" || c.v.Answered.IsZero() {
		t.Errorf("untouched channel not updated from the list: %+v", c.v)
	}
	if c := m.channels["1.2"]; c.v.State != "Ring" || c.v.Application != "Playback" {
		t.Errorf("channel touched after BeginSync was overwritten by the list: %+v", c.v)
	}
}

// TestAdopt_ClosesGoneCallsOnce: a call in the bucket whose channels are
// gone is closed with end_seen false, exactly once however often it is
// adopted; a live one is merged, not closed.
func TestAdopt_ClosesGoneCallsOnce(t *testing.T) {
	m, clk := newModel()
	gone := subjects.CallRecord{Server: "pbx1", Linkedid: "9.1", Start: t0.Add(-time.Minute), Answer: t0.Add(-50 * time.Second),
		Caller: subjects.CallParty{Number: "100", Channel: "PJSIP/100-1"}, Channels: []string{"PJSIP/100-1"}}
	alive := subjects.CallRecord{Server: "pbx1", Linkedid: "1.1", Start: t0.Add(-2 * time.Minute), Answer: t0.Add(-100 * time.Second),
		Queue: &subjects.CallQueue{Name: "support", WaitS: 20, Agent: "Agent One"}}
	// Adopted before the first sync: the model cannot tell yet.
	m.Adopt([]subjects.CallRecord{gone, alive}, clk.now)
	if recs := m.Flush(false, func(Change) {}); len(recs) != 0 {
		t.Fatalf("closed before any sync: %+v", recs)
	}
	s := m.BeginSync()
	if sum := m.EndSync(s, &Lists{Channels: []*amiproto.Message{listed("1.1", "1.1")}}, clk.tick(time.Second)); sum.Closed != 1 {
		t.Errorf("the first sync closed %d calls, want the gone one", sum.Closed)
	}
	m.Adopt([]subjects.CallRecord{gone}, clk.tick(time.Second)) // a second takeover reads the same key
	bucket := map[string][]byte{"calls.9=2E1": []byte("{}")}
	recs := flushInto(m, bucket)
	m.Adopt([]subjects.CallRecord{gone}, clk.tick(time.Second)) // and after the Flush
	recs = append(recs, m.Flush(false, func(Change) {})...)
	if len(recs) != 1 || recs[0].Linkedid != "9.1" || recs[0].EndSeen || recs[0].Caller.Number != "100" || recs[0].Disposition != subjects.DispositionAnswered {
		t.Fatalf("records %+v, want the gone call once, end_seen false", recs)
	}
	if _, ok := bucket["calls.9=2E1"]; ok {
		t.Error("the closed call's key is not deleted")
	}
	var live subjects.CallRecord
	if err := json.Unmarshal(bucket["calls.1=2E1"], &live); err != nil {
		t.Fatal(err)
	}
	if !live.Start.Equal(alive.Start) || !live.Answer.Equal(alive.Answer) || live.Queue == nil || live.Queue.Agent != "Agent One" {
		t.Errorf("live call not merged with the adopted record: %+v", live)
	}
	// The adopted answer counts: the call ends 3 s after the adoption.
	clk.tick(3 * time.Second)
	m.Apply(chanEv("Hangup", "1.1", "1.1", "Up", "Cause", "16"))
	recs = m.Flush(false, func(Change) {})
	if len(recs) != 1 || recs[0].BillableS != int(clk.now.Sub(alive.Answer)/time.Second) || !recs[0].EndSeen {
		t.Errorf("record %+v, want billable %v", recs, clk.now.Sub(alive.Answer))
	}
}

// TestFlush_Coalesces: a key changed many times between two Flushes is
// given once, with its last value; a key set then deleted is given as a
// delete.
func TestFlush_Coalesces(t *testing.T) {
	m, clk := newModel()
	m.Apply(chanEv("Newchannel", "1.1", "1.1", "Down"))
	for i, st := range []string{"Ring", "Ringing", "Up"} {
		clk.tick(time.Second)
		m.Apply(chanEv("Newstate", "1.1", "1.1", st, "AccountCode", string(rune('a'+i))))
	}
	m.Apply(chanEv("Newchannel", "2.1", "2.1", "Down"))
	m.Apply(chanEv("Hangup", "2.1", "2.1", "Down", "Cause", "17"))
	got := map[string]int{}
	var last = map[string][]byte{}
	m.Flush(false, func(c Change) {
		got[c.Key]++
		last[c.Key] = c.Value
	})
	for k, n := range got {
		if n != 1 {
			t.Errorf("key %s given %d times", k, n)
		}
	}
	var v subjects.StateChannel
	if err := json.Unmarshal(last["channels.1=2E1"], &v); err != nil || v.State != "Up" || v.AccountCode != "c" || !v.Answered.Equal(t0.Add(3*time.Second)) {
		t.Errorf("channels.1=2E1 = %s (%v), want its last value", last["channels.1=2E1"], err)
	}
	if v, ok := last["channels.2=2E1"]; !ok || v != nil {
		t.Errorf("channels.2=2E1 = %q, %v; want a delete", v, ok)
	}
	n := 0
	m.Flush(false, func(Change) { n++ })
	if n != 0 {
		t.Errorf("second Flush gave %d changes, want none", n)
	}
	all := map[string]bool{}
	m.Flush(true, func(c Change) { all[c.Key] = c.Value != nil })
	if len(all) != 2 || !all["channels.1=2E1"] || !all["calls.1=2E1"] {
		t.Errorf("Flush(all) gave %v", all)
	}
}

// TestSync_QueueMerge: a queue that events touch during a sync takes the
// list's params, members and callers, except those the events changed,
// added or removed since BeginSync.
func TestSync_QueueMerge(t *testing.T) {
	m, clk := newModel()
	member := func(name, iface, status string) *amiproto.Message {
		return ev(name, "Queue", "support", "Interface", iface, "MemberName", iface, "Status", status, "Paused", "0", "CallsTaken", "0", "Penalty", "0")
	}
	m.Apply(member("QueueMemberAdded", "SIP/a", "1"))
	m.Apply(member("QueueMemberAdded", "SIP/old", "1"))
	m.Apply(chanEv("Newchannel", "y", "y", "Up"))
	m.Apply(chanEv("QueueCallerJoin", "y", "y", "Up", "Queue", "support", "Position", "1", "Count", "1"))
	s := m.BeginSync()
	clk.tick(time.Second)
	m.Apply(member("QueueMemberStatus", "SIP/a", "2"))
	m.Apply(member("QueueMemberAdded", "SIP/c", "1"))
	m.Apply(chanEv("Newchannel", "x", "x", "Up"))
	m.Apply(chanEv("QueueCallerJoin", "x", "x", "Up", "Queue", "support", "Position", "3", "Count", "3"))
	m.Apply(chanEv("QueueCallerLeave", "y", "y", "Up", "Queue", "support", "Position", "1", "Count", "2"))
	entry := func(uid, pos, wait string) *amiproto.Message {
		return ev("QueueEntry", "Queue", "support", "Position", pos, "Channel", "PJSIP/"+uid, "Uniqueid", uid, "CallerIDNum", "100", "Wait", wait)
	}
	lists := Lists{Queues: []*amiproto.Message{
		ev("QueueParams", "Queue", "support", "Strategy", "rrmemory", "Calls", "2", "Weight", "3"),
		ev("QueueMember", "Queue", "support", "Location", "SIP/a", "Name", "A", "Status", "1", "Paused", "0"),
		ev("QueueMember", "Queue", "support", "Location", "SIP/b", "Name", "B", "Status", "6", "Paused", "1"),
		entry("y", "1", "30"), entry("z", "2", "20"),
	}}
	now := clk.tick(time.Second)
	m.EndSync(s, &lists, now)
	bucket := map[string][]byte{}
	flushInto(m, bucket)
	var q subjects.StateQueue
	if err := json.Unmarshal(bucket["queues.support"], &q); err != nil {
		t.Fatal(err)
	}
	if q.Strategy != "rrmemory" || q.Weight != 3 || q.Calls != 2 {
		t.Errorf("params %+v", q)
	}
	var ms []string
	for _, x := range q.Members {
		ms = append(ms, x.Interface+"/"+string(rune('0'+x.Status)))
	}
	if !slices.Equal(ms, []string{"SIP/a/2", "SIP/b/6", "SIP/c/1"}) {
		t.Errorf("members %q, want SIP/a as the event left it, SIP/b from the list, SIP/c from its event, not SIP/old", ms)
	}
	var cs []string
	for _, x := range q.Callers {
		cs = append(cs, x.Uniqueid)
	}
	if !slices.Equal(cs, []string{"z", "x"}) {
		t.Errorf("callers %q, want z from the list and x from its event, not y who left", cs)
	}
	if z := q.Callers[0]; !z.Joined.Equal(now.Add(-20 * time.Second)) {
		t.Errorf("z joined %v, want %v (Wait 20 s)", z.Joined, now.Add(-20*time.Second))
	}
	// The next sync, with no event in between, takes the list as it is.
	s = m.BeginSync()
	m.EndSync(s, &lists, clk.tick(time.Second))
	flushInto(m, bucket)
	if err := json.Unmarshal(bucket["queues.support"], &q); err != nil {
		t.Fatal(err)
	}
	if len(q.Members) != 2 || q.Members[0].Status != 1 || len(q.Callers) != 2 || q.Callers[0].Uniqueid != "y" {
		t.Errorf("second sync: %+v", q)
	}
}

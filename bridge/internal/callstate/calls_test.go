package callstate

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// step is one event at an offset from the call's start.
type step struct {
	at time.Duration
	e  *amiproto.Message
}

func play(t *testing.T, steps []step) []subjects.CallRecord {
	t.Helper()
	m, clk := newModel()
	for _, s := range steps {
		clk.now = t0.Add(s.at)
		m.Apply(s.e)
	}
	recs := m.Flush(false, func(Change) {})
	if c := m.Counts(); c[subjects.KindChannels] != 0 || c[subjects.KindCalls] != 0 || c[subjects.KindBridges] != 0 {
		t.Errorf("left after the call: %v", c)
	}
	return recs
}

// dial is an event of caller a about b (DialBegin, DialEnd…), in the call
// whose Linkedid is a.
func dial(name, a, b, state string, kv ...string) *amiproto.Message {
	e := chanEv(name, a, a, state, kv...)
	for _, f := range chanEv("", b, a, "Ring").Fields()[1:] {
		e.Add("Dest"+f.Key, f.Value)
	}
	return e
}

func bridgeEv(name, uid, state string) *amiproto.Message {
	return chanEv(name, uid, "a", state, "BridgeUniqueid", "br1", "BridgeType", "basic", "BridgeTechnology", "simple_bridge")
}

// TestDisposition_FollowsCDREngine: one SIP-like call A → B per row, the
// record's disposition and billable seconds as main/cdr.c gives them to
// A's CDR(s) with the default cdr.conf.
func TestDisposition_FollowsCDREngine(t *testing.T) {
	s := time.Second
	newA := step{0, chanEv("Newchannel", "a", "a", "Ring")}
	newB := step{s, chanEv("Newchannel", "b", "a", "Down")}
	begin := step{s, dial("DialBegin", "a", "b", "Ring", "DialString", "200")}
	end := func(at time.Duration, st string) step {
		return step{at, dial("DialEnd", "a", "b", "Ring", "DialStatus", st)}
	}
	hang := func(at time.Duration, uid, st, cause string) step {
		return step{at, chanEv("Hangup", uid, "a", st, "Cause", cause, "Cause-txt", "x")}
	}
	rows := []struct {
		name        string
		steps       []step
		disposition string
		billable    int
	}{
		{"answered: billable from A's answer to the end of the bridge", []step{newA, newB, begin,
			{3 * s, chanEv("Newstate", "b", "a", "Up")},
			end(3*s, "ANSWER"),
			{3 * s, chanEv("Newstate", "a", "a", "Up")},
			{3 * s, bridgeEv("BridgeEnter", "a", "Up")},
			{3 * s, bridgeEv("BridgeEnter", "b", "Up")},
			{13*s + 400*time.Millisecond, bridgeEv("BridgeLeave", "b", "Up")},
			hang(13*s+400*time.Millisecond, "b", "Up", "16"),
			{13*s + 500*time.Millisecond, bridgeEv("BridgeLeave", "a", "Up")},
			{13*s + 500*time.Millisecond, ev("BridgeDestroy", "BridgeUniqueid", "br1")},
			hang(13*s+600*time.Millisecond, "a", "Up", "16"),
		}, subjects.DispositionAnswered, 10},
		{"busy callee", []step{newA, newB, begin, end(2*s, "BUSY"), hang(2*s, "b", "Busy", "17"), hang(2*s, "a", "Ring", "17")}, subjects.DispositionBusy, 0},
		{"no answer", []step{newA, newB, begin, end(21*s, "NOANSWER"), hang(21*s, "b", "Ringing", "16"), hang(21*s, "a", "Ring", "16")}, subjects.DispositionNoAnswer, 0},
		{"caller gave up (CANCEL)", []step{newA, newB, begin, end(5*s, "CANCEL"), hang(5*s, "b", "Ringing", "16"), hang(5*s, "a", "Ring", "16")}, subjects.DispositionNoAnswer, 0},
		{"congestion is failed with cdr.conf's default", []step{newA, newB, begin, end(s, "CONGESTION"), hang(s, "b", "Down", "34"), hang(s, "a", "Ring", "34")}, subjects.DispositionFailed, 0},
		{"channel unavailable", []step{newA, newB, begin, end(s, "CHANUNAVAIL"), hang(s, "b", "Down", "20"), hang(s, "a", "Ring", "20")}, subjects.DispositionFailed, 0},
		{"answered first, then a busy dial: the dial's status, billable until it", []step{newA,
			{s, chanEv("Newstate", "a", "a", "Up")},
			{2 * s, chanEv("Newchannel", "b", "a", "Down")},
			{2 * s, dial("DialBegin", "a", "b", "Up", "DialString", "200")},
			{4 * s, dial("DialEnd", "a", "b", "Up", "DialStatus", "BUSY")},
			hang(4*s, "b", "Busy", "17"), hang(4*s, "a", "Up", "17"),
		}, subjects.DispositionBusy, 3},
		{"the CDR ends where the h extension starts (endbeforehexten)", []step{newA,
			{s, chanEv("Newstate", "a", "a", "Up")},
			{5 * s, chanEv("Newexten", "a", "a", "Up", "Exten", "h", "Application", "AGI")},
			hang(9*s, "a", "Up", "16"),
		}, subjects.DispositionAnswered, 4},
		{"no dial, Busy(): the hangup cause", []step{newA, {s, chanEv("Newexten", "a", "a", "Ring", "Application", "Busy")}, hang(3*s, "a", "Ring", "17")}, subjects.DispositionBusy, 0},
		{"no answer, then voicemail answers: a call that dialed is judged by its dials", []step{newA, newB, begin, end(20*s, "NOANSWER"), hang(20*s, "b", "Ringing", "16"),
			{20 * s, chanEv("Newexten", "a", "a", "Ring", "Application", "VoiceMail", "Priority", "2")},
			{21 * s, chanEv("Newstate", "a", "a", "Up")},
			{21 * s, chanEv("Newexten", "a", "a", "Up", "Exten", "h", "Application", "NoOp")},
			hang(21*s+900*time.Millisecond, "a", "Up", "16"),
		}, subjects.DispositionNoAnswer, 0},
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			recs := play(t, tt.steps)
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1", len(recs))
			}
			r := recs[0]
			if r.Disposition != tt.disposition || r.BillableS != tt.billable || !r.EndSeen {
				t.Errorf("disposition %q billable %d end_seen %v, want %q %d", r.Disposition, r.BillableS, r.EndSeen, tt.disposition, tt.billable)
			}
			if r.Caller != (subjects.CallParty{Number: "100", Name: "Alice", Channel: "PJSIP/a"}) || len(r.Callees) > 1 ||
				len(r.Callees) == 1 && r.Callees[0] != (subjects.CallParty{Number: "200", Channel: "PJSIP/b"}) {
				t.Errorf("caller %+v callees %+v", r.Caller, r.Callees)
			}
		})
	}
}

// TestQueueCall: a caller waits in a queue, an agent answers: the queue's
// value shows the caller while it waits, the record the queue, the wait
// and the agent.
func TestQueueCall(t *testing.T) {
	m, clk := newModel()
	bucket := map[string][]byte{}
	m.Apply(ev("QueueMemberAdded", "Queue", "support", "Interface", "Local/agent@test", "MemberName", "Agent One", "Status", "1", "Paused", "0", "CallsTaken", "0", "Penalty", "0"))
	m.Apply(chanEv("Newchannel", "c", "c", "Ring"))
	m.Apply(chanEv("Newstate", "c", "c", "Up"))
	m.Apply(chanEv("Newchannel", "w", "w", "Ring")) // an earlier caller, waiting
	m.Apply(chanEv("QueueCallerJoin", "w", "w", "Ring", "Queue", "support", "Position", "1", "Count", "1"))
	m.Apply(chanEv("QueueCallerJoin", "c", "c", "Up", "Queue", "support", "Position", "2", "Count", "2"))
	flushInto(m, bucket)
	var q subjects.StateQueue
	if err := json.Unmarshal(bucket["queues.support"], &q); err != nil {
		t.Fatal(err)
	}
	if q.Calls != 2 || len(q.Callers) != 2 || q.Callers[1].Uniqueid != "c" || q.Callers[1].Position != 2 || len(q.Members) != 1 || q.Members[0].Name != "Agent One" {
		t.Fatalf("queue %+v", q)
	}
	clk.tick(7 * time.Second)
	m.Apply(chanEv("QueueCallerLeave", "w", "w", "Ring", "Queue", "support", "Position", "1", "Count", "1"))
	m.Apply(chanEv("Hangup", "w", "w", "Ring", "Cause", "16"))
	recs := flushInto(m, bucket)
	if err := json.Unmarshal(bucket["queues.support"], &q); err != nil {
		t.Fatal(err)
	}
	if q.Calls != 1 || len(q.Callers) != 1 || q.Callers[0].Uniqueid != "c" || q.Callers[0].Position != 1 {
		t.Fatalf("queue after the first caller left %+v", q)
	}
	clk.tick(5 * time.Second)
	agentLeg := dial("AgentConnect", "c", "ag", "Up", "Queue", "support", "MemberName", "Agent One", "Interface", "Local/agent@test", "HoldTime", "12", "RingTime", "2")
	m.Apply(chanEv("Newchannel", "ag", "c", "Down"))
	m.Apply(dial("DialBegin", "c", "ag", "Up", "DialString", "agent@test"))
	m.Apply(dial("DialEnd", "c", "ag", "Up", "DialStatus", "ANSWER"))
	m.Apply(chanEv("QueueCallerLeave", "c", "c", "Up", "Queue", "support", "Position", "1", "Count", "0"))
	m.Apply(ev("QueueMemberStatus", "Queue", "support", "Interface", "Local/agent@test", "MemberName", "Agent One", "Status", "2", "InCall", "1", "Paused", "0", "CallsTaken", "1", "Penalty", "0"))
	m.Apply(agentLeg)
	recs = append(recs, flushInto(m, bucket)...)
	if err := json.Unmarshal(bucket["queues.support"], &q); err != nil {
		t.Fatal(err)
	}
	if q.Calls != 0 || len(q.Callers) != 0 || q.Members[0].CallsTaken != 1 || !q.Members[0].InCall || q.Members[0].Status != 2 {
		t.Errorf("queue after the answer %+v", q)
	}
	var live subjects.CallRecord
	if err := json.Unmarshal(bucket["calls.c"], &live); err != nil || live.Queue == nil || live.Queue.Agent != "Agent One" {
		t.Errorf("call in progress %s: %v", bucket["calls.c"], err)
	}
	clk.tick(30 * time.Second)
	m.Apply(chanEv("Hangup", "ag", "c", "Up", "Cause", "16"))
	m.Apply(chanEv("Hangup", "c", "c", "Up", "Cause", "16"))
	recs = append(recs, flushInto(m, bucket)...)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	for _, r := range recs {
		switch r.Linkedid {
		case "w":
			if r.Queue == nil || r.Queue.WaitS != 7 || r.Queue.Agent != "" {
				t.Errorf("abandoned caller's queue %+v", r.Queue)
			}
		case "c":
			if r.Queue == nil || *r.Queue != (subjects.CallQueue{Name: "support", WaitS: 12, Agent: "Agent One"}) || r.Disposition != subjects.DispositionAnswered || r.BillableS != 42 {
				t.Errorf("answered caller's record %+v queue %+v", r, r.Queue)
			}
		}
	}
	if _, ok := bucket["queues.support"]; !ok {
		t.Error("the queue's key went with its last caller")
	}
}

// TestBridge_Members: a bridge's value follows BridgeEnter, BridgeLeave and
// BridgeDestroy, and each channel says which bridge it is in.
func TestBridge_Members(t *testing.T) {
	m, clk := newModel()
	bucket := map[string][]byte{}
	m.Apply(chanEv("Newchannel", "a", "a", "Up"))
	m.Apply(chanEv("Newchannel", "b", "a", "Up"))
	m.Apply(ev("BridgeCreate", "BridgeUniqueid", "br1", "BridgeType", "basic", "BridgeTechnology", "simple_bridge", "BridgeCreator", "<unknown>", "BridgeName", "<unknown>"))
	m.Apply(bridgeEv("BridgeEnter", "a", "Up"))
	m.Apply(bridgeEv("BridgeEnter", "b", "Up"))
	flushInto(m, bucket)
	var br subjects.StateBridge
	var ca, cb subjects.StateChannel
	read := func() {
		t.Helper()
		br, ca, cb = subjects.StateBridge{}, subjects.StateChannel{}, subjects.StateChannel{}
		for k, v := range map[string]any{"bridges.br1": &br, "channels.a": &ca, "channels.b": &cb} {
			if b, ok := bucket[k]; ok {
				if err := json.Unmarshal(b, v); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	read()
	if len(br.Members) != 2 || br.Members[0].Uniqueid != "a" || br.Members[1].Channel != "PJSIP/b" || br.Technology != "simple_bridge" || br.Creator != "" || ca.Bridge != "br1" || cb.Bridge != "br1" {
		t.Fatalf("bridge %+v, a in %q, b in %q", br, ca.Bridge, cb.Bridge)
	}
	clk.tick(time.Second)
	m.Apply(bridgeEv("BridgeLeave", "b", "Up"))
	flushInto(m, bucket)
	read()
	if len(br.Members) != 1 || br.Members[0].Uniqueid != "a" || cb.Bridge != "" {
		t.Fatalf("after b left: bridge %+v, b in %q", br, cb.Bridge)
	}
	m.Apply(chanEv("Hangup", "b", "a", "Up", "Cause", "16"))
	m.Apply(bridgeEv("BridgeLeave", "a", "Up"))
	m.Apply(ev("BridgeDestroy", "BridgeUniqueid", "br1"))
	recs := flushInto(m, bucket)
	if _, ok := bucket["bridges.br1"]; ok {
		t.Error("bridges.br1 still set after BridgeDestroy")
	}
	m.Apply(chanEv("Hangup", "a", "a", "Up", "Cause", "16"))
	// An event about a channel after its Hangup does not bring it back.
	m.Apply(chanEv("Newexten", "a", "a", "Up", "Exten", "h"))
	recs = append(recs, flushInto(m, bucket)...)
	if len(bucket) != 0 || len(recs) != 1 || len(recs[0].Bridges) != 1 || recs[0].Bridges[0] != "br1" {
		t.Errorf("bucket %q, records %+v", keyList(bucket), recs)
	}
}

// TestRelink_MergesCalls: Asterisk gives the channels of a bridge the
// oldest Linkedid. A call whose channels all moved to another is merged
// into it: one record, with both calls' channels, and the old key goes.
func TestRelink_MergesCalls(t *testing.T) {
	m, clk := newModel()
	bucket := map[string][]byte{}
	m.Apply(chanEv("Newchannel", "x1", "x1", "Up"))
	m.Apply(chanEv("Newchannel", "y1", "y1", "Up"))
	m.Apply(chanEv("Newchannel", "y2", "y1", "Up"))
	flushInto(m, bucket)
	if _, ok := bucket["calls.y1"]; !ok {
		t.Fatal("no key for call y1")
	}
	clk.tick(time.Second)
	m.Apply(chanEv("BridgeEnter", "y1", "x1", "Up", "BridgeUniqueid", "br1"))
	m.Apply(chanEv("Newstate", "y2", "x1", "Up"))
	recs := flushInto(m, bucket)
	if _, ok := bucket["calls.y1"]; ok || len(recs) != 0 {
		t.Fatalf("call y1 still has its key or a record: %q %+v", keyList(bucket), recs)
	}
	for _, u := range []string{"x1", "y1", "y2"} {
		clk.tick(time.Second)
		m.Apply(chanEv("Hangup", u, "x1", "Up", "Cause", "16"))
	}
	m.Apply(ev("BridgeDestroy", "BridgeUniqueid", "br1"))
	recs = append(recs, flushInto(m, bucket)...)
	if len(recs) != 1 || recs[0].Linkedid != "x1" || len(recs[0].Channels) != 3 || recs[0].BillableS != 4 {
		t.Errorf("records %+v", recs)
	}
	if len(bucket) != 0 {
		t.Errorf("keys left: %q", keyList(bucket))
	}
}

// TestConcurrentUse: Apply on one goroutine, Flush, Counts, BeginSync and
// EndSync on another, under -race.
func TestConcurrentUse(t *testing.T) {
	msgs := loadCapture(t, "22", "14a_burst_200_originates")
	m := New("pbx1")
	done := make(chan struct{})
	var recs int
	go func() { // owned by this test: it ends when done closes, and the test waits for it below
		defer close(done)
		for _, rm := range msgs {
			if rm.m.Kind() == amiproto.KindEvent {
				m.Apply(rm.m)
			}
		}
	}()
	for stop := false; !stop; {
		select {
		case <-done:
			stop = true
		default:
		}
		recs += len(m.Flush(false, func(Change) {}))
		m.Counts()
		s := m.BeginSync()
		m.EndSync(s, &Lists{}, time.Now())
	}
	recs += len(m.Flush(false, func(Change) {}))
	if recs < 200 {
		t.Errorf("%d records, want at least the 200 calls'", recs)
	}
}

// TestAttendedTransfer: the transfer is in the record of each call whose
// transferer took part (no capture has one yet: fields as Asterisk 13+
// documents AttendedTransfer).
func TestAttendedTransfer(t *testing.T) {
	m, clk := newModel()
	m.Apply(chanEv("Newchannel", "a1", "a1", "Up"))
	m.Apply(chanEv("Newchannel", "b1", "b1", "Up"))
	clk.tick(time.Second)
	e := ev("AttendedTransfer", "Result", "Success", "DestType", "Bridge", "DestBridgeUniqueid", "br9")
	for _, p := range []struct{ prefix, uid string }{{"OrigTransferer", "a1"}, {"SecondTransferer", "b1"}} {
		for _, f := range chanEv("", p.uid, p.uid, "Up").Fields()[1:] {
			e.Add(p.prefix+f.Key, f.Value)
		}
	}
	e.Add("TransferTargetChannel", "PJSIP/c-1")
	m.Apply(e)
	m.Apply(chanEv("Hangup", "a1", "a1", "Up", "Cause", "16"))
	m.Apply(chanEv("Hangup", "b1", "b1", "Up", "Cause", "16"))
	recs := m.Flush(false, func(Change) {})
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	for _, r := range recs {
		want := subjects.CallTransfer{Kind: subjects.TransferAttended, At: t0.Add(time.Second), By: "PJSIP/" + r.Linkedid, To: "PJSIP/c-1"}
		if len(r.Transfers) != 1 || r.Transfers[0] != want {
			t.Errorf("call %s: transfers %+v, want %+v", r.Linkedid, r.Transfers, want)
		}
	}
}

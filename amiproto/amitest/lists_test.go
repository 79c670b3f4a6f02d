package amitest_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// tally is the PBX's state as a client rebuilds it from the events it
// received: a small, separate implementation to check the fake's list
// answers against.
type tally struct {
	chans     map[string]map[string]string // Uniqueid → the CoreShowChannel fields compared
	bridges   map[string][]string          // BridgeUniqueid → member Uniqueids
	callers   []string                     // queue support's waiting callers
	completed int                          // and its completed calls
	members   map[string]memberTally       // by member name
	devices   map[string]string
}

var snapshotKeys = []string{"Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
	"ConnectedLineNum", "ConnectedLineName", "Context", "Exten", "Priority", "Linkedid"}

func (t *tally) apply(ev *amiproto.Message) {
	uid := ev.Get("Uniqueid")
	switch ev.EventName() {
	case "Newchannel":
		t.chans[uid] = map[string]string{"BridgeId": "", "Application": "", "ApplicationData": ""}
	case "Hangup":
		delete(t.chans, uid)
		return
	}
	for _, p := range []string{"", "Dest", "LocalOne", "LocalTwo", "Transferer", "Transferee"} {
		if c := t.chans[ev.Get(p+"Uniqueid")]; c != nil {
			for _, k := range snapshotKeys {
				if v, ok := ev.Lookup(p + k); ok {
					c[k] = v
				}
			}
		}
	}
	bid := ev.Get("BridgeUniqueid")
	switch ev.EventName() {
	case "Newexten":
		if c := t.chans[uid]; c != nil {
			c["Application"] = ev.Get("Application")
			c["ApplicationData"] = ev.Get("AppData")
		}
	case "OriginateResponse":
		// The originated channel runs the Originate's application.
		if c := t.chans[uid]; c != nil && ev.Get("Response") == "Success" && ev.Has("Application") {
			c["Application"], c["ApplicationData"] = ev.Get("Application"), ev.Get("Data")
		}
	case "BridgeCreate":
		t.bridges[bid] = []string{}
	case "BridgeEnter":
		t.bridges[bid] = append(t.bridges[bid], uid)
		if c := t.chans[uid]; c != nil {
			c["BridgeId"] = bid
		}
	case "BridgeLeave":
		t.bridges[bid] = slices.DeleteFunc(t.bridges[bid], func(u string) bool { return u == uid })
		if c := t.chans[uid]; c != nil {
			c["BridgeId"] = ""
		}
	case "BridgeDestroy":
		delete(t.bridges, bid)
	case "QueueCallerJoin":
		t.callers = append(t.callers, uid)
	case "QueueCallerLeave":
		t.callers = slices.DeleteFunc(t.callers, func(u string) bool { return u == uid })
	case "QueueMemberStatus", "QueueMemberPause":
		mb := t.members[ev.Get("MemberName")]
		mb.calls, mb.inCall, mb.status = ev.Get("CallsTaken"), ev.Get("InCall"), ev.Get("Status")
		t.members[ev.Get("MemberName")] = mb
	case "AgentConnect":
		// The member is in a call from now on, though no event says so;
		// its count moves when the call completes, if no
		// QueueMemberStatus told it already.
		mb := t.members[ev.Get("MemberName")]
		mb.inCall, mb.atConnect = "1", mb.calls
		t.members[ev.Get("MemberName")] = mb
	case "AgentComplete":
		t.completed++
		mb := t.members[ev.Get("MemberName")]
		mb.inCall = "0"
		if mb.calls == mb.atConnect {
			n, _ := strconv.Atoi(mb.calls)
			mb.calls = strconv.Itoa(n + 1)
		}
		t.members[ev.Get("MemberName")] = mb
	case "DeviceStateChange":
		if !strings.HasPrefix(ev.Get("Device"), "Local/") {
			t.devices[ev.Get("Device")] = ev.Get("State")
		}
	}
}

// memberTally is a queue member as the events tell it.
type memberTally struct {
	calls, inCall, status string
	atConnect             string // calls when its current call connected
}

func (m memberTally) String() string { return m.calls + " " + m.inCall + " " + m.status }

// listClient sends list actions and reads their answers on a session that
// also takes every event, applying the events to a tally as they come.
type listClient struct {
	*rawClient
	tally *tally
	seq   int
}

// list sends action and reads up to its answer, applying the events in
// front of it; then it reads the answer's items up to the completing
// event. No event may come between the Response and its completion.
func (c *listClient) list(action string, kv ...string) (*amiproto.Message, []*amiproto.Message, *amiproto.Message) {
	c.t.Helper()
	c.seq++
	id := action + "-" + strconv.Itoa(c.seq)
	c.send(action, append(kv, "ActionID", id)...)
	for {
		m := c.read()
		if m.Kind() == amiproto.KindEvent {
			c.tally.apply(m)
			continue
		}
		if m.Get("ActionID") != id {
			c.t.Fatalf("answer to %s:\n%s", id, m)
		}
		if m.Get("EventList") != "start" {
			return m, nil, nil
		}
		var items []*amiproto.Message
		for {
			it := c.read()
			if it.Get("ActionID") != id {
				c.t.Fatalf("%s: a message without its ActionID inside the list:\n%s", id, it)
			}
			if it.Get("EventList") == "Complete" {
				return m, items, it
			}
			items = append(items, it)
		}
	}
}

// check asks the fake for its lists and compares each answer with the
// tally at the answer's place in the stream. With init, it takes the
// answers as the tally's starting state instead (what was there before
// the session logged in), as a client does after its login.
func (c *listClient) check(t *testing.T, init bool) {
	t.Helper()
	_, items, _ := c.list("CoreShowChannels")
	got := map[string]map[string]string{}
	for _, it := range items {
		f := map[string]string{"BridgeId": it.Get("BridgeId"), "Application": it.Get("Application"),
			"ApplicationData": it.Get("ApplicationData")}
		for _, k := range snapshotKeys {
			f[k] = it.Get(k)
		}
		got[it.Get("Uniqueid")] = f
	}
	if init {
		c.tally.chans = got
	} else if !maps.EqualFunc(got, c.tally.chans, maps.Equal) {
		t.Fatalf("CoreShowChannels:\n%v\nthe events say:\n%v", got, c.tally.chans)
	}

	_, items, _ = c.list("BridgeList")
	var ids []string
	for _, it := range items {
		ids = append(ids, it.Get("BridgeUniqueid"))
		if !init && it.Get("BridgeNumChannels") != strconv.Itoa(len(c.tally.bridges[it.Get("BridgeUniqueid")])) {
			t.Fatalf("BridgeListItem:\n%s\nthe events say members %v", it, c.tally.bridges[it.Get("BridgeUniqueid")])
		}
	}
	if init {
		for _, id := range ids {
			c.tally.bridges[id] = nil
		}
	}
	if want := slices.Sorted(maps.Keys(c.tally.bridges)); !slices.Equal(slices.Sorted(slices.Values(ids)), want) {
		t.Fatalf("BridgeList %v, the events say %v", ids, want)
	}
	for _, id := range ids {
		resp, items, done := c.list("BridgeInfo", "BridgeUniqueid", id)
		members, known := c.tally.bridges[id]
		if !known {
			if resp.Get("Message") != "Specified BridgeUniqueid not found" {
				t.Fatalf("BridgeInfo of a bridge the events destroyed:\n%s", resp)
			}
			continue
		}
		var got []string
		for _, it := range items {
			got = append(got, it.Get("Uniqueid"))
		}
		if init {
			c.tally.bridges[id] = got
		} else if done.Get("BridgeUniqueid") != id || !slices.Equal(got, members) {
			t.Fatalf("BridgeInfo %s: members %v (%s), the events say %v", id, got, done, members)
		}
	}

	_, items, _ = c.list("QueueStatus")
	var callers []string
	members := map[string]memberTally{}
	for _, it := range items {
		switch it.EventName() {
		case "QueueParams":
			if init {
				c.tally.completed, _ = strconv.Atoi(it.Get("Completed"))
			} else if it.Get("Calls") != strconv.Itoa(len(c.tally.callers)) || it.Get("Completed") != strconv.Itoa(c.tally.completed) {
				t.Fatalf("QueueParams:\n%s\nthe events say callers %v, %d completed", it, c.tally.callers, c.tally.completed)
			}
		case "QueueMember":
			members[it.Get("Name")] = memberTally{it.Get("CallsTaken"), it.Get("InCall"), it.Get("Status"), ""}
		case "QueueEntry":
			if it.Get("Position") != strconv.Itoa(len(callers)+1) {
				t.Fatalf("QueueEntry out of order:\n%s", it)
			}
			callers = append(callers, it.Get("Uniqueid"))
		}
	}
	if init {
		c.tally.callers, c.tally.members = callers, members
	} else {
		if !slices.Equal(callers, c.tally.callers) {
			t.Fatalf("QueueStatus callers %v, the events say %v", callers, c.tally.callers)
		}
		for name, v := range c.tally.members {
			if members[name].String() != v.String() {
				t.Fatalf("QueueMember %s: %q, the events say %q", name, members[name], v)
			}
		}
	}

	_, items, _ = c.list("DeviceStateList")
	devices := map[string]string{}
	for _, it := range items {
		devices[it.Get("Device")] = it.Get("State")
	}
	if init {
		c.tally.devices = devices
	} else if !maps.Equal(devices, c.tally.devices) {
		t.Fatalf("DeviceStateList %v, the events say %v", devices, c.tally.devices)
	}
}

// cdrsPerCall is how many Cdr events each scenario sends.
var cdrsPerCall = map[amitest.ScenarioKind]int{amitest.ScenarioDial: 3, amitest.ScenarioQueue: 4, amitest.ScenarioQueueWait: 5,
	amitest.ScenarioBlindTransfer: 4, amitest.ScenarioBusy: 3, amitest.ScenarioNoAnswer: 3}

// TestLists_AgreeWithEvents plays a random mix of overlapping scenarios,
// with burst calls (StartCalls) besides, and, all along, asks for every list on a session that takes every
// event: each answer must equal what the events before it built. At the
// end, with every call over, the lists and Live show no call left and
// each call's Cdr events are recorded under its Linkedid.
func TestLists_AgreeWithEvents(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.dir, func(t *testing.T) {
			t.Parallel()
			srv := start(t, amitest.Config{Profile: p.profile})
			// The mix starts before the login: the session starts from the
			// lists, as a client that logs in while calls are up.
			mix := srv.StartMix(context.Background(), amitest.MixSpec{Seed: 19, Rate: 200, Count: 60,
				MaxRing: 50 * time.Millisecond, MaxTalk: 150 * time.Millisecond})
			c := &listClient{rawClient: dial(t, srv.Addr()), tally: &tally{chans: map[string]map[string]string{},
				bridges: map[string][]string{}, members: map[string]memberTally{}, devices: map[string]string{}}}
			// Without the Cdr class, the burst generator's batches reach
			// the session in several runs, which a list answer must not
			// split either.
			c.login("admin", "s3cret!", "call,agent,dialplan")
			burstCtx, stopBurst := context.WithCancel(context.Background())
			defer stopBurst()
			burst := srv.StartCalls(burstCtx, 100, 0)
			c.check(t, true)
			// The session reads (lists and events) until the mix is over
			// and the burst, stopped then, has ended: a generator blocks
			// while a session's queue is full.
			rounds := 0
			for mixDone, burstDone := false, false; !burstDone; rounds++ {
				if !mixDone {
					select {
					case <-mix.Done():
						mixDone = true
						stopBurst()
					default:
					}
				}
				select {
				case <-burst.Done():
					burstDone = true
				default:
				}
				c.check(t, false)
			}
			if err := burst.Wait(); err != context.Canceled {
				t.Fatalf("burst: %v", err)
			}
			infos, err := mix.Wait()
			if err != nil || len(infos) != 60 {
				t.Fatalf("mix: %d scenarios, %v", len(infos), err)
			}
			c.check(t, false)
			t.Logf("%d rounds of lists during the mix", rounds)
			live := srv.Live()
			if len(live.Channels) != 0 || len(live.Bridges) != 0 || len(live.Queues[0].Callers) != 0 {
				t.Errorf("after the mix, Live: %+v", live)
			}
			if len(c.tally.chans) != 0 || len(c.tally.bridges) != 0 {
				t.Errorf("after the mix, the events leave %v and %v", c.tally.chans, c.tally.bridges)
			}
			for _, in := range infos {
				want := cdrsPerCall[in.Kind]
				if got := srv.Cdrs(in.Linkedid); len(got) != want || len(in.Cdrs) != want {
					t.Errorf("%s %s: %d Cdrs recorded, %d returned, want %d", in.Kind, in.Linkedid, len(got), len(in.Cdrs), want)
				}
			}
			if calls := fmt.Sprint(live.Queues[0].Members); !strings.Contains(calls, "Agent One") {
				t.Errorf("queue members %s", calls)
			}
		})
	}
}

// TestStartMix_EndlessUntilCancelled: a mix with no Count plays until its
// context ends, then Wait reports why and what it played.
func TestStartMix_EndlessUntilCancelled(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")
	ctx, cancel := context.WithCancel(context.Background())
	mix := srv.StartMix(ctx, amitest.MixSpec{Seed: 7, Rate: 1000, Kinds: []amitest.ScenarioKind{amitest.ScenarioDial}})
	for n := 0; n < 30; {
		if c.read().EventName() == "OriginateResponse" {
			n++
		}
	}
	cancel()
	// This client reads no more: once its queue is full, the scenarios
	// wait for it (a slow client slows the PBX's producers). Closing it
	// ends their session, so they can stop.
	c.conn.Close()
	infos, err := mix.Wait()
	if err != context.Canceled || len(infos) < 30 {
		t.Fatalf("Wait: %d scenarios, %v", len(infos), err)
	}
	for _, in := range infos {
		if in.Kind != amitest.ScenarioDial {
			t.Fatalf("played %s", in.Kind)
		}
	}
}

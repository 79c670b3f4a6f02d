package amiproto_test

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// capture19 is what testdata/captures/LISTS.md states about one issue-19
// scenario's observer session (NAME_observer: events on, the list actions
// sent in mid-call). The values were read off the raw bytes with a script
// that shares no code with this package, not from this Reader.
type capture19 struct {
	ver, name string
	// linkedid: the Linkedids of the scenario's Newchannel events (one call,
	// so one).
	linkedid []string
	// shape: how many of each call event arrived (list entries excluded).
	shape string
	// cdrFirst: a Cdr arrived before the first Newchannel.
	cdrFirst bool
	// cdrs: "Channel > DestinationChannel Disposition BillableSeconds" of
	// each Cdr event, in arrival order.
	cdrs []string
	// lists: per ActionID, the entries between the Success response and
	// the Complete event, "Event=count" in arrival order.
	lists map[string]string
}

// captures19 holds the rows of LISTS.md. 13 and 22 were recorded with the
// same recorder script; their differences are the point of the table.
var captures19 = []capture19{
	{ver: "asterisk-22", name: "19a_local_pair", linkedid: []string{"1796664800.4"},
		shape:    "Newchannel=4 Hangup=4 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=2 DialEnd=2 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/echo@test-00000003;2 >  ANSWERED 2",
			"Local/dial@test-00000002;2 > Local/echo@test-00000003;1 ANSWERED 2",
			"Local/dial@test-00000002;1 >  ANSWERED 2",
		},
		lists: lists19a,
	},
	{ver: "asterisk-22", name: "19b_queue_agent", linkedid: []string{"1796664805.8"},
		shape:    "Newchannel=8 Hangup=8 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=4 DialEnd=5 QueueCallerJoin=1 QueueCallerLeave=1 AgentCalled=3 AgentRingNoAnswer=1 AgentConnect=1 AgentComplete=1 QueueMemberStatus=4 QueueMemberPause=2 OriginateResponse=1 Cdr=5",
		cdrFirst: false,
		cdrs: []string{
			"Local/agent@test-00000007;2 >  ANSWERED 3",
			"Local/queue@test-00000004;2 > Local/busy@test-00000005;1 BUSY 0",
			"Local/queue@test-00000004;2 > Local/busy@test-00000006;1 NO ANSWER 0",
			"Local/queue@test-00000004;2 > Local/agent@test-00000007;1 ANSWERED 3",
			"Local/queue@test-00000004;1 >  ANSWERED 5",
		},
		lists: lists19b,
	},
	{ver: "asterisk-22", name: "19c_blind_transfer", linkedid: []string{"1796664812.16"},
		shape:    "Newchannel=4 Hangup=4 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=2 DialEnd=2 BlindTransfer=1 OriginateResponse=1 Cdr=4",
		cdrFirst: false,
		cdrs: []string{
			"Local/echo@test-00000009;2 >  ANSWERED 0",
			"Local/dial@test-00000008;2 > Local/echo@test-00000009;1 ANSWERED 0",
			"Local/dial@test-00000008;2 >  ANSWERED 2",
			"Local/dial@test-00000008;1 >  ANSWERED 2",
		},
	},
	{ver: "asterisk-22", name: "19d_busy", linkedid: []string{"1796664816.20"},
		shape:    "Newchannel=4 Hangup=4 DialBegin=2 DialEnd=2 OriginateResponse=1 Cdr=3",
		cdrFirst: true,
		cdrs: []string{
			"Local/long@test-0000000a;1 >  ANSWERED 0",
			"Local/long@test-0000000a;1 > Local/busy@test-0000000b;1 BUSY 0",
			"Local/long@test-0000000a;2 >  ANSWERED 0",
		},
	},
	{ver: "asterisk-22", name: "19e_noanswer", linkedid: []string{"1796664818.24"},
		shape:    "Newchannel=4 Hangup=4 DialBegin=2 DialEnd=2 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/long@test-0000000c;1 >  ANSWERED 0",
			"Local/long@test-0000000c;1 > Local/noanswer@test-0000000d;1 NO ANSWER 3",
			"Local/long@test-0000000c;2 >  ANSWERED 3",
		},
	},
	{ver: "asterisk-22", name: "19f_originate_busy", linkedid: []string{"1796664823.28"},
		shape:    "Newchannel=2 Hangup=2 DialBegin=1 DialEnd=1 QueueMemberStatus=2 OriginateResponse=1",
		cdrFirst: false,
	},
	{ver: "asterisk-22", name: "19g_dial_failed", linkedid: []string{"1796667065.54"},
		shape:    "Newchannel=4 Hangup=4 DialBegin=1 DialEnd=1 OriginateResponse=1 Cdr=2",
		cdrFirst: false,
		cdrs: []string{
			"Local/long@test-0000001b;2 >  ANSWERED 0",
			"Local/long@test-0000001b;1 >  ANSWERED 0",
		},
	},
	{ver: "asterisk-22", name: "19h_queue_abandon", linkedid: []string{"1796667067.58"},
		shape:    "Newchannel=6 Hangup=6 DialBegin=3 DialEnd=3 QueueCallerJoin=1 QueueCallerLeave=1 QueueCallerAbandon=1 AgentCalled=2 AgentRingNoAnswer=2 QueueMemberStatus=2 QueueMemberPause=2 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/queue@test-0000001d;1 >  ANSWERED 1",
			"Local/queue@test-0000001d;2 > Local/busy@test-0000001e;1 BUSY 0",
			"Local/queue@test-0000001d;2 > Local/busy@test-0000001f;1 BUSY 0",
		},
	},
	{ver: "asterisk-22", name: "19i_attended_transfer", linkedid: []string{"1796667261.16"},
		shape:    "Newchannel=6 Hangup=6 BridgeCreate=2 BridgeEnter=5 BridgeLeave=5 BridgeDestroy=2 DialBegin=2 DialEnd=3 AttendedTransfer=1 OriginateResponse=1 Cdr=7",
		cdrFirst: false,
		cdrs: []string{
			"Local/long@test-00000008;2 >  ANSWERED 0",
			"Local/long@test-00000008;1 >  ANSWERED 0",
			"Local/long@test-00000008;1 > Local/long@test-00000009;1 ANSWERED 0",
			"Local/long@test-00000008;1 > Local/200@test-0000000a;1 ANSWERED 0",
			"Local/200@test-0000000a;2 >  ANSWERED 2",
			"Local/200@test-0000000a;1 > Local/long@test-00000009;1 ANSWERED 2",
			"Local/long@test-00000009;2 >  ANSWERED 2",
		},
	},

	{ver: "asterisk-13", name: "19a_local_pair", linkedid: []string{"1796665722.0"},
		shape:    "Newchannel=4 Hangup=4 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=2 DialEnd=2 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/echo@test-00000001;2 >  ANSWERED 2",
			"Local/dial@test-00000000;2 > Local/echo@test-00000001;1 ANSWERED 2",
			"Local/dial@test-00000000;1 >  ANSWERED 2",
		},
		lists: lists19a,
	},
	{ver: "asterisk-13", name: "19b_queue_agent", linkedid: []string{"1796665727.7"},
		shape:    "Newchannel=8 Hangup=8 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=4 DialEnd=5 QueueCallerJoin=1 QueueCallerLeave=1 AgentCalled=3 AgentRingNoAnswer=1 AgentConnect=1 AgentComplete=1 QueueMemberStatus=10 QueueMemberPause=2 OriginateResponse=1 Cdr=5",
		cdrFirst: false,
		cdrs: []string{
			"Local/agent@test-00000005;2 >  ANSWERED 3",
			"Local/queue@test-00000002;2 > Local/busy@test-00000003;1 BUSY 0",
			"Local/queue@test-00000002;2 > Local/busy@test-00000004;1 NO ANSWER 0",
			"Local/queue@test-00000002;2 > Local/agent@test-00000005;1 ANSWERED 3",
			"Local/queue@test-00000002;1 >  ANSWERED 5",
		},
		lists: lists19b,
	},
	{ver: "asterisk-13", name: "19c_blind_transfer", linkedid: []string{"1796665734.20"},
		shape:    "Newchannel=4 Hangup=4 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=2 DialEnd=2 BlindTransfer=1 OriginateResponse=1 Cdr=4",
		cdrFirst: false,
		cdrs: []string{
			"Local/echo@test-00000007;2 >  ANSWERED 0",
			"Local/dial@test-00000006;2 > Local/echo@test-00000007;1 ANSWERED 0",
			"Local/dial@test-00000006;2 >  ANSWERED 2",
			"Local/dial@test-00000006;1 >  ANSWERED 2",
		},
	},
	{ver: "asterisk-13", name: "19d_busy", linkedid: []string{"1796665738.28"},
		shape:    "Newchannel=4 Hangup=4 DialBegin=2 DialEnd=2 QueueMemberStatus=3 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/long@test-00000008;2 >  ANSWERED 0",
			"Local/long@test-00000008;1 >  ANSWERED 0",
			"Local/long@test-00000008;1 > Local/busy@test-00000009;1 BUSY 0",
		},
	},
	{ver: "asterisk-13", name: "19e_noanswer", linkedid: []string{"1796665740.35"},
		shape:    "Newchannel=4 Hangup=4 DialBegin=2 DialEnd=2 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/long@test-0000000a;1 >  ANSWERED 0",
			"Local/long@test-0000000a;1 > Local/noanswer@test-0000000b;1 NO ANSWER 3",
			"Local/long@test-0000000a;2 >  ANSWERED 3",
		},
	},
	{ver: "asterisk-13", name: "19f_originate_busy", linkedid: []string{"1796665745.42"},
		shape:    "Newchannel=2 Hangup=2 DialBegin=1 DialEnd=1 QueueMemberStatus=3 OriginateResponse=1",
		cdrFirst: false,
	},
	{ver: "asterisk-13", name: "19g_dial_failed", linkedid: []string{"1796667079.44"},
		shape:    "Newchannel=4 Hangup=4 DialBegin=1 DialEnd=1 OriginateResponse=1 Cdr=2",
		cdrFirst: false,
		cdrs: []string{
			"Local/long@test-0000000d;2 >  ANSWERED 0",
			"Local/long@test-0000000d;1 >  ANSWERED 0",
		},
	},
	{ver: "asterisk-13", name: "19h_queue_abandon", linkedid: []string{"1796667081.50"},
		shape:    "Newchannel=6 Hangup=6 DialBegin=3 DialEnd=3 QueueCallerJoin=1 QueueCallerLeave=1 QueueCallerAbandon=1 AgentCalled=2 AgentRingNoAnswer=2 QueueMemberStatus=6 QueueMemberPause=2 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/queue@test-0000000f;1 >  ANSWERED 1",
			"Local/queue@test-0000000f;2 > Local/busy@test-00000010;1 BUSY 0",
			"Local/queue@test-0000000f;2 > Local/busy@test-00000011;1 BUSY 0",
		},
	},
	{ver: "asterisk-13", name: "19i_attended_transfer", linkedid: []string{"1796667271.0"},
		shape:    "Newchannel=6 Hangup=6 BridgeCreate=2 BridgeEnter=5 BridgeLeave=5 BridgeDestroy=2 DialBegin=2 DialEnd=2 AttendedTransfer=1 OriginateResponse=1 Cdr=7",
		cdrFirst: false,
		cdrs: []string{
			"Local/long@test-00000000;1 >  ANSWERED 0",
			"Local/long@test-00000000;1 > Local/long@test-00000001;1 ANSWERED 0",
			"Local/long@test-00000000;1 > Local/200@test-00000002;1 ANSWERED 0",
			"Local/long@test-00000000;2 >  ANSWERED 0",
			"Local/200@test-00000002;2 >  ANSWERED 2",
			"Local/200@test-00000002;1 > Local/long@test-00000001;1 ANSWERED 2",
			"Local/long@test-00000001;2 >  ANSWERED 2",
		},
	},

	{ver: "asterisk-18", name: "19a_local_pair", linkedid: []string{"1796666680.0"},
		shape:    "Newchannel=4 Hangup=4 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=2 DialEnd=2 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/echo@test-00000001;2 >  ANSWERED 2",
			"Local/dial@test-00000000;2 > Local/echo@test-00000001;1 ANSWERED 2",
			"Local/dial@test-00000000;1 >  ANSWERED 2",
		},
		lists: lists19a,
	},
	{ver: "asterisk-18", name: "19b_queue_agent", linkedid: []string{"1796666685.7"},
		shape:    "Newchannel=8 Hangup=8 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=4 DialEnd=5 QueueCallerJoin=1 QueueCallerLeave=1 AgentCalled=3 AgentRingNoAnswer=1 AgentConnect=1 AgentComplete=1 QueueMemberStatus=4 QueueMemberPause=2 OriginateResponse=1 Cdr=5",
		cdrFirst: false,
		cdrs: []string{
			"Local/agent@test-00000005;2 >  ANSWERED 3",
			"Local/queue@test-00000002;1 >  ANSWERED 5",
			"Local/queue@test-00000002;2 > Local/busy@test-00000003;1 BUSY 0",
			"Local/queue@test-00000002;2 > Local/busy@test-00000004;1 NO ANSWER 0",
			"Local/queue@test-00000002;2 > Local/agent@test-00000005;1 ANSWERED 3",
		},
		lists: lists19b,
	},

	{ver: "asterisk-20", name: "19a_local_pair", linkedid: []string{"1796666953.0"},
		shape:    "Newchannel=4 Hangup=4 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=2 DialEnd=2 OriginateResponse=1 Cdr=3",
		cdrFirst: false,
		cdrs: []string{
			"Local/echo@test-00000001;2 >  ANSWERED 2",
			"Local/dial@test-00000000;2 > Local/echo@test-00000001;1 ANSWERED 2",
			"Local/dial@test-00000000;1 >  ANSWERED 2",
		},
		lists: lists19a,
	},
	{ver: "asterisk-20", name: "19b_queue_agent", linkedid: []string{"1796666958.4"},
		shape:    "Newchannel=8 Hangup=8 BridgeCreate=1 BridgeEnter=2 BridgeLeave=2 BridgeDestroy=1 DialBegin=4 DialEnd=5 QueueCallerJoin=1 QueueCallerLeave=1 AgentCalled=3 AgentRingNoAnswer=1 AgentConnect=1 AgentComplete=1 QueueMemberStatus=6 QueueMemberPause=2 OriginateResponse=1 Cdr=5",
		cdrFirst: false,
		cdrs: []string{
			"Local/agent@test-00000005;2 >  ANSWERED 3",
			"Local/queue@test-00000002;1 >  ANSWERED 5",
			"Local/queue@test-00000002;2 > Local/busy@test-00000003;1 BUSY 0",
			"Local/queue@test-00000002;2 > Local/busy@test-00000004;1 NO ANSWER 0",
			"Local/queue@test-00000002;2 > Local/agent@test-00000005;1 ANSWERED 3",
		},
		lists: lists19b,
	},
}

// The lists of 19a and 19b are the same on every version recorded.
var (
	lists19a = map[string]string{
		"talk-coreshowchannels": "CoreShowChannel=4",
		"talk-bridgelist":       "BridgeListItem=1",
		"talk-bridgeinfo-1":     "BridgeInfoChannel=2",
		"talk-queuestatus":      "QueueParams=1 QueueMember=2",
		"talk-queuesummary":     "QueueSummary=1",
		"talk-devicestatelist":  "DeviceStateChange=3",
		"talk-status":           "Status=4",
	}
	lists19b = map[string]string{
		"wait-coreshowchannels": "CoreShowChannel=2",
		"wait-queuestatus":      "QueueParams=1 QueueMember=2 QueueEntry=1",
		"wait-queuesummary":     "QueueSummary=1",
		"wait-devicestatelist":  "DeviceStateChange=4",
		"wait-status":           "Status=2",
		"talk-coreshowchannels": "CoreShowChannel=4",
		"talk-bridgelist":       "BridgeListItem=1",
		"talk-bridgeinfo-1":     "BridgeInfoChannel=2",
		"talk-queuestatus":      "QueueParams=1 QueueMember=2",
		"talk-queuesummary":     "QueueSummary=1",
		"talk-devicestatelist":  "DeviceStateChange=4",
		"talk-status":           "Status=4",
		"wait-bridgelist":       "",
	}
)

// shapeEvents are the call events counted in capture19.shape.
var shapeEvents = []string{
	"Newchannel", "Hangup", "BridgeCreate", "BridgeEnter", "BridgeLeave", "BridgeDestroy",
	"DialBegin", "DialEnd", "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled",
	"AgentRingNoAnswer", "AgentConnect", "AgentComplete", "BlindTransfer", "AttendedTransfer",
	"QueueMemberStatus", "QueueMemberPause", "OriginateResponse", "Cdr",
}

// TestCaptures19 keeps the issue-19 captures and LISTS.md honest: each
// observer session reads into whole messages, its call has one Linkedid,
// its Cdr events and list answers are the ones LISTS.md states, every list
// ends with a Complete whose ListItems counts its entries, and every Cdr
// belongs to a channel of the call.
func TestCaptures19(t *testing.T) {
	for _, tc := range captures19 {
		t.Run(tc.ver+"/"+tc.name, func(t *testing.T) {
			raw := loadRecv(t, tc.ver, tc.name+"_observer")
			_, msgs := replayAll(t, amiproto.NewReader(bytes.NewReader(raw)))
			if n := bytes.Count(raw, []byte("\r\n\r\n")); n != len(msgs) {
				t.Errorf("%d messages read, the bytes hold %d message terminators", len(msgs), n)
			}

			linked := map[string]string{} // Uniqueid → Linkedid
			counts := map[string]int{}
			var cdrs []string
			firstCdr, firstNew := -1, -1
			for i, m := range msgs {
				if m.Kind() != amiproto.KindEvent {
					continue
				}
				name := m.EventName()
				if m.ActionID() != "" && name != "OriginateResponse" {
					continue // a list entry, not a call event
				}
				counts[name]++
				switch name {
				case "Newchannel":
					linked[m.Get("Uniqueid")] = m.Get("Linkedid")
					if firstNew < 0 {
						firstNew = i
					}
				case "Cdr":
					if firstCdr < 0 {
						firstCdr = i
					}
					cdrs = append(cdrs, fmt.Sprintf("%s > %s %s %s", m.Get("Channel"), m.Get("DestinationChannel"), m.Get("Disposition"), m.Get("BillableSeconds")))
				}
			}
			if got := slices.Sorted(maps.Values(dedupe(linked))); !slices.Equal(got, tc.linkedid) {
				t.Errorf("Linkedids %q, want %q", got, tc.linkedid)
			}
			var shape []string
			for _, n := range shapeEvents {
				if counts[n] > 0 {
					shape = append(shape, n+"="+strconv.Itoa(counts[n]))
				}
			}
			if got := strings.Join(shape, " "); got != tc.shape {
				t.Errorf("call events:\n got %s\nwant %s", got, tc.shape)
			}
			if got := firstCdr >= 0 && firstCdr < firstNew; got != tc.cdrFirst {
				t.Errorf("a Cdr before the first Newchannel: %v, want %v", got, tc.cdrFirst)
			}
			if !slices.Equal(cdrs, tc.cdrs) {
				t.Errorf("Cdr events:\n got %q\nwant %q", cdrs, tc.cdrs)
			}
			for _, m := range msgs {
				if m.EventName() != "Cdr" {
					continue
				}
				uid := m.Get("UniqueID")
				if lid, ok := linked[uid]; !ok || !slices.Contains(tc.linkedid, lid) {
					t.Errorf("Cdr of %s: UniqueID %s is no channel of the call", m.Get("Channel"), uid)
				}
				if lid := m.Get("LinkedID"); lid != "" && lid != linked[uid] {
					t.Errorf("Cdr of %s: LinkedID %s, its channel's is %s", m.Get("Channel"), lid, linked[uid])
				}
			}

			got := lists19(t, msgs)
			if !maps.Equal(got, tc.lists) && !(len(got) == 0 && len(tc.lists) == 0) {
				t.Errorf("list answers:\n got %q\nwant %q", got, tc.lists)
			}
		})
	}
}

func dedupe(m map[string]string) map[string]string {
	out := map[string]string{}
	for _, v := range m {
		out[v] = v
	}
	return out
}

// lists19 returns, per list ActionID, its entries as "Event=count" in
// arrival order, and checks the framing: a Success response with
// "EventList: start" first, a Complete event last whose ListItems is the
// number of entries.
func lists19(t *testing.T, msgs []*amiproto.Message) map[string]string {
	t.Helper()
	out := map[string]string{}
	type list struct {
		names   []string
		counts  map[string]int
		entries int
		done    bool
	}
	open := map[string]*list{}
	for _, m := range msgs {
		id := m.ActionID()
		if id == "" {
			continue
		}
		switch {
		case m.Kind() == amiproto.KindResponse && strings.EqualFold(m.Get("EventList"), "start"):
			open[id] = &list{counts: map[string]int{}}
		case m.Kind() == amiproto.KindEvent && strings.EqualFold(m.Get("EventList"), "Complete"):
			l := open[id]
			if l == nil || l.done {
				t.Errorf("%s: a Complete event without its start", id)
				continue
			}
			l.done = true
			if n, err := strconv.Atoi(m.Get("ListItems")); err != nil || n != l.entries {
				t.Errorf("%s: ListItems %q, %d entries came", id, m.Get("ListItems"), l.entries)
			}
			var s []string
			for _, n := range l.names {
				s = append(s, n+"="+strconv.Itoa(l.counts[n]))
			}
			out[id] = strings.Join(s, " ")
		case m.Kind() == amiproto.KindEvent && open[id] != nil && !open[id].done:
			l := open[id]
			if l.counts[m.EventName()] == 0 {
				l.names = append(l.names, m.EventName())
			}
			l.counts[m.EventName()]++
			l.entries++
		}
	}
	for id, l := range open {
		if !l.done {
			t.Errorf("%s: no Complete event", id)
		}
	}
	return out
}

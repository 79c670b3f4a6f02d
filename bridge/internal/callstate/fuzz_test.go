package callstate

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// FuzzApply drives the model with arbitrary sequences of the events it
// uses, on a few channels, calls and bridges, with syncs in between, and
// checks what must always hold: no panic, each call counts exactly its
// live channels, every value is valid JSON, and once every channel is
// hung up no call is left.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{0, 16, 32, 48, 3, 19, 35, 51, 7, 23, 13, 29, 45, 61})
	uids := []string{"1.1", "1.2", "2.1", "2.2"}
	links := []string{"1.1", "2.1"}
	states := []string{"Down", "Ring", "Up"}
	f.Fuzz(func(t *testing.T, ops []byte) {
		m, clk := newModel()
		var sync *Sync
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			uid := uids[arg%4]
			link := links[(arg>>2)%2]
			st := states[(arg>>3)%3]
			clk.tick(time.Duration(arg) * time.Millisecond * 10)
			var e *amiproto.Message
			switch op % 16 {
			case 0:
				e = chanEv("Newchannel", uid, link, st)
			case 1:
				e = chanEv("Newstate", uid, link, st)
			case 2:
				e = chanEv("Hangup", uid, link, st, "Cause", "16")
			case 3:
				e = dial("DialBegin", uid, uids[(arg>>4)%4], st)
			case 4:
				e = dial("DialEnd", uid, uids[(arg>>4)%4], st, "DialStatus", []string{"ANSWER", "BUSY", "NOANSWER", "CANCEL"}[(arg>>4)%4])
			case 5:
				e = chanEv("BridgeEnter", uid, link, st, "BridgeUniqueid", "br1")
			case 6:
				e = chanEv("BridgeLeave", uid, link, st, "BridgeUniqueid", "br1")
			case 7:
				e = ev("BridgeDestroy", "BridgeUniqueid", "br1")
			case 8:
				e = chanEv("QueueCallerJoin", uid, link, st, "Queue", "q", "Position", "1", "Count", "1")
			case 9:
				e = chanEv("QueueCallerLeave", uid, link, st, "Queue", "q", "Position", "1", "Count", "0")
			case 10:
				e = chanEv("Newexten", uid, link, st, "Exten", []string{"s", "h"}[arg%2], "Application", "Wait")
			case 11:
				e = ev("Cdr", "UniqueID", uid, "Disposition", "ANSWERED", "BillableSeconds", "1")
			case 12:
				s := m.BeginSync()
				sync = &s
			case 13:
				if sync != nil {
					var list []*amiproto.Message
					for _, u := range uids[:arg%5] {
						list = append(list, listed(u, links[0]))
					}
					m.EndSync(*sync, &Lists{Channels: list}, clk.now)
					sync = nil
				}
			case 14:
				e = chanEv("BlindTransfer", uid, link, st)
			default:
				m.Flush(arg%2 == 0, func(c Change) {
					if c.Value != nil && !json.Valid(c.Value) {
						t.Fatalf("%s: invalid JSON %q", c.Key, c.Value)
					}
				})
			}
			if e != nil {
				m.Apply(e)
			}
			m.mu.Lock()
			live := map[string]int{}
			for _, c := range m.channels {
				live[c.v.Linkedid]++
			}
			for id, cl := range m.calls {
				if cl.live != live[id] {
					t.Fatalf("after op %d: call %s counts %d live channels, has %d", i/2, id, cl.live, live[id])
				}
			}
			for id := range live {
				if m.calls[id] == nil {
					t.Fatalf("after op %d: channels of %s without a call", i/2, id)
				}
			}
			m.mu.Unlock()
		}
		for _, u := range uids {
			m.Apply(chanEv("Hangup", u, "x", "Up"))
		}
		m.Flush(false, func(Change) {})
		if c := m.Counts(); c["channels"] != 0 || c["calls"] != 0 {
			t.Fatalf("after every Hangup: %v", c)
		}
	})
}

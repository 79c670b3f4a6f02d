package callstate

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// observerRun replays an issue-19 observer capture (events on, list actions
// sent during the calls, "<phase>-<action>" ActionIDs) as the bridge
// would: events through Apply, a sync around each phase's lists. At each
// CoreShowChannels it compares the model with the list.
type observerRun struct {
	t       *testing.T
	m       *Model
	sync    *Sync
	lists   *Lists
	info    map[string][]*amiproto.Message // BridgeInfo entries by ActionID
	sums    []Summary
	recs    []subjects.CallRecord
	keys    map[string][]byte // the bucket
	checked int               // CoreShowChannels lists compared with the model
	// late: the bridge starts at the first lists, having seen no event
	// before them; the model is then not compared with the lists.
	late      bool
	afterSync func(i int) // called after the i-th sync's Flush
}

func (r *observerRun) flush() {
	r.recs = append(r.recs, flushInto(r.m, r.keys)...)
}

func (r *observerRun) endSync(now time.Time) {
	if r.sync == nil {
		return
	}
	for _, entries := range r.info {
		var bid string
		var chans []*amiproto.Message
		for _, e := range entries {
			switch e.EventName() {
			case "BridgeInfoComplete":
				bid = e.Get("BridgeUniqueid")
			case "BridgeInfoChannel":
				chans = append(chans, e)
			}
		}
		if bid != "" {
			if r.lists.BridgeInfo == nil {
				r.lists.BridgeInfo = map[string][]*amiproto.Message{}
			}
			r.lists.BridgeInfo[bid] = chans
		}
	}
	r.sums = append(r.sums, r.m.EndSync(*r.sync, r.lists, now))
	r.sync, r.lists, r.info = nil, nil, nil
	r.flush()
	if r.afterSync != nil {
		r.afterSync(len(r.sums) - 1)
	}
}

// compareChannels: the model, built from events alone, holds the channels
// CoreShowChannels lists, with their state, Linkedid and bridge.
func (r *observerRun) compareChannels(list []*amiproto.Message) {
	if r.late && len(r.sums) == 0 {
		return
	}
	r.checked++
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	var listed []string
	for _, e := range list {
		uid := e.Get("Uniqueid")
		listed = append(listed, uid)
		c := r.m.channels[uid]
		if c == nil {
			r.t.Errorf("listed channel %s (%s) not in the model", uid, e.Get("Channel"))
			continue
		}
		if c.v.State != e.Get("ChannelStateDesc") || c.v.Linkedid != e.Get("Linkedid") || c.v.Channel != e.Get("Channel") ||
			c.v.CallerID.Number != party(e.Get("CallerIDNum")) || (e.Has("BridgeId") && c.v.Bridge != e.Get("BridgeId")) {
			r.t.Errorf("channel %s: model %+v, list %v", uid, c.v, e)
		}
	}
	for uid := range r.m.channels {
		if !slices.Contains(listed, uid) {
			r.t.Errorf("model has channel %s the list lacks", uid)
		}
	}
}

func (r *observerRun) run(msgs []recvMsg) {
	var now time.Time
	r.m.SetClock(func() time.Time { return now })
	for _, rm := range msgs {
		now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(rm.at)
		e := rm.m
		id := e.ActionID()
		phase, action, _ := strings.Cut(id, "-")
		isList := id != "" && phase != "login" && phase != "logoff" && phase != "orig"
		switch {
		case e.Kind() == amiproto.KindResponse && isList:
			if !strings.EqualFold(e.Get("EventList"), "start") {
				continue // refused: that list stays nil
			}
			if r.sync == nil {
				s := r.m.BeginSync()
				r.sync, r.lists, r.info = &s, &Lists{}, map[string][]*amiproto.Message{}
			}
			switch {
			case action == "coreshowchannels":
				r.lists.Channels = []*amiproto.Message{}
			case action == "bridgelist":
				r.lists.Bridges = []*amiproto.Message{}
			case action == "queuestatus":
				r.lists.Queues = []*amiproto.Message{}
			case action == "devicestatelist":
				r.lists.Devices = []*amiproto.Message{}
			}
		case e.Kind() == amiproto.KindEvent && isList && r.lists != nil:
			name := e.EventName()
			switch {
			case name == "CoreShowChannel":
				r.lists.Channels = append(r.lists.Channels, e)
			case name == "CoreShowChannelsComplete":
				r.compareChannels(r.lists.Channels)
			case name == "BridgeListItem":
				r.lists.Bridges = append(r.lists.Bridges, e)
			case strings.HasPrefix(action, "bridgeinfo"):
				r.info[id] = append(r.info[id], e)
			case action == "queuestatus" && !strings.HasSuffix(name, "Complete"):
				r.lists.Queues = append(r.lists.Queues, e)
			case name == "DeviceStateChange":
				r.lists.Devices = append(r.lists.Devices, e)
			case name == "StatusComplete":
				r.endSync(now)
			}
		case e.Kind() == amiproto.KindEvent && id == "":
			if r.late && r.sync == nil && len(r.sums) == 0 {
				continue // not connected yet
			}
			r.m.Apply(e)
			r.flush()
		}
	}
	r.endSync(now)
	r.flush()
}

// TestCapture_Observers19: every issue-19 observer capture, real Asterisk
// (Local pair, queue answered by an agent, blind transfer, busy, no
// answer, originate to a busy member): the model agrees with the lists
// the PBX gave during the calls, each sync added and removed no channel
// or bridge, every call gives one record that agrees with its Cdr events,
// and nothing but devices and queues is left at the end.
func TestCapture_Observers19(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(captures, "asterisk-*", "19*_observer.recv.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 6 {
		t.Fatalf("%d observer captures, want at least the 6 of Asterisk 22", len(files))
	}
	for _, f := range files {
		ver := strings.TrimPrefix(filepath.Base(filepath.Dir(f)), "asterisk-")
		name := strings.TrimSuffix(filepath.Base(f), ".recv.bin")
		t.Run(ver+"/"+name, func(t *testing.T) {
			msgs := loadCapture(t, ver, name)
			r := &observerRun{t: t, m: New("pbx1"), keys: map[string][]byte{}}
			r.run(msgs)
			for i, s := range r.sums {
				for _, k := range []string{subjects.KindChannels, subjects.KindBridges} {
					if s.Added[k] != 0 || s.Removed[k] != 0 {
						t.Errorf("sync %d: %s added %d removed %d: the events had not built what the lists say", i, k, s.Added[k], s.Removed[k])
					}
				}
				if s.Closed != 0 {
					t.Errorf("sync %d closed %d calls", i, s.Closed)
				}
			}
			exact := checkRecords(t, msgs, r.recs)
			for _, rec := range r.recs {
				t.Logf("record %s: %s billable %d duration %d caller %+v callees %+v queue %+v transfers %+v bridges %d cdr %+v",
					rec.Linkedid, rec.Disposition, rec.BillableS, rec.DurationS, rec.Caller, rec.Callees, rec.Queue, rec.Transfers, len(rec.Bridges), rec.Cdr)
			}
			t.Logf("%d syncs, %d channel lists compared, %d records, %d with billable equal to the Cdrs'", len(r.sums), r.checked, len(r.recs), exact)
			for k := range r.keys {
				if !strings.HasPrefix(k, "devices.") && !strings.HasPrefix(k, "queues.") {
					t.Errorf("key %s left after the calls", k)
				}
			}
		})
	}
}

// TestCapture_Observers19_LateStart: the bridge starts during the calls,
// at the capture's first lists: the sync adds every listed channel and
// bridge, and the calls, seen only from then on, each give one record
// with their end seen and nothing is left afterwards.
func TestCapture_Observers19_LateStart(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(captures, "asterisk-*", "19*_observer.recv.bin"))
	tested := 0
	for _, f := range files {
		ver := strings.TrimPrefix(filepath.Base(filepath.Dir(f)), "asterisk-")
		name := strings.TrimSuffix(filepath.Base(f), ".recv.bin")
		msgs := loadCapture(t, ver, name)
		listed := map[string]map[string]bool{} // phase → Uniqueids of its CoreShowChannel
		bridges := map[string]map[string]bool{}
		members := map[string][]string{} // phase → Uniqueids of its BridgeInfoChannel
		var first string
		for _, rm := range msgs {
			phase, _, _ := strings.Cut(rm.m.ActionID(), "-")
			switch rm.m.EventName() {
			case "CoreShowChannel":
				if first == "" {
					first = phase
				}
				if listed[phase] == nil {
					listed[phase] = map[string]bool{}
				}
				listed[phase][rm.m.Get("Linkedid")+" "+rm.m.Get("Uniqueid")] = true
			case "BridgeListItem":
				if bridges[phase] == nil {
					bridges[phase] = map[string]bool{}
				}
				bridges[phase][rm.m.Get("BridgeUniqueid")] = true
			case "BridgeInfoChannel":
				members[phase] = append(members[phase], rm.m.Get("Uniqueid"))
			}
		}
		if first == "" || len(listed[first]) == 0 {
			continue
		}
		tested++
		t.Run(ver+"/"+name, func(t *testing.T) {
			r := &observerRun{t: t, m: New("pbx1"), keys: map[string][]byte{}, late: true}
			r.afterSync = func(i int) {
				if i != 0 {
					return
				}
				var in []string
				for id := range bridges[first] {
					var b subjects.StateBridge
					if err := json.Unmarshal(r.keys[subjects.KindBridges+"."+subjects.EscapeKeyToken(id)], &b); err != nil {
						t.Fatalf("bridge %s: %v", id, err)
					}
					for _, x := range b.Members {
						in = append(in, x.Uniqueid)
					}
				}
				slices.Sort(in)
				want := slices.Sorted(slices.Values(members[first]))
				if !slices.Equal(in, want) {
					t.Errorf("bridge members after the first sync %q, BridgeInfo says %q", in, want)
				}
			}
			r.run(msgs)
			if len(r.sums) == 0 {
				t.Fatal("no sync")
			}
			s := r.sums[0]
			if s.Added[subjects.KindChannels] != len(listed[first]) || s.Added[subjects.KindBridges] != len(bridges[first]) || s.Removed[subjects.KindChannels] != 0 {
				t.Errorf("first sync %+v, want %d channels and %d bridges added", s, len(listed[first]), len(bridges[first]))
			}
			calls := map[string]bool{}
			for k := range listed[first] {
				l, _, _ := strings.Cut(k, " ")
				calls[l] = true
			}
			got := map[string]int{}
			for _, rec := range r.recs {
				got[rec.Linkedid]++
				if !rec.EndSeen || rec.End.IsZero() || rec.Disposition == "" {
					t.Errorf("record %+v", rec)
				}
				t.Logf("record %s: %s billable %d bridges %v queue %+v", rec.Linkedid, rec.Disposition, rec.BillableS, rec.Bridges, rec.Queue)
			}
			for l := range calls {
				if got[l] != 1 {
					t.Errorf("call %s: %d records, want 1", l, got[l])
				}
			}
			for k := range r.keys {
				if !strings.HasPrefix(k, "devices.") && !strings.HasPrefix(k, "queues.") {
					t.Errorf("key %s left after the calls", k)
				}
			}
		})
	}
	if tested == 0 {
		t.Fatal("no observer capture lists a channel")
	}
}

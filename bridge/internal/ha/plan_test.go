package ha

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// pbxEvents returns n events as a PBX numbers them: fps[i] is the
// fingerprint and chains[i] the chain of event i+1 (Ami-Seq i+1 of the
// first active), computed the way every process computes them.
func pbxEvents(n int, fp func(i int) uint64) (fps, chains []uint64) {
	var c Chain
	for i := range n {
		fps = append(fps, fp(i))
		chains = append(chains, c.Add(fp(i)))
	}
	return fps, chains
}

func distinct(i int) uint64 { return uint64(1000 + i) }

// process is what one bridge read: the PBX's events from index from (0
// based) to to (exclusive), numbered locally from local, its chain run
// over what it read only (it logged in at from).
type process struct {
	seqs, chains []uint64
	fps          []uint64
}

func read(fps []uint64, from, to int, local uint64) *process {
	p := &process{}
	var c Chain
	for i := from; i < to; i++ {
		p.seqs = append(p.seqs, local+uint64(i-from))
		p.chains = append(p.chains, c.Add(fps[i]))
		p.fps = append(p.fps, fps[i])
	}
	return p
}

// since keeps the entries above local seq after (a ring trimmed, or a
// login's boundary).
func (p *process) since(after uint64) *process {
	q := &process{}
	for i, s := range p.seqs {
		if s > after {
			q.seqs, q.chains, q.fps = append(q.seqs, s), append(q.chains, p.chains[i]), append(q.fps, p.fps[i])
		}
	}
	return q
}

func (p *process) Len() int           { return len(p.seqs) }
func (p *process) Seq(i int) uint64   { return p.seqs[i] }
func (p *process) Chain(i int) uint64 { return p.chains[i] }
func (p *process) Same(i int, event string, data []byte) bool {
	return event == "E" && string(data) == strconv.FormatUint(p.fps[i], 10)
}

// tailAt is the stored message of the PBX's event index i (0 based), as
// the first active published it: Ami-Seq i+1.
func tailAt(fps, chains []uint64, i int) Tail {
	return Tail{Found: true, Seq: uint64(i + 1), Epoch: 7, Chain: chains[i], Event: "E", Data: []byte(strconv.FormatUint(fps[i], 10))}
}

// continues checks that d makes the process publish the PBX's event
// index next as Ami-Seq next+1, and says so by its plan.
func continues(t *testing.T, d Decision, p *process, next int, from int) {
	t.Helper()
	if d.Gap != nil || !d.Matched || d.Epoch != 7 {
		t.Fatalf("plan %+v (gap %v): want matched, no gap, epoch 7", d, d.Gap)
	}
	local := d.After + 1 // the process's local seq of PBX event index next
	if want := p.seqs[0] + uint64(next-from); local != want {
		t.Fatalf("publishes from local seq %d, want %d (PBX event %d)", local, want, next+1)
	}
	if seq := uint64(int64(local) + d.Offset); seq != uint64(next+1) {
		t.Fatalf("PBX event %d published as Ami-Seq %d", next+1, seq)
	}
}

// A quiet PBX: a standby whose ring holds only a handful of events,
// read long ago, continues exactly after the stream's last one (issue 16
// item 3: fewer than 8 distinct events never lined up).
func TestPlan_QuietPBXContinuesExactly(t *testing.T) {
	fps, chains := pbxEvents(6, distinct) // one call's few events, then 3 UserEvents
	standby := read(fps, 0, 6, 1)
	for last := range 6 { // the old active stored up to event last+1
		d := planOf(tailAt(fps, chains, last), standby, Own{}, nil, 1<<16, 6, 99)
		if last == 5 {
			continues(t, d, standby, 6, 0)
			if d.Replay != 0 {
				t.Fatalf("replay %d after the last event", d.Replay)
			}
			continue
		}
		continues(t, d, standby, last+1, 0)
		if d.Replay != 5-last {
			t.Fatalf("replay %d, want %d", d.Replay, 5-last)
		}
	}
}

// A standby that logged in after the first events has a chain over fewer
// of them: it matches only once its window is the active's, W events
// later. Before that no place is proven: a gap, never a guess.
func TestPlan_StandbyThatLoggedInLaterMatchesOnceItsWindowIsFull(t *testing.T) {
	fps, chains := pbxEvents(3*W, distinct)
	standby := read(fps, 10, 3*W, 501)
	d := planOf(tailAt(fps, chains, 10+W-2), standby, Own{}, nil, 1<<16, 0, 99)
	if d.Matched || d.Gap == nil {
		t.Fatalf("plan %+v matched with a window the active did not have", d)
	}
	d = planOf(tailAt(fps, chains, 10+W-1), standby, Own{}, nil, 1<<16, 0, 99)
	continues(t, d, standby, 10+W, 10)
}

// The ring does not reach back: the gap runs from the stream's last
// number + 1 to the old active's limit + 1, and the oldest event held
// becomes limit + 2: nothing the stream may hold is sent under a new
// number.
func TestPlan_GapWhenTheRingDoesNotReachBack(t *testing.T) {
	fps, chains := pbxEvents(200, distinct)
	standby := read(fps, 0, 200, 1).since(150) // trimmed: holds 151..200
	d := planOf(tailAt(fps, chains, 99), standby, Own{}, nil, 600, 200, 99)
	if d.Matched || d.Gap == nil || *d.Gap != (Gap{From: 101, To: 601}) {
		t.Fatalf("plan %+v gap %v; want gap 101..601", d, d.Gap)
	}
	if d.After != 150 || int64(151)+d.Offset != 602 || d.Replay != 50 || d.Epoch != 7 {
		t.Fatalf("plan %+v: want local 151 published as 602, 50 replayed, epoch 7", d)
	}
}

// A standby that read only a few events before the tail (it logged in
// during a quiet spell) and has no Mark cannot prove its place by the
// chain, although the tail is in its ring: it reports the gap, and leaves
// out what the stream may hold.
func TestPlan_ShortHistoryIsUnproven(t *testing.T) {
	fp := func(i int) uint64 {
		if i >= 30 {
			return 5 // equal UserEvents after a call
		}
		return distinct(i)
	}
	fps, chains := pbxEvents(36, fp)
	standby := read(fps, 30, 36, 1) // logged in during the silence
	d := planOf(tailAt(fps, chains, 32), standby, Own{}, nil, 700, 6, 99)
	if d.Matched || d.Gap == nil || *d.Gap != (Gap{From: 34, To: 701}) {
		t.Fatalf("plan %+v gap %v: want unmatched, gap 34..701", d, d.Gap)
	}
	// The tail is one of six equal UserEvents held: all six may be in
	// the stream, and none goes out again.
	if d.After != 6 || d.Replay != 0 || int64(7)+d.Offset != 702 {
		t.Fatalf("plan %+v: want nothing held published, the next event as 702", d)
	}
}

// storedUpTo is what the stream holds of the PBX's events from index from
// to index last, as read back.
func storedUpTo(fps []uint64, from, last int) []Stored {
	var out []Stored
	for i := from; i <= last; i++ {
		out = append(out, Stored{Event: "E", Data: []byte(strconv.FormatUint(fps[i], 10))})
	}
	return out
}

// The same standby, with the stream read back from before its login:
// its first events are the stream's last ones in exactly one way, which
// proves its place event by event, equal UserEvents included.
func TestPlan_ShortHistoryProvenByReadingBack(t *testing.T) {
	fp := func(i int) uint64 {
		if i >= 30 {
			return 5
		}
		return distinct(i)
	}
	fps, chains := pbxEvents(36, fp)
	standby := read(fps, 28, 36, 1) // logged in just before the UserEvents
	d := planOf(tailAt(fps, chains, 32), standby, Own{}, storedUpTo(fps, 20, 32), 700, 8, 99)
	continues(t, d, standby, 33, 28)
	if d.Replay != 3 {
		t.Fatalf("replay %d, want 3", d.Replay)
	}
	// Only equal events since the login: they fit in several ways, and
	// nothing is proven.
	standby = read(fps, 31, 36, 1)
	if d := planOf(tailAt(fps, chains, 32), standby, Own{}, storedUpTo(fps, 20, 32), 700, 5, 99); d.Matched || d.Gap == nil {
		t.Fatalf("plan %+v matched among equal events", d)
	}
	// A ring that starts after the tail, whose first event repeats the
	// tail's payload: the fit is chance, and proves nothing.
	standby = read(append(append([]uint64(nil), fps[:33]...), fps[32], 77, 78), 33, 36, 1)
	// It is left out all the same (it may be the tail), inside the gap.
	if d := planOf(tailAt(fps, chains, 32), standby, Own{}, storedUpTo(fps, 20, 32), 700, 3, 99); d.Matched || d.Gap == nil || d.After != 1 || d.Replay != 2 {
		t.Fatalf("plan %+v: a repeated payload taken for the tail", d)
	}
	// A ring that starts after the tail, with events equal to it only:
	// nothing fits, a gap, and all of it left out (any may be the tail).
	standby = read(fps, 34, 36, 1)
	if d := planOf(tailAt(fps, chains, 32), standby, Own{}, storedUpTo(fps, 20, 32), 700, 2, 99); d.Matched || d.Gap == nil || d.After != 2 || d.Replay != 0 {
		t.Fatalf("plan %+v: want a gap, everything held left out", d)
	}
	// One that starts after the tail with other events: all published.
	standby = read(append(append([]uint64(nil), fps[:34]...), 77, 78), 34, 36, 1)
	if d := planOf(tailAt(fps, chains, 32), standby, Own{}, storedUpTo(fps, 20, 32), 700, 2, 99); d.Matched || d.Gap == nil || d.After != 0 || d.Replay != 2 {
		t.Fatalf("plan %+v: want a gap, everything held published", d)
	}
}

// More than W equal events in a row: the chain is the same at several
// places, and no place is proven. The plan reports a gap rather than
// skip or repeat some of them. Fewer equal events, inside a window that
// reaches a distinct event, line up exactly.
func TestPlan_RunsOfEqualEvents(t *testing.T) {
	const run = 2 * W
	fp := func(i int) uint64 {
		if i >= 20 && i < 20+run {
			return 5
		}
		return distinct(i)
	}
	fps, chains := pbxEvents(20+run+10, fp)
	standby := read(fps, 0, len(fps), 1)
	for _, last := range []int{20, 20 + W/2, 20 + W - 2} { // inside the run, less than W in
		continues(t, planOf(tailAt(fps, chains, last), standby, Own{}, nil, 1<<16, 0, 99), standby, last+1, 0)
	}
	d := planOf(tailAt(fps, chains, 20+run-1), standby, Own{}, nil, 1<<16, 0, 99)
	if d.Matched || d.Gap == nil {
		t.Fatalf("plan %+v matched inside a run of %d equal events", d, run)
	}
	// After the run, distinct events prove the place again.
	continues(t, planOf(tailAt(fps, chains, 20+run+5), standby, Own{}, nil, 1<<16, 0, 99), standby, 20+run+6, 0)
}

// An event that differs between the rings (one process dropped it, or
// got it with other fields) proves nothing for the W events after it.
func TestPlan_ADifferentEventIsNoMatch(t *testing.T) {
	fps, chains := pbxEvents(200, distinct)
	other := append([]uint64(nil), fps...)
	other[50] = 1 // read differently by the standby
	standby := read(other, 0, 200, 1)
	if d := planOf(tailAt(fps, chains, 60), standby, Own{}, nil, 1<<16, 0, 99); d.Matched {
		t.Fatalf("plan %+v matched across an event the rings do not share", d)
	}
	continues(t, planOf(tailAt(fps, chains, 50+W), standby, Own{}, nil, 1<<16, 0, 99), standby, 51+W, 0)
}

// The cross-check: a chain found whose entry is not the stored event is
// no match.
func TestPlan_CrossCheckRefusesAnEntryWithTheChainButNotTheEvent(t *testing.T) {
	fps, chains := pbxEvents(10, distinct)
	standby := read(fps, 0, 10, 1)
	tail := tailAt(fps, chains, 4)
	tail.Data = []byte("something else")
	if d := planOf(tail, standby, Own{}, nil, 1<<16, 0, 99); d.Matched || d.Gap == nil {
		t.Fatalf("plan %+v matched an entry whose payload differs", d)
	}
}

// Nothing of the PBX in the stream: a new epoch, Ami-Seq 1 from the
// oldest event held, whatever an earlier holder's lease said (issue 16
// item 2: a holder that died before its first ack left Seq 0, and the
// next one reused its Nats-Msg-Ids).
func TestPlan_EmptyStreamStartsANewEpochAtOne(t *testing.T) {
	fps, _ := pbxEvents(10, distinct)
	standby := read(fps, 0, 10, 31)
	d := planOf(Tail{}, standby, Own{}, nil, 1<<16, 40, 1234)
	if d.Epoch != 1234 || d.After != 30 || int64(31)+d.Offset != 1 || d.Gap != nil || d.Replay != 10 {
		t.Fatalf("plan %+v: want epoch 1234, local 31 as Ami-Seq 1, no gap", d)
	}
	d = planOf(Tail{}, &process{}, Own{}, nil, 0, 40, 1234)
	if d.After != 40 || int64(41)+d.Offset != 1 {
		t.Fatalf("plan %+v on an empty ring: want the next event (local 41) as Ami-Seq 1", d)
	}
}

// A process that lost the lease and takes it back, its ring overflowed
// meanwhile: the entry it last had acknowledged is gone, but its own
// record of it, equal to the stream's tail, proves the place.
func TestPlan_ReacquireFromItsOwnLastAck(t *testing.T) {
	fps, chains := pbxEvents(300, distinct)
	self := read(fps, 0, 300, 1).since(250) // 201..250 evicted
	own := Own{Valid: true, Local: 200, Seq: 200, Epoch: 7, Chain: chains[199]}
	d := planOf(tailAt(fps, chains, 199), self, own, nil, 1<<16, 300, 99)
	if !d.Matched || d.After != 200 || d.Offset != 0 || d.Gap != nil || d.Replay != 50 {
		t.Fatalf("plan %+v: want from local 201 under the same numbers", d)
	}
	// Someone else published since: its own record is not the tail, and
	// the ring decides.
	d = planOf(tailAt(fps, chains, 259), self, own, nil, 1<<16, 300, 99)
	continues(t, d, self, 260, 250)
}

// No state carries over between plans: after a plan that found a gap
// (and renumbered), the next takeover lines up on what the stream holds
// then, under the numbers the gap's plan gave (issue 16 item 9: old
// fingerprints polluted the next run).
func TestPlan_NoPollutionAfterAGap(t *testing.T) {
	fps, chains := pbxEvents(400, distinct)
	// A took over with a gap: it published PBX events 151.. as limit+2..
	a := read(fps, 150, 400, 1)
	d := planOf(tailAt(fps, chains, 99), a, Own{}, nil, 600, 250, 99)
	if d.Gap == nil {
		t.Fatal("no gap")
	}
	// What A published carries A's chains; the stream's last is PBX
	// event 300, as A numbered it.
	i := 300 - 151 // its index in a
	stored := Tail{Found: true, Seq: uint64(int64(a.seqs[i]) + d.Offset), Epoch: 7, Chain: a.chains[i], Event: "E", Data: []byte(strconv.FormatUint(fps[299], 10))}
	b := read(fps, 0, 400, 1001) // B read everything
	d2 := planOf(stored, b, Own{}, nil, 1<<16, 1400, 99)
	if !d2.Matched || d2.Gap != nil {
		t.Fatalf("second plan %+v gap %v: want matched", d2, d2.Gap)
	}
	if got := uint64(int64(d2.After+1) + d2.Offset); d2.After+1 != 1301 || got != stored.Seq+1 {
		t.Fatalf("B continues at local %d as %d; want local 1301 (PBX event 301) as %d", d2.After+1, got, stored.Seq+1)
	}
}

func TestFingerprint_SameFieldsSameHashActionIDLeftOut(t *testing.T) {
	ev := func(kv ...string) *amiproto.Message {
		m := amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "OriginateResponse"})
		for i := 0; i < len(kv); i += 2 {
			m.Add(kv[i], kv[i+1])
		}
		return m
	}
	a := ev("ActionID", "bridge-1-17", "Response", "Success", "Uniqueid", "1.1")
	b := ev("ActionID", "caller-xyz", "Response", "Success", "Uniqueid", "1.1")
	c := ev("ActionID", "bridge-1-17", "Response", "Success", "Uniqueid", "1.2")
	d := ev("Response", "Success", "Uniqueid:", "1.1") // the separator is hashed
	if Fingerprint(a) != Fingerprint(b) {
		t.Error("events that differ only in ActionID differ in fingerprint")
	}
	if Fingerprint(a) == Fingerprint(c) || Fingerprint(a) == Fingerprint(d) {
		t.Error("different events share a fingerprint")
	}
}

// The chain is the rolling form of a hash over the window: equal windows
// give equal chains whatever came before them.
func TestChain_DependsOnlyOnTheWindow(t *testing.T) {
	var a, b Chain
	for i := range 500 {
		a.Add(uint64(i))
	}
	for i := range 300 {
		b.Add(uint64(7777 + i))
	}
	var ca, cb uint64
	for i := range W {
		ca, cb = a.Add(uint64(9000+i)), b.Add(uint64(9000+i))
	}
	if ca != cb {
		t.Fatal("equal windows, different chains")
	}
	if a.Add(1) == b.Add(2) {
		t.Fatal("different newest events, equal chains")
	}
}

func TestValue_RoundTrip(t *testing.T) {
	v := Value{Epoch: 1700000000123, Limit: 65541, Run: 12, Marks: []Answer{{ID: "a:1#2", Seq: 40}}}
	got, err := DecodeValue(v.Encode())
	if err != nil || !reflect.DeepEqual(got, v) {
		t.Fatalf("DecodeValue = %+v, %v", got, err)
	}
	if got, err := DecodeValue(nil); err != nil || !reflect.DeepEqual(got, Value{}) {
		t.Fatalf("DecodeValue(nil) = %+v, %v", got, err)
	}
	if _, err := DecodeValue([]byte("{")); err == nil {
		t.Fatal("a broken value decoded")
	}
}

func benchEvent() *amiproto.Message {
	m := amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "Newchannel"})
	kv := []string{"Privilege", "call,all", "Channel", "PJSIP/1001-00000001", "ChannelState", "0",
		"ChannelStateDesc", "Down", "CallerIDNum", "1001", "Context", "default", "Exten", "1002", "Priority", "1",
		"Uniqueid", "1700000000.1", "Linkedid", "1700000000.1"}
	for i := 0; i < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

// BenchmarkFingerprint and BenchmarkChain are what HA adds to every event
// the reader numbers.
func BenchmarkFingerprint(b *testing.B) {
	m := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		_ = Fingerprint(m)
	}
}

func BenchmarkChain(b *testing.B) {
	var c Chain
	b.ReportAllocs()
	for i := uint64(0); b.Loop(); i++ {
		_ = c.Add(i)
	}
}

// planOf is Plan with its inputs in a row, as most tests give them.
func planOf(tail Tail, ring Ring, own Own, back []Stored, limit, newest uint64, newEpoch int64) Decision {
	return Plan(Input{Tail: tail, Ring: ring, Own: own, Back: back, Limit: limit, Newest: newest, NewEpoch: newEpoch})
}

// markFor is the Mark a process gets when it sent a mark right after
// reading the PBX's event index i (0 based) as local seq local, and the
// first active answered: that event is its Ami-Seq i+1.
func markFor(i int, local uint64) Mark {
	return Mark{Valid: true, Local: local, Seq: uint64(i + 1), Epoch: 7}
}

// A standby that logged in during a silence, after the stream's last
// event, holds two events and no history to prove anything by: its Mark
// places the tail before its ring, and it continues with no gap and no
// repeat (issue 16: false gaps after a standby's restart).
func TestPlan_MarkPlacesATailBeforeTheRing(t *testing.T) {
	fps, chains := pbxEvents(12, func(int) uint64 { return 5 }) // all equal: nothing else could prove it
	standby := read(fps, 10, 12, 41)                            // logged in after event index 9
	mark := markFor(9, 40)                                      // marked before reading anything
	d := Plan(Input{Tail: tailAt(fps, chains, 9), Ring: standby, Mark: mark, Limit: 1 << 16, Newest: 42, NewEpoch: 99})
	continues(t, d, standby, 10, 10)
	if d.Replay != 2 {
		t.Fatalf("replay %d, want 2", d.Replay)
	}
	// The old active stored up to index 7: the events index 8 and 9 came
	// before this login and were never stored, a gap of exactly those.
	d = Plan(Input{Tail: tailAt(fps, chains, 7), Ring: standby, Mark: mark, Limit: 1 << 16, Newest: 42, NewEpoch: 99})
	if d.Gap == nil || *d.Gap != (Gap{From: 9, To: 10}) || d.After != 40 || int64(41)+d.Offset != 11 || d.Replay != 2 {
		t.Fatalf("plan %+v gap %v: want gap 9..10, local 41 as Ami-Seq 11", d, d.Gap)
	}
}

// The tail is among equal events held: the Mark says which one.
func TestPlan_MarkPlacesATailAmongEqualEvents(t *testing.T) {
	fps, chains := pbxEvents(20, func(int) uint64 { return 5 })
	standby := read(fps, 10, 20, 1)
	for last := 10; last < 20; last++ {
		d := Plan(Input{Tail: tailAt(fps, chains, last), Ring: standby, Mark: markFor(9, 0), Limit: 1 << 16, Newest: 10, NewEpoch: 99})
		continues(t, d, standby, last+1, 10)
		if d.Replay != 19-last {
			t.Fatalf("tail %d: replay %d, want %d", last+1, d.Replay, 19-last)
		}
	}
}

// A tail this process has not read yet: plan again later. A Mark of
// another epoch, or an entry at the tail's place that is another event,
// proves nothing.
func TestPlan_MarkBehindOtherEpochOrOtherEvent(t *testing.T) {
	fps, chains := pbxEvents(20, distinct)
	standby := read(fps, 10, 15, 1) // has read up to index 14
	if d := Plan(Input{Tail: tailAt(fps, chains, 17), Ring: standby, Mark: markFor(9, 0), Limit: 1 << 16, Newest: 5, NewEpoch: 99}); !d.Behind {
		t.Fatalf("plan %+v: want behind", d)
	}
	other := markFor(9, 0)
	other.Epoch = 6
	if d := Plan(Input{Tail: tailAt(fps, chains, 12), Ring: standby, Mark: other, Limit: 1 << 16, Newest: 5, NewEpoch: 99}); d.Matched || d.Gap == nil {
		t.Fatalf("plan %+v: a mark of another epoch was used", d)
	}
	wrong := markFor(8, 0) // off by one: the entry at the tail's place differs
	if d := Plan(Input{Tail: tailAt(fps, chains, 12), Ring: standby, Mark: wrong, Limit: 1 << 16, Newest: 5, NewEpoch: 99}); d.Matched || d.Gap == nil {
		t.Fatalf("plan %+v: a mark that places the tail on another event was used", d)
	}
}

// No place proven, and entries of the ring equal to the tail by chance:
// only those that may really be the tail keep what precedes them out of
// the stream (nemesis seed 16, long run: a process that logged in after
// both bridges were killed left out 1,782 events up to a repeat of the
// tail's payload).
func TestPlan_UnprovenLeavesOutOnlyWhatTheStreamMayHold(t *testing.T) {
	fp := func(i int) uint64 {
		if i%50 == 7 {
			return 5 // a payload the PBX repeats
		}
		return distinct(i)
	}
	fps, chains := pbxEvents(400, fp)
	tail := tailAt(fps, chains, 207) // a repeat: fps[207] == 5
	// Logged in after the tail: the repeats at events 258, 308 and 358
	// are ring entries 7, 57 and 107.
	standby := read(fps, 250, 400, 1)
	d := planOf(tail, standby, Own{}, storedUpTo(fps, 150, 207), 700, 150, 99)
	if d.Matched || d.Gap == nil || d.After != 0 || d.Replay != 150 {
		t.Fatalf("plan %+v: want every entry published (none fits the stream), a gap", d)
	}
	// Without the stream read back, only a repeat among the first W
	// entries may be the tail (entry 107 has a chain of its own events).
	d = planOf(tail, standby, Own{}, nil, 700, 150, 99)
	if d.Matched || d.After != 58 || d.Replay != 92 {
		t.Fatalf("plan %+v: want the entries up to entry 57 (local 58) left out", d)
	}
}

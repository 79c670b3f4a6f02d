package bridge

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/lease"
)

func TestFingerprint_SameFieldsSameHashActionIDLeftOut(t *testing.T) {
	a := newEvent("OriginateResponse", "ActionID", "bridge-1-17", "Response", "Success", "Uniqueid", "1.1")
	b := newEvent("OriginateResponse", "ActionID", "caller-xyz", "Response", "Success", "Uniqueid", "1.1")
	c := newEvent("OriginateResponse", "ActionID", "bridge-1-17", "Response", "Success", "Uniqueid", "1.2")
	d := newEvent("OriginateResponse", "Response", "Success", "Uniqueid:", "1.1") // the separator is hashed
	if fingerprint(a) != fingerprint(b) {
		t.Error("events that differ only in ActionID differ in fingerprint")
	}
	if fingerprint(a) == fingerprint(c) || fingerprint(a) == fingerprint(d) {
		t.Error("different events share a fingerprint")
	}
}

// haRing returns a ring holding events numbered from first, built by
// ev(i) for i in [0, n).
func haRing(first uint64, n int, ev func(i int) *amiproto.Message) *ring {
	r := newRing(1<<16, 1<<30, nil)
	for i := range n {
		if !r.append(ev(i), first+uint64(i), time.Now().UnixNano()) {
			panic("ring full")
		}
	}
	return r
}

func callEvent(i int) *amiproto.Message {
	return newEvent("Newchannel", "Uniqueid", "1700000000."+strconv.Itoa(i))
}

// runOf returns the checkpoint run of the events ev(i) for i in (end-n, end].
func runOf(end, n int, ev func(i int) *amiproto.Message) []segment {
	var r runBuf
	for i := end - n + 1; i <= end; i++ {
		r.add(uint64(i), fingerprint(ev(i)))
	}
	return r.run()
}

func planOn(r *ring, boundary uint64, ck *checkpoint) takeoverPlan {
	p := &pbx{ring: r, ns: &natsSide{epoch: 42}}
	h := &haNode{p: p, boundary: boundary}
	return h.plan(ck)
}

func TestPlan_FindsTheCheckpointAndKeepsTheOldNumbers(t *testing.T) {
	// This standby numbered event i as 1+i; the old active gave event 57
	// Ami-Seq 1057.
	r := haRing(1, 100, callEvent)
	pl := planOn(r, 0, &checkpoint{Epoch: 7, Seq: 1057, Run: runOf(57, FingerprintRun, callEvent)})
	if !pl.matched || pl.gap != nil {
		t.Fatalf("plan = %+v, want a match", pl)
	}
	if pl.after != 58 || pl.offset != 999 || pl.replay != 42 || pl.epoch != 7 {
		t.Errorf("plan = %+v, want after 58 (event 57), offset 999, 42 to replay, epoch 7", pl)
	}
}

func TestPlan_RunOfFingerprintsSkipsAnIdenticalEvent(t *testing.T) {
	// Event 30 has the same bytes as event 57: one fingerprint would line
	// up on the newer copy when the checkpoint is at the older one.
	ev := func(i int) *amiproto.Message {
		if i == 57 {
			return callEvent(30)
		}
		return callEvent(i)
	}
	r := haRing(1, 100, ev)
	pl := planOn(r, 0, &checkpoint{Epoch: 7, Seq: 530, Run: runOf(30, FingerprintRun, ev)})
	if !pl.matched || pl.after != 31 {
		t.Fatalf("plan = %+v, want a match at local seq 31 (event 30)", pl)
	}
	single := planOn(r, 0, &checkpoint{Epoch: 7, Seq: 530, Run: runOf(30, 1, ev)})
	if single.after != 58 {
		t.Fatalf("a run of one fingerprint matched at %d; the test no longer shows why a run is needed", single.after)
	}
}

func TestPlan_GapWhenTheRingDoesNotReachBack(t *testing.T) {
	r := haRing(1, 100, func(i int) *amiproto.Message { return callEvent(i + 1000) })
	pl := planOn(r, 0, &checkpoint{Epoch: 7, Seq: 500, Limit: 600, Run: runOf(57, FingerprintRun, callEvent)})
	if pl.matched || pl.gap == nil || pl.gap.From != 501 || pl.gap.To != 601 {
		t.Fatalf("plan = %+v, want the gap 501-601", pl)
	}
	if pl.after != 0 || pl.offset != 601 || pl.replay != 100 {
		t.Errorf("plan = %+v: want every entry published, the oldest (local 1) as 602", pl)
	}
}

func TestPlan_IgnoresTheEventsOfAnEarlierLogin(t *testing.T) {
	// The checkpoint is in the part of the ring read before the session
	// dropped at local seq 60: the events after it up to the drop are
	// lost for this process, so lining up there would hide a gap.
	r := haRing(1, 100, callEvent)
	pl := planOn(r, 60, &checkpoint{Epoch: 7, Seq: 1057, Run: runOf(57, FingerprintRun, callEvent)})
	if pl.matched || pl.gap == nil || pl.after != 60 || pl.offset != 1058-60 {
		t.Fatalf("plan = %+v, want a gap and publishing from local 61 as 1059", pl)
	}
}

func TestPlan_FirstActiveStartsTheStream(t *testing.T) {
	r := haRing(5, 10, callEvent)
	pl := planOn(r, 0, nil)
	if pl.epoch != 42 || pl.after != 4 || pl.offset != 0 || pl.replay != 10 {
		t.Fatalf("plan = %+v, want this process's epoch and every entry as it is numbered", pl)
	}
	pl = planOn(r, 0, &checkpoint{Epoch: 7})
	if pl.epoch != 7 || pl.after != 4 || pl.offset != -4 || pl.gap != nil {
		t.Fatalf("plan = %+v, want the epoch kept and the oldest entry as Ami-Seq 1", pl)
	}
}

func TestRunBuf_KeepsTheLastEightRunsInOrder(t *testing.T) {
	var r runBuf
	for i := uint64(1); i <= 11; i++ {
		r.add(i, i*10)
	}
	r.add(12, 110)
	r.add(13, 110)
	got := r.run()
	if len(got) != FingerprintRun || got[0] != (segment{40, 1}) || got[7] != (segment{110, 3}) || r.seq != 13 {
		t.Fatalf("run = %v seq %d, want [40 1] … [110 3], seq 13", got, r.seq)
	}
	var s runBuf
	s.seed(13, got)
	if !slices.Equal(s.run(), got) || s.seq != 13 {
		t.Fatalf("seeded run = %v, seq %d", s.run(), s.seq)
	}
	if e := expand(got[6:], 4); !slices.Equal(e, []uint64{100, 110, 110, 110}) {
		t.Fatalf("expand = %v", e)
	}
	if e := expand(got[6:], 3); e != nil {
		t.Fatalf("expand past its limit = %v, want nil", e)
	}
}

func TestPlan_EqualEventsLineUpByTheirCount(t *testing.T) {
	// Events 40..49 are equal, as Asterisk's runs of DeviceStateChange
	// are; the checkpoint is at the 6th of them.
	ev := func(i int) *amiproto.Message {
		if i >= 40 && i < 50 {
			return newEvent("DeviceStateChange", "Device", "Local/burst@test", "State", "INUSE")
		}
		return callEvent(i)
	}
	r := haRing(1, 100, ev)
	pl := planOn(r, 0, &checkpoint{Epoch: 7, Seq: 545, Run: runOf(45, 20, ev)})
	if !pl.matched || pl.after != 46 {
		t.Fatalf("plan = %+v, want a match at local seq 46 (event 45)", pl)
	}
}

// A standby's ring, everything acknowledged, keeps the newest events up to
// its own bounds, evicting the oldest rather than refusing; unack then
// protects a new active's replay from eviction.
func TestRing_StandbyKeepsTheNewestAndUnackProtectsTheReplay(t *testing.T) {
	r := newRing(8, 1<<20, nil)
	now := time.Now().UnixNano()
	for i := uint64(1); i <= 12; i++ {
		if !r.append(callEvent(int(i)), i, now) {
			t.Fatalf("a standby's ring refused event %d", i)
		}
		r.ack(i) // as standBy does
	}
	if o, n := r.oldest(), r.newest(); o != 5 || n != 12 {
		t.Fatalf("ring holds %d..%d, want the newest 8: 5..12", o, n)
	}
	r.unack(9)
	if u := r.usage(); u.pending != 3 {
		t.Fatalf("pending after unack(9) = %d, want 3", u.pending)
	}
	// The unacknowledged entries cannot be evicted: the ring takes 5 more,
	// then 10..12 and those fill it.
	kept := 0
	for i := uint64(13); i <= 20; i++ {
		if r.append(callEvent(int(i)), i, now) {
			kept++
		}
	}
	if kept != 5 || r.oldest() != 10 {
		t.Fatalf("kept %d, oldest %d; want 5 kept and 10..12 still held", kept, r.oldest())
	}
}

func TestAlign(t *testing.T) {
	fps := []uint64{1, 2, 3, 1, 2, 3, 4}
	for _, c := range []struct {
		run  []uint64
		want int
	}{{[]uint64{1, 2, 3}, 5}, {[]uint64{3, 4}, 6}, {[]uint64{2, 3, 1}, 3}, {[]uint64{9}, -1}, {nil, -1}, {[]uint64{1, 2, 3, 1, 2, 3, 4, 5}, -1}} {
		if got := align(fps, c.run); got != c.want {
			t.Errorf("align(%v) = %d, want %d", c.run, got, c.want)
		}
	}
}

func TestMayPublish_FencedBeforeTheLeaseCanExpire(t *testing.T) {
	ns := startNATS(t, natsOptions{jetStream: true})
	js, err := jetstream.New(connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	b, err := lease.Open(ctx, js, lease.Config{Bucket: "fence", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, err := b.Acquire(ctx, "pbx1", "me", nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &haNode{lease: l, limit: 10, gen: 1}
	h.active.Store(true)
	if _, ok := h.mayPublish(); !ok {
		t.Fatal("a fresh lease does not allow publishing")
	}
	// No renewal comes, as in a process that was frozen or cut off from
	// NATS: nothing is left to wait on but the lease's own deadline.
	time.Sleep(time.Until(l.ValidUntil()))
	if _, ok := h.mayPublish(); ok {
		t.Fatal("publishing still allowed past the lease's deadline")
	}
	// The server has not expired the key yet: the fence came first.
	if st, err := b.Get(ctx, "pbx1"); err != nil || st.Holder != "me" {
		t.Fatalf("key holder %q (%v) when the fence closed; want it still held", st.Holder, err)
	}
}

// captureFingerprints reads a capture of asterisk-22 (gzipped) and returns
// the fingerprints of its events that belong to the shared stream.
func captureFingerprints(t *testing.T, name string) []uint64 {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "amiproto", "testdata", "captures", "asterisk-22", name+".recv.bin.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	r := amiproto.NewReader(zr)
	if _, err := r.ReadBanner(); err != nil { // the capture has none: the Login response's first line
		t.Fatal(err)
	}
	var fps []uint64
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return fps
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind() == amiproto.KindEvent && !sessionOnly(m.EventName()) {
			fps = append(fps, fingerprint(m))
		}
	}
}

// TestFingerprint_TwoSessionsOfOneUser checks the premise of HA on real
// Asterisk bytes (capture 18): without the session events, two sessions
// of one user see the same events in the same order, so a checkpoint's run
// taken anywhere in one stream lines up at the same place in the other.
func TestFingerprint_TwoSessionsOfOneUser(t *testing.T) {
	a := captureFingerprints(t, "18_two_sessions_same_user_a")
	b := captureFingerprints(t, "18_two_sessions_same_user_b")
	if len(a) != 2100 || len(b) != 2100 {
		t.Fatalf("%d and %d shared events, want 2100 each", len(a), len(b))
	}
	// A checkpoint at every event of a must line up at the same event of
	// b, inside runs of equal events too.
	var run runBuf
	for end, fp := range a {
		run.add(uint64(end), fp)
		if got := align(b, expand(run.run(), len(b))); got != end {
			t.Fatalf("a checkpoint at event %d of session a lines up at %d of session b", end, got)
		}
	}
}

// BenchmarkFingerprint is the cost HA adds to every published event.
func BenchmarkFingerprint(b *testing.B) {
	m := newEvent("Newchannel", "Privilege", "call,all", "Channel", "PJSIP/1001-00000001", "ChannelState", "0",
		"ChannelStateDesc", "Down", "CallerIDNum", "1001", "Context", "default", "Exten", "1002", "Priority", "1",
		"Uniqueid", "1700000000.1", "Linkedid", "1700000000.1")
	b.ReportAllocs()
	for b.Loop() {
		_ = fingerprint(m)
	}
}

func TestNew_HANeedsJetStream(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	_, err := New(connect(t, ns), []ServerConfig{{Name: "pbx1", URL: "tcp://admin:x@127.0.0.1:5038"}},
		Options{HA: HAOptions{Enabled: true, CheckpointInterval: time.Second}})
	if err == nil || !strings.Contains(err.Error(), "ha needs jetstream enabled") ||
		!strings.Contains(err.Error(), "ha checkpoint interval 1s: want above 0 and at most a quarter of the lease ttl 2s") {
		t.Fatalf("New = %v, want the two HA problems named", err)
	}
}

// nats-server keeps a key's TTL in whole seconds, so 1500ms would fence
// by 1.5 s a key the server drops after 1 s.
func TestNew_HARefusesAFractionalLeaseTTL(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	_, err := New(connect(t, ns), []ServerConfig{{Name: "pbx1", URL: "tcp://admin:x@127.0.0.1:5038"}},
		Options{JetStream: JetStreamOptions{Enabled: true}, HA: HAOptions{Enabled: true, LeaseTTL: 1500 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond}})
	if err == nil || !strings.Contains(err.Error(), "ha lease ttl 1.5s: want whole seconds") {
		t.Fatalf("New = %v, want the fractional TTL refused", err)
	}
}

// A lease bucket with fewer replicas than the stream would lose the leases
// where the stream survives: Start refuses it, naming the bucket.
func TestStart_HARefusesABucketWithFewerReplicasThanTheStream(t *testing.T) {
	ns := startNATS(t, natsOptions{jetStream: true})
	nc := connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lease.Open(t.Context(), js, lease.Config{Bucket: "leases"}); err != nil { // R1
		t.Fatal(err)
	}
	// jetstream.replicas 3 (a single server keeps the existing R1 stream
	// from being created): the bucket must have 3 as well.
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{"ami.*.event.>"}}); err != nil {
		t.Fatal(err)
	}
	b, err := New(nc, []ServerConfig{{Name: "pbx1", URL: "tcp://admin:x@127.0.0.1:1"}},
		Options{JetStream: JetStreamOptions{Enabled: true, Replicas: 3}, HA: HAOptions{Enabled: true, Bucket: "leases"}})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Start(t.Context())
	if !errors.Is(err, lease.ErrFewReplicas) || !strings.Contains(err.Error(), "ha.bucket") {
		t.Fatalf("Start = %v, want ErrFewReplicas for ha.bucket", err)
	}
}

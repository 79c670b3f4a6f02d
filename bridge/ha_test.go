package bridge

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/bridge/internal/ha"
	"github.com/ami-bridge/ami-bridge/lease"
)

func callEvent(i int) *amiproto.Message {
	return newEvent("Newchannel", "Uniqueid", "1700000000."+strconv.Itoa(i))
}

// A standby's ring, everything acknowledged, keeps the newest events up to
// its own bounds, evicting the oldest rather than refusing; holdFor then
// protects a new active's replay from eviction.
func TestRing_StandbyKeepsTheNewestAndHoldForProtectsTheReplay(t *testing.T) {
	r := newRing(8, 1<<20, nil, true)
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
	var seen []uint64
	r.holdFor(6, func(v ringView) uint64 {
		for i := range v.Len() {
			seen = append(seen, v.Seq(i))
		}
		return 9
	})
	if !slices.Equal(seen, []uint64{7, 8, 9, 10, 11, 12}) {
		t.Fatalf("holdFor(6) showed %v, want 7..12", seen)
	}
	if u := r.usage(); u.pending != 3 {
		t.Fatalf("pending after holding 9 = %d, want 3", u.pending)
	}
	// The held entries cannot be evicted: the ring takes 5 more, then
	// 10..12 and those fill it.
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

// standbyPBX is a standby's side of a PBX with HA and no NATS: events
// numbered and chained as the reader does, acknowledged as a standby's
// publisher does.
func standbyPBX(t *testing.T, buffer int) *pbx {
	t.Helper()
	p := &pbx{ring: newRing(buffer, 1<<30, nil, true), ns: &natsSide{epoch: 42}, log: slog.New(slog.DiscardHandler)}
	p.ha = newHANode(p, HAOptions{Enabled: true, LeaseTTL: 40 * time.Millisecond, CheckpointInterval: 10 * time.Millisecond, Holder: "me"})
	return p
}

// readForTest numbers, chains and keeps m as the event reader does, and
// returns its chain.
func (p *pbx) readForTest(m *amiproto.Message) uint64 {
	p.nextSeq()
	chain := p.chain.Add(ha.Fingerprint(m))
	p.ring.appendNow(m, p.seq, chain)
	return chain
}

// storedTail is the stream's last message for event m, numbered seq by an
// active whose chain is chain.
func storedTail(m *amiproto.Message, seq, chain uint64) ha.Tail {
	return ha.Tail{Found: true, Seq: seq, Epoch: 7, Chain: chain, Event: m.EventName(), Data: m.AppendJSON(nil)}
}

// The ring turns during a takeover: a busy PBX keeps the reader
// appending to a standby's full ring, which evicts acknowledged entries
// (all of a standby's). The entries above the point the plan chose must
// still be there when the publisher starts (issue 16 item 8: they were
// skipped, with matched=true).
func TestHA_PlanHoldsTheReplayWhileTheRingTurns(t *testing.T) {
	p := standbyPBX(t, 64)
	var chains []uint64 // as the active, which read the same events, has them
	for i := range 64 {
		chains = append(chains, p.readForTest(callEvent(i)))
	}
	p.ring.ack(p.ring.newest()) // a standby acknowledges all
	// The old active stored up to event 40 (local seq 40).
	d := p.ha.plan(t.Context(), storedTail(callEvent(39), 40, chains[39]), ha.Value{Epoch: 7, Limit: 1 << 16})
	if !d.Matched || d.After != 40 || d.Offset != 0 {
		t.Fatalf("plan %+v: want matched after local seq 40", d)
	}
	// The reader goes on before the publisher starts.
	for i := 64; i < 200; i++ {
		p.readForTest(callEvent(i)) // refused once the held entries fill the ring
	}
	got, _ := p.ring.readAfter(d.After, make([]ringEntry, 0, 1))
	if len(got) != 1 || got[0].seq != 41 {
		t.Fatalf("the publisher would start at %v, want local seq 41", got)
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

// captureChains reads a capture of asterisk-22 (gzipped) and returns the
// chains of its events that belong to the shared stream.
func captureChains(t *testing.T, name string) []uint64 {
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
	var (
		c      ha.Chain
		chains []uint64
	)
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return chains
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind() == amiproto.KindEvent && !sessionOnly(m.EventName()) && !isMark(m) {
			chains = append(chains, c.Add(ha.Fingerprint(m)))
		}
	}
}

// TestChain_TwoSessionsOfOneUser checks the premise of HA on real
// Asterisk bytes (capture 18): without the session events, two sessions
// of one user see the same events in the same order, so the chain of
// every event of one is found in the other exactly once, at the same
// place, inside runs of equal events too.
func TestChain_TwoSessionsOfOneUser(t *testing.T) {
	a := captureChains(t, "18_two_sessions_same_user_a")
	b := captureChains(t, "18_two_sessions_same_user_b")
	if len(a) != 2100 || len(b) != 2100 {
		t.Fatalf("%d and %d shared events, want 2100 each", len(a), len(b))
	}
	at := map[uint64][]int{}
	for i, c := range b {
		at[c] = append(at[c], i)
	}
	for i, c := range a {
		if got := at[c]; len(got) != 1 || got[0] != i {
			t.Fatalf("the chain of event %d of session a is at %v in session b", i, got)
		}
	}
}

func TestNew_HANeedsJetStream(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	_, err := New(connect(t, ns), []ServerConfig{{Name: "pbx1", URL: "tcp://admin:x@127.0.0.1:5038"}},
		Options{HA: HAOptions{Enabled: true, CheckpointInterval: time.Second}})
	if err == nil || !strings.Contains(err.Error(), "HA.Enabled: needs jetstream enabled") ||
		!strings.Contains(err.Error(), "HA.CheckpointInterval: 1s: want above 0 and at most a quarter of the lease ttl 2s") {
		t.Fatalf("New = %v, want the two HA problems named", err)
	}
}

// nats-server keeps a key's TTL in whole seconds, so 1500ms would fence
// by 1.5 s a key the server drops after 1 s.
func TestNew_HARefusesAFractionalLeaseTTL(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	_, err := New(connect(t, ns), []ServerConfig{{Name: "pbx1", URL: "tcp://admin:x@127.0.0.1:5038"}},
		Options{JetStream: JetStreamOptions{Enabled: true}, HA: HAOptions{Enabled: true, LeaseTTL: 1500 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond}})
	if err == nil || !strings.Contains(err.Error(), "HA.LeaseTTL: 1.5s: want whole seconds") {
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

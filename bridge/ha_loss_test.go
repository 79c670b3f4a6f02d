package bridge

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
	"github.com/ami-bridge/ami-bridge/lease"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// reconnecting is a connection that comes back soon after a restart of
// the server, for ever.
func reconnecting(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.CustomInboxPrefix(nats.NewInbox()))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// refEvents is an AMI session of the test's own: what it reads is what
// amitest sent, the events the stream must hold. The session events,
// which the bridges leave out with HA, are left out.
type refEvents struct {
	mu     sync.Mutex
	events [][]byte // JSON, as the bridge publishes it
}

func (r *refEvents) add(m *amiproto.Message) {
	if sessionOnly(m.EventName()) || isMark(m) {
		return
	}
	b := m.AppendJSON(nil)
	r.mu.Lock()
	r.events = append(r.events, b)
	r.mu.Unlock()
}

func (r *refEvents) snapshot() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.events...)
}

func referenceSession(t testing.TB, pbx *amitest.Server) *refEvents {
	t.Helper()
	ref := &refEvents{}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	c, err := amiproto.DialEndpoint(ctx, pbx.Endpoint("admin", testSecret), amiproto.WithEvents(amiproto.EventDelivery{Func: ref.add}))
	if err != nil {
		t.Fatalf("reference session: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return ref
}

// storedEvent is a message of the stream.
type storedEvent struct {
	seq  uint64
	id   string
	data []byte
}

// streamEvents returns every message of the event stream, in order.
func streamEvents(t testing.TB, js jetstream.JetStream) []storedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	s, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	total := int(s.CachedInfo().State.Msgs)
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []storedEvent
	for len(out) < total {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			seq, _ := strconv.ParseUint(m.Headers().Get(subjects.HeaderSeq), 10, 64)
			out = append(out, storedEvent{seq: seq, id: m.Headers().Get(subjects.HeaderMsgID), data: m.Data()})
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// checkStreamHolds fails unless the stream holds want, each event once,
// in order, numbered 1, 2, 3… It waits (polls, within a deadline) for the
// stream to hold as many.
func checkStreamHolds(t testing.TB, js jetstream.JetStream, want [][]byte) {
	t.Helper()
	deadline := time.Now().Add(3 * waitTime)
	for {
		s, err := js.Stream(t.Context(), DefaultStream)
		if err == nil && s.CachedInfo().State.Msgs >= uint64(len(want)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := streamEvents(t, js)
	ids := map[string]bool{}
	for i := range min(len(got), len(want)) {
		if !bytes.Equal(got[i].data, want[i]) {
			t.Fatalf("stream event %d (Ami-Seq %d) is not the PBX's event %d:\n got %s\nwant %s", i+1, got[i].seq, i+1, got[i].data, want[i])
		}
		if got[i].seq != uint64(i+1) || ids[got[i].id] {
			t.Fatalf("stream event %d has Ami-Seq %d, Nats-Msg-Id %s (seen before: %v)", i+1, got[i].seq, got[i].id, ids[got[i].id])
		}
		ids[got[i].id] = true
	}
	if len(got) != len(want) {
		t.Fatalf("the stream holds %d events, the PBX sent %d", len(got), len(want))
	}
}

func haBridgeOptions(holder string, eventBuffer int) Options {
	return Options{
		EventBuffer: eventBuffer,
		JetStream:   JetStreamOptions{Enabled: true},
		HA:          HAOptions{Enabled: true, LeaseTTL: time.Second, CheckpointInterval: 100 * time.Millisecond, Holder: holder},
	}
}

// TestHA_NATSOutage: bridges with HA, a PBX making calls, and the NATS
// server down for 3 s, three lease TTLs: the active loses its lease, and
// the standby keeps reading. Once NATS is back, whichever takes the lease
// goes on from the stream's last event: the stream holds every event the PBX
// sent, once, in order, as it does without HA (issue 16: losing the lease
// acknowledged the active's unpublished events, and a standby kept only
// the last 10 s, so a longer outage lost events). With a ring too small
// for the outage, the events it could not hold are counted as dropped, as
// without HA, and every other one is in the stream under its number.
func TestHA_NATSOutage(t *testing.T) {
	t.Run("two bridges", func(t *testing.T) { haOutage(t, 2, 0) })
	t.Run("one bridge takes its lease back", func(t *testing.T) { haOutage(t, 1, 0) })
	t.Run("one bridge, the ring overflows", func(t *testing.T) { haOutage(t, 1, 500) })
}

func haOutage(t *testing.T, bridges, eventBuffer int) {
	o := natstest.Options{JetStream: true, StoreDir: t.TempDir()}
	ns := natstest.Start(t, o)
	o.Port = ns.Addr().(*net.TCPAddr).Port // to start it again where it was
	url := ns.ClientURL()
	pbx := startPBX(t, amitest.Config{Profile: amitest.Asterisk22, WriteTimeout: time.Second})
	ref := referenceSession(t, pbx)
	servers := []ServerConfig{fastServer("pbx1", pbx)}
	var bs []*Bridge
	for i := range bridges {
		b, _ := startBridge(t, reconnecting(t, url), servers, haBridgeOptions(string(rune('a'+i)), eventBuffer))
		if i == 0 {
			waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
		} else {
			waitStatus(t, b, func(st subjects.PBXStatus) bool {
				return st.HA.Role == subjects.RoleStandby && st.HA.Holder == "a" && allUp(st)
			})
		}
		bs = append(bs, b)
	}
	cc := reconnecting(t, url)
	js, err := jetstream.New(cc)
	if err != nil {
		t.Fatal(err)
	}

	// About 440 events/s for 5 s; NATS goes down once the active has
	// published some.
	calls := pbx.StartCalls(context.Background(), 20, 100)
	waitFor(t, func() uint64 { return bs[0].Status()[0].LastSeq }, func(n uint64) bool { return n >= 200 })
	natstest.Stop(ns)
	time.Sleep(3 * time.Second) // the outage: the test's own schedule
	ns = natstest.Start(t, o)
	t.Cleanup(func() { // before the server's own cleanup stops it
		for _, br := range bs {
			ctx, cancel := context.WithTimeout(context.Background(), waitTime)
			if err := br.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			cancel()
		}
	})
	if err := calls.Wait(); err != nil {
		t.Fatalf("calls: %v", err)
	}
	_, sent, _ := calls.Count()
	want := waitFor(t, ref.snapshot, func(e [][]byte) bool { return int64(len(e)) >= sent })

	var dropped uint64
	for _, br := range bs {
		dropped += br.Status()[0].EventsDropped
	}
	if eventBuffer == 0 {
		checkStreamHolds(t, js, want)
		t.Logf("the stream holds all %d events the PBX sent, once each, in order", len(want))
	} else {
		checkStreamHoldsAllBut(t, js, want, dropped)
	}
	for _, br := range bs {
		st := br.Status()[0]
		if len(st.HA.Gaps) > 0 {
			t.Errorf("%s: gaps %v; want none", st.HA.Self, st.HA.Gaps)
		}
		if eventBuffer == 0 && st.EventsDropped > 0 {
			t.Errorf("%s: %d events dropped; want none", st.HA.Self, st.EventsDropped)
		}
		if lt := st.HA.LastTakeover; lt != nil {
			t.Logf("%s: last takeover from Ami-Seq %d, %d replayed, matched %v; %d dropped", st.HA.Self, lt.From, lt.Replayed, lt.Matched, st.EventsDropped)
		}
	}
}

// checkStreamHoldsAllBut fails unless the stream holds every event of
// want but dropped of them, each once, in order, under its own number
// (Ami-Seq n is want's n-th event: a dropped event leaves its number
// unused), and dropped is not zero.
func checkStreamHoldsAllBut(t testing.TB, js jetstream.JetStream, want [][]byte, dropped uint64) {
	t.Helper()
	if dropped == 0 {
		t.Fatal("no event counted as dropped: the test no longer overflows the ring")
	}
	last := want[len(want)-1]
	deadline := time.Now().Add(3 * waitTime)
	var got []storedEvent
	for {
		got = streamEvents(t, js)
		if len(got) > 0 && bytes.Equal(got[len(got)-1].data, last) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var prev uint64
	for i, e := range got {
		if e.seq <= prev || e.seq > uint64(len(want)) || !bytes.Equal(e.data, want[e.seq-1]) {
			t.Fatalf("stream event %d has Ami-Seq %d (after %d), not the PBX's event of that number", i+1, e.seq, prev)
		}
		prev = e.seq
	}
	if uint64(len(got))+dropped != uint64(len(want)) {
		t.Fatalf("the stream holds %d events and %d were counted dropped; the PBX sent %d", len(got), dropped, len(want))
	}
	t.Logf("the stream holds %d of the %d events the PBX sent, in order under their numbers; the %d others are counted dropped", len(got), len(want), dropped)
}

// activeNode returns an HA node of p (or of an idle PBX when p is nil)
// that holds the lease of pbx1 in a bucket with ttl, on its own JetStream
// server, reached through js.
func activeNode(t *testing.T, p *pbx, js *natstest.InterceptJS, ttl time.Duration) (*haNode, *lease.Lease) {
	t.Helper()
	ns := startNATS(t, natsOptions{jetStream: true})
	real, err := jetstream.New(connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	js.JetStream = real
	bkt, err := lease.Open(t.Context(), js, lease.Config{Bucket: "leases", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	l, err := bkt.Acquire(t.Context(), "pbx1", "me", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		_, p = idlePBX(t, ServerConfig{}, Options{})
	}
	h := newHANode(p, HAOptions{Enabled: true, LeaseTTL: ttl, CheckpointInterval: ttl / 10, Holder: "me"})
	h.bucket, h.lease, h.holder, h.limit, h.gen, h.epoch = bkt, l, "me", 1<<20, 1, 42
	h.active.Store(true)
	return h, l
}

// A renewal stuck in NATS (its ctx allows it 5 s) holds up neither the
// publisher's check nor the status nor the metrics: they take no lock
// that lease I/O holds.
func TestHA_BlockedRenewalBlocksNeitherPublisherNorStatus(t *testing.T) {
	js := &natstest.InterceptJS{}
	h, _ := activeNode(t, nil, js, 10*time.Second)
	js.Hold, js.Entered = make(chan struct{}), make(chan struct{}, 1)
	renewed := make(chan struct{})
	go func() { // the test's: waited for at cleanup
		defer close(renewed)
		h.renew(context.Background())
	}()
	t.Cleanup(func() {
		close(js.Hold)
		<-renewed
	})
	<-js.Entered
	answered := make(chan bool, 1)
	go func() {
		_, ok := h.mayPublish()
		_ = h.status()
		_, _, _ = h.counts()
		answered <- ok
	}()
	select {
	case ok := <-answered:
		if !ok {
			t.Fatal("publishing not allowed while a valid lease is being renewed")
		}
	case <-time.After(time.Second):
		t.Fatal("mayPublish, status or counts waited for a renewal held in NATS")
	}
}

// A renewal the server stored but whose ack was lost does not end the
// active role: the next renewal adopts it.
func TestHA_LostRenewalAckKeepsTheActive(t *testing.T) {
	js := &natstest.InterceptJS{}
	h, l := activeNode(t, nil, js, 2*time.Second)
	js.DropAck.Store(true)
	h.renew(t.Context())
	if js.DropAck.Load() {
		t.Fatal("the renewal did not reach the server")
	}
	before := time.Now()
	h.renew(t.Context())
	if _, ok := h.mayPublish(); !ok || !h.active.Load() || l.ValidUntil().Before(before) {
		t.Fatal("the active stepped down after a renewal whose ack was lost")
	}
}

// freezeJS is a fakeJS whose first publish stands for a process frozen
// (GC pause, SIGSTOP) in the middle of a batch: it returns only once the
// lease's deadline has passed.
type freezeJS struct {
	*fakeJS
	l    *lease.Lease
	once sync.Once
}

func (j *freezeJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	j.once.Do(func() {
		time.Sleep(time.Until(j.l.ValidUntil()) + time.Millisecond) // the freeze itself
	})
	return j.fakeJS.PublishMsgAsync(m, opts...)
}

// The fence is checked before every message handed to NATS, not once per
// batch: after a freeze that outlived the lease in the middle of a batch,
// nothing more of it goes out, and what did not go out is kept.
func TestPublisherJS_FenceBeforeEveryMessage(t *testing.T) {
	b, p, js, start := fakeJSPublisher(t, 8)
	h, l := activeNode(t, p, &natstest.InterceptJS{}, time.Second)
	p.ha, p.pub.fence = h, h
	b.ns.js = &freezeJS{fakeJS: js, l: l}
	for i := 1; i <= 3; i++ {
		p.accept(userEvent("js", i))
	}
	done := start()
	js.next(t, done, 1).ack()
	if l.Valid() {
		t.Fatal("the lease outlived the freeze")
	}
	// The renewal loop has not stepped down yet: the publisher alone
	// finds the lease over. quiet closes once it stands by.
	quiet := make(chan struct{})
	h.mu.Lock()
	h.quiet = quiet
	h.mu.Unlock()
	h.kickPub()
	for {
		select {
		case f := <-js.sent:
			t.Errorf("Ami-Seq %s handed to NATS after the lease's deadline", f.seq())
			f.ack()
			continue
		case <-quiet:
		case <-time.After(waitTime):
			t.Fatal("the publisher did not stand by")
		}
		break
	}
	// Losing the lease is no ack: 2 and 3 wait in the ring.
	if a := p.ring.acked(); a != 1 {
		t.Fatalf("ring mark %d, want 1: only the published event acknowledged", a)
	}
}

// BenchmarkHAFence is what the fence adds to every JetStream publish with
// HA: atomic loads and a monotonic clock read, no allocation.
func BenchmarkHAFence(b *testing.B) {
	ns := startNATS(b, natsOptions{jetStream: true})
	js, err := jetstream.New(connect(b, ns))
	if err != nil {
		b.Fatal(err)
	}
	bkt, err := lease.Open(b.Context(), js, lease.Config{Bucket: "leases", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	l, err := bkt.Acquire(b.Context(), "pbx1", "me", nil)
	if err != nil {
		b.Fatal(err)
	}
	h := &haNode{}
	h.active.Store(true)
	terms := pubTerms{lease: l}
	b.ReportAllocs()
	for b.Loop() {
		if h.fenced(&terms) {
			b.Fatal("fenced")
		}
	}
}

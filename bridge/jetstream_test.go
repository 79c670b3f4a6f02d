package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// waitStatus polls b's status until ok holds: the counters it waits for
// change without a status message of their own.
func waitStatus(t testing.TB, b *Bridge, ok func(subjects.PBXStatus) bool) subjects.PBXStatus {
	t.Helper()
	return waitFor(t, func() subjects.PBXStatus { return b.Status()[0] }, ok)
}

// waitFor polls get until ok holds for what it returns.
func waitFor[T any](t testing.TB, get func() T, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(waitTime)
	for {
		v := get()
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("never got there: %+v", v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBridge_JetStream(t *testing.T) {
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}),
		withServer(func(sc *ServerConfig) { sc.EventsInclude = []string{"UserEvent"} }),
		withOptions(Options{JetStream: JetStreamOptions{Enabled: true, MaxAge: time.Hour, Duplicates: time.Minute}}))
	cc, pbx, w, b := tw.cc, tw.pbx, tw.w, tw.b
	st := w.waitState(subjects.StateConnected)
	if st.JSFailures == nil || *st.JSFailures != 0 {
		t.Fatalf("status with JetStream lacks js_failures: %+v", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	js, err := jetstream.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatalf("the bridge did not create the stream: %v", err)
	}
	cfg := stream.CachedInfo().Config
	if len(cfg.Subjects) != 1 || cfg.Subjects[0] != subjects.AllEvents("ami") || cfg.MaxAge != time.Hour || cfg.Duplicates != time.Minute {
		t.Fatalf("stream config: subjects %v, max age %v, duplicates %v", cfg.Subjects, cfg.MaxAge, cfg.Duplicates)
	}

	waitSessions(t, pbx, perPBX)
	const n = 200
	for i := 1; i <= n; i++ {
		pbx.Emit(userEvent("js", i))
	}
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.EventsPublished == n })

	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(waitTime))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	var last jetstream.Msg
	for m := range batch.Messages() {
		i++
		h := m.Headers()
		want := fmt.Sprintf("pbx1:%d:%d", st.Epoch, i)
		if h.Get(subjects.HeaderSeq) != strconv.Itoa(i) || h.Get(nats.MsgIdHdr) != want {
			t.Fatalf("stored message %d: seq %q, id %q", i, h.Get(subjects.HeaderSeq), h.Get(nats.MsgIdHdr))
		}
		var body map[string]string
		if err := json.Unmarshal(m.Data(), &body); err != nil || body["N"] != strconv.Itoa(i) {
			t.Fatalf("stored message %d out of order: %s", i, m.Data())
		}
		last = m
	}
	if i != n {
		t.Fatalf("%d messages in the stream, want %d", i, n)
	}

	// The dedupe window is on: the same Nats-Msg-Id again is a duplicate.
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: last.Subject(), Header: last.Headers(), Data: last.Data()})
	if err != nil || !ack.Duplicate {
		t.Errorf("republished event: ack %+v, %v; want a duplicate", ack, err)
	}

	// Without the stream, publishes fail: the event waits in the ring and
	// is sent again, with its Nats-Msg-Id, until a stream takes it.
	if err := js.DeleteStream(ctx, DefaultStream); err != nil {
		t.Fatal(err)
	}
	pbx.Emit(userEvent("retried", n+1))
	pbx.Emit(userEvent("retried", n+2))
	sts := waitStats(t, b, 0, func(st Stats) bool { return st.JSRetries >= 3 })
	if sts.EventsPublished != n || sts.JSFailures != 0 || sts.BufferEvents != 2 || sts.BufferBytes == 0 {
		t.Fatalf("while the stream is gone: %d published, %d js_failures, %d events (%d bytes) buffered; want %d, 0, 2",
			sts.EventsPublished, sts.JSFailures, sts.BufferEvents, sts.BufferBytes, n)
	}
	stream, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{subjects.AllEvents("ami")}})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.EventsPublished == n+2 })
	// Each once, in order, whatever was tried before the stream came back.
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("the new stream holds %d messages, want 2", info.State.Msgs)
	}
	for i := uint64(1); i <= 2; i++ {
		m, err := stream.GetMsg(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.Header.Get(subjects.HeaderSeq), strconv.Itoa(n+int(i)); got != want {
			t.Fatalf("stream message %d has Ami-Seq %s, want %s", i, got, want)
		}
	}
}

// TestBridge_JetStreamReplicas: the stream the bridge creates asks for
// JetStreamOptions.Replicas, which a single server refuses for 3; an
// existing stream with other replicas is used as it is, with a warning.
func TestBridge_JetStreamReplicas(t *testing.T) {
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withoutBridge())
	nc, cc, pbx := tw.nc, tw.cc, tw.pbx
	opts := Options{JetStream: JetStreamOptions{Enabled: true, Replicas: 3}}

	b, err := New(nc, []ServerConfig{fastServer("pbx1", pbx)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := b.Start(ctx); err == nil {
		t.Fatal("Start created an R3 stream on a single server; want the server's refusal")
	}

	js, err := jetstream.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{subjects.AllEvents("ami")}}); err != nil {
		t.Fatal(err)
	}
	_, logs := startBridge(t, nc, []ServerConfig{fastServer("pbx1", pbx)}, opts)
	if !strings.Contains(logs.String(), "existing JetStream stream has other replicas") {
		t.Errorf("no warning about the existing stream's replicas in the log:\n%s", logs)
	}
	info, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := info.CachedInfo().Config.Replicas; r != 1 {
		t.Errorf("the existing stream has %d replicas after Start, want its own 1", r)
	}

	if _, err := New(nc, []ServerConfig{fastServer("pbx1", pbx)}, Options{JetStream: JetStreamOptions{Replicas: maxReplicas + 1}}); err == nil {
		t.Errorf("New took %d replicas", maxReplicas+1)
	}
}

// fakeJS is a JetStream that stores nothing and acknowledges nothing by
// itself: the test answers each publish, in the order it chooses. The
// publisher calls PublishMsgAsync only; the embedded nil JetStream makes
// any other call fail the test with a panic.
type fakeJS struct {
	jetstream.JetStream
	b    *Bridge
	sent chan *fakePub // every publish, in the order sent
}

// fakePub is one publish in flight and its ack future.
type fakePub struct {
	js  *fakeJS
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (j *fakeJS) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f := &fakePub{js: j, msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	j.sent <- f
	return f, nil
}

func (f *fakePub) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *fakePub) Err() <-chan error            { return f.err }
func (f *fakePub) Msg() *nats.Msg               { return f.msg }

func (f *fakePub) seq() string { return f.msg.Header.Get(subjects.HeaderSeq) }

// ack is the stream storing the message.
func (f *fakePub) ack() { f.ok <- &jetstream.PubAck{Stream: DefaultStream} }

// fail is the publish failing as nats.go reports it: on the future, then
// to the handler the bridge gives it (WithPublishAsyncErrHandler).
func (f *fakePub) fail() {
	err := errors.New("fake: no ack")
	f.err <- err
	f.js.b.jsPublishFailed(f.js, f.msg, err)
}

// fakeJSPublisher returns an idle PBX whose publisher runs on a fakeJS
// with a window of maxPending; the publisher starts once the test has
// accepted the events it wants read in the first batch. The test owns
// the publisher's goroutine: it ends when the ring is closed and drained,
// or at cleanup, at the shutdown deadline.
func fakeJSPublisher(t *testing.T, maxPending int) (b *Bridge, p *pbx, js *fakeJS, start func() <-chan struct{}) {
	b, p = idlePBX(t, ServerConfig{}, Options{JetStream: JetStreamOptions{Enabled: true, MaxPending: maxPending}})
	js = &fakeJS{b: b, sent: make(chan *fakePub, 100)}
	b.ns.js = js
	start = func() <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.pub.loop()
		}()
		t.Cleanup(func() {
			b.stopHard()
			<-done
		})
		return done
	}
	return b, p, js, start
}

// next returns the next publish, which must be of Ami-Seq seq.
func (j *fakeJS) next(t *testing.T, done <-chan struct{}, seq int) *fakePub {
	t.Helper()
	select {
	case f := <-j.sent:
		if f.seq() != strconv.Itoa(seq) {
			t.Fatalf("published Ami-Seq %s, want %d", f.seq(), seq)
		}
		return f
	case <-done:
		t.Fatalf("the publisher stopped; want Ami-Seq %d published", seq)
	case <-time.After(waitTime):
		t.Fatalf("Ami-Seq %d not published", seq)
	}
	return nil
}

// TestPublisherJS_ResendsFromTheFirstFailure: publish 1 fails and 2 and 3
// after it succeed. The publisher settles the window and sends again from
// 1, not from 4, with the same Nats-Msg-Id; the ring's mark moves only
// past what the stream stored in order.
func TestPublisherJS_ResendsFromTheFirstFailure(t *testing.T) {
	b, p, js, start := fakeJSPublisher(t, 8)
	for i := 1; i <= 3; i++ {
		p.accept(userEvent("js", i))
	}
	done := start()
	first := []*fakePub{js.next(t, done, 1), js.next(t, done, 2), js.next(t, done, 3)}
	p.ring.close() // the publisher returns once 1 to 3 are acknowledged
	first[0].fail()
	first[1].ack()
	first[2].ack()
	if a := p.ring.acked(); a != 0 {
		t.Fatalf("the ring's mark is at %d while 1 is not stored", a)
	}
	for i := 1; i <= 3; i++ {
		f := js.next(t, done, i)
		if id, want := f.msg.Header.Get(subjects.HeaderMsgID), first[i-1].msg.Header.Get(subjects.HeaderMsgID); id != want {
			t.Fatalf("resent Ami-Seq %d with Nats-Msg-Id %s, want %s", i, id, want)
		}
		f.ack()
	}
	<-done
	st := b.Stats()[0]
	if a := p.ring.acked(); a != 3 || st.EventsPublished != 3 || st.JSRetries != 3 || st.BufferEvents != 0 {
		t.Fatalf("mark %d, %d published, %d retries, %d waiting; want 3, 3, 3, 0", a, st.EventsPublished, st.JSRetries, st.BufferEvents)
	}
}

// TestPublisherJS_FailureBehindTheOldestStopsNewSends: publish 2 fails
// while 1 still waits for its ack. The publisher sends nothing new (not
// 3 and 4, which arrive meanwhile) until 1 is settled, then sends again
// from 2: the stream stores 1, 2, 3, 4 in Ami-Seq order.
func TestPublisherJS_FailureBehindTheOldestStopsNewSends(t *testing.T) {
	_, p, js, start := fakeJSPublisher(t, 8)
	p.accept(userEvent("js", 1))
	p.accept(userEvent("js", 2))
	done := start()
	f1, f2 := js.next(t, done, 1), js.next(t, done, 2)
	f2.fail()
	p.accept(userEvent("js", 3))
	p.accept(userEvent("js", 4))
	f1.ack()
	for i := 2; i <= 4; i++ {
		js.next(t, done, i).ack()
	}
	p.ring.close()
	<-done
	if a := p.ring.acked(); a != 4 {
		t.Fatalf("the ring's mark is at %d, want 4", a)
	}
}

// TestPublisherJS_ShutdownCountsTheUnacknowledged: at the shutdown
// deadline, the events the stream has not acknowledged count in
// js_failures.
func TestPublisherJS_ShutdownCountsTheUnacknowledged(t *testing.T) {
	const n = 3
	b, p, js, start := fakeJSPublisher(t, 8)
	for i := 1; i <= n; i++ {
		p.accept(userEvent("js", i))
	}
	done := start()
	for i := 1; i <= n; i++ {
		js.next(t, done, i) // in flight, never answered
	}
	b.stopHard()
	<-done
	if st := b.Stats()[0]; st.JSFailures != n || st.EventsPublished != 0 {
		t.Fatalf("js_failures %d, %d published; want %d, 0", st.JSFailures, st.EventsPublished, n)
	}
}

package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// waitStatus polls b's status until ok holds: the counters it waits for
// change without a status message of their own.
func waitStatus(t testing.TB, b *Bridge, ok func(Status) bool) Status {
	t.Helper()
	return waitFor(t, func() Status { return b.Status()[0] }, ok)
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
	ns := startNATS(t, natsOptions{jetStream: true})
	nc, cc := connect(t, ns), connect(t, ns)
	pbx := startPBX(t, amitest.Config{})
	w := watchStatus(t, cc, "ami", "pbx1")
	sc := fastServer("pbx1", pbx)
	sc.EventsInclude = []string{"UserEvent"}
	b, _ := startBridge(t, nc, []ServerConfig{sc}, Options{JetStream: JetStreamOptions{Enabled: true, MaxAge: time.Hour, Duplicates: time.Minute}})
	st := w.waitState(StateConnected)
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
	waitStatus(t, b, func(st Status) bool { return st.EventsPublished == n })

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
		if h.Get(HeaderSeq) != strconv.Itoa(i) || h.Get(nats.MsgIdHdr) != want {
			t.Fatalf("stored message %d: seq %q, id %q", i, h.Get(HeaderSeq), h.Get(nats.MsgIdHdr))
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
	waitStatus(t, b, func(st Status) bool { return st.EventsPublished == n+2 })
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
		if got, want := m.Header.Get(HeaderSeq), strconv.Itoa(n+int(i)); got != want {
			t.Fatalf("stream message %d has Ami-Seq %s, want %s", i, got, want)
		}
	}
}

// TestBridge_JetStreamReplicas: the stream the bridge creates asks for
// JetStreamOptions.Replicas, which a single server refuses for 3; an
// existing stream with other replicas is used as it is, with a warning.
func TestBridge_JetStreamReplicas(t *testing.T) {
	ns := startNATS(t, natsOptions{jetStream: true})
	nc, cc := connect(t, ns), connect(t, ns)
	pbx := startPBX(t, amitest.Config{})
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

	if _, err := New(nc, []ServerConfig{fastServer("pbx1", pbx)}, Options{JetStream: JetStreamOptions{Replicas: MaxReplicas + 1}}); err == nil {
		t.Errorf("New took %d replicas", MaxReplicas+1)
	}
}

package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestJetStream_EventsGoIntoTheStream enables JetStream: the bridge
// creates the stream on ami.*.event.> (not on ami.>, which would answer
// action requests with acks), with the dedupe window and max age of the
// configuration, and every event lands in it once.
func TestJetStream_EventsGoIntoTheStream(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{jetStream: true})
	p := w.startPBX("js", amitest.Config{Profile: amitest.Asterisk22})
	cfg := w.config(w.serverFor("js", p, viaURL))
	cfg.JetStream = &jetStreamConf{Enabled: true, Stream: "IT_EVENTS", MaxAge: "1h", Duplicates: "30s"}
	w.startBridge(cfg)
	_, st := w.waitState("js", 0, readyTimeout, "connected")
	if v, ok := st.raw["js_failures"].(float64); !ok || v != 0 {
		t.Errorf("status js_failures = %v, want a count of 0 with JetStream", st.raw["js_failures"])
	}
	w.waitReady("js")

	const n = 100
	for range n {
		p.emit("ItStored", "Privilege", "user,all")
	}
	p.emit("ItDone")
	w.waitEvent(0, "ami.js.event.ItDone")
	// Actions are still answered by the bridge, not by a stream ack.
	wantSuccess(t, w.request("js", `{"Action":"Ping"}`))

	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	js, err := jetstream.New(w.nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "IT_EVENTS")
	if err != nil {
		t.Fatalf("stream IT_EVENTS: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc := info.Config
	if len(sc.Subjects) != 1 || sc.Subjects[0] != "ami.*.event.>" {
		t.Errorf("stream subjects %v, want [ami.*.event.>]", sc.Subjects)
	}
	if sc.Duplicates != 30*time.Second || sc.MaxAge != time.Hour {
		t.Errorf("stream duplicates %v max age %v, want 30s and 1h", sc.Duplicates, sc.MaxAge)
	}
	// Every event is stored once, in order: read the stream to its
	// last event and compare with what the plain subscription saw.
	cons, err := js.OrderedConsumer(ctx, "IT_EVENTS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(replyTimeout))
		if err != nil {
			t.Fatalf("after %d stored events: %v", len(stored), err)
		}
		stored = append(stored, m.Headers().Get("Nats-Msg-Id"))
		if m.Subject() == "ami.js.event.ItDone" {
			break
		}
	}
	var seen []string
	for _, m := range w.events.snapshot() {
		seen = append(seen, m.Header.Get("Nats-Msg-Id"))
	}
	if !slices.Equal(stored, seen) {
		t.Errorf("the stream holds %d events, the subscription saw %d:\nstored %q\n  seen %q", len(stored), len(seen), stored, seen)
	}
}

package integration

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestSecrets_NeverInLogsRepliesOrStatus runs the bridge at its most
// verbose log level with secrets that need escaping, given in each of the
// three ways (URL, secret_env, secret_file), with MD5 and plain login, a
// wrong secret, and a NATS password; it connects, fails a login, answers
// actions and stops. No form of any secret may appear in its output, in a
// reply or in a status (the world checks all three).
func TestSecrets_NeverInLogsRepliesOrStatus(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{user: "bridge-user", pass: "nats-pass:@/%20 é"})
	odd := func(tag string) string { return w.newSecret(tag) + `:@/%41 "q" é+` }
	mk := func(name string) *pbx {
		secret := odd(name)
		p := w.startPBX(name, amitest.Config{
			Profile:       amitest.Asterisk22,
			Users:         map[string]amitest.User{amiUser: {Secret: secret, Write: true}},
			AuthFailDelay: -1,
		})
		p.secret = secret
		return p
	}
	pu, pe, pf, pw := mk("s-url"), mk("s-env"), mk("s-file"), mk("s-wrong")
	su := w.serverFor("s-url", pu, viaURL)
	se := w.serverFor("s-env", pe, viaEnv)
	se.Auth = "md5"
	sf := w.serverFor("s-file", pf, viaFile)
	sw := w.serverAt("s-wrong", pw.Addr(), odd("wrong"), viaURL)
	cfg := w.config(su, se, sf, sw)
	cfg.Log.Level = "trace"
	cfg.NATS.User, cfg.NATS.Password = "bridge-user", "nats-pass:@/%20 é"
	b := w.startBridge(cfg)
	w.waitReady("s-url", "s-env", "s-file")
	w.waitState("s-wrong", 0, readyTimeout, "auth_failed")

	for _, s := range []string{"s-url", "s-env", "s-file"} {
		wantSuccess(t, w.request(s, `{"Action":"Ping"}`))
		wantCode(t, w.request(s, `{"Action":"NoSuchAction"}`), 422)
		wantSuccess(t, w.request(s, `{"Action":"Command","Command":"core show version"}`))
	}
	wantCode(t, w.request("s-wrong", `{"Action":"Ping"}`), 503)
	// A reconnect logs the session's life once more.
	mark := w.status.len()
	pu.DropConnections()
	i, _ := w.waitState("s-url", mark, readyTimeout, "disconnected")
	w.waitState("s-url", i+1, readyTimeout, "connected")

	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	// The cleanup greps the log; make sure there is a log to grep.
	if out := b.log.Bytes(); !bytes.Contains(out, []byte("s-wrong")) || !bytes.Contains(out, []byte("ready")) {
		t.Errorf("the log does not mention the PBXes; is the level honoured?\n%s", truncate(out, 4096))
	}
}

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

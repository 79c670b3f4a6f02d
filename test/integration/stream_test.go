package integration

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// bigList is the size of the collection the streaming test asks for.
const bigList = 20000

// TestActions_LargeCollection runs against a NATS server whose max
// payload is 64 KiB. CoreShowChannels of 400 channels (about 280 KB)
// without streaming is a 413; of 20,000 channels with Ami-Stream: true it
// arrives as the envelope, 20,000 entries in order, the complete event
// and an empty terminator, each message within the limit.
func TestActions_LargeCollection(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{maxPayload: 64 << 10})
	big := w.startPBX("big", amitest.Config{Profile: amitest.Asterisk22, Channels: bigList})
	mid := w.startPBX("mid", amitest.Config{Profile: amitest.Asterisk13, Channels: 400})
	w.startBridge(w.config(w.serverFor("big", big, viaURL), w.serverFor("mid", mid, viaFile)))
	w.waitReady("big", "mid")

	t.Run("413WithoutStreaming", func(t *testing.T) {
		r := w.request("mid", `{"Action":"CoreShowChannels","ActionID":"too-big"}`)
		wantCode(t, r, 413)
		if len(r.msg.Data) > 64<<10 {
			t.Errorf("the 413 reply itself is %d bytes", len(r.msg.Data))
		}
		if r.Response.value("ActionID") != "too-big" && r.has("response") {
			t.Errorf("413 response ActionID = %q, want too-big", r.Response.value("ActionID"))
		}
		// The session is still usable.
		wantSuccess(t, w.request("mid", `{"Action":"Ping"}`))
	})

	t.Run("StreamedSimpleReplyAndError", func(t *testing.T) {
		// Streaming asked for a reply that is not a Collection, or one
		// that fails: the one reply, then the terminator, so that
		// `nats req --wait-for-empty` ends.
		msgs := w.streamRequest(t, "mid", `{"Action":"Ping","ActionID":"p"}`, 3)
		if len(msgs) != 2 || len(msgs[1].Data) != 0 {
			t.Fatalf("%d messages, want the reply and the empty terminator", len(msgs))
		}
		r := w.checkReply("mid", msgs[0])
		wantSuccess(t, r)
		if r.Response.value("Ping") != "Pong" || r.Response.value("ActionID") != "p" {
			t.Errorf("streamed Ping reply %v", r.Response)
		}
		msgs = w.streamRaw(t, "mid", `{"Action":"Logoff"}`, 3)
		if len(msgs) != 2 || len(msgs[1].Data) != 0 {
			t.Fatalf("%d messages, want the error and the empty terminator", len(msgs))
		}
		wantCode(t, w.checkReply("mid", msgs[0]), 403)
	})

	t.Run("Streamed", func(t *testing.T) {
		msgs := w.streamRequest(t, "big", `{"Action":"CoreShowChannels","ActionID":"stream-1"}`, bigList+3)
		if len(msgs) != bigList+3 {
			t.Fatalf("%d streamed messages, want envelope + %d entries + complete + terminator", len(msgs), bigList)
		}
		env := w.checkReply("big", msgs[0])
		wantSuccess(t, env)
		if env.has("events") || env.has("complete") {
			t.Errorf("the streamed envelope holds events or complete: keys %v", env.keys)
		}
		if v := env.Response.value("EventList"); !strings.EqualFold(v, "start") {
			t.Errorf("envelope response EventList = %q, want start", v)
		}
		if v := env.Response.value("ActionID"); v != "stream-1" {
			t.Errorf("envelope response ActionID = %q, want stream-1", v)
		}
		names := make([]string, 0, bigList)
		for i, m := range msgs[1 : bigList+1] {
			// Field order is checked elsewhere; this is about the entries:
			// a plain decode keeps 20,000 of them cheap under -race.
			var ev struct{ Event, Channel, ActionID string }
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("entry %d: %v: %s", i, err, m.Data)
			}
			if ev.Event != "CoreShowChannel" {
				t.Fatalf("entry %d is %s, want a CoreShowChannel event", i, m.Data)
			}
			if ev.ActionID != "" && ev.ActionID != "stream-1" {
				t.Fatalf("entry %d ActionID = %q, want stream-1", i, ev.ActionID)
			}
			names = append(names, ev.Channel)
		}
		// amitest numbers its channels in zero-padded hex: the PBX's order
		// is the sorted order, with no duplicate.
		if !sort.StringsAreSorted(names) {
			t.Error("streamed entries are out of the PBX's order")
		}
		for i := 1; i < len(names); i++ {
			if names[i] == names[i-1] {
				t.Fatalf("entry %d repeats channel %s", i, names[i])
			}
		}
		complete, err := parseFields(msgs[bigList+1].Data)
		if err != nil {
			t.Fatalf("complete: %v: %s", err, msgs[bigList+1].Data)
		}
		if complete.value("Event") != "CoreShowChannelsComplete" || complete.value("ListItems") != "20000" {
			t.Errorf("complete = %v", complete)
		}
		if last := msgs[bigList+2]; len(last.Data) != 0 {
			t.Errorf("terminator has a body: %s", truncate(last.Data, 200))
		}
		// After the stream, the endpoint still answers.
		wantSuccess(t, w.request("big", `{"Action":"Ping"}`))
	})
}

// TestActions_ReplyLimits: a PBX's max_reply_entries stops a list of
// 400 channels at 100, unstreamed with a 413 that names the key, streamed
// after the first 100 entries with a 413 part and the terminator; the
// session answers the next request.
func TestActions_ReplyLimits(t *testing.T) {
	t.Parallel()
	const channels, limit = 400, 100
	w := newWorld(t, natsOptions{})
	p := w.startPBX("capped", amitest.Config{Profile: amitest.Asterisk22, Channels: channels})
	sc := w.serverFor("capped", p, viaURL)
	sc.MaxReplyEntries = limit
	w.startBridge(w.config(sc))
	w.waitReady("capped")

	r := w.request("capped", `{"Action":"CoreShowChannels"}`)
	wantCode(t, r, 413)
	if !strings.Contains(r.Message, "max_reply_entries") {
		t.Errorf("the 413 does not name max_reply_entries: %s", r.Message)
	}
	wantSuccess(t, w.request("capped", `{"Action":"Ping"}`))

	msgs := w.streamRaw(t, "capped", `{"Action":"CoreShowChannels"}`, limit+3)
	if len(msgs) != limit+3 {
		t.Fatalf("%d streamed messages, want envelope + %d entries + 413 + terminator", len(msgs), limit)
	}
	for i, m := range msgs[:limit+1] {
		if m.Header.Get("Nats-Service-Error-Code") != "" {
			t.Fatalf("streamed message %d is an error: %s", i, m.Data)
		}
	}
	wantCode(t, w.checkReply("capped", msgs[limit+1]), 413)
	if len(msgs[limit+2].Data) != 0 {
		t.Errorf("terminator has a body: %s", truncate(msgs[limit+2].Data, 200))
	}
	wantSuccess(t, w.request("capped", `{"Action":"Ping"}`))
}

// streamRequest sends a request with Ami-Stream: true and returns every
// reply up to and including the empty terminator, reading at most limit
// messages. An error reply fails the test.
func (w *world) streamRequest(t *testing.T, server, body string, limit int) []*nats.Msg {
	t.Helper()
	msgs := w.streamRaw(t, server, body, limit)
	for i, m := range msgs {
		if m.Header.Get("Nats-Service-Error-Code") != "" {
			t.Fatalf("streamed message %d is an error: %v %s", i, m.Header, m.Data)
		}
	}
	return msgs
}

// streamRaw is streamRequest without the check for errors.
func (w *world) streamRaw(t *testing.T, server, body string, limit int) []*nats.Msg {
	t.Helper()
	inbox := w.nc.NewRespInbox()
	sub, err := w.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("ami." + server + ".action")
	m.Reply = inbox
	m.Data = []byte(body)
	m.Header.Set("Ami-Stream", "true")
	if err := w.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	var out []*nats.Msg
	for len(out) < limit {
		r, err := sub.NextMsg(replyTimeout)
		if err != nil {
			t.Fatalf("after %d streamed messages: %v", len(out), err)
		}
		if s := w.leakedSecret(r.Data); s != "" {
			t.Errorf("streamed message holds the secret %q", s)
		}
		out = append(out, r)
		if len(r.Data) == 0 {
			break
		}
	}
	return out
}

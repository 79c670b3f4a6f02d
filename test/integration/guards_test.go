package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestEventGuards_EventsAndFilterAlwaysRefused is issue 11 item 2: with a
// custom deny list that names neither, Events and Filter still get 403,
// as Login and Logoff do, and the event stream goes on.
func TestEventGuards_EventsAndFilterAlwaysRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	p := w.startPBX("guard", amitest.Config{})
	sc := w.serverFor("guard", p, viaURL)
	sc.Actions = &actionsConfig{Deny: []string{"Orig*"}}
	w.startBridge(w.config(sc))
	w.waitReady("guard")

	for _, body := range []string{
		`{"Action":"Events","EventMask":"off"}`,
		`{"Action":"events","EventMask":"off"}`,
		`{"Action":"Filter","Operation":"Add","Filter":"Event: Nothing"}`,
	} {
		r := w.request("guard", body)
		wantCode(t, r, 403)
		if r.has("response") {
			t.Errorf("%s reached Asterisk: %s", body, r)
		}
	}
	from := w.events.len()
	p.emit("ItStillFlows", "N", "1")
	w.waitEvent(from, "ami.guard.event.ItStillFlows")
}

// TestCommand_OutputStreamsWithTheNATSCLI is issue 11 item 5: on a server
// with a small max_payload, Command output too large for one message
// answers 413, and with Ami-Stream: true it comes in parts of whole lines
// that the nats CLI prints one per line; joined they are the output the
// PBX sent.
func TestCommand_OutputStreamsWithTheNATSCLI(t *testing.T) {
	t.Parallel()
	const maxPayload = 4 << 10
	w := newWorld(t, natsOptions{maxPayload: maxPayload})
	p := w.startPBX("cmd", amitest.Config{Channels: 100})
	w.startBridge(w.config(w.serverFor("cmd", p, viaURL)))
	w.waitConnected("cmd")

	// What the PBX sends, read without the bridge.
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	c, err := amiproto.Dial(ctx, p.URL(amiUser, p.secret), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Request(ctx, amiproto.NewAction("Command", "Command", "core show channels"))
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := resp.Output()
	if len(want) < 2*maxPayload {
		t.Fatalf("output of %d bytes: too small for the test", len(want))
	}

	const body = `{"Action":"Command","Command":"core show channels"}`
	wantCode(t, w.request("cmd", body), 413)
	out := newCLI(w).run(t, "req", "ami.cmd.action", body, "-H", "Ami-Stream:true", "--wait-for-empty", "--replies", "0", "--raw")
	lines := jsonLines(out)
	if len(lines) < 3 {
		t.Fatalf("want an envelope and several parts, got:\n%.2000s", out)
	}
	if !strings.Contains(lines[0], `"response":`) || strings.Contains(lines[0], `"output"`) || strings.Contains(lines[0], `"error"`) {
		t.Fatalf("envelope %s", lines[0])
	}
	var got strings.Builder
	for i, l := range lines[1:] {
		var part struct{ Output *string }
		if err := json.Unmarshal([]byte(l), &part); err != nil || part.Output == nil {
			t.Fatalf("part %d: %v %.200s", i, err, l)
		}
		if len(l) > maxPayload {
			t.Errorf("part %d is %d bytes, above the max payload", i, len(l))
		}
		got.WriteString(*part.Output)
	}
	if got.String() != want {
		t.Errorf("joined parts (%d bytes) differ from the PBX's output (%d bytes)", got.Len(), len(want))
	}
}

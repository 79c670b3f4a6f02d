package bridge

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// streamed sends body with Ami-Stream: true and returns the messages up
// to the empty terminator.
func streamed(t *testing.T, nc *nats.Conn, body string) []*nats.Msg {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1)
	err = nc.PublishMsg(&nats.Msg{Subject: subjects.Action("ami", "pbx1"), Reply: inbox,
		Header: nats.Header{subjects.HeaderStream: {"true"}}, Data: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	var parts []*nats.Msg
	for {
		m, err := sub.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("after %d parts: %v", len(parts), err)
		}
		if len(m.Data) == 0 {
			return parts
		}
		parts = append(parts, m)
	}
}

// Command output larger than the NATS max payload streams in parts of
// whole lines; joined, they are the output Asterisk sent.
func TestBridge_CommandOutputStreamsInParts(t *testing.T) {
	const maxPayload = 4 << 10
	for _, profile := range []amitest.Profile{amitest.Asterisk22, amitest.Asterisk13} {
		t.Run(profile.String(), func(t *testing.T) {
			tw := newWorld(t, withNATS(natsOptions{maxPayload: maxPayload}), withPBX(amitest.Config{Profile: profile, Channels: 100}), withoutBridge())
			cc, pbx := tw.cc, tw.pbx
			const command = `{"Action":"Command","Command":"core show channels"}`
			// What the PBX sends, read without the bridge.
			c, err := amiproto.Dial(context.Background(), pbx.URL("admin", testSecret), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Request(context.Background(), amiproto.NewAction("Command", "Command", "core show channels"))
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			want, _ := resp.Output()
			if len(want) < 2*maxPayload {
				t.Fatalf("output of %d bytes: too small for the test", len(want))
			}

			b, _ := startBridge(t, tw.nc, []ServerConfig{fastServer("pbx1", pbx)}, Options{})
			tw.w.waitState(subjects.StateConnected)
			m := request(t, cc, subjects.Action("ami", "pbx1"), command, nil)
			if m.Header.Get(micro.ErrorCodeHeader) != "413" {
				t.Fatalf("unstreamed: %v %.200s", m.Header, m.Data)
			}
			parts := streamed(t, cc, command)
			if env, raw := decodeReply(t, parts[0]); env.Error != nil || env.Response == nil || raw["output"] != nil {
				t.Fatalf("envelope %s", parts[0].Data)
			}
			var got strings.Builder
			for i, m := range parts[1:] {
				var part map[string]string
				if err := json.Unmarshal(m.Data, &part); err != nil || len(part) != 1 {
					t.Fatalf("part %d: %v %s", i, err, m.Data)
				}
				out := part["output"]
				if i < len(parts)-2 && !strings.HasSuffix(out, "\n") {
					t.Errorf("part %d does not end a line: %q", i, out[max(0, len(out)-20):])
				}
				got.WriteString(out)
			}
			if got.String() != want {
				t.Errorf("joined parts differ from the output: %d bytes, want %d", got.Len(), len(want))
			}
			if len(parts) < 3 {
				t.Errorf("%d messages: the output was not split", len(parts))
			}
			shutdown(t, b)
		})
	}
}

func shutdown(t *testing.T, b *Bridge) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

func event(kv ...string) *amiproto.Message {
	m := amiproto.NewMessage()
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

func newchannel(uid, linkedid, channel, number string) *amiproto.Message {
	return event("Event", "Newchannel", "Privilege", "call,all", "Channel", channel, "ChannelState", "0",
		"CallerIDNum", number, "Uniqueid", uid, "Linkedid", linkedid)
}

func hangup(uid, linkedid, channel string) *amiproto.Message {
	return event("Event", "Hangup", "Privilege", "call,all", "Channel", channel, "Uniqueid", uid, "Linkedid", linkedid, "Cause", "16")
}

// syncBuffer is the example's output, written by run's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRun runs the example against an embedded NATS server with
// JetStream, the bridge with state on and a fake Asterisk 22: it prints
// the two calls the PBX has in progress, then, watching, the end of one.
func TestRun(t *testing.T) {
	ns := natstest.Start(t, natstest.Options{JetStream: true})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pbx, err := amitest.Start(amitest.Config{Profile: amitest.Asterisk22,
		Users: map[string]amitest.User{"bridge": {Secret: "example-secret", Write: true}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pbx.Close() })
	bnc, err := nats.Connect(ns.ClientURL(), nats.CustomInboxPrefix(subjects.InboxPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bnc.Close)
	b, err := bridge.New(bnc, []bridge.ServerConfig{{Name: "pbx1", URL: pbx.URL("bridge", "example-secret")}},
		bridge.Options{State: bridge.StateOptions{Enabled: true, Records: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := b.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	// The first reconciliation runs after the login: the bridge then
	// writes; events before it are applied all the same.
	waitFor(t, "the first reconciliation", func() bool {
		st := b.Stats()[0].LiveState
		return st != nil && st.Reconciliations > 0
	})
	for pbx.Sessions() != 1+bridge.DefaultActionSessions {
		time.Sleep(time.Millisecond) // the session joins the event stream after its Login: nothing signals it
	}
	pbx.Emit(newchannel("5000.1", "5000.1", "PJSIP/100-00000001", "100"))
	pbx.Emit(newchannel("5000.2", "5000.1", "PJSIP/200-00000002", "100"))
	pbx.Emit(newchannel("5000.3", "5000.3", "PJSIP/300-00000003", "300"))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both calls in the bucket", func() bool {
		kv, err := js.KeyValue(ctx, "AMI_STATE")
		if err != nil {
			return false
		}
		_, err1 := kv.Get(ctx, "pbx1.calls.5000=2E1")
		_, err3 := kv.Get(ctx, "pbx1.calls.5000=2E3")
		return err1 == nil && err3 == nil
	})

	var out bytes.Buffer
	if err := run(ctx, nc, config{Bucket: "AMI_STATE", PBX: "pbx1"}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"pbx1: 2 calls in progress\n", "5000.1  since ", "caller 100", "5000.3  since ", "caller 300"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}

	wctx, wcancel := context.WithCancel(ctx)
	watched := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(wctx, nc, config{Bucket: "AMI_STATE", PBX: "pbx1", Watch: true}, watched) }()
	waitFor(t, "the watch's snapshot", func() bool { return strings.Contains(watched.String(), "2 calls in progress") })
	pbx.Emit(hangup("5000.3", "5000.3", "PJSIP/300-00000003"))
	waitFor(t, "the end of call 5000.3", func() bool { return strings.Contains(watched.String(), "ended   5000.3\n") })
	wcancel()
	if err := <-done; err != nil {
		t.Errorf("watch: %v", err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// TestRun runs the example against an embedded NATS server with
// JetStream, the bridge and a fake Asterisk 22: it reads the events the
// PBX sent, in Ami-Seq order, then again from where it stopped (the
// consumer is durable), and decodes the CoreStatus reply.
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

	// Every event the PBX sends after the login; the marker tells when
	// the stream holds them all.
	done, err := nc.SubscribeSync("ami.pbx1.event.ExampleDone")
	if err != nil {
		t.Fatal(err)
	}
	// The bridge has a connection of its own, with the inbox prefix New
	// wants: it answers no request on its own inboxes, and the example's
	// requests come on nc, as from another program.
	bnc, err := nats.Connect(ns.ClientURL(), nats.CustomInboxPrefix(subjects.InboxPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bnc.Close)
	b, err := bridge.New(bnc, []bridge.ServerConfig{{Name: "pbx1", URL: pbx.URL("bridge", "example-secret")}},
		bridge.Options{JetStream: bridge.JetStreamOptions{Enabled: true}})
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
	// amitest, as Asterisk, answers the Login before the session joins
	// the event stream, and nothing signals the join: poll for it.
	for deadline := time.Now().Add(10 * time.Second); pbx.Sessions() != 1+bridge.DefaultActionSessions; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the bridge did not log in")
		}
	}
	for i := range 12 {
		pbx.Emit(amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "ExampleEvent"}, amiproto.Field{Key: "N", Value: fmt.Sprint(i)}))
	}
	pbx.Emit(amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "ExampleDone"}))
	if _, err := done.NextMsg(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	cfg := config{Prefix: "ami", Stream: bridge.DefaultStream, Durable: "analytics", PBX: "pbx1", Count: 5}
	for round, first := range []int{1, 6} {
		var out bytes.Buffer
		if err := run(ctx, nc, cfg, &out); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != cfg.Count+1 {
			t.Fatalf("round %d: %d lines, want %d events and the reply:\n%s", round, len(lines), cfg.Count, out.String())
		}
		for i, l := range lines[:cfg.Count] {
			if want := fmt.Sprintf("pbx1 #%d ", first+i); !strings.HasPrefix(l, want) {
				t.Errorf("round %d: line %q, want %q...", round, l, want)
			}
		}
		if want := "pbx1 CoreStatus: Success, ActionID consumer-1, 0 current calls"; lines[cfg.Count] != want {
			t.Errorf("round %d: reply line %q, want %q", round, lines[cfg.Count], want)
		}
	}
}

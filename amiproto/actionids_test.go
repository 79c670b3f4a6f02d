package amiproto_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// Asterisk sends an async Originate's OriginateResponse to every session
// with events on: the session that reads it gives it the caller's
// ActionID when it shares the map with the session that asked.
func TestClient_SharedActionIDsAcrossSessions(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	ids := amiproto.NewActionIDs()
	actions := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}), amiproto.WithActionIDs(ids))
	events := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithActionIDs(ids))
	other := dial(t, srv.URL("admin", "s3cret!")) // its own map
	o := amiproto.Originate{Channel: "Local/echo@test", Application: "Echo", Async: true}
	if _, err := actions.Request(ctx10s(t), o.Action().Add("ActionID", "my-call-1")); err != nil {
		t.Fatal(err)
	}
	originateResponse := func(c *amiproto.Client) *amiproto.Message {
		for ev := range c.Events() {
			if ev.EventName() == "OriginateResponse" {
				return ev
			}
		}
		t.Fatal("events ended before the OriginateResponse")
		return nil
	}
	if ev := originateResponse(events); ev.ActionID() != "my-call-1" {
		t.Errorf("sharing session: ActionID %q, want the caller's", ev.ActionID())
	}
	if ev := originateResponse(other); ev.ActionID() == "my-call-1" || ev.ActionID() == "" {
		t.Errorf("unrelated session: ActionID %q, want the wire one", ev.ActionID())
	}
}

// RequestExpect hands the OriginateResponse that carries the request's
// ActionID to the requester, with the caller's ActionID, whichever
// client sharing the map reads it; the event stream gets it too.
func TestClient_RequestExpectAcrossSessions(t *testing.T) {
	srv := startPBX(t, amitest.Config{AnswerDelay: 50 * time.Millisecond})
	ids := amiproto.NewActionIDs()
	actions := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}), amiproto.WithActionIDs(ids))
	events := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithActionIDs(ids))
	for _, tc := range []struct{ channel, id, response, reason string }{
		{"Local/echo@test", "call-ok", "Success", "4"},
		{"Local/busy@test", "call-busy", "Failure", "5"},
		{"Local/echo@test", "", "Success", "4"},
	} {
		o := amiproto.Originate{Channel: tc.channel, Application: "Echo", Async: true}
		a := o.Action()
		if tc.id != "" {
			a.Add("ActionID", tc.id)
		}
		resp, e, err := actions.RequestExpect(ctx10s(t), a, "OriginateResponse")
		if err != nil {
			t.Fatal(err)
		}
		if resp.ActionID() != tc.id {
			t.Errorf("response ActionID %q, want %q", resp.ActionID(), tc.id)
		}
		var ev *amiproto.Message
		select {
		case ev = <-e.C:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no OriginateResponse", tc.channel)
		}
		e.Stop()
		if ev.EventName() != "OriginateResponse" || ev.Get("Response") != tc.response || ev.Get("Reason") != tc.reason || !strings.HasPrefix(ev.Get("Channel"), tc.channel) {
			t.Errorf("expected event:\n%s", ev)
		}
		if id, has := ev.Lookup("ActionID"); id != tc.id || has != (tc.id != "") {
			t.Errorf("expected event's ActionID %q (%v), want %q", id, has, tc.id)
		}
		for stream := range events.Events() {
			if stream.EventName() == "OriginateResponse" {
				if tc.id != "" && stream.ActionID() != tc.id {
					t.Errorf("event stream's ActionID %q, want %q", stream.ActionID(), tc.id)
				}
				break
			}
		}
	}
}

// A stopped Expect gets nothing, and a failed request returns none.
func TestClient_RequestExpectStopAndFailure(t *testing.T) {
	// The call is answered well after Stop.
	srv := startPBX(t, amitest.Config{AnswerDelay: 300 * time.Millisecond})
	c := dial(t, srv.URL("admin", "s3cret!"))
	o := amiproto.Originate{Channel: "Local/echo@test", Application: "Echo", Async: true}
	ctx := ctx10s(t)
	_, e, err := c.RequestExpect(ctx, o.Action().Add("ActionID", "stopped"), "OriginateResponse")
	if err != nil {
		t.Fatal(err)
	}
	e.Stop()
	for ev := range c.Events() { // the client hands an event to an Expect before its stream
		if ev.EventName() == "OriginateResponse" && ev.ActionID() == "stopped" {
			break
		}
	}
	select {
	case ev := <-e.C:
		t.Errorf("stopped Expect got %s", ev)
	default:
	}
	resp, none, err := c.RequestExpect(ctx, amiproto.NewAction("Originate"), "OriginateResponse")
	if err == nil || none != nil {
		t.Errorf("failed request: %v, %v, %v", resp, none, err)
	}
}

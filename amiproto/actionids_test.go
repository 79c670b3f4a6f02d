package amiproto_test

import (
	"testing"

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

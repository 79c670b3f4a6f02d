package amiproto_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestWithEvents_RefusesWhatContradicts: an EventDelivery whose parts
// cannot all hold is refused before any connection, naming the clash.
func TestWithEvents_RefusesWhatContradicts(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	for _, tc := range []struct {
		name string
		d    amiproto.EventDelivery
		want string
	}{
		{"func and queue", amiproto.EventDelivery{Func: func(*amiproto.Message) {}, Queue: 8}, "exclude each other"},
		{"shedding alone", amiproto.EventDelivery{Shedding: func() bool { return true }}, "Shedding and Skip go together"},
		{"skip alone", amiproto.EventDelivery{Skip: func(string) bool { return true }}, "Shedding and Skip go together"},
		{"negative queue", amiproto.EventDelivery{Queue: -1}, "event queue -1"},
		{"mask with a newline", amiproto.EventDelivery{Mask: "call\r\nAction: Originate"}, "CR or LF"},
	} {
		c, err := amiproto.Dial(ctx10s(t), srv.URL("admin", "s3cret!"), amiproto.WithEvents(tc.d))
		var de *amiproto.DialError
		if err == nil || !errors.As(err, &de) || de.Op != "options" || !strings.Contains(err.Error(), tc.want) {
			if c != nil {
				c.Close()
			}
			t.Errorf("%s: Dial = %v, want a DialError on options saying %q", tc.name, err, tc.want)
		}
	}
	if n := srv.Sessions(); n != 0 {
		t.Errorf("%d sessions for refused options, want none", n)
	}
}

// TestResponseValue: the value comes from the first entry event that has
// the field, else from the response; "" when none has it.
func TestResponseValue(t *testing.T) {
	f := func(kv ...string) *amiproto.Message {
		m := amiproto.NewMessage()
		for i := 0; i < len(kv); i += 2 {
			m.Add(kv[i], kv[i+1])
		}
		return m
	}
	list := &amiproto.Response{Message: f("Response", "Success", "Val", "head"),
		Events: []*amiproto.Message{f("Event", "Other"), f("Event", "DBGetResponse", "Val", "a"), f("Event", "DBGetResponse", "Val", "b")}}
	if got := list.Value("Val"); got != "a" {
		t.Errorf("Value of a list = %q, want the first entry's a", got)
	}
	single := &amiproto.Response{Message: f("Response", "Success", "Value", "42")}
	if got := single.Value("Value"); got != "42" {
		t.Errorf("Value = %q, want 42", got)
	}
	if got := single.Value("Nope"); got != "" {
		t.Errorf("Value of a missing field = %q, want empty", got)
	}
	var none *amiproto.Response
	if got := none.Value("Value"); got != "" {
		t.Errorf("Value of a nil response = %q", got)
	}
}

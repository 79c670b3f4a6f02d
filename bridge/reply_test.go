package bridge

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

func TestAppendReply_LegacyCommandOutput(t *testing.T) {
	// Asterisk 13's "Response: Follows": the reader keeps the raw lines as
	// Output fields.
	resp := &amiproto.Response{Message: amiproto.NewMessage([]amiproto.Field{
		{Key: "Response", Value: "Follows"},
		{Key: "Privilege", Value: "Command"},
		{Key: "ActionID", Value: "x"},
		{Key: "Output", Value: "Asterisk 13.38.3 built by root"},
		{Key: "Output", Value: "with: colons"},
	}...)}
	body := appendReply(nil, "old", resp, replyOptions{parts: true})
	var r struct {
		Server   string            `json:"server"`
		Response map[string]string `json:"response"`
		Output   string            `json:"output"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if r.Output != "Asterisk 13.38.3 built by root\nwith: colons" || r.Response["Output"] != "" || r.Response["Response"] != "Follows" {
		t.Errorf("reply %s", body)
	}
	if resp.Get("Output") == "" {
		t.Error("appendReply changed the response it encoded")
	}
}

func TestAppendReply_ErrorKeysInContractOrder(t *testing.T) {
	resp := &amiproto.Response{Message: amiproto.NewMessage([]amiproto.Field{
		{Key: "Response", Value: "Error"}, {Key: "Message", Value: "No such channel"},
	}...)}
	body := appendReply(nil, "pbx1", resp, replyOptions{code: 422, message: "No such channel"})
	if keys := orderedKeys(t, body); !slices.Equal(keys, []string{"server", "error", "response"}) {
		t.Errorf("keys %v: %s", keys, body)
	}
	if !strings.Contains(string(body), `"error":{"code":422,"message":"No such channel"}`) {
		t.Errorf("error member: %s", body)
	}
}

// TestAppendReply_DecodesAsSubjectsReply: subjects.Reply, the type a
// consumer decodes replies with, has a field for every key the bridge
// writes, and reads back what it wrote.
func TestAppendReply_DecodesAsSubjectsReply(t *testing.T) {
	list := &amiproto.Response{
		Message:  amiproto.NewAction("x").Del("Action").Add("Response", "Success").Add("EventList", "start"),
		Events:   []*amiproto.Message{amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "Entry"}, amiproto.Field{Key: "N", Value: "1"})},
		Complete: amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "ListComplete"}),
	}
	command := &amiproto.Response{Message: amiproto.NewMessage(
		amiproto.Field{Key: "Response", Value: "Follows"}, amiproto.Field{Key: "Output", Value: "line"})}
	for _, tc := range []struct {
		name string
		body []byte
		want func(r subjects.Reply) bool
	}{
		{"list", appendReply(nil, "pbx1", list, replyOptions{parts: true}), func(r subjects.Reply) bool {
			return r.Server == "pbx1" && r.Error == nil && len(r.Events) == 1 && string(r.Events[0]) == `{"Event":"Entry","N":"1"}` &&
				string(r.Complete) == `{"Event":"ListComplete"}` && string(r.Response) == `{"Response":"Success","EventList":"start"}`
		}},
		{"command", appendReply(nil, "pbx1", command, replyOptions{}), func(r subjects.Reply) bool {
			return r.Output != nil && *r.Output == "line" && string(r.Response) == `{"Response":"Follows"}`
		}},
		{"error", appendReply(nil, "pbx1", nil, replyOptions{code: subjects.CodeForbidden, message: "no"}), func(r subjects.Reply) bool {
			return r.Error != nil && *r.Error == subjects.ReplyError{Code: subjects.CodeForbidden, Message: "no"} && r.Response == nil
		}},
	} {
		var r subjects.Reply
		dec := json.NewDecoder(bytes.NewReader(tc.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s: %v: %s", tc.name, err, tc.body)
		}
		if !tc.want(r) {
			t.Errorf("%s: decoded %+v from %s", tc.name, r, tc.body)
		}
	}
}

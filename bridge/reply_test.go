package bridge

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
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

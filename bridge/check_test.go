package bridge

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCheck_NamesTheField: Check needs no connection, and each problem
// names the field at fault, as Go spells it, and the PBX by its index.
func TestCheck_NamesTheField(t *testing.T) {
	if ps := Check([]ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}, Options{}); len(ps) != 0 {
		t.Fatalf("Check of a good configuration: %v", ps)
	}
	ps := Check([]ServerConfig{
		{Name: "pbx1", URL: "admin:" + testSecret + "@h", ActionSessions: maxActionSessions + 1, EventsExclude: []string{"ok", "[z-a]"}},
		{Name: "pbx1", URL: "admin:x@h", MaxPendingRequests: -1, PingInterval: -time.Second},
	}, Options{
		ReplyPrefixes: []string{"crm", "$SYS"},
		JetStream:     JetStreamOptions{Replicas: maxReplicas + 1, MaxAge: -time.Hour},
		HA:            HAOptions{Enabled: true, Bucket: "a.b", LeaseTTL: 1500 * time.Millisecond},
	})
	type at struct {
		server int
		field  string
	}
	var got []at
	for _, p := range ps {
		got = append(got, at{p.Server, p.Field})
		if strings.Contains(p.Error(), testSecret) {
			t.Errorf("problem %q holds the secret", p)
		}
	}
	for _, want := range []at{
		{0, "ActionSessions"}, {0, "EventsExclude[1]"},
		{1, "Name"}, {1, "MaxPendingRequests"}, {1, "PingInterval"},
		{-1, "ReplyPrefixes[1]"}, {-1, "JetStream.Replicas"}, {-1, "JetStream.MaxAge"},
		{-1, "HA.Enabled"}, {-1, "HA.Bucket"}, {-1, "HA.LeaseTTL"},
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no problem for servers[%d] field %q in %v", want.server, want.field, ps)
		}
	}
	if len(got) != 11 {
		t.Errorf("%d problems, want the 11 above: %v", len(got), ps)
	}
	if s := (Problem{Server: 1, Field: "ActionSessions", Msg: "0: want 1 to 64"}).Error(); s != "servers[1].ActionSessions: 0: want 1 to 64" {
		t.Errorf("Problem.Error() = %q", s)
	}
}

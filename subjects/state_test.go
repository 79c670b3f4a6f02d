package subjects

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// kvKeyValid is nats.go's jetstream keyValid (kv.go, v1.55.0), copied
// because this package depends on the standard library only.
var kvKeyRe = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

func kvKeyValid(key string) bool {
	if len(key) == 0 || key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") {
		return false
	}
	return kvKeyRe.MatchString(key)
}

func TestStateKey(t *testing.T) {
	for _, tt := range []struct{ server, kind, id, want string }{
		{"pbx1", KindChannels, "1733600000.12", "pbx1.channels.1733600000=2E12"},
		{"pbx1", KindDevices, "SIP/100", "pbx1.devices.SIP/100"},
		{"pbx1", KindDevices, "Local/burst@test", "pbx1.devices.Local/burst=40test"},
		{"pbx1", KindQueues, "sales=eu", "pbx1.queues.sales=3Deu"},
		{"pbx1", KindBridges, "505bfbb7-02e8-4af2-b8a9-43784f77d779", "pbx1.bridges.505bfbb7-02e8-4af2-b8a9-43784f77d779"},
		{"pbx1", KindCalls, "", "pbx1.calls.="},
		{"pbx1", KindDevices, "Queue:support_pause_Local/agent@test", "pbx1.devices.Queue=3Asupport_pause_Local/agent=40test"},
		{"a.b", KindDevices, "é *>", "a=2Eb.devices.=C3=A9=20=2A=3E"},
	} {
		got := StateKey(tt.server, tt.kind, tt.id)
		if got != tt.want {
			t.Errorf("StateKey(%q, %q, %q) = %q, want %q", tt.server, tt.kind, tt.id, got, tt.want)
		}
		if !kvKeyValid(got) {
			t.Errorf("StateKey gave %q, not a valid KV key", got)
		}
		s, k, id, err := ParseStateKey(got)
		if err != nil || s != tt.server || k != tt.kind || id != tt.id {
			t.Errorf("ParseStateKey(%q) = %q, %q, %q, %v", got, s, k, id, err)
		}
	}
}

func TestParseStateKey_Rejects(t *testing.T) {
	for _, key := range []string{
		"", "pbx1", "pbx1.channels", "pbx1.channels.a.b", "pbx1.things.a",
		"pbx1.channels.", "pbx1.channels.a=2", "pbx1.channels.a=41", // =41 is 'A', which is never escaped
		"pbx1.channels.a=2e", "pbx1.channels.a b", ".channels.a", "pbx1.channels.==",
	} {
		if s, k, id, err := ParseStateKey(key); err == nil {
			t.Errorf("ParseStateKey(%q) = %q, %q, %q, want an error", key, s, k, id)
		}
	}
}

func TestCallRecordSubject(t *testing.T) {
	if got, want := CallRecordSubject("ami", "pbx1", "1733600000.12"), "ami.pbx1.call.1733600000%2E12"; got != want {
		t.Errorf("CallRecordSubject = %q, want %q", got, want)
	}
	if got, want := AllCallRecords("ami"), "ami.*.call.>"; got != want {
		t.Errorf("AllCallRecords = %q, want %q", got, want)
	}
}

func FuzzStateKey_RoundTrip(f *testing.F) {
	for _, s := range []string{"", "=", ".", "1733600000.12", "Local/burst@test-0000001d;1", "a=3D", "\x00\xff"} {
		f.Add("pbx1", s)
	}
	f.Fuzz(func(t *testing.T, server, id string) {
		for _, kind := range Kinds {
			key := StateKey(server, kind, id)
			if !kvKeyValid(key) {
				t.Fatalf("StateKey(%q, %q, %q) = %q, not a valid KV key", server, kind, id, key)
			}
			s, k, got, err := ParseStateKey(key)
			if err != nil || s != server || k != kind || got != id {
				t.Fatalf("ParseStateKey(%q) = %q, %q, %q, %v", key, s, k, got, err)
			}
		}
		// Every token has one spelling: unescaping what was not produced by
		// escaping fails or escapes back to itself.
		if back, err := UnescapeKeyToken(id); err == nil && EscapeKeyToken(back) != id {
			t.Fatalf("UnescapeKeyToken(%q) = %q, which escapes to %q", id, back, EscapeKeyToken(back))
		}
	})
}

func TestStateKey_Allocs(t *testing.T) {
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = AppendKeyToken(buf[:0], "1733600000.12") }); n != 0 {
		t.Errorf("AppendKeyToken allocates %v times", n)
	}
}

// TestCallRecord_JSON pins the record's field names and that zero times are
// left out.
func TestCallRecord_JSON(t *testing.T) {
	start := time.Date(2026, 11, 26, 4, 27, 45, 123e6, time.UTC)
	r := CallRecord{Server: "pbx1", Linkedid: "1.2", Start: start, EndSeen: true,
		Caller: CallParty{Number: "100", Channel: "PJSIP/100-1"}, Channels: []string{"PJSIP/100-1"},
		Queue: &CallQueue{Name: "support", WaitS: 3}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"server":"pbx1","linkedid":"1.2","start":"2026-11-26T04:27:45.123Z","duration_s":0,"billable_s":0,"caller":{"number":"100","channel":"PJSIP/100-1"},"hangup_cause":0,"queue":{"name":"support","wait_s":3},"channels":["PJSIP/100-1"],"end_seen":true}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	var back CallRecord
	if err := json.Unmarshal(b, &back); err != nil || !back.Start.Equal(start) || back.Queue.Name != "support" {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

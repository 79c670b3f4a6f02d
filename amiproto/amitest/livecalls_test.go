package amitest

import (
	"strings"
	"testing"
)

// TestCoreShowChannels_GeneratedCalls: "core show channels" lists both legs
// of a generated call (the names the events gave them) while the call is
// up, never a failed call, and drops the call once callDuration passed.
func TestCoreShowChannels_GeneratedCalls(t *testing.T) {
	s, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.PlayCall(CallSpec{Channel: "Local/busy@test"}) // fails: no channel stays up
	call := s.PlayCall(CallSpec{})
	if call.Failed || !strings.HasPrefix(call.Channel, "Local/burst@test-") || !strings.HasSuffix(call.Channel, ";1") {
		t.Fatalf("PlayCall = %+v, want a successful Local/burst@test call", call)
	}
	leg2 := strings.TrimSuffix(call.Channel, "1") + "2"

	table, _ := s.runCLI("core show channels")
	for _, want := range []string{
		call.Channel + " ",
		leg2 + " ",
		"burst@test:1 ",
		"burst@test:2 ",
		"Wait(1)",
		"2 active channels\n1 active call\n2 calls processed\n",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("core show channels lacks %q:\n%s", want, table)
		}
	}
	concise, _ := s.runCLI("core show channels concise")
	if want := call.Channel + "!test!burst!1!Up!Wait!1!!!!3!0!!" + call.Uniqueid + "\n"; !strings.HasPrefix(concise, want) {
		t.Errorf("core show channels concise:\n%q\nwant it to start with\n%q", concise, want)
	}
	if n := strings.Count(concise, "\n"); n != 2 {
		t.Errorf("core show channels concise has %d lines, want 2:\n%s", n, concise)
	}

	s.pbx.live.mu.Lock()
	for i := range s.pbx.live.ring {
		s.pbx.live.ring[i].at = s.pbx.live.ring[i].at.Add(-callDuration)
	}
	s.pbx.live.mu.Unlock()
	if out, _ := s.runCLI("core show channels count"); out != "0 active channels\n0 active calls\n2 calls processed\n" {
		t.Errorf("a call older than %v still counts:\n%s", callDuration, out)
	}
}

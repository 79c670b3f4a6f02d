package bridge

import (
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		// Literals, and case.
		{"Newchannel", "Newchannel", true},
		{"newCHANNEL", "Newchannel", true},
		{"Newchannel", "Newchannels", false},
		{"", "", true},
		{"", "x", false},
		// '*'.
		{"New*", "Newchannel", true},
		{"New*", "New", true},
		{"new*", "NEWSTATE", true},
		{"*", "", true},
		{"*", "anything", true},
		{"*End", "DialEnd", true},
		{"*End", "DialEnding", false},
		{"D*l*n", "DialBegin", true},
		{"D*l*x", "DialBegin", false},
		{"*a*b*c*", "xaybzc", true},
		{"a**b", "ab", true},
		{"a/b*", "A/bc", true}, // no path semantics: '*' crosses '/'
		{"a*/c", "a/b/c", true},
		// '?'.
		{"?", "", false},
		{"?", "x", true},
		{"?", "xy", false},
		{"?ial*", "DialBegin", true},
		{"Dial?", "DialBegin", false},
		{"Hangup?equest", "HangupRequest", true},
		// Classes.
		{"Queue[A-Z]*", "QueueMember", true},
		{"Queue[A-Z]*", "QueueMemberStatus", true},
		{"Queue[A-Z]*", "Queue", false},
		{"Queue[A-Z]*", "Queue1", false},
		{"Queue[a-z]*", "QueueMember", true}, // case ignored in ranges
		{"Queue[A-Z]*", "Queuemember", true}, // both ways
		{"Var[Ss]et", "VarSet", true},
		{"Var[xyz]et", "VarSet", false},
		{"Var[Set]", "VarS", true},      // one byte of the set...
		{"Var[Set]", "VarSet", false},   // ...not the word
		{"Var[Set]", "Var[set]", false}, // '[' opens a class
		{"Agent[0-9]", "Agent7", true},
		{"Agent[0-9]", "AgentX", false},
		{"Agent[!0-9]", "AgentX", true},
		{"Agent[!0-9]", "Agent7", false},
		{"Agent[^0-9]", "Agent7", false},
		{"[a-c-]x", "-x", true}, // a '-' at the end is literal
		{"*[0-9][0-9]", "Peer42", true},
		{"*[0-9][0-9]", "Peer4x", false},
		// Malformed patterns never match, not even literally.
		{"Var[Set", "Var[Set", false},
		{"Var[]", "Var[]", false},
		{"Var[z-a]", "Varb", false},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestCheckGlob(t *testing.T) {
	for _, good := range []string{"*", "?", "New*", "Queue[A-Z]*", "[!a-z]", "[^0-9]x", "a-b", "]", `back\slash`, " VarSet "} {
		if err := checkGlob(good); err != nil {
			t.Errorf("checkGlob(%q) = %v", good, err)
		}
	}
	for _, bad := range []string{"", "  ", "Var[Set", "[", "x[]", "[!]", "[z-a]*", "ok[a-z]then[bad"} {
		if err := checkGlob(bad); err == nil {
			t.Errorf("checkGlob(%q) = nil, want an error", bad)
		}
	}
}

func TestNew_RefusesMalformedGlobs(t *testing.T) {
	sc := ServerConfig{Name: "pbx1", URL: "tcp://u:s@127.0.0.1:5038",
		EventsInclude: []string{"Queue[A-Z"}, ActionsDeny: []string{""}}
	_, _, err := withServerDefaults(sc)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"EventsInclude[0]", `"Queue[A-Z"`, "ActionsDeny[0]: empty pattern"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

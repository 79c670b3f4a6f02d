package bridge

import (
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

func TestActionPolicy(t *testing.T) {
	tests := []struct {
		name        string
		allow, deny []string
		action      string
		refused     bool
		why         string
	}{
		{"default allows Ping", nil, nil, "Ping", false, ""},
		{"Login always refused", nil, []string{}, "Login", true, "owns its AMI sessions"},
		{"Logoff always refused, any case", []string{"*"}, []string{}, "LOGOFF", true, "owns its AMI sessions"},
		{"Challenge always refused", []string{"Challenge"}, []string{}, "challenge", true, "owns its AMI sessions"},
		{"Events always refused", nil, nil, "Events", true, "event masks"},
		{"Events always refused, any case, empty deny list", nil, []string{}, "events", true, "event masks"},
		{"Events refused with a custom deny list", []string{"*"}, []string{"Orig*"}, "Events", true, "event masks"},
		{"Filter always refused", []string{"Filter"}, []string{}, "FILTER", true, "filters"},
		{"deny glob", nil, []string{"Core*"}, "coreshowchannels", true, "denied"},
		{"allow list admits", []string{"Ping", "Core*"}, nil, "CoreStatus", false, ""},
		{"allow list refuses the rest", []string{"Ping", "Core*"}, nil, "Originate", true, "not in the allow list"},
		{"deny wins over allow", []string{"*"}, []string{"Originate"}, "Originate", true, "denied"},
		{"blank patterns ignored", []string{" ", ""}, nil, "Ping", false, ""},
		// The findings of issue 20: Asterisk skips a leading blank and
		// would run these; the policy refuses any name Asterisk would not
		// spell, whatever the lists say.
		{"leading blank", []string{"*"}, nil, " Originate", true, "not an action name"},
		{"leading tab", nil, []string{"Command"}, "\tCommand", true, "not an action name"},
		{"leading blank, always refused", nil, nil, " Logoff", true, "not an action name"},
		{"trailing blank", nil, nil, "Events ", true, "not an action name"},
		{"control byte", nil, nil, "\x01Ping", true, "not an action name"},
		{"empty", nil, nil, "", true, "not an action name"},
		// Safe defaults: the configuration actions are refused unless the
		// allow list names them; a glob does not.
		{"GetConfig refused by default", nil, nil, "GetConfig", true, "refused by default"},
		{"GetConfigJSON refused by default", nil, nil, "getconfigjson", true, "name GetConfigJSON in the allow list"},
		{"UpdateConfig refused by default", nil, []string{"Orig*"}, "UpdateConfig", true, "refused by default"},
		{"CreateConfig refused by default", nil, nil, "CREATECONFIG", true, "refused by default"},
		{"GetConfig not unlocked by *", []string{"*"}, nil, "GetConfig", true, "a glob such as * does not count"},
		{"GetConfig not unlocked by a glob", []string{"GetConf*"}, nil, "GetConfig", true, "refused by default"},
		{"GetConfig allowed when named", []string{"Ping", "GetConfig"}, nil, "GetConfig", false, ""},
		{"GetConfig named in any case", []string{"*", "getconfig"}, nil, "GETCONFIG", false, ""},
		{"GetConfig named but denied", []string{"GetConfig"}, []string{"GetConfig"}, "GetConfig", true, "denied"},
		{"naming GetConfig does not unlock UpdateConfig", []string{"*", "GetConfig"}, nil, "UpdateConfig", true, "refused by default"},
		{"ListCategories is not a config action", nil, nil, "ListCategories", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := newActionPolicy(tt.allow, tt.deny).refuse(amiproto.NewAction(tt.action))
			if (why != "") != tt.refused || !strings.Contains(why, tt.why) {
				t.Errorf("refuse(%q) = %q; want refused=%v mentioning %q", tt.action, why, tt.refused, tt.why)
			}
		})
	}
}

func TestActionPolicy_SystemOriginate(t *testing.T) {
	originate := func(kv ...string) *amiproto.Message {
		return amiproto.NewAction("Originate", append([]string{"Channel", "Local/100@default"}, kv...)...)
	}
	tests := []struct {
		name    string
		allow   []string
		action  *amiproto.Message
		refused bool
		why     string
	}{
		{"Dial allowed", nil, originate("Application", "Dial", "Data", "PJSIP/100,30"), false, ""},
		{"exten and context allowed", nil, originate("Exten", "100", "Context", "default", "Priority", "1"), false, ""},
		{"System refused", nil, originate("Application", "System", "Data", "touch /tmp/x"), true, `"System" contains "system"`},
		{"any case, within the name", nil, originate("Application", "TrySYSTEM", "Data", "id"), true, `contains "system"`},
		{"a leading blank skipped", nil, originate("Application", "\t AGI", "Data", "x"), true, `contains "agi"`},
		{"EAGI", nil, originate("Application", "EAGI"), true, `contains "agi"`},
		{"ExecIf", nil, originate("Application", "ExecIf", "Data", "1?Playback(x)"), true, `contains "exec"`},
		{"MixMonitor", nil, originate("Application", "MixMonitor", "Data", "x.wav,,rm -rf /"), true, `contains "mixmonitor"`},
		{"DBdeltree", nil, originate("Application", "DBdeltree", "Data", "x"), true, `contains "dbdeltree"`},
		{"ExternalIVR", nil, originate("Application", "ExternalIVR"), true, `contains "externalivr"`},
		{"Originate", nil, originate("Application", "Originate"), true, `contains "originate"`},
		{"Reload", nil, originate("Application", "Reload"), true, `contains "reload"`},
		{"SHELL in the data", nil, originate("Application", "Playback", "Data", "${SHELL(id)}"), true, `"SHELL"`},
		{"DB in the data", nil, originate("Application", "Playback", "Data", "aaaDBbbb"), true, `"DB"`},
		{"the data check is case-sensitive", nil, originate("Application", "Playback", "Data", "aaa db bbb"), false, ""},
		{"data without an application is not checked", nil, originate("Exten", "1", "Data", "SHELL"), false, ""},
		{"a second Application is checked too", nil, originate("Application", "Dial", "application", "System"), true, `contains "system"`},
		{"a second Data is checked too", nil, originate("Application", "Dial", "Data", "x", "DATA", "CURL(http://x)"), true, `"CURL"`},
		{"Queue without AGI", nil, originate("Application", "Queue", "Data", "somequeue,CcdHh,someURL,tt-monkeys,100,,gosub,rule,666"), false, ""},
		{"Queue with AGI", nil, originate("Application", "Queue", "Data", "somequeue,CcdHh,someURL,tt-monkeys,100,SomeAGIScript,gosub,rule,666"), true, "AGI argument"},
		{"Queue with no data", nil, originate("Application", "queue"), false, ""},
		{"Queue with AGI past a quoted comma", nil, originate("Application", "Queue", "Data", `q,"a,b",,,,script`), true, "AGI argument"},
		{"Queue with an empty quoted AGI", nil, originate("Application", "Queue", "Data", `q,,,,,""`), false, ""},
		{"refusal lifted by Originate/system", []string{"Ping", "Originate", OriginateSystem}, originate("Application", "System", "Data", "id"), false, ""},
		{"refusal lifted by any case", []string{"*", "originate/SYSTEM"}, originate("Application", "System"), false, ""},
		{"not lifted by *", []string{"*"}, originate("Application", "System"), true, `add "Originate/system" to the allow list`},
		{"not lifted by naming Originate", []string{"Originate"}, originate("Application", "System"), true, "system write class"},
		{"Originate/system alone does not admit Originate", []string{OriginateSystem}, originate("Application", "Dial"), true, "not in the allow list"},
		{"Originate/system unlocks no config action", []string{"*", OriginateSystem}, amiproto.NewAction("GetConfig", "Filename", "manager.conf"), true, "refused by default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := newActionPolicy(tt.allow, nil).refuse(tt.action)
			if (why != "") != tt.refused || !strings.Contains(why, tt.why) {
				t.Errorf("refuse(%q) = %q; want refused=%v mentioning %q", tt.action.String(), why, tt.refused, tt.why)
			}
		})
	}
}

// TestAppNeedsSystem runs the cases of Asterisk's own
// originate_permissions_test (main/manager.c, 22.10.1) for a user without
// the system class.
func TestAppNeedsSystem(t *testing.T) {
	tests := []struct {
		app, data string
		refused   bool
	}{
		{"exec", "", true},
		{"queue", "", false},
		{"queue", "somequeue,CcdHh,someURL,tt-monkeys,100,,gosub,rule,666", false},
		{"queue", "somequeue,CcdHh,someURL,tt-monkeys,100,SomeAGIScript,gosub,rule,666", true},
		{"someapp", "aaaDBbbb", true},
		{"someapp", "aaa DB bbb", true},
		{"someapp", "aaa db bbb", false},
	}
	for _, tt := range tests {
		if why := appNeedsSystem(tt.app, tt.data); (why != "") != tt.refused {
			t.Errorf("appNeedsSystem(%q, %q) = %q, want refused=%v", tt.app, tt.data, why, tt.refused)
		}
	}
}

func TestSeparateAppArgs(t *testing.T) {
	tests := []struct {
		data string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"a,b", []string{"a", "b"}},
		{"a,", []string{"a", ""}},
		{",", []string{"", ""}},
		{`"a,b",c`, []string{"a,b", "c"}},
		{`f(a,b),[c,d],e`, []string{"f(a,b)", "[c,d]", "e"}},
		{`a\,b,c`, []string{"a,b", "c"}},
		{`a\`, []string{"a"}},
		{`x)),y`, []string{"x))", "y"}},
		{"1,2,3,4", []string{"1", "2", "3,4"}}, // the last of three takes the rest as it is
		{`1,2,"3",4`, []string{"1", "2", `"3",4`}},
		{"1,2,", []string{"1", "2", ""}},
	}
	for _, tt := range tests {
		if got := separateAppArgs(tt.data, 3); !slices.Equal(got, tt.want) {
			t.Errorf("separateAppArgs(%q, 3) = %q, want %q", tt.data, got, tt.want)
		}
	}
}

func TestEventFilter(t *testing.T) {
	tests := []struct {
		name             string
		include, exclude []string
		pass, block      []string
	}{
		{"no globs pass everything", nil, nil, []string{"Newchannel", "", "x.y"}, nil},
		{"include only", []string{"New*", "Hangup"}, nil, []string{"Newchannel", "Newstate", "Hangup", "hangup"}, []string{"VarSet", "HangupRequest"}},
		{"exclude only", nil, []string{"VarSet", "Rtcp*"}, []string{"Newchannel"}, []string{"VarSet", "RTCPSent", "RtcpReceived"}},
		{"exclude wins", []string{"*"}, []string{"Cdr"}, []string{"Hangup"}, []string{"Cdr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEventFilter(tt.include, tt.exclude)
			for range 2 { // the second round answers from the cache
				for _, n := range tt.pass {
					if !f.pass(n) {
						t.Errorf("%q blocked", n)
					}
				}
				for _, n := range tt.block {
					if f.pass(n) {
						t.Errorf("%q passed", n)
					}
				}
			}
		})
	}
}

// The names the filter sees are the reader's memory, which the next read
// overwrites (borrowed events, shed's view): what its cache keeps must be
// its own. Here one buffer gives each name in turn, as the reader's does;
// a cached key that aliased it would read as the last name written.
func TestEventFilter_CacheKeepsItsOwnNames(t *testing.T) {
	f := newEventFilter([]string{"My.*"}, nil)
	buf := make([]byte, 0, 64)
	read := func(name string) string { // a view of buf, as a borrowed event's
		buf = append(buf[:0], name...)
		return unsafe.String(unsafe.SliceData(buf), len(buf))
	}
	names := []string{"FullyBooted", "My.Event *>", "Newchannel", "My.Other"}
	for _, n := range names {
		if got, want := f.pass(read(n)), strings.HasPrefix(n, "My."); got != want {
			t.Errorf("%q: pass %v, want %v", n, got, want)
		}
	}
	read("XXXXXXXXXXXXXXXXXXXXXXXX")
	for k := range f.cache {
		if !slices.Contains(names, k) {
			t.Errorf("the cache holds %q, a name it was never given: its key is the reader's memory", k)
		}
	}
}

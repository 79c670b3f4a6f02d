package bridge

import (
	"strings"
	"testing"
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := newActionPolicy(tt.allow, tt.deny).refuse(tt.action)
			if (why != "") != tt.refused || !strings.Contains(why, tt.why) {
				t.Errorf("refuse(%q) = %q; want refused=%v mentioning %q", tt.action, why, tt.refused, tt.why)
			}
		})
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

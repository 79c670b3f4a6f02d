package amiproto

import "testing"

func TestValidActionName(t *testing.T) {
	for _, name := range []string{"Ping", "ping", "PJSIPShowEndpoints", "JabberSend", "DBDelTree", "A", "a_1"} {
		if !ValidActionName(name) {
			t.Errorf("%q refused", name)
		}
	}
	for _, name := range []string{"", " Originate", "\tCommand", "Logoff ", "\x01Events", "Ping\x7f", "1Ping", "_Ping", "Core-Show", "Core.Show", "Orig inate", "Pïng", "Ping\u00a0"} {
		if ValidActionName(name) {
			t.Errorf("%q accepted", name)
		}
	}
}

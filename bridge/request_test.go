package bridge

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

func TestDecodeAction_Conversions(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // the action in wire form, without the final blank line
	}{
		{"action only", `{"Action":"Ping"}`, "Action: Ping"},
		{"action key any case", `{"aCTION":"Ping"}`, "Action: Ping"},
		{"action moved first, others in order", `{"Channel":"SIP/1","Action":"Hangup","Cause":"16"}`, "Action: Hangup\r\nChannel: SIP/1\r\nCause: 16"},
		{"string kept as is", `{"Action":"Command","Command":"core show  channels "}`, "Action: Command\r\nCommand: core show  channels "},
		{"number as written", `{"Action":"Originate","Priority":1,"Timeout":30000.0,"X":1e3,"Y":-0.5}`, "Action: Originate\r\nPriority: 1\r\nTimeout: 30000.0\r\nX: 1e3\r\nY: -0.5"},
		{"bools", `{"Action":"Originate","Async":true,"EarlyMedia":false}`, "Action: Originate\r\nAsync: true\r\nEarlyMedia: false"},
		{"null omitted", `{"Action":"Ping","Channel":null}`, "Action: Ping"},
		{"array repeats the key", `{"Action":"UserEvent","Header":["a: 1",2,true,null,"b"]}`, "Action: UserEvent\r\nHeader: a: 1\r\nHeader: 2\r\nHeader: true\r\nHeader: b"},
		{"empty array gives nothing", `{"Action":"Ping","X":[]}`, "Action: Ping"},
		{"object becomes sorted k=v", `{"Action":"Originate","Variable":{"B":"2","A":1,"C":null,"D":"x=y"}}`, "Action: Originate\r\nVariable: A=1\r\nVariable: B=2\r\nVariable: D=x=y"},
		{"duplicate keys kept in order", `{"Action":"Originate","Variable":"A=1","Variable":"B=2"}`, "Action: Originate\r\nVariable: A=1\r\nVariable: B=2"},
		{"ActionID passed through for the client", `{"Action":"Ping","actionid":"mine-1"}`, "Action: Ping\r\nactionid: mine-1"},
		{"unicode and escapes", `{"Action":"UserEvent","Body":"caf\u00e9 \"q\" \\ \t"}`, "Action: UserEvent\r\nBody: café \"q\" \\ \t"},
		{"whitespace around", " \n {\"Action\" : \"Ping\"} \n", "Action: Ping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeAction([]byte(tt.in))
			if err != nil {
				t.Fatalf("decodeAction(%s): %v", tt.in, err)
			}
			got := strings.TrimSuffix(m.String(), "\r\n\r\n")
			if got != tt.want {
				t.Errorf("decodeAction(%s) =\n%q\nwant\n%q", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeAction_BadRequests(t *testing.T) {
	tests := []struct {
		name, in, wantMsg string
	}{
		{"empty body", ``, "empty request"},
		{"blank body", " \n", "empty request"},
		{"not JSON", `Action: Ping`, "not JSON"},
		{"truncated", `{"Action":"Ping"`, "not JSON"},
		{"top-level array", `[{"Action":"Ping"}]`, "JSON object"},
		{"top-level string", `"Ping"`, "JSON object"},
		{"trailing data", `{"Action":"Ping"} {"Action":"Ping"}`, "data after the object"},
		{"no Action", `{"Channel":"x"}`, "no Action"},
		{"empty object", `{}`, "no Action"},
		{"Action not a string", `{"Action":5}`, "Action must be a string"},
		{"Action array", `{"Action":["Ping"]}`, "Action must be a string"},
		{"Action null", `{"Action":null}`, "Action must be a string"},
		{"Action empty", `{"Action":""}`, "Action is empty"},
		{"two Actions", `{"Action":"Ping","action":"Logoff"}`, "more than one Action"},
		{"array in array", `{"Action":"Ping","X":[["a"]]}`, "array may hold only"},
		{"object in array", `{"Action":"Ping","X":[{"a":"b"}]}`, "array may hold only"},
		{"object in object", `{"Action":"Originate","Variable":{"A":{"B":"c"}}}`, "object may hold only"},
		{"array in object", `{"Action":"Originate","Variable":{"A":["c"]}}`, "object may hold only"},
		{"LF in value", `{"Action":"Ping","X":"a\nAction: Logoff"}`, "LF"},
		{"CR in value", `{"Action":"Ping","X":"a\r"}`, "CR"},
		{"NUL in value", `{"Action":"Ping","X":"a\u0000"}`, "NUL"},
		{"CRLF in Action", `{"Action":"Ping\r\nAction: Logoff"}`, "not an action name"},
		// Asterisk skips the bytes below 0x21 at the start of a value and
		// would run these under the name after them (issue 20).
		{"leading blank in Action", `{"Action":" Originate","Channel":"Local/1@x"}`, `Action " Originate" is not an action name`},
		{"leading tab in Action", `{"Action":"\tCommand","Command":"core show version"}`, `"\tCommand" is not an action name`},
		{"leading blank, Logoff", `{"Action":" Logoff"}`, "not an action name"},
		{"leading blank, Events", `{"Action":" Events","EventMask":"on"}`, "not an action name"},
		{"control byte in Action", `{"Action":"\u0001Ping"}`, "not an action name"},
		{"trailing blank in Action", `{"Action":"Ping "}`, "not an action name"},
		{"punctuation in Action", `{"Action":"Core-Show"}`, "not an action name"},
		{"leading digit in Action", `{"Action":"1Ping"}`, "not an action name"},
		{"non-ASCII in Action", `{"Action":"Pi\u00f1g"}`, "not an action name"},
		// No other key can carry an action: Asterisk reads "Action" only
		// as a whole key, ASCII case ignored, right before the ':'.
		{"blank before an Action key", `{"Action":"Ping"," Action":"Logoff"}`, "whitespace"},
		{"tab after an Action key", `{"Action":"Ping","Action\t":"Logoff"}`, "whitespace"},
		{"colon in an Action key", `{"Action":"Ping","Action:":"Logoff"}`, "':'"},
		{"long bad Action quoted short", `{"Action":" ` + strings.Repeat("x", 5000) + `"}`, "…"},
		{"LF in key", `{"Action":"Ping","X\nY":"a"}`, "control character"},
		{"LF in array value", `{"Action":"Ping","X":["ok","a\n"]}`, "LF"},
		{"LF in variable name", `{"Action":"Originate","Variable":{"A\nB":"c"}}`, "LF"},
		{"CR in variable value", `{"Action":"Originate","Variable":{"A":"c\r"}}`, "CR"},
		{"LF in ActionID", `{"Action":"Ping","ActionID":"a\nb"}`, "LF"},
		{"colon in key", `{"Action":"Ping","X:Y":"a"}`, "':'"},
		{"space in key", `{"Action":"Ping","X Y":"a"}`, "whitespace"},
		{"empty key", `{"Action":"Ping","":"a"}`, "empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeAction([]byte(tt.in))
			var br *badRequest
			if !errors.As(err, &br) {
				t.Fatalf("decodeAction(%q) = %v, %v; want a bad request", tt.in, m, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

// FuzzDecodeAction holds the 400 promise: whatever comes in, what comes out
// is either a refusal or an action the AMI writer accepts, Action first.
func FuzzDecodeAction(f *testing.F) {
	for _, s := range []string{`{"Action":"Ping"}`, `{"Action":"Originate","Variable":{"A":"1"},"X":[1,true,null]}`, `{"action":"a\nb"}`, `[]`, `{"Action":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeAction(data)
		if err != nil {
			var br *badRequest
			if !errors.As(err, &br) {
				t.Fatalf("error is not a bad request: %v", err)
			}
			return
		}
		if m.Kind() != amiproto.KindAction || m.Name() == "" {
			t.Fatalf("decoded %q without a leading Action", m.String())
		}
		if err := amiproto.ValidateMessage(m); err != nil {
			t.Fatalf("decoded an action the writer refuses: %v", err)
		}
	})
}

func TestRequestTimeout(t *testing.T) {
	const def, max = 10 * time.Second, time.Minute
	tests := []struct {
		header  string
		want    time.Duration
		wantErr bool
	}{
		{"", def, false}, // no header
		{"2s", 2 * time.Second, false},
		{"1500ms", 1500 * time.Millisecond, false},
		{" 3s ", 3 * time.Second, false},
		{"2", 2 * time.Second, false},
		{"0.5", 500 * time.Millisecond, false},
		{"1h", max, false},
		{"1e9", max, false},
		{"0s", 0, true},
		{"-1s", 0, true},
		{"soon", 0, true},
		{"NaN", 0, true},
	}
	for _, tt := range tests {
		h := map[string][]string{}
		if tt.header != "" {
			h["ami-timeout"] = []string{tt.header} // any case
		}
		got, err := requestTimeout(h, def, max)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Ami-Timeout %q: got %v, %v; want %v, error %v", tt.header, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestRequestStream(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "TRUE": true, "1": true, "false": false, "0": false} {
		got, err := requestStream(map[string][]string{"Ami-Stream": {v}})
		if err != nil || got != want {
			t.Errorf("Ami-Stream %q: got %v, %v", v, got, err)
		}
	}
	if _, err := requestStream(map[string][]string{"Ami-Stream": {"please"}}); err == nil {
		t.Error("Ami-Stream: please was accepted")
	}
	if on, err := requestStream(nil); on || err != nil {
		t.Errorf("no header: got %v, %v", on, err)
	}
}

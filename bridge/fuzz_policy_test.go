package bridge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// wireMessage is one message as Asterisk's manager reads it from a
// client: its header lines, split on LF (a CR before the LF dropped).
type wireMessage []string

// parseAsterisk splits wire, the bytes a client sent, into messages as
// do_message and get_input (main/manager.c, 22.10.1) do: lines up to an
// empty line. A message with a line that does not fit the 1,024-byte
// buffer, or with more than 128 lines, is answered with an error and runs
// nothing: ok is false for it.
func parseAsterisk(wire []byte) (msgs []wireMessage, ok []bool) {
	var cur wireMessage
	good := true
	for len(wire) > 0 {
		line, rest, found := bytes.Cut(wire, []byte{'\n'})
		if !found {
			break // an unfinished line: Asterisk waits for more
		}
		wire = rest
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			msgs, ok = append(msgs, cur), append(ok, good && len(cur) <= 128)
			cur, good = nil, true
			continue
		}
		if len(line)+2 > 1024 {
			good = false
		}
		cur = append(cur, string(line))
	}
	return msgs, ok
}

// header is __astman_get_header: the value of the first line whose key is
// key, ASCII case ignored, right before a ':', after the bytes below 0x21;
// with skipEmpty, lines whose value is then empty are passed over (how the
// Action header is read).
func (m wireMessage) header(key string, skipEmpty bool) string {
	for _, h := range m {
		if len(h) <= len(key) || h[len(key)] != ':' || !strings.EqualFold(h[:len(key)], key) {
			continue
		}
		v := h[len(key)+1:]
		for len(v) > 0 && v[0] < 0x21 {
			v = v[1:]
		}
		if skipEmpty && v == "" {
			continue
		}
		return v
	}
	return ""
}

// fuzzPolicies are the policies FuzzPolicy tries, each with what it must
// keep from Asterisk told independently of the globs: deny and allow as
// plain names (nil allow: every action), and whether Originate/system is
// named.
var fuzzPolicies = []struct {
	allow, deny        []string
	denyNames, allowed []string
	originateSystem    bool
}{
	{nil, []string{"Originate", "Command", "Getvar"}, []string{"Originate", "Command", "Getvar"}, nil, false},
	{[]string{"*"}, nil, nil, nil, false},
	{[]string{"Ping", "Originate", "UpdateConfig", "Logoff"}, []string{"Command"}, []string{"Command"}, []string{"Ping", "Originate", "UpdateConfig", "Logoff"}, false},
	{[]string{"*", OriginateSystem, "GetConfig"}, []string{"Events"}, []string{"Events"}, nil, true},
}

// FuzzPolicy feeds requests through decodeAction, the policy and the wire
// bytes amiproto writes, and reads those bytes as Asterisk would: no name
// the policy refuses reaches the wire in any spelling Asterisk accepts. The
// seeds in testdata/fuzz/FuzzPolicy are the findings of issue 20.
func FuzzPolicy(f *testing.F) {
	f.Add("Ping", []byte(`{"Action":"Ping"}`))
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		q, _ := json.Marshal(name)
		for _, b := range [][]byte{
			body,
			[]byte(`{"Action":` + string(q) + `}`),
			[]byte(`{"Action":` + string(q) + `,"Application":"System","Data":"id"}`),
		} {
			checkPolicy(t, b)
		}
	})
}

func checkPolicy(t *testing.T, body []byte) {
	m, err := decodeAction(body)
	if err != nil {
		return
	}
	wire, err := amiproto.AppendMessage(nil, m)
	if err != nil {
		t.Fatalf("decodeAction(%q) gave an action the writer refuses: %v", body, err)
	}
	msgs, ok := parseAsterisk(wire)
	if len(msgs) != 1 {
		t.Fatalf("decodeAction(%q) writes %d messages:\n%q", body, len(msgs), wire)
	}
	if !ok[0] {
		return // Asterisk refuses it whole
	}
	am := msgs[0]
	ran := am.header("Action", true)
	if !strings.EqualFold(ran, m.Name()) {
		t.Fatalf("the policy checks %q, Asterisk runs %q, from %q", m.Name(), ran, body)
	}
	for _, fp := range fuzzPolicies {
		if newActionPolicy(fp.allow, fp.deny).refuse(m) != "" {
			continue
		}
		refusedBy := func(list []string) bool {
			for _, n := range list {
				if strings.EqualFold(ran, n) {
					return true
				}
			}
			return false
		}
		switch {
		case refusedBy(alwaysRefused):
			t.Fatalf("always refused %q reached Asterisk from %q", ran, body)
		case refusedBy(fp.denyNames):
			t.Fatalf("policy %v: denied %q reached Asterisk from %q", fp.deny, ran, body)
		case fp.allowed != nil && !refusedBy(fp.allowed):
			t.Fatalf("policy %v: %q, not allowed, reached Asterisk from %q", fp.allow, ran, body)
		case refusedBy(configActions) && !refusedBy(fp.allow):
			t.Fatalf("policy %v: %q reached Asterisk by default from %q", fp.allow, ran, body)
		}
		if strings.EqualFold(ran, "Originate") && !fp.originateSystem {
			if app := am.header("Application", false); app != "" {
				if why := appNeedsSystem(app, am.header("Data", false)); why != "" {
					t.Fatalf("policy %v: an Originate that needs the system class (%s) reached Asterisk from %q", fp.allow, why, body)
				}
			}
		}
	}
}

// TestParseAsterisk checks the model FuzzPolicy reads the wire with.
func TestParseAsterisk(t *testing.T) {
	msgs, ok := parseAsterisk([]byte("Action: \t\x01 Originate\r\naction:\r\nApplication: System\r\n\r\nACTION:   \r\nAction: Ping\r\n\r\nAction: x\r\nData: " + strings.Repeat("a", 1024) + "\r\n\r\n"))
	if len(msgs) != 3 || !ok[0] || !ok[1] || ok[2] {
		t.Fatalf("%d messages %v", len(msgs), ok)
	}
	if got := msgs[0].header("Action", true); got != "Originate" {
		t.Errorf("Action %q", got)
	}
	if got := msgs[0].header("application", false); got != "System" {
		t.Errorf("Application %q", got)
	}
	if got := msgs[1].header("Action", true); got != "Ping" {
		t.Errorf("Action after an empty one %q", got)
	}
	if got := (wireMessage{"Action : Ping", " Action: Ping", "Actions: Ping"}).header("Action", true); got != "" {
		t.Errorf("a key that is not Action read as one: %q", got)
	}
}

// FuzzNamedAction feeds requests through decodeNamed, as on the subject
// ami.pbx1.action.<token>, and reads the wire bytes as Asterisk would:
// what runs is the token's action, and the token is its one spelling, so
// a NATS permission on that subject covers every way to run it.
func FuzzNamedAction(f *testing.F) {
	f.Add("Originate", []byte(`{"Channel":"Local/1@x"}`))
	f.Add("originate", []byte(``))
	f.Add("Ping", []byte(`{"Action":"Originate"}`))
	f.Add("Ping", []byte(`{"action":" Ping"}`))
	names := builtinActionNames()
	f.Fuzz(func(t *testing.T, token string, body []byte) {
		m, err := decodeNamed(body, token, names, "ami", "pbx1")
		if err != nil {
			return
		}
		if names[strings.ToLower(token)] != token {
			t.Fatalf("token %q accepted, not the one spelling %q", token, names[strings.ToLower(token)])
		}
		wire, err := amiproto.AppendMessage(nil, m)
		if err != nil {
			t.Fatalf("decodeNamed(%q, %q) gave an action the writer refuses: %v", token, body, err)
		}
		msgs, ok := parseAsterisk(wire)
		if len(msgs) != 1 {
			t.Fatalf("decodeNamed(%q, %q) writes %d messages:\n%q", token, body, len(msgs), wire)
		}
		if ran := msgs[0].header("Action", true); ok[0] && !strings.EqualFold(ran, token) {
			t.Fatalf("subject token %q, Asterisk runs %q, from %q", token, ran, body)
		}
	})
}

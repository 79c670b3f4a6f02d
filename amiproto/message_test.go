package amiproto_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

func msg(kv ...string) *amiproto.Message { return amiproto.NewMessage(fields(kv...)...) }

func TestMessage_Kind(t *testing.T) {
	tests := []struct {
		m    *amiproto.Message
		want amiproto.Kind
	}{
		{msg("Event", "Newchannel"), amiproto.KindEvent},
		{msg("event", "Newchannel"), amiproto.KindEvent},
		{msg("Response", "Success"), amiproto.KindResponse},
		{msg("RESPONSE", "Follows"), amiproto.KindResponse},
		{msg("Action", "Ping"), amiproto.KindAction},
		// OriginateResponse: an Event with a Response key. Only the first
		// line counts.
		{msg("Event", "OriginateResponse", "Response", "Success"), amiproto.KindEvent},
		{msg("ActionID", "1", "Response", "Success"), amiproto.KindUnknown},
		{msg("", "support has 0 calls", "Response", "Success"), amiproto.KindUnknown},
		{msg(), amiproto.KindUnknown},
		{nil, amiproto.KindUnknown},
	}
	for _, tt := range tests {
		if got := tt.m.Kind(); got != tt.want {
			t.Errorf("%v.Kind() = %s, want %s", tt.m, got, tt.want)
		}
	}
	for k, want := range map[amiproto.Kind]string{
		amiproto.KindEvent: "Event", amiproto.KindResponse: "Response", amiproto.KindAction: "Action", amiproto.KindUnknown: "Unknown",
	} {
		if k.String() != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, k.String(), want)
		}
	}
}

func TestMessage_Accessors(t *testing.T) {
	m := msg("Event", "Status", "Channel", "SIP/1", "variable", "A=1", "Variable", "B=x=y", "ActionID", "first", "actionid", "second", "Empty", "")
	if got := m.Get("CHANNEL"); got != "SIP/1" {
		t.Errorf("Get is not case-insensitive: %q", got)
	}
	if got := m.Get("Missing"); got != "" {
		t.Errorf("Get(Missing) = %q", got)
	}
	if v, ok := m.Lookup("Empty"); !ok || v != "" {
		t.Errorf("Lookup(Empty) = %q, %v; want \"\", true", v, ok)
	}
	if _, ok := m.Lookup("Missing"); ok || m.Has("Missing") || !m.Has("empty") {
		t.Error("Lookup/Has disagree on presence")
	}
	if got := m.Values("VARIABLE"); !slices.Equal(got, []string{"A=1", "B=x=y"}) {
		t.Errorf("Values = %q", got)
	}
	if got := m.Values("Missing"); len(got) != 0 {
		t.Errorf("Values(Missing) = %q", got)
	}
	if got := m.ActionID(); got != "first" {
		t.Errorf("ActionID = %q, want the first one", got)
	}
	if m.Name() != "Status" || m.EventName() != "Status" {
		t.Errorf("Name %q, EventName %q", m.Name(), m.EventName())
	}
	if r := msg("Response", "Success"); r.EventName() != "" || r.Name() != "Success" {
		t.Errorf("Response: EventName %q, Name %q", r.EventName(), r.Name())
	}
	var nilMsg *amiproto.Message
	if nilMsg.Get("X") != "" || nilMsg.Has("X") || nilMsg.Values("X") != nil || nilMsg.Name() != "" || nilMsg.EventName() != "" {
		t.Error("nil Message accessors are not empty")
	}
}

func TestMessage_Variables(t *testing.T) {
	m := msg(
		"Event", "OriginateResponse",
		"Variable", "A=1",
		"Variable", "B=x=y", // split at the first '='
		"variable", "NOEQ", // no '=': the whole value is the name
		"Variable", "A=2", // a later duplicate wins
		"ChanVariable", "FOO=",
		"ChanVariable", "BAR=bar: with colon",
		"ChanVariable(Local/x-0001;1)", "BAZ=z",
		"chanvariable(SIP/1)", "Q=(null)",
		"ChanVariables", "NOT=this", // not a ChanVariable key
		"ChanVariable(", "NOT=this either",
		"Variables", "NOT=this",
	)
	if got, want := m.Variables(), map[string]string{"A": "2", "B": "x=y", "NOEQ": ""}; !maps.Equal(got, want) {
		t.Errorf("Variables = %v, want %v", got, want)
	}
	want := map[string]string{"FOO": "", "BAR": "bar: with colon", "BAZ": "z", "Q": "(null)"}
	if got := m.ChanVariables(); !maps.Equal(got, want) {
		t.Errorf("ChanVariables = %v, want %v", got, want)
	}
	var nilMsg *amiproto.Message
	if nilMsg.Variables() == nil || len(msg("Event", "X").ChanVariables()) != 0 {
		t.Error("Variables must return an empty, non-nil map")
	}
}

func TestMessage_Output(t *testing.T) {
	tests := []struct {
		name string
		m    *amiproto.Message
		want string
		ok   bool
	}{
		{"Output lines (Asterisk 14+)",
			msg("Response", "Success", "ActionID", "1", "Message", "Command output follows", "Output", "line 1", "Output", "  indented", "Output", "", "Output", "last"),
			"line 1\n  indented\n\nlast", true},
		{"Follows block as read (Asterisk 13)",
			msg("Response", "Follows", "Privilege", "Command", "ActionID", "1", "Output", "Version: 13", "Output", "", "Output", "last"),
			"Version: 13\n\nlast", true},
		{"one empty Output line", msg("Response", "Success", "Output", ""), "", true},
		{"empty Follows block", msg("Response", "Follows", "Privilege", "Command"), "", true},
		{"keys match case-insensitively", msg("Response", "Success", "output", "a", "OUTPUT", "b"), "a\nb", true},
		{"no output", msg("Response", "Error", "Message", "No command provided"), "", false},
		{"event", msg("Event", "X"), "", false},
		{"nil", nil, "", false},
	}
	for _, tt := range tests {
		got, ok := tt.m.Output()
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: Output() = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestMessage_Editing(t *testing.T) {
	m := amiproto.NewAction("Originate", "Channel", "Local/1@test", "ActionID", "a", "Variable", "X=1")
	if want := fields("Action", "Originate", "Channel", "Local/1@test", "ActionID", "a", "Variable", "X=1"); !slices.Equal(m.Fields(), want) {
		t.Fatalf("NewAction = %q, want %q", m.Fields(), want)
	}
	m.AddMap("Variable", map[string]string{"b": "2", "a": "1=1", "c": ""})
	m.Add("Async", "true")
	want := fields("Action", "Originate", "Channel", "Local/1@test", "ActionID", "a", "Variable", "X=1",
		"Variable", "a=1=1", "Variable", "b=2", "Variable", "c=", "Async", "true")
	if !slices.Equal(m.Fields(), want) {
		t.Fatalf("after AddMap/Add = %q, want %q", m.Fields(), want)
	}

	// Set replaces the first value in place and drops the later ones.
	m.Set("variable", "only=1")
	want = fields("Action", "Originate", "Channel", "Local/1@test", "ActionID", "a", "Variable", "only=1", "Async", "true")
	if !slices.Equal(m.Fields(), want) {
		t.Fatalf("after Set = %q, want %q", m.Fields(), want)
	}
	// Set of an absent key appends.
	m.Set("Timeout", "30000")
	want = append(want, amiproto.Field{Key: "Timeout", Value: "30000"})
	if !slices.Equal(m.Fields(), want) {
		t.Fatalf("after Set of a new key = %q", m.Fields())
	}
	m.Add("ACTIONID", "b")
	m.Del("ActionID")
	want = fields("Action", "Originate", "Channel", "Local/1@test", "Variable", "only=1", "Async", "true", "Timeout", "30000")
	if !slices.Equal(m.Fields(), want) {
		t.Fatalf("after Del = %q, want %q", m.Fields(), want)
	}
	m.Del("Missing")
	if !slices.Equal(m.Fields(), want) {
		t.Fatal("Del of a missing key changed the message")
	}

	// Clone is independent of the original.
	c := m.Clone()
	c.Set("Channel", "other")
	if m.Get("Channel") != "Local/1@test" {
		t.Error("Clone shares fields with the original")
	}
	var nilMsg *amiproto.Message
	if nilMsg.Clone() != nil {
		t.Error("Clone of nil is not nil")
	}

	// AddMap orders by name whatever the map's iteration order.
	for range 20 {
		a := amiproto.NewAction("X").AddMap("V", map[string]string{"z": "1", "y": "2", "x": "3", "w": "4"})
		if got := a.Values("V"); !slices.Equal(got, []string{"w=4", "x=3", "y=2", "z=1"}) {
			t.Fatalf("AddMap order = %q", got)
		}
	}
}

func TestMessage_String(t *testing.T) {
	m := msg("Response", "Success", "ActionID", "1", "", "no colon", "Empty", "")
	want := "Response: Success\r\nActionID: 1\r\nno colon\r\nEmpty: \r\n\r\n"
	if got := m.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestMessage_FieldAccess(t *testing.T) {
	m := msg("Event", "X", "", "no colon", "A", "1", "A", "2")
	if m.Len() != 4 || m.Field(1) != (amiproto.Field{Value: "no colon"}) || m.Field(3) != (amiproto.Field{Key: "A", Value: "2"}) {
		t.Fatalf("Len %d, fields %q", m.Len(), m.Fields())
	}
	var keys []string
	for k, v := range m.All() {
		keys = append(keys, k+"="+v)
		if len(keys) == 3 {
			break // All stops when the loop does
		}
	}
	if want := []string{"Event=X", "=no colon", "A=1"}; !slices.Equal(keys, want) {
		t.Errorf("All = %q, want %q", keys, want)
	}
	if m.Size() < len("EventXno colonA1A2") {
		t.Errorf("Size() = %d, less than the text", m.Size())
	}
	m.AddFields(amiproto.Field{Key: "B", Value: "3"}, amiproto.Field{Key: "B", Value: "4"})
	if !slices.Equal(m.Values("b"), []string{"3", "4"}) || m.Len() != 6 {
		t.Errorf("after AddFields: %q", m.Fields())
	}
	var zero amiproto.Message
	if zero.Len() != 0 || zero.Fields() == nil || len(zero.Fields()) != 0 || zero.Get("X") != "" || zero.Size() != 0 {
		t.Error("the zero Message is not empty")
	}
	if zero.Add("Event", "Y").EventName() != "Y" {
		t.Error("Add to the zero Message")
	}
	defer func() {
		if recover() == nil {
			t.Error("Field out of range did not panic")
		}
	}()
	m.Field(6)
}

// TestMessage_Wide: a message whose text passes 64 KiB indexes it with
// 32-bit offsets, and reads back the same.
func TestMessage_Wide(t *testing.T) {
	big := strings.Repeat("x", 40<<10)
	fs := fields("Event", "Big", "A", big, "B", big+"y", "Output", "", "C", "last")
	m := amiproto.NewMessage(fs...)
	if !slices.Equal(m.Fields(), fs) || m.Size() < 80<<10 {
		t.Fatalf("wide message reads back wrong (size %d)", m.Size())
	}
	m.Del("A")
	if m.Get("B") != big+"y" || m.Get("C") != "last" || m.Len() != 4 {
		t.Errorf("after Del: %d fields", m.Len())
	}
}

// TestMessage_KeysFoldASCIIOnly: keys match ignoring ASCII case only, as
// Asterisk's strcasecmp does and as AppendJSON groups them.
func TestMessage_KeysFoldASCIIOnly(t *testing.T) {
	m := msg("Event", "X", "\u212Aey", "kelvin", "KEY", "ascii", "Output", "o")
	if got := m.Get("key"); got != "ascii" {
		t.Errorf(`Get("key") = %q, want the ASCII "KEY" line's value`, got)
	}
	if got := m.Values("OUTPUT"); !slices.Equal(got, []string{"o"}) {
		t.Errorf("Values(OUTPUT) = %q", got)
	}
	if m.Has("kéy") || m.Has("ke") {
		t.Error("a key matched one of another spelling or length")
	}
}

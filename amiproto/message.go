package amiproto

import (
	"slices"
	"strings"
)

// Field is one "Key: value" line of a message.
type Field struct {
	Key   string
	Value string
}

// Kind tells what a message is. It comes from the key of its first line only:
// OriginateResponse is an Event that also carries a "Response:" key.
type Kind uint8

// The kinds of message.
const (
	KindUnknown  Kind = iota // first line is neither Event, Response nor Action
	KindEvent                // first line is "Event: ..."
	KindResponse             // first line is "Response: ..."
	KindAction               // first line is "Action: ..."
)

// String returns the kind's name as AMI spells it.
func (k Kind) String() string {
	switch k {
	case KindEvent:
		return "Event"
	case KindResponse:
		return "Response"
	case KindAction:
		return "Action"
	}
	return "Unknown"
}

// Message is one AMI message: its fields in wire order. Keys match
// case-insensitively and repeated keys are kept in order. A line that had no
// colon is kept as a Field with an empty Key.
//
// Messages returned by a Reader own their memory: they stay valid after the
// next read.
type Message struct {
	Fields []Field
}

// NewAction returns an Action message named name, followed by fields given as
// key, value pairs. It panics if kv has an odd length, as
// strings.NewReplacer does: a key without its value is a programming error,
// and sending the action without that field would hide it.
func NewAction(name string, kv ...string) *Message {
	if len(kv)%2 == 1 {
		panic("amiproto.NewAction: odd argument count")
	}
	m := &Message{Fields: make([]Field, 1, 1+len(kv)/2)}
	m.Fields[0] = Field{Key: "Action", Value: name}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Fields = append(m.Fields, Field{Key: kv[i], Value: kv[i+1]})
	}
	return m
}

// Kind returns the message's kind, from its first field's key.
func (m *Message) Kind() Kind {
	if m == nil || len(m.Fields) == 0 {
		return KindUnknown
	}
	// Asterisk spells them exactly so; the case-insensitive match is for
	// everything else.
	switch k := m.Fields[0].Key; {
	case k == "Event":
		return KindEvent
	case k == "Response":
		return KindResponse
	case strings.EqualFold(k, "Event"):
		return KindEvent
	case strings.EqualFold(k, "Response"):
		return KindResponse
	case strings.EqualFold(k, "Action"):
		return KindAction
	}
	return KindUnknown
}

// Lookup returns the first value of key and whether the key is present.
func (m *Message) Lookup(key string) (string, bool) {
	if m == nil {
		return "", false
	}
	for i := range m.Fields {
		if strings.EqualFold(m.Fields[i].Key, key) {
			return m.Fields[i].Value, true
		}
	}
	return "", false
}

// Get returns the first value of key, or "" when the key is absent.
func (m *Message) Get(key string) string {
	v, _ := m.Lookup(key)
	return v
}

// Values returns every value of key, in wire order.
func (m *Message) Values(key string) []string {
	if m == nil {
		return nil
	}
	var vs []string
	for i := range m.Fields {
		if strings.EqualFold(m.Fields[i].Key, key) {
			vs = append(vs, m.Fields[i].Value)
		}
	}
	return vs
}

// Has reports whether key is present.
func (m *Message) Has(key string) bool {
	_, ok := m.Lookup(key)
	return ok
}

// Name returns the value of the first field: the event name of an Event, the
// status of a Response ("Success", "Error", "Follows", ...), the action name of
// an Action.
func (m *Message) Name() string {
	if m == nil || len(m.Fields) == 0 {
		return ""
	}
	return m.Fields[0].Value
}

// EventName returns the event's name, or "" when m is not an Event.
func (m *Message) EventName() string {
	if m.Kind() != KindEvent {
		return ""
	}
	return m.Fields[0].Value
}

// ActionID returns the first ActionID value. Asterisk uses the first one
// when an action repeats it.
func (m *Message) ActionID() string { return m.Get("ActionID") }

// Variables returns the "Variable: name=value" fields as a map. Each value
// splits at its first '='; a later duplicate name wins.
func (m *Message) Variables() map[string]string { return m.vars(false) }

// ChanVariables returns the "ChanVariable: name=value" and
// "ChanVariable(<channel>): name=value" fields as a map, split at the first '='.
func (m *Message) ChanVariables() map[string]string { return m.vars(true) }

func (m *Message) vars(chanVars bool) map[string]string {
	out := map[string]string{}
	if m == nil {
		return out
	}
	for _, f := range m.Fields {
		if !isVarKey(f.Key, chanVars) {
			continue
		}
		name, value, _ := strings.Cut(f.Value, "=")
		out[name] = value
	}
	return out
}

func isVarKey(key string, chanVars bool) bool {
	if !chanVars {
		return strings.EqualFold(key, "Variable")
	}
	const p = "ChanVariable"
	if len(key) < len(p) || !strings.EqualFold(key[:len(p)], p) {
		return false
	}
	return len(key) == len(p) || (key[len(p)] == '(' && key[len(key)-1] == ')')
}

// Output returns Command output as one string, lines joined by "\n", and
// whether m carries Command output at all. It reads both framings: the
// "Output:" lines of Asterisk 14 and later, and the raw block of a
// "Response: Follows" (Asterisk 13 and earlier), which the Reader stores as
// Output fields without the "--END COMMAND--" marker.
func (m *Message) Output() (string, bool) {
	if m == nil {
		return "", false
	}
	n, size := 0, 0
	for i := range m.Fields {
		if strings.EqualFold(m.Fields[i].Key, "Output") {
			n++
			size += len(m.Fields[i].Value) + 1
		}
	}
	if n == 0 {
		return "", m.Kind() == KindResponse && strings.EqualFold(m.Name(), "Follows")
	}
	var b strings.Builder
	b.Grow(size)
	first := true
	for i := range m.Fields {
		if strings.EqualFold(m.Fields[i].Key, "Output") {
			if !first {
				b.WriteByte('\n')
			}
			first = false
			b.WriteString(m.Fields[i].Value)
		}
	}
	return b.String(), true
}

// Add appends a field.
func (m *Message) Add(key, value string) *Message {
	m.Fields = append(m.Fields, Field{Key: key, Value: value})
	return m
}

// AddMap appends one "key: k=v" field per map entry, sorted by k so the
// bytes on the wire are stable. It is how Originate's Variable is sent.
func (m *Message) AddMap(key string, vars map[string]string) *Message {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		m.Fields = append(m.Fields, Field{Key: key, Value: k + "=" + vars[k]})
	}
	return m
}

// Set replaces the first value of key, or appends the field when absent.
// Later fields with the same key are removed.
func (m *Message) Set(key, value string) *Message {
	found := false
	out := m.Fields[:0]
	for _, f := range m.Fields {
		if strings.EqualFold(f.Key, key) {
			if found {
				continue
			}
			found = true
			f.Value = value
		}
		out = append(out, f)
	}
	m.Fields = out
	if !found {
		m.Fields = append(m.Fields, Field{Key: key, Value: value})
	}
	return m
}

// Del removes every field with key.
func (m *Message) Del(key string) *Message {
	m.Fields = slices.DeleteFunc(m.Fields, func(f Field) bool { return strings.EqualFold(f.Key, key) })
	return m
}

// Clone returns a deep copy of m's field list; the strings are shared, as
// strings are immutable.
func (m *Message) Clone() *Message {
	if m == nil {
		return nil
	}
	return &Message{Fields: slices.Clone(m.Fields)}
}

// String returns the message in wire form, for logs and tests.
func (m *Message) String() string {
	var b []byte
	for _, f := range m.Fields {
		if f.Key != "" {
			b = append(b, f.Key...)
			b = append(b, ": "...)
		}
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	return string(append(b, "\r\n"...))
}

// isListStart reports whether a response opens an event list.
func isListStart(m *Message) bool { return strings.EqualFold(m.Get("EventList"), "start") }

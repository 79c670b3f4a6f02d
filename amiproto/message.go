package amiproto

import (
	"encoding/binary"
	"iter"
	"slices"
	"strings"
	"unsafe"
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

// Message is one AMI message: its fields in wire order. Keys match ignoring
// ASCII case, as Asterisk compares them, and repeated keys are kept in
// order. A line that had no colon is kept as a Field with an empty Key.
//
// A Message is compact: one string holds the text of all its fields and, at
// its end, their offsets, so that a Message holds one pointer whatever its
// size and the garbage collector never scans its text. Get, Field and
// iteration return substrings of it without copying. Add, Set and Del
// rebuild it, leaving the strings returned earlier valid. The zero Message
// is empty and ready to use.
//
// Messages returned by a Reader stay valid after the next read; see
// ReadMessage for the memory they share.
type Message struct {
	data string // the fields' text, then their index entries
	n    uint32 // number of fields
	wide bool   // index entries are four uint32 each, else four uint16
}

// An index entry locates one field in data: keyStart, keyEnd, valStart and
// valEnd, little-endian, four uint16 when the text is shorter than
// noOffset16, else four uint32. A keyStart of noOffset16 (noOffset32) marks
// the key "Output", which the raw lines of a Follows block have without
// spelling it.
const (
	noOffset16 = 1<<16 - 1
	noOffset32 = 1<<32 - 1
)

// NewMessage returns a Message holding fields, in order.
func NewMessage(fields ...Field) *Message {
	m := pack(fields)
	return &m
}

// NewAction returns an Action message named name, followed by fields given as
// key, value pairs. It panics if kv has an odd length, as
// strings.NewReplacer does: a key without its value is a programming error,
// and sending the action without that field would hide it.
func NewAction(name string, kv ...string) *Message {
	if len(kv)%2 == 1 {
		panic("amiproto.NewAction: odd argument count")
	}
	fs := make([]Field, 1, 1+len(kv)/2)
	fs[0] = Field{Key: "Action", Value: name}
	for i := 0; i+1 < len(kv); i += 2 {
		fs = append(fs, Field{Key: kv[i], Value: kv[i+1]})
	}
	return NewMessage(fs...)
}

// pack lays fields out as a Message: keys and values back to back, then
// the index.
func pack(fs []Field) Message {
	if len(fs) == 0 {
		return Message{}
	}
	size := 0
	for _, f := range fs {
		size += len(f.Key) + len(f.Value)
	}
	wide := size >= noOffset16
	b := make([]byte, size+len(fs)*entrySize(wide))
	t := 0
	for i, f := range fs {
		ks := t
		t += copy(b[t:], f.Key)
		vs := t
		t += copy(b[t:], f.Value)
		putEntry(b[size:], wide, i, ks, vs, vs, t)
	}
	// b is not written again: it can be the string.
	return Message{data: unsafe.String(&b[0], len(b)), n: uint32(len(fs)), wide: wide}
}

func entrySize(wide bool) int {
	if wide {
		return 16
	}
	return 8
}

// putEntry writes field i's entry into idx. A negative ks marks the key
// "Output".
func putEntry(idx []byte, wide bool, i, ks, ke, vs, ve int) {
	if ks < 0 {
		ks, ke = noOffset32, noOffset32 // truncated to noOffset16 when narrow
	}
	e := idx[i*entrySize(wide):]
	for j, v := range [4]int{ks, ke, vs, ve} {
		if wide {
			binary.LittleEndian.PutUint32(e[4*j:], uint32(v))
		} else {
			binary.LittleEndian.PutUint16(e[2*j:], uint16(v))
		}
	}
}

// Len returns the number of fields.
func (m *Message) Len() int {
	if m == nil {
		return 0
	}
	return int(m.n)
}

// Field returns field i, in wire order. It panics when i is out of range.
func (m *Message) Field(i int) Field {
	if uint(i) >= uint(m.Len()) {
		panic("amiproto: Message.Field index out of range")
	}
	k, v := m.field(i)
	return Field{Key: k, Value: v}
}

// Fields returns a new slice of the fields, in wire order.
func (m *Message) Fields() []Field {
	fs := make([]Field, m.Len())
	m.decode(fs)
	return fs
}

// All iterates over the fields' keys and values, in wire order.
func (m *Message) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for i := range m.Len() {
			if !yield(m.field(i)) {
				return
			}
		}
	}
}

// Size returns the bytes m holds: its text and its index.
func (m *Message) Size() int {
	if m == nil {
		return 0
	}
	return len(m.data)
}

// field returns the key and value of field i, which must exist.
func (m *Message) field(i int) (key, value string) {
	idx := len(m.data) - int(m.n)*entrySize(m.wide)
	var ks, ke, vs, ve uint64
	if m.wide {
		ks, ke = uint64(load32(m.data, idx+i*16)), uint64(load32(m.data, idx+i*16+4))
		vs, ve = uint64(load32(m.data, idx+i*16+8)), uint64(load32(m.data, idx+i*16+12))
		if ks == noOffset32 {
			return "Output", m.data[vs:ve]
		}
	} else {
		e := load64(m.data, idx+i*8)
		ks, ke, vs, ve = e&0xffff, e>>16&0xffff, e>>32&0xffff, e>>48
		if ks == noOffset16 {
			return "Output", m.data[vs:ve]
		}
	}
	return m.data[ks:ke], m.data[vs:ve]
}

// decode fills fs, of m.Len() fields, with m's fields.
func (m *Message) decode(fs []Field) {
	if m.wide {
		for i := range fs {
			fs[i].Key, fs[i].Value = m.field(i)
		}
		return
	}
	data := m.data
	idx := bytesOf(data)[len(data)-8*len(fs):]
	for i := range fs {
		e := binary.LittleEndian.Uint64(idx[8*i:])
		ks, ke, vs, ve := e&0xffff, e>>16&0xffff, e>>32&0xffff, e>>48
		fs[i].Value = data[vs:ve]
		if ks == noOffset16 {
			fs[i].Key = "Output"
		} else {
			fs[i].Key = data[ks:ke]
		}
	}
}

// key returns the key of field i, which must exist.
func (m *Message) key(i int) string {
	k, _ := m.field(i)
	return k
}

// value returns the value of field i, which must exist.
func (m *Message) value(i int) string {
	_, v := m.field(i)
	return v
}

// find returns the index of the first field with key at or after i, or -1.
// Keys match ignoring ASCII case, as Asterisk compares header names: only
// keys of key's length are looked at, and only their offsets decoded.
func (m *Message) find(key string, i int) int {
	n := m.Len()
	if n == 0 || m.wide {
		for ; i < n; i++ {
			if equalFoldASCIIKey(m.key(i), key) {
				return i
			}
		}
		return -1
	}
	idx := len(m.data) - n*8
	for ; i < n; i++ {
		e := load32(m.data, idx+i*8)
		ks, ke := int(e&0xffff), int(e>>16)
		k := "Output"
		if ks != noOffset16 {
			if ke-ks != len(key) {
				continue
			}
			k = m.data[ks:ke]
		}
		if equalFoldASCIIKey(k, key) {
			return i
		}
	}
	return -1
}

// Kind returns the message's kind, from its first field's key.
func (m *Message) Kind() Kind {
	if m.Len() == 0 {
		return KindUnknown
	}
	// Asterisk spells them exactly so; the case-insensitive match is for
	// everything else.
	switch k := m.key(0); {
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
	if i := m.find(key, 0); i >= 0 {
		return m.value(i), true
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
	var vs []string
	for i := m.find(key, 0); i >= 0; i = m.find(key, i+1) {
		vs = append(vs, m.value(i))
	}
	return vs
}

// Has reports whether key is present.
func (m *Message) Has(key string) bool { return m.find(key, 0) >= 0 }

// Name returns the value of the first field: the event name of an Event, the
// status of a Response ("Success", "Error", "Follows", ...), the action name of
// an Action.
func (m *Message) Name() string {
	if m.Len() == 0 {
		return ""
	}
	return m.value(0)
}

// EventName returns the event's name, or "" when m is not an Event.
func (m *Message) EventName() string {
	if m.Kind() != KindEvent {
		return ""
	}
	return m.value(0)
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
	for i := range m.Len() {
		if !isVarKey(m.key(i), chanVars) {
			continue
		}
		name, value, _ := strings.Cut(m.value(i), "=")
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
	vs := m.Values("Output")
	if len(vs) == 0 {
		return "", m.Kind() == KindResponse && strings.EqualFold(m.Name(), "Follows")
	}
	return strings.Join(vs, "\n"), true
}

// Add appends a field.
func (m *Message) Add(key, value string) *Message {
	return m.AddFields(Field{Key: key, Value: value})
}

// AddFields appends fields, in order.
func (m *Message) AddFields(fields ...Field) *Message {
	*m = pack(append(m.Fields(), fields...))
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
	fs := m.Fields()
	for _, k := range names {
		fs = append(fs, Field{Key: key, Value: k + "=" + vars[k]})
	}
	*m = pack(fs)
	return m
}

// Set replaces the first value of key, or appends the field when absent.
// Later fields with the same key are removed.
func (m *Message) Set(key, value string) *Message {
	found := false
	fs := m.Fields()
	out := fs[:0]
	for _, f := range fs {
		if equalFoldASCIIKey(f.Key, key) {
			if found {
				continue
			}
			found = true
			f.Value = value
		}
		out = append(out, f)
	}
	if !found {
		out = append(out, Field{Key: key, Value: value})
	}
	*m = pack(out)
	return m
}

// Del removes every field with key.
func (m *Message) Del(key string) *Message {
	if m.find(key, 0) < 0 {
		return m
	}
	*m = pack(slices.DeleteFunc(m.Fields(), func(f Field) bool { return equalFoldASCIIKey(f.Key, key) }))
	return m
}

// Clone returns a copy of m that shares no memory with other messages.
// Messages from a Reader share memory with those read close to them (see
// ReadMessage): a message kept long after its neighbours, such as an event
// waiting in a queue while others are dropped, is better cloned, so that
// it keeps only its own bytes alive.
func (m *Message) Clone() *Message {
	if m == nil {
		return nil
	}
	c := *m
	c.data = strings.Clone(m.data)
	return &c
}

// AppendClone appends m's bytes to buf and returns buf and a copy of m on
// those bytes, so that many kept messages can share one allocation (a
// buffer of events). The copy is valid as long as the bytes appended
// never change: append only to buf after them, never write over them.
func (m *Message) AppendClone(buf []byte) ([]byte, Message) {
	if m == nil {
		return buf, Message{}
	}
	c := *m
	if len(m.data) == 0 {
		return buf, c
	}
	n := len(buf)
	buf = append(buf, m.data...)
	c.data = unsafe.String(&buf[n], len(m.data))
	return buf, c
}

// String returns the message in wire form, for logs and tests.
func (m *Message) String() string {
	var b []byte
	for k, v := range m.All() {
		if k != "" {
			b = append(b, k...)
			b = append(b, ": "...)
		}
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	return string(append(b, "\r\n"...))
}

// isListStart reports whether a response opens an event list.
func isListStart(m *Message) bool { return strings.EqualFold(m.Get("EventList"), "start") }

package amiproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// The fuzz targets' seed corpus is in testdata/fuzz/<Name>/: excerpts of
// the captures. Run one with, for example:
//
//	go test -run '^$' -fuzz '^FuzzReader$' -fuzztime 60s ./amiproto/

// fuzzLimits are small so that the fuzzer reaches every limit.
var fuzzLimits = ReaderLimits{MaxLineBytes: 64, MaxMessageBytes: 256, MaxFields: 8}

// fuzzBufSize replaces the reader's 32 KB starting buffer, so that small
// inputs exercise compaction and growth too.
const fuzzBufSize = 16

// readResult is what one ReadMessage gave.
type readResult struct {
	fields []Field
	err    error
}

// readEverything reads src to its end and checks, on the way, what must hold
// for any input: bounded memory, the limits, and progress.
func readEverything(t *testing.T, src io.Reader, maxCalls int) []readResult {
	r := NewReaderLimits(src, fuzzLimits)
	r.buf = make([]byte, fuzzBufSize)
	// What the buffer may hold: one message's lines with their
	// terminators, a Follows marker line, one line in progress, and a read.
	// Reads that fill it may grow it to busyBufSize too.
	maxBuf := max(busyBufSize, 2*(fuzzLimits.MaxMessageBytes+2*(fuzzLimits.MaxFields+1)+len("--END COMMAND--\r\n")+
		fuzzLimits.MaxLineBytes+2+minReadSize))
	var out []readResult
	for range maxCalls {
		m, err := r.ReadMessage()
		if len(r.buf) > maxBuf {
			t.Fatalf("buffer grew to %d bytes, bound %d", len(r.buf), maxBuf)
		}
		if err == io.EOF {
			return out
		}
		if err != nil {
			out = append(out, readResult{err: err})
			var perr *ProtocolError
			if errors.As(err, &perr) {
				continue
			}
			if err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error %v", err)
			}
			return out
		}
		checkMessage(t, m)
		out = append(out, readResult{fields: m.Fields()})
	}
	t.Fatalf("no EOF after %d calls", maxCalls)
	return nil
}

func checkMessage(t *testing.T, m *Message) {
	if len(m.Fields()) == 0 || len(m.Fields()) > fuzzLimits.MaxFields {
		t.Fatalf("message with %d fields", len(m.Fields()))
	}
	size := 0
	for _, f := range m.Fields() {
		if strings.ContainsAny(f.Key, "\n") || strings.ContainsAny(f.Value, "\n") {
			t.Fatalf("field %q holds a line break", f)
		}
		// A raw line of a Follows block becomes an Output field whose key
		// was not on the line: only the value surely came from it.
		if len(f.Value) > fuzzLimits.MaxLineBytes || len(f.Key) > fuzzLimits.MaxLineBytes {
			t.Fatalf("field %q is longer than a line may be", f)
		}
		size += len(f.Value)
	}
	if size > fuzzLimits.MaxMessageBytes {
		t.Fatalf("message of %d bytes", size)
	}
}

func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"Response: Success\r\nActionID: 1\r\n\r\n",
		"Event: A\nK: v\n\nEvent: B\r\n\r\n",
		"Response: Follows\r\nPrivilege: Command\r\nActionID: c\r\na: b\n\nx--END COMMAND--\r\n\r\n",
		"Response: Follows\nPrivilege: Command\nout\n--END COMMAND--\n\n",
		"Response: Follows\r\nPrivilege: Command\r\nno marker\n\r\nEvent: X\r\n\r\n",
		"junk\r\n\r\nEvent: X\r\nChanVariable(Local/x;1): FOO=\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		calls := len(data) + 2 // every call but the last consumes a line
		whole := readEverything(t, bytes.NewReader(data), calls)
		oneByte := readEverything(t, iotest.OneByteReader(bytes.NewReader(data)), calls)
		if !slices.EqualFunc(whole, oneByte, func(a, b readResult) bool {
			return slices.Equal(a.fields, b.fields) && sameError(a.err, b.err)
		}) {
			t.Fatalf("reading a byte at a time differs:\n%v\n%v", whole, oneByte)
		}
	})
}

// sameError reports whether two reads failed the same way: the same
// sentinel, and for a *ProtocolError the same line.
func sameError(a, b error) bool {
	var pa, pb *ProtocolError
	if errors.As(a, &pa) && errors.As(b, &pb) {
		return pa.Err == pb.Err && pa.Line == pb.Line
	}
	return a == b
}

// badField reports whether a field cannot be written safely; it is the
// writer's rule, restated independently.
func badField(key, value string) bool {
	return key == "" || strings.ContainsAny(key, ":\r\n\x00 \t") || strings.ContainsAny(value, "\r\n\x00") ||
		strings.IndexFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0
}

func FuzzWriterRoundTrip(f *testing.F) {
	f.Add("Originate", "Channel", "Local/1@test", "Variable", "BAR=bar: with colon")
	f.Add("Command", "Command", "core show channels", "ActionID", "id:with:colons  ")
	f.Add("Ping", "Output", "   indented", "Action", "Hangup\r\nChannel: x")
	f.Add("UserEvent", "Header1", " lead", "header1", "\x00")
	f.Fuzz(func(t *testing.T, action, k1, v1, k2, v2 string) {
		m := NewAction(action, k1, v1, k2, v2, k1, v2)
		wantErr := badField("Action", action) || badField(k1, v1) || badField(k2, v2) || badField(k1, v2)
		out, err := AppendMessage([]byte("x"), m)
		var aerr *ActionError
		if wantErr {
			if !errors.As(err, &aerr) || string(out) != "x" {
				t.Fatalf("bad action accepted: %q, %v", out, err)
			}
			if ValidateMessage(m) == nil {
				t.Fatal("ValidateMessage accepts what AppendMessage refuses")
			}
			return
		}
		if err != nil {
			t.Fatalf("valid action refused: %v", err)
		}
		got, err := NewReader(bytes.NewReader(out[1:])).ReadMessage()
		if err != nil {
			t.Fatalf("reading %q back: %v", out[1:], err)
		}
		// What reading gives back: a value loses its leading blanks, as
		// Asterisk's parser does, but an Output value only the one space.
		want := slices.Clone(m.Fields())
		for i := range want {
			if strings.EqualFold(want[i].Key, "Output") {
				continue
			}
			want[i].Value = strings.TrimLeft(want[i].Value, " \t")
		}
		if !slices.Equal(got.Fields(), want) {
			t.Fatalf("read back %q, want %q", got.Fields(), want)
		}
	})
}

// jsonMember is one member of a JSON object: a key and its string values.
type jsonMember struct {
	key    string
	values []string
	array  bool
}

// decodeJSONObject decodes an object of strings and arrays of strings in
// member order, which a map would lose.
func decodeJSONObject(t *testing.T, data []byte) []jsonMember {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok := func() json.Token {
		tk, err := dec.Token()
		if err != nil {
			t.Fatalf("decoding %q: %v", data, err)
		}
		return tk
	}
	if tok() != json.Delim('{') {
		t.Fatalf("not an object: %q", data)
	}
	var out []jsonMember
	for dec.More() {
		key, _ := tok().(string)
		mem := jsonMember{key: key}
		switch v := tok().(type) {
		case string:
			mem.values = []string{v}
		case json.Delim:
			mem.array = true
			for dec.More() {
				s, ok := tok().(string)
				if !ok {
					t.Fatalf("array of non-strings in %q", data)
				}
				mem.values = append(mem.values, s)
			}
			tok()
		default:
			t.Fatalf("member %q is %T", key, v)
		}
		out = append(out, mem)
	}
	return out
}

// asJSONString is what s becomes through encoding/json: invalid UTF-8 turns
// into U+FFFD, byte by byte.
func asJSONString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// wantJSONMembers restates AppendJSON's grouping plainly: keys equal
// ignoring ASCII case group under the first spelling, in first-seen order.
func wantJSONMembers(fs []Field) []jsonMember {
	var out []jsonMember
	index := map[string]int{} // folded key → member
	for _, f := range fs {
		if f.Key == "" {
			continue
		}
		i, ok := index[asciiFold(f.Key)]
		if !ok {
			i = len(out)
			index[asciiFold(f.Key)] = i
			out = append(out, jsonMember{key: asJSONString(f.Key)})
		}
		out[i].values = append(out[i].values, asJSONString(f.Value))
	}
	for i := range out {
		out[i].array = len(out[i].values) > 1
	}
	return out
}

func asciiFold(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func FuzzJSON(f *testing.F) {
	f.Add([]byte("Event\x00Status\x00Variable\x00A=1\x00variable\x00B=2\x00\x00no colon"), byte(0))
	f.Add([]byte("Event|X|Q|say \"hi\" \\|C|\r\n\t\x01\x7f|U|h\xc3\xa9llo \xe2\x80\xa8 \xff\xfe|H|<&>"), byte('|'))
	f.Add([]byte("K\nv1\nk\nv2\nK\nv3\nOutput\nline\nOUTPUT\n"), byte('\n'))
	f.Fuzz(func(t *testing.T, data []byte, sep byte) {
		parts := strings.Split(string(data), string([]byte{sep}))
		m := &Message{}
		for i := 0; i+1 < len(parts); i += 2 {
			m.Add(parts[i], parts[i+1])
		}
		out := m.AppendJSON(nil)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %q", out)
		}
		got := decodeJSONObject(t, out)
		want := wantJSONMembers(m.Fields())
		if !slices.EqualFunc(got, want, func(a, b jsonMember) bool {
			return a.key == b.key && a.array == b.array && slices.Equal(a.values, b.values)
		}) {
			t.Fatalf("JSON %s\ndecodes to %+v\nwant       %+v", out, got, want)
		}
		if mj, err := m.MarshalJSON(); err != nil || !bytes.Equal(mj, out) {
			t.Fatalf("MarshalJSON differs from AppendJSON")
		}
	})
}

// TestNeedsEscape checks the eight-byte test against the byte table for
// every byte value at every position of the word.
func TestNeedsEscape(t *testing.T) {
	for pos := range 8 {
		for c := range 256 {
			word := []byte("abcdefgh")
			word[pos] = byte(c)
			got := needsEscape(load64(string(word), 0))
			if want := !jsonSafe[c]; got != want {
				t.Fatalf("byte %#x at %d: needsEscape = %v, want %v", c, pos, got, want)
			}
		}
	}
}

// TestAppendJSONStringEveryPosition puts each kind of byte that needs care at
// every position of strings of every length up to three words, where the
// word-at-a-time scan hands over to the byte loop.
func TestAppendJSONStringEveryPosition(t *testing.T) {
	for n := 1; n <= 24; n++ {
		for pos := range n {
			for _, special := range []string{"\x00", "\x1f", "\"", "\\", "\x7f", "\xff", "é", "\u2028", "\n"} {
				s := strings.Repeat("a", pos) + special + strings.Repeat("b", n-pos-1)
				out := AppendJSONString(nil, s)
				var got string
				if err := json.Unmarshal(out, &got); err != nil || got != asJSONString(s) {
					t.Fatalf("%q encodes as %s (%v)", s, out, err)
				}
			}
		}
	}
}

package amiproto_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

func TestMessage_AppendJSON(t *testing.T) {
	tests := []struct {
		name string
		m    *amiproto.Message
		want string
	}{
		{"wire order, keys as spelled",
			msg("Event", "Newchannel", "Privilege", "call,all", "channel", "Local/1@test;1", "Uniqueid", "1.2"),
			`{"Event":"Newchannel","Privilege":"call,all","channel":"Local/1@test;1","Uniqueid":"1.2"}`},
		{"a repeated key is an array where it first appeared",
			msg("Event", "Status", "Variable", "A=1", "Channel", "x", "Variable", "B=2", "ActionID", "s", "Variable", "C=3"),
			`{"Event":"Status","Variable":["A=1","B=2","C=3"],"Channel":"x","ActionID":"s"}`},
		{"repeats match ignoring ASCII case, first spelling kept",
			msg("Event", "UserEvent", "header1", "one", "Header1", "two", "HEADER1", "three"),
			`{"Event":"UserEvent","header1":["one","two","three"]}`},
		{"several repeated keys",
			msg("Response", "Success", "Output", "a", "ChanVariable", "FOO=", "Output", "", "ChanVariable", "BAR=bar: with colon", "Output", "c"),
			`{"Response":"Success","Output":["a","","c"],"ChanVariable":["FOO=","BAR=bar: with colon"]}`},
		{"ChanVariable(channel) keys are their own keys",
			msg("Event", "OriginateResponse", "Response", "Success", "ChanVariable(Local/x;1)", "FOO=", "ChanVariable(Local/x;1)", "BAR="),
			`{"Event":"OriginateResponse","Response":"Success","ChanVariable(Local/x;1)":["FOO=","BAR="]}`},
		{"lines without a colon are left out",
			msg("", "support has 0 calls", "Event", "X", "", "junk"),
			`{"Event":"X"}`},
		{"escapes",
			msg("Event", "X", "Q", `say "hi" \ bye`, "C", "a\r\nb\tc\x00\x01\x1f\x7f", "U", "héllo ✓ 😀", "LS", "a\u2028b\u2029c", "H", "<&>"),
			`{"Event":"X","Q":"say \"hi\" \\ bye","C":"a\r\nb\tc\u0000\u0001\u001f` + "\x7f" + `","U":"héllo ✓ 😀","LS":"a\u2028b\u2029c","H":"<&>"}`},
		{"invalid UTF-8 becomes U+FFFD",
			msg("Event", "X", "B\xff", "\xc3(\xe2\x82\xff\xed\xa0\x80"),
			`{"Event":"X","B\ufffd":"\ufffd(\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd"}`}, // byte by byte, as encoding/json does
		{"empty values", msg("Response", "Success", "Message", ""), `{"Response":"Success","Message":""}`},
		{"no fields", msg(), `{}`},
		{"nil", nil, `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.m.AppendJSON([]byte("x"))
			if string(got) != "x"+tt.want {
				t.Errorf("AppendJSON =\n%s\nwant\n%s", got[1:], tt.want)
			}
			if !json.Valid(got[1:]) {
				t.Errorf("invalid JSON: %s", got[1:])
			}
		})
	}
}

func TestMessage_AppendJSONManyFields(t *testing.T) {
	// More fields than AppendJSON keeps on its stack.
	m := msg("Response", "Follows")
	var want []string
	for i := range 300 {
		m.Add("Output", fmt.Sprint("line ", i))
		m.Add(fmt.Sprint("K", i), "v")
		want = append(want, fmt.Sprint("line ", i))
	}
	var decoded map[string]any
	if err := json.Unmarshal(m.AppendJSON(nil), &decoded); err != nil {
		t.Fatal(err)
	}
	out, _ := decoded["Output"].([]any)
	if len(decoded) != 302 || len(out) != 300 || out[299] != "line 299" || decoded["K299"] != "v" {
		t.Errorf("decoded %d keys, %d Output lines", len(decoded), len(out))
	}
}

func TestMessage_MarshalJSON(t *testing.T) {
	m := msg("Event", "Hangup", "Cause", "16")
	want := `{"Event":"Hangup","Cause":"16"}`
	for _, v := range []any{m, *m} {
		got, err := json.Marshal(v)
		if err != nil || string(got) != want {
			t.Errorf("json.Marshal(%T) = %s, %v; want %s", v, got, err, want)
		}
	}
	got, err := json.Marshal(struct {
		PBX string
		Msg *amiproto.Message
		Nil *amiproto.Message
	}{"pbx1", m, nil})
	if want := `{"PBX":"pbx1","Msg":{"Event":"Hangup","Cause":"16"},"Nil":null}`; err != nil || string(got) != want {
		t.Errorf("embedded: %s, %v; want %s", got, err, want)
	}
}

// TestMessage_JSONOfEveryCapture encodes every message of the captures and
// decodes it back with encoding/json: each field is there, repeated keys as
// arrays.
func TestMessage_JSONOfEveryCapture(t *testing.T) {
	for _, tc := range replayCases {
		if strings.HasPrefix(tc.name, "14") {
			continue // the bursts repeat what the others show
		}
		raw := loadRecv(t, tc.ver, tc.name)
		_, msgs := replayAll(t, amiproto.NewReader(bytes.NewReader(raw)))
		for i, m := range msgs {
			out := m.AppendJSON(nil)
			var decoded map[string]any
			if err := json.Unmarshal(out, &decoded); err != nil {
				t.Fatalf("%s/%s message %d: %v\n%s", tc.ver, tc.name, i, err, out)
			}
			for _, f := range m.Fields() {
				if f.Key == "" {
					continue
				}
				vals := m.Values(f.Key)
				got, ok := decoded[f.Key]
				if !ok {
					continue // a repeat spelled differently: under the first spelling
				}
				if len(vals) == 1 && got != vals[0] || len(vals) > 1 && fmt.Sprint(got) != fmt.Sprint(toAny(vals)) {
					t.Fatalf("%s/%s message %d: %s = %v, want %q", tc.ver, tc.name, i, f.Key, got, vals)
				}
			}
		}
	}
}

func toAny(vs []string) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

func TestMessage_AppendJSONAllocations(t *testing.T) {
	raw := loadRecv(t, "asterisk-22", "07b_originate_vars_userevent_getvar_setvar")
	_, msgs := replayAll(t, amiproto.NewReader(bytes.NewReader(raw)))
	buf := make([]byte, 0, 64<<10)
	for _, m := range msgs {
		if len(m.Fields()) > 64 {
			continue
		}
		if n := testing.AllocsPerRun(10, func() { buf = m.AppendJSON(buf[:0]) }); n != 0 {
			t.Errorf("%s %q: %v allocations, want 0", m.Kind(), m.Name(), n)
		}
	}
}

// ExampleMessage_AppendJSON shows an event as JSON: the repeated
// ChanVariable keys become one array.
func ExampleMessage_AppendJSON() {
	stream := "Event: OriginateResponse\r\nResponse: Success\r\nChannel: Local/echo@test-00000006;1\r\n" +
		"ChanVariable: FOO=foo\r\nChanVariable: BAR=bar: with colon\r\n\r\n"
	r := amiproto.NewReader(strings.NewReader(stream))
	var buf []byte
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			panic(err)
		}
		buf = m.AppendJSON(buf[:0])
		fmt.Println(string(buf))
	}
	// Output:
	// {"Event":"OriginateResponse","Response":"Success","Channel":"Local/echo@test-00000006;1","ChanVariable":["FOO=foo","BAR=bar: with colon"]}
}

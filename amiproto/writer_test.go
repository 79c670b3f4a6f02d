package amiproto_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

func TestWriter_ExactBytes(t *testing.T) {
	m := amiproto.NewAction("Originate",
		"Channel", "Local/100@test",
		"Context", "test",
		"ActionID", "o:1 x",
		"Variable", "FOO=foo",
		"Variable", "BAR=bar: with colon",
		"CallerID", "  leading and trailing  ",
		"Empty", "",
	).AddMap("Variable", map[string]string{"b": "2", "a": "1"})
	want := "Action: Originate\r\n" +
		"Channel: Local/100@test\r\n" +
		"Context: test\r\n" +
		"ActionID: o:1 x\r\n" +
		"Variable: FOO=foo\r\n" +
		"Variable: BAR=bar: with colon\r\n" +
		"CallerID:   leading and trailing  \r\n" +
		"Empty: \r\n" +
		"Variable: a=1\r\n" +
		"Variable: b=2\r\n" +
		"\r\n"
	var buf bytes.Buffer
	if err := amiproto.NewWriter(&buf).WriteMessage(m); err != nil {
		t.Fatal(err)
	}
	if buf.String() != want {
		t.Errorf("wrote\n%q\nwant\n%q", buf.String(), want)
	}
	// AppendMessage appends to what is there.
	got, err := amiproto.AppendMessage([]byte("prefix"), m)
	if err != nil || string(got) != "prefix"+want {
		t.Errorf("AppendMessage = %q, %v", got, err)
	}
}

func TestWriter_WritesSeveral(t *testing.T) {
	var buf bytes.Buffer
	w := amiproto.NewWriter(&buf)
	for _, id := range []string{"1", "2"} {
		if err := w.WriteMessage(amiproto.NewAction("Ping", "ActionID", id)); err != nil {
			t.Fatal(err)
		}
	}
	if want := "Action: Ping\r\nActionID: 1\r\n\r\nAction: Ping\r\nActionID: 2\r\n\r\n"; buf.String() != want {
		t.Errorf("wrote %q, want %q", buf.String(), want)
	}
}

func TestWriter_RefusesInjection(t *testing.T) {
	tests := []struct {
		name, key, value string
		wantKey          string
	}{
		{"CR in value", "Channel", "x\rAction: Hangup", "Channel"},
		{"LF in value", "Channel", "x\nAction: Hangup", "Channel"},
		{"CRLF in value", "Variable", "A=1\r\n\r\nAction: Originate", "Variable"},
		{"NUL in value", "Channel", "x\x00y", "Channel"},
		{"CR in key", "Chan\rnel", "x", "Chan\rnel"},
		{"LF in key", "Chan\nnel", "x", "Chan\nnel"},
		{"NUL in key", "Chan\x00nel", "x", "Chan\x00nel"},
		{"empty key", "", "x", ""},
		{"colon in key", "Action: Hangup\r\nChannel", "x", "Action: Hangup\r\nChannel"},
		{"colon alone in key", "A:B", "x", "A:B"},
		{"space in key", "Caller ID", "x", "Caller ID"},
		{"leading space in key", " Channel", "x", " Channel"},
		{"tab in key", "Chan\tnel", "x", "Chan\tnel"},
		{"DEL in key", "Chan\x7fnel", "x", "Chan\x7fnel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The bad field comes last, so anything written before the check
			// would show.
			m := amiproto.NewAction("Ping", "ActionID", "1").Add(tt.key, tt.value)
			var buf bytes.Buffer
			err := amiproto.NewWriter(&buf).WriteMessage(m)
			var aerr *amiproto.ActionError
			if !errors.As(err, &aerr) {
				t.Fatalf("WriteMessage err = %v, want *ActionError", err)
			}
			if aerr.Key != tt.wantKey || aerr.Reason == "" {
				t.Errorf("ActionError{Key: %q, Reason: %q}, want Key %q and a reason", aerr.Key, aerr.Reason, tt.wantKey)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %q for a refused action", buf.String())
			}
			dst := []byte("kept")
			got, err := amiproto.AppendMessage(dst, m)
			if !errors.As(err, &aerr) || string(got) != "kept" {
				t.Errorf("AppendMessage = %q, %v; want dst unchanged and an *ActionError", got, err)
			}
			if err := amiproto.ValidateMessage(m); !errors.As(err, &aerr) {
				t.Errorf("ValidateMessage = %v", err)
			}
		})
	}
}

func TestWriter_RefusesEmptyMessage(t *testing.T) {
	for _, m := range []*amiproto.Message{nil, {}} {
		var buf bytes.Buffer
		var aerr *amiproto.ActionError
		if err := amiproto.NewWriter(&buf).WriteMessage(m); !errors.As(err, &aerr) || buf.Len() != 0 {
			t.Errorf("WriteMessage(%v) = %v, wrote %q", m, err, buf.String())
		}
	}
}

func TestWriter_AcceptsWhatAsteriskAccepts(t *testing.T) {
	// Values may hold anything but CR, LF and NUL; keys any printable
	// character but ':'.
	m := amiproto.NewAction("UserEvent",
		"UserEvent", "Custom",
		"X-With-Colon", "a: b: c",
		"ChanVariable(Local/x-0001;1)", "FOO=",
		"Key_(1)", "tab\tinside",
		"Unicode", "héllo \xff",
	)
	if err := amiproto.ValidateMessage(m); err != nil {
		t.Errorf("ValidateMessage = %v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriter_ReportsWriteErrors(t *testing.T) {
	boom := errors.New("broken pipe")
	err := amiproto.NewWriter(failWriter{boom}).WriteMessage(amiproto.NewAction("Ping"))
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v", err, boom)
	}
}

func TestWriter_RoundTrip(t *testing.T) {
	msgs := []*amiproto.Message{
		amiproto.NewAction("Ping"),
		amiproto.NewAction("Originate", "Channel", "Local/1@test", "Variable", "A=1", "Variable", "B=x=y: z", "Empty", ""),
		amiproto.NewAction("Command", "Command", "core show channels", "ActionID", "id:with:colons and spaces  "),
		amiproto.NewAction("UserEvent", "UserEvent", "X", "Header1", "one", "header1", "two", "ChanVariable(Local/x;1)", "FOO="),
		amiproto.NewAction("Setvar", "Value", "\x01\x7f\xff bytes\tand tabs"),
	}
	var buf bytes.Buffer
	w := amiproto.NewWriter(&buf)
	for _, m := range msgs {
		if err := w.WriteMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	r := amiproto.NewReader(&buf)
	for i, want := range msgs {
		got, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !slices.Equal(got.Fields(), want.Fields()) {
			t.Errorf("message %d read back as %q, want %q", i, got.Fields(), want.Fields())
		}
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Errorf("after the last message: %v, want EOF", err)
	}
}

// TestWriter_RewritesCapturedActions reads the actions clients sent in the
// captures and writes them back: the bytes are the same.
func TestWriter_RewritesCapturedActions(t *testing.T) {
	for _, name := range []string{
		"01_login_logoff", "03_challenge_md5_login", "04_ping_coresettings_corestatus_listcommands",
		"05_command_action", "06c_collections_with_channels", "07b_originate_vars_userevent_getvar_setvar",
		"07d_originate_failures_sync", "08_pipelined_actions", "09_events_action_eventmask",
		"14a_burst_200_originates", "15_reload_modulecheck",
	} {
		t.Run(name, func(t *testing.T) {
			sent := sentActions(t, name)
			r := amiproto.NewReader(bytes.NewReader(sent))
			var out []byte
			n := 0
			for {
				m, err := r.ReadMessage()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if m.Kind() != amiproto.KindAction {
					t.Fatalf("read a %s from the client's bytes", m.Kind())
				}
				if out, err = amiproto.AppendMessage(out, m); err != nil {
					t.Fatal(err)
				}
				n++
			}
			if !bytes.Equal(out, sent) {
				i := 0
				for i < min(len(out), len(sent)) && out[i] == sent[i] {
					i++
				}
				t.Errorf("rewritten %d actions differ at byte %d: %.80q vs %.80q", n, i, out[i:], sent[i:])
			}
			if strings.Count(string(sent), "\r\n\r\n") != n {
				t.Errorf("read %d actions, the bytes hold %d", n, strings.Count(string(sent), "\r\n\r\n"))
			}
		})
	}
}

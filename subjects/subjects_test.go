package subjects

import (
	"strings"
	"testing"
)

func TestEvent_Subjects(t *testing.T) {
	tests := []struct {
		name, prefix, server, event, want string
	}{
		{"plain name stays readable", "ami", "pbx1", "Newchannel", "ami.pbx1.event.Newchannel"},
		{"dotted prefix", "acme.ami", "pbx-2_b", "Hangup", "acme.ami.pbx-2_b.event.Hangup"},
		{"dot escaped", "ami", "pbx1", "My.Event", "ami.pbx1.event.My%2EEvent"},
		{"wildcards escaped", "ami", "pbx1", "*", "ami.pbx1.event.%2A"},
		{"full wildcard escaped", "ami", "pbx1", ">", "ami.pbx1.event.%3E"},
		{"space and tab escaped", "ami", "pbx1", "a b\tc", "ami.pbx1.event.a%20b%09c"},
		{"percent escaped", "ami", "pbx1", "100%", "ami.pbx1.event.100%25"},
		{"utf-8 escaped bytewise", "ami", "pbx1", "é", "ami.pbx1.event.%C3%A9"},
		{"empty name", "ami", "pbx1", "", "ami.pbx1.event.%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Event(tt.prefix, tt.server, tt.event); got != tt.want {
				t.Errorf("Event(%q, %q, %q) = %q, want %q", tt.prefix, tt.server, tt.event, got, tt.want)
			}
			if got := string(AppendEvent([]byte("x"), tt.prefix, tt.server, tt.event)); got != "x"+tt.want {
				t.Errorf("AppendEvent = %q, want %q", got, "x"+tt.want)
			}
			tok := tt.want[strings.LastIndexByte(tt.want, '.')+1:]
			back, err := UnescapeToken(tok)
			if err != nil || back != tt.event {
				t.Errorf("UnescapeToken(%q) = %q, %v; want %q", tok, back, err, tt.event)
			}
		})
	}
}

func TestOtherSubjects(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{Action("ami", "pbx1"), "ami.pbx1.action"},
		{Status("ami", "pbx1"), "ami.pbx1.status"},
		{AllEvents("ami"), "ami.*.event.>"},
		{AllStatus("ami"), "ami.*.status"},
		{ServerEvents("ami", "pbx1"), "ami.pbx1.event.>"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestEscapeToken_NeverProducesSubjectMetacharacters(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		all = append(all, byte(c))
	}
	got := EscapeToken(string(all))
	for i := 0; i < len(got); i++ {
		c := got[i]
		if !safe[c] && c != '%' {
			t.Fatalf("escaped token holds %q", c)
		}
	}
	back, err := UnescapeToken(got)
	if err != nil || back != string(all) {
		t.Fatalf("round trip of every byte failed: %v", err)
	}
}

func TestUnescapeToken_RejectsWhatEscapeCannotProduce(t *testing.T) {
	for _, tok := range []string{
		"",       // the empty name is "%"
		"%2e",    // lowercase hex
		"%41",    // 'A' must stand for itself
		"%2",     // truncated
		"%",      // valid: see below
		"a%",     // truncated
		"a%G0",   // not hex
		"a.b",    // unescaped metacharacter
		"a b",    // unescaped space
		"%%2E",   // '%' must be %25
		"ab%2E%", // truncated at the end
	} {
		if tok == "%" {
			if s, err := UnescapeToken(tok); err != nil || s != "" {
				t.Errorf("UnescapeToken(%q) = %q, %v; want the empty name", tok, s, err)
			}
			continue
		}
		if s, err := UnescapeToken(tok); err == nil {
			t.Errorf("UnescapeToken(%q) = %q, want an error", tok, s)
		}
	}
}

func TestValidServerName(t *testing.T) {
	for name, want := range map[string]bool{
		"pbx1": true, "PBX_2-b": true, "0": true,
		"": false, "pbx.1": false, "pbx*": false, "pbx>": false, "pb x": false, "pbx%": false, "pbé": false,
	} {
		if got := ValidServerName(name); got != want {
			t.Errorf("ValidServerName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	for prefix, want := range map[string]bool{
		"ami": true, "acme.ami": true, "a-b_c.d": true,
		"": false, ".ami": false, "ami.": false, "a..b": false, "ami.*": false, "ami.>": false, "a b": false, "a\tb": false,
	} {
		if got := ValidPrefix(prefix); got != want {
			t.Errorf("ValidPrefix(%q) = %v, want %v", prefix, got, want)
		}
	}
}

func TestAppendEvent_NoAllocs(t *testing.T) {
	buf := make([]byte, 0, 128)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendEvent(buf[:0], "ami", "pbx1", "Some.Event")
	})
	if allocs != 0 {
		t.Fatalf("AppendEvent allocates %v times per call", allocs)
	}
}

func FuzzEscapeToken_RoundTrip(f *testing.F) {
	for _, s := range []string{"", "Newchannel", "a.b", "%", "%25", "*", ">", "é", "\x00", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := EscapeToken(s)
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("EscapeToken(%q) = %q is not a safe token", s, tok)
		}
		back, err := UnescapeToken(tok)
		if err != nil || back != s {
			t.Fatalf("UnescapeToken(EscapeToken(%q)) = %q, %v", s, back, err)
		}
		// Every token has one spelling: unescaping anything else that
		// succeeds must escape back to the same token.
		if u, err := UnescapeToken(s); err == nil && EscapeToken(u) != s {
			t.Fatalf("UnescapeToken(%q) = %q, which escapes to %q", s, u, EscapeToken(u))
		}
	})
}

func BenchmarkAppendEvent(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 128)
	for b.Loop() {
		buf = AppendEvent(buf[:0], "ami", "pbx1", "Newchannel")
	}
}

func BenchmarkAppendEvent_Escaped(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 128)
	for b.Loop() {
		buf = AppendEvent(buf[:0], "ami", "pbx1", "My.User Event")
	}
}

package integration

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// eventCheck is what TestEvents_* learn from the events of one server.
type eventCheck struct {
	seqs  []uint64
	items []fields // bodies, in arrival order
	names []string // Ami-Event, in arrival order
}

// checkEvents checks every event of msgs against the contract and returns
// them per server: subject ami.<server>.event.<escaped Event>, headers
// Ami-Server, Ami-Event, Ami-Seq, Ami-Time (within [from, to]) and
// Nats-Msg-Id <server>:<epoch>:<seq> with one epoch for the process, and a
// JSON object body whose Event is Ami-Event.
func checkEvents(t *testing.T, msgs []*nats.Msg, from, to time.Time) map[string]*eventCheck {
	t.Helper()
	out := map[string]*eventCheck{}
	epoch := ""
	for _, m := range msgs {
		tok := strings.SplitN(m.Subject, ".", 4)
		if len(tok) != 4 || tok[0] != "ami" || tok[2] != "event" {
			t.Fatalf("event subject %q: want ami.<server>.event.<Event>", m.Subject)
		}
		server := tok[1]
		h := m.Header
		if got := h.Get("Ami-Server"); got != server {
			t.Errorf("%s: Ami-Server = %q, want %q", m.Subject, got, server)
		}
		name := h.Get("Ami-Event")
		if want := escapeToken(name); tok[3] != want {
			t.Errorf("%s: Ami-Event %q escapes to %q, not to the subject's last token", m.Subject, name, want)
		}
		seq, err := strconv.ParseUint(h.Get("Ami-Seq"), 10, 64)
		if err != nil {
			t.Fatalf("%s: Ami-Seq %q: %v", m.Subject, h.Get("Ami-Seq"), err)
		}
		at, err := time.Parse(time.RFC3339Nano, h.Get("Ami-Time"))
		if err != nil {
			t.Errorf("%s: Ami-Time %q is not RFC 3339: %v", m.Subject, h.Get("Ami-Time"), err)
		} else if at.Before(from.Add(-time.Second)) || at.After(to.Add(time.Second)) {
			t.Errorf("%s: Ami-Time %v is outside the test's run [%v, %v]", m.Subject, at, from, to)
		}
		id := h.Get("Nats-Msg-Id")
		parts := strings.Split(id, ":")
		if len(parts) != 3 || parts[0] != server || parts[2] != strconv.FormatUint(seq, 10) || parts[1] == "" {
			t.Errorf("%s: Nats-Msg-Id %q, want %s:<epoch>:%d", m.Subject, id, server, seq)
		} else if epoch == "" {
			epoch = parts[1]
		} else if parts[1] != epoch {
			t.Errorf("%s: Nats-Msg-Id %q: epoch %s differs from the process's earlier %s", m.Subject, id, parts[1], epoch)
		}
		body, err := parseFields(m.Data)
		if err != nil {
			t.Fatalf("%s: body: %v: %s", m.Subject, err, m.Data)
		}
		if len(body) == 0 || body[0].Key != "Event" || body[0].Values[0] != name {
			t.Errorf("%s: body %v: want Event %q first", m.Subject, body, name)
		}
		c := out[server]
		if c == nil {
			c = &eventCheck{}
			out[server] = c
		}
		c.seqs = append(c.seqs, seq)
		c.items = append(c.items, body)
		c.names = append(c.names, name)
	}
	return out
}

// wantSeqFromOne fails unless seqs is 1, 2, 3, … with no gap.
func wantSeqFromOne(t *testing.T, server string, seqs []uint64) {
	t.Helper()
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("%s: Ami-Seq of event #%d is %d, want %d (sequence %v…)", server, i+1, s, i+1, seqs[:min(len(seqs), i+5)])
		}
	}
}

// TestEvents_TwoPBXesInOrderWithHeadersAndJSON runs two PBXes, one of each
// Asterisk generation, through one bridge and reads ami.*.event.>: every
// event of both, numbered from 1 without a gap per server (events removed
// by the exclude filter take no number), in the order the PBX sent them,
// with the headers and the wire-order JSON of the contract.
func TestEvents_TwoPBXesInOrderWithHeadersAndJSON(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	a := w.startPBX("pbx-a", amitest.Config{Profile: amitest.Asterisk22})
	b := w.startPBX("pbx_b", amitest.Config{Profile: amitest.Asterisk13})
	sb := w.serverFor("pbx_b", b, viaEnv)
	sb.Events = &eventsConfig{Exclude: []string{"ItSkip*"}}
	start := time.Now()
	w.startBridge(w.config(w.serverFor("pbx-a", a, viaURL), sb))
	w.waitReady("pbx-a", "pbx_b")

	const n = 300
	for i := range n {
		for _, p := range []*pbx{a, b} {
			// A repeated key (Variable), a key with parentheses and a
			// value with quotes, a backslash and non-ASCII text.
			p.emit("ItTest",
				"Privilege", "user,all",
				"Index", strconv.Itoa(i),
				"Variable", "a=1",
				"Quote", `he said "hi" \ à bientôt`,
				"Variable", "b=2",
				"ChanVariable(Local/x-0001;1)", "FOO=",
				"Empty", "")
		}
		if i%30 == 0 {
			b.emit("ItSkipMe", "Privilege", "user,all", "Index", strconv.Itoa(i))
		}
	}
	a.PlayCall(amitest.CallSpec{})
	b.PlayCall(amitest.CallSpec{})
	odd := []string{"Odd.Name*", "With Space", "gt>", "Pct%41", "Ünï", "a.b.c"}
	for _, name := range odd {
		a.emit(name, "Privilege", "user,all")
	}
	a.emit("ItDone")
	b.emit("ItDone")
	w.waitEvent(0, "ami.pbx-a.event.ItDone")
	w.waitEvent(0, "ami.pbx_b.event.ItDone")
	end := time.Now()

	got := checkEvents(t, w.events.snapshot(), start, end)
	for _, server := range []string{"pbx-a", "pbx_b"} {
		c := got[server]
		if c == nil {
			t.Fatalf("no event from %s", server)
		}
		wantSeqFromOne(t, server, c.seqs)
		next := 0
		for i, body := range c.items {
			switch c.names[i] {
			case "ItSkipMe":
				t.Errorf("%s: event ItSkipMe published despite events.exclude", server)
			case "ItTest":
				want := fields{
					{Key: "Event", Values: []string{"ItTest"}},
					{Key: "Privilege", Values: []string{"user,all"}},
					{Key: "Index", Values: []string{strconv.Itoa(next)}},
					{Key: "Variable", Values: []string{"a=1", "b=2"}, Array: true},
					{Key: "Quote", Values: []string{`he said "hi" \ à bientôt`}},
					{Key: "ChanVariable(Local/x-0001;1)", Values: []string{"FOO="}},
					{Key: "Empty", Values: []string{""}},
				}
				if !slices.EqualFunc(body, want, func(x, y field) bool {
					return x.Key == y.Key && x.Array == y.Array && slices.Equal(x.Values, y.Values)
				}) {
					t.Fatalf("%s: ItTest #%d body\n got %v\nwant %v", server, next, body, want)
				}
				next++
			}
		}
		if next != n {
			t.Errorf("%s: %d ItTest events, want %d", server, next, n)
		}
		if !slices.Contains(c.names, "Hangup") || !slices.Contains(c.names, "Newchannel") {
			t.Errorf("%s: the played call's Newchannel/Hangup events are missing: %v", server, c.names)
		}
	}

	// The escaping, spelled out for a few names.
	literal := map[string]string{
		"Odd.Name*":  "ami.pbx-a.event.Odd%2EName%2A",
		"With Space": "ami.pbx-a.event.With%20Space",
		"gt>":        "ami.pbx-a.event.gt%3E",
		"Pct%41":     "ami.pbx-a.event.Pct%2541",
		"Ünï":        "ami.pbx-a.event.%C3%9Cn%C3%AF",
		"a.b.c":      "ami.pbx-a.event.a%2Eb%2Ec",
	}
	for _, name := range odd {
		found := false
		for _, m := range w.events.snapshot() {
			if m.Header.Get("Ami-Event") == name && m.Header.Get("Ami-Server") == "pbx-a" {
				found = true
				if m.Subject != literal[name] {
					t.Errorf("event %q on subject %q, want %q", name, m.Subject, literal[name])
				}
			}
		}
		if !found {
			t.Errorf("event %q never arrived", name)
		}
	}
}

// TestEvents_StatusReportsVersionAndCounts checks the status of a
// connected PBX: the banner and Asterisk version once known, and the
// count of published events.
func TestEvents_StatusReportsVersionAndCounts(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	p22 := w.startPBX("st22", amitest.Config{Profile: amitest.Asterisk22})
	p13 := w.startPBX("st13", amitest.Config{Profile: amitest.Asterisk13})
	w.startBridge(w.config(w.serverFor("st22", p22, viaFile), w.serverFor("st13", p13, viaURL)))
	w.waitReady("st22", "st13")
	for _, c := range []struct {
		name           string
		banner, astVer string
	}{
		{"st22", "Asterisk Call Manager/11.0.0", "22.10.1"},
		{"st13", "Asterisk Call Manager/2.10.6", "13.38.3"},
	} {
		_, st := w.status.waitFor(t, 0, readyTimeout, c.name+" status with the Asterisk version", func(m *nats.Msg) bool {
			s, err := parseStatus(m)
			return err == nil && s.Server == c.name && s.State == "connected" && s.raw["version"] == c.astVer
		})
		s, _ := parseStatus(st)
		if s.raw["banner"] != c.banner {
			t.Errorf("%s: status banner = %v, want %q", c.name, s.raw["banner"], c.banner)
		}
		if _, err := time.Parse(time.RFC3339Nano, s.Since); err != nil {
			t.Errorf("%s: status since %q: %v", c.name, s.Since, err)
		}
		if s.Error != "" {
			t.Errorf("%s: connected with error %q", c.name, s.Error)
		}
		for _, k := range []string{"events_published", "events_dropped", "reconnects"} {
			if _, ok := s.raw[k].(float64); !ok {
				t.Errorf("%s: status has no count %q: %s", c.name, k, st.Data)
			}
		}
	}
}

// escapeToken is the subject escaping of the contract, written out here
// so that the test does not take it from the code under test: every byte
// outside [A-Za-z0-9_-] becomes %XX in uppercase hex.
func escapeToken(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

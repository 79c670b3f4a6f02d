package amiproto_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// skipLog is what a read with SkipEvent saw: each message in order, read
// (msg set) or skipped (only its name).
type skipLog struct {
	msg  *amiproto.Message
	name string
}

// readSkipping reads r to its end, offering each message to SkipEvent
// first; skip decides from the running count of offers.
func readSkipping(t *testing.T, r *amiproto.Reader, skip func(offer int, name string) bool) (log []skipLog, offers int) {
	t.Helper()
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	for {
		var skipped string
		if r.SkipEvent(func(name string) bool {
			offers++
			if skip(offers, name) {
				skipped = strings.Clone(name)
				return true
			}
			return false
		}) {
			log = append(log, skipLog{name: skipped})
			continue
		}
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return log, offers
		}
		if err != nil {
			t.Fatalf("ReadMessage after %d messages: %v", len(log), err)
		}
		log = append(log, skipLog{msg: m})
	}
}

// Skipping is only ever leaving an event out: over every capture, however
// the bytes arrive, what SkipEvent skipped and what ReadMessage read
// after it are, in order, the messages a plain read gives, each skipped
// one an event of the name SkipEvent gave.
func TestReader_SkipEventLeavesOutOnlyTheEventsSkipped(t *testing.T) {
	for _, tc := range replayCases {
		t.Run(tc.ver+"/"+tc.name, func(t *testing.T) {
			raw := loadRecv(t, tc.ver, tc.name)
			_, want := replayAll(t, amiproto.NewReader(bytes.NewReader(raw)))
			srcs := map[string]func() io.Reader{
				"whole":      func() io.Reader { return bytes.NewReader(raw) },
				"half-reads": func() io.Reader { return iotest.HalfReader(bytes.NewReader(raw)) },
			}
			for src, open := range srcs {
				for _, mode := range []string{"never", "every other", "always"} {
					log, offers := readSkipping(t, amiproto.NewReader(open()), func(offer int, _ string) bool {
						return mode == "always" || (mode == "every other" && offer%2 == 0)
					})
					if len(log) != len(want) {
						t.Fatalf("%s, skip %s: %d messages, want %d", src, mode, len(log), len(want))
					}
					skipped := 0
					for i, l := range log {
						w := want[i]
						switch {
						case l.msg == nil:
							skipped++
							if w.Kind() != amiproto.KindEvent || l.name != w.EventName() {
								t.Fatalf("%s, skip %s: message %d skipped as %q, is %s %q", src, mode, i, l.name, w.Kind(), w.Name())
							}
						case !slices.Equal(l.msg.Fields(), w.Fields()):
							t.Fatalf("%s, skip %s: message %d differs: %v, want %v", src, mode, i, l.msg.Fields(), w.Fields())
						}
					}
					if mode == "never" && skipped != 0 || mode == "always" && skipped != offers {
						t.Errorf("%s, skip %s: %d skipped of %d offered", src, mode, skipped, offers)
					}
					// A whole capture in memory is read in full buffers:
					// nearly every event is offered, not only some.
					if src == "whole" && tc.events >= 1000 && offers < tc.events*9/10 {
						t.Errorf("%d of %d events offered", offers, tc.events)
					}
				}
			}
		})
	}
}

func TestReader_SkipEvent(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		limits   amiproto.ReaderLimits
		skipped  []string // the names skipped, skipping every event offered
		read     []string // then the names of the messages read, in order
		errs     int      // protocol errors reported by ReadMessage
	}{
		{name: "CRLF", in: "Event: A\r\nX: 1\r\n\r\nEvent: B\r\n\r\nResponse: Success\r\n\r\n",
			skipped: []string{"A", "B"}, read: []string{"Success"}},
		{name: "bare LF", in: "Event: A\nX: 1\n\nEvent: B\nY: 2\n\nResponse: Success\n\n",
			skipped: []string{"A", "B"}, read: []string{"Success"}},
		{name: "an LF line ends by a CRLF blank line", in: "Event: A\nX: 1\n\r\nResponse: Success\r\n\r\n",
			skipped: []string{"A"}, read: []string{"Success"}},
		{name: "blanks and case as EventName has them", in: "event:   Foo Bar\r\n\r\nEVENT:\tBaz\r\n\r\n",
			skipped: []string{"Foo Bar", "Baz"}},
		{name: "a key that is not Event", in: "Event : A\r\n\r\nEventX: B\r\n\r\nEvent: C\r\n\r\n",
			skipped: []string{"C"}, read: []string{"A", "B"}},
		{name: "blank lines first go the usual way", in: "\r\n\r\nEvent: A\r\n\r\nEvent: B\r\n\r\n",
			skipped: []string{"B"}, read: []string{"A"}},
		{name: "unterminated", in: "Event: A\r\nX: 1\r\n", read: nil},
		{name: "too many fields is reported, not skipped", in: "Event: A\r\nX: 1\r\nY: 2\r\nZ: 3\r\n\r\nEvent: B\r\n\r\n",
			limits: amiproto.ReaderLimits{MaxFields: 3}, read: []string{"B"}, errs: 1},
		{name: "too long a line is reported, not skipped", in: "Event: A\r\nX: " + strings.Repeat("x", 64) + "\r\n\r\nEvent: B\r\n\r\n",
			limits: amiproto.ReaderLimits{MaxLineBytes: 32}, read: []string{"B"}, errs: 1},
		{name: "too long a message is reported, not skipped", in: "Event: A\r\nX: 12345\r\nY: 12345\r\n\r\nEvent: B\r\n\r\n",
			limits: amiproto.ReaderLimits{MaxMessageBytes: 20}, read: []string{"B"}, errs: 1},
	} {
		// After a message that broke a limit, the Reader is still
		// discarding it: the next message is read, not offered.
		t.Run(tc.name, func(t *testing.T) {
			// The banner's read buffers the whole input, so every message
			// can be offered.
			r := amiproto.NewReaderLimits(strings.NewReader("Asterisk Call Manager/9.0.0\r\n"+tc.in), tc.limits)
			if _, err := r.ReadBanner(); err != nil {
				t.Fatal(err)
			}
			var skipped, read []string
			errs := 0
			for {
				var name string
				if r.SkipEvent(func(n string) bool { name = strings.Clone(n); return true }) {
					skipped = append(skipped, name)
					continue
				}
				m, err := r.ReadMessage()
				if err == nil {
					read = append(read, m.Name())
					continue
				}
				if pe := (*amiproto.ProtocolError)(nil); errors.As(err, &pe) {
					errs++
					continue
				}
				break
			}
			if !slices.Equal(skipped, tc.skipped) || !slices.Equal(read, tc.read) || errs != tc.errs {
				t.Errorf("skipped %q, read %q, %d errors; want %q, %q, %d", skipped, read, errs, tc.skipped, tc.read, tc.errs)
			}
		})
	}
}

// A message SkipEvent declines stays whole for ReadMessage.
func TestReader_SkipEventDeclinedConsumesNothing(t *testing.T) {
	r := amiproto.NewReader(strings.NewReader("Event: A\r\nX: 1\r\n\r\n"))
	offered := ""
	if r.SkipEvent(func(n string) bool { offered = strings.Clone(n); return false }) {
		t.Fatal("skipped")
	}
	// Nothing was buffered yet: the first call cannot see the message.
	if offered != "" {
		t.Fatalf("offered %q before any read", offered)
	}
	m, err := r.ReadMessage()
	if err != nil || m.EventName() != "A" || m.Get("X") != "1" {
		t.Fatalf("ReadMessage = %v, %v", m, err)
	}
}

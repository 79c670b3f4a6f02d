package amiproto_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// ReadBorrowed reads what ReadMessage reads, into memory it reuses: no
// allocation once warm, and a message read earlier is overwritten by the
// next read (which is why the caller must be done with it).
func TestReader_ReadBorrowed(t *testing.T) {
	var stream bytes.Buffer
	for i := range 200 {
		fmt.Fprintf(&stream, "Event: Newchannel\r\nChannel: PJSIP/%d-0000\r\nUniqueid: 1733600000.%d\r\n\r\n", i, i)
	}
	owned, borrowed := amiproto.NewReader(bytes.NewReader(stream.Bytes())), amiproto.NewReader(bytes.NewReader(stream.Bytes()))
	var first *amiproto.Message
	var firstUID string
	for i := range 200 {
		want, err := owned.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got, err := borrowed.ReadBorrowed()
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Fatalf("message %d: borrowed %q, owned %q", i, got, want)
		}
		if i == 0 {
			first, firstUID = got, got.Get("Uniqueid")
		}
	}
	if first.Get("Uniqueid") == "1733600000.0" || firstUID == "1733600000.0" {
		t.Error("the first borrowed message still reads as read: its memory was not reused")
	}
	msg := []byte("Event: Hangup\r\nChannel: PJSIP/1-0000\r\nUniqueid: 1733600000.1\r\nCause: 16\r\n\r\n")
	r := amiproto.NewReader(&loopSource{b: msg})
	if allocs := testing.AllocsPerRun(1000, func() {
		if _, err := r.ReadBorrowed(); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("ReadBorrowed: %.1f allocations per message once warm, want 0", allocs)
	}
}

// loopSource serves b over and over.
type loopSource struct {
	b   []byte
	off int
}

func (l *loopSource) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// With Borrow, Func gets each event for the call only; what the client
// keeps, a response and a list's entries, is its own: read back after
// many borrowed events, they are intact.
func TestClient_BorrowedEventsLeaveResponsesIntact(t *testing.T) {
	const entries, events = 50, 500
	srv := startPBX(t, amitest.Config{})
	srv.HandleFunc("Listing", func(w *amitest.ResponseWriter, _ *amitest.Request) {
		id, _ := w.ActionID()
		w.Success("EventList", "start", "Message", "Entries will follow")
		for i := range entries {
			w.WriteMessage(amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "Entry"}).
				Add("ActionID", id).Add("N", fmt.Sprint(i)).Add("Pad", strings.Repeat("e", i)))
		}
		w.WriteMessage(amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "EntryComplete"}).
			Add("ActionID", id).Add("EventList", "Complete").Add("ListItems", fmt.Sprint(entries)))
	})
	var mu sync.Mutex
	var got []string // what Func saw, cloned as a keeping Func must
	done := make(chan struct{})
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Borrow: true, Func: func(m *amiproto.Message) {
		if m.EventName() != "Tick" {
			return
		}
		mu.Lock()
		got = append(got, strings.Clone(m.Get("N")))
		if len(got) == events {
			close(done)
		}
		mu.Unlock()
	}}))
	resp, err := c.Request(ctx10s(t), amiproto.NewAction("Listing"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range events {
		srv.Emit(amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "Tick"}).Add("N", fmt.Sprint(i)).Add("Pad", strings.Repeat("t", i%97)))
	}
	<-done
	if resp.Get("Message") != "Entries will follow" || len(resp.Events) != entries || resp.Complete.Get("ListItems") != fmt.Sprint(entries) {
		t.Fatalf("response after %d borrowed events: %q, %d entries, complete %v", events, resp.Get("Message"), len(resp.Events), resp.Complete)
	}
	for i, e := range resp.Events {
		if e.EventName() != "Entry" || e.Get("N") != fmt.Sprint(i) || e.Get("Pad") != strings.Repeat("e", i) {
			t.Fatalf("entry %d after %d borrowed events: %q", i, events, e)
		}
	}
	for i, n := range got {
		if n != fmt.Sprint(i) {
			t.Fatalf("event %d: Func saw N %q", i, n)
		}
	}
}

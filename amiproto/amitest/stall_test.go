package amitest_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// marker is a UserEvent that tests count on.
func marker(name string, n int) *amiproto.Message {
	m := &amiproto.Message{}
	m.Add("Event", "UserEvent").Add("Privilege", "user,all").Add("UserEvent", name).Add("N", strconv.Itoa(n))
	return m
}

// readMarker skips messages up to the UserEvent marker name.
func (c *rawClient) readMarker(name string) *amiproto.Message {
	c.t.Helper()
	for {
		if m := c.read(); m.EventName() == "UserEvent" && m.Get("UserEvent") == name {
			return m
		}
	}
}

// Capture 17: while an action runs, its session's events wait and follow
// its response, before the answer of the action pipelined behind it.
// Other sessions get the same events at once.
func TestSession_RunningActionHoldsItsEventsOnly(t *testing.T) {
	srv := start(t, amitest.Config{})
	started, release := make(chan struct{}), make(chan struct{})
	srv.HandleFunc("SlowThing", func(w *amitest.ResponseWriter, _ *amitest.Request) {
		close(started)
		<-release
		w.Success("Message", "done")
	})
	a := dial(t, srv.Addr())
	a.login("admin", "s3cret!", "on")
	other := dial(t, srv.Addr())
	other.login("admin", "s3cret!", "on")
	srv.Emit(marker("sync", 0))
	a.readMarker("sync")
	other.readMarker("sync")

	a.writeRaw("Action: SlowThing\r\nActionID: slow\r\n\r\nAction: Ping\r\nActionID: ping\r\n\r\n")
	<-started
	const n = 50
	for i := range n {
		srv.Emit(marker("during", i))
	}
	for i := range n { // the other session is not held
		if m := other.readMarker("during"); m.Get("N") != strconv.Itoa(i) {
			t.Fatalf("other session: marker %s, want %d", m.Get("N"), i)
		}
	}
	close(release)

	// Every event above was queued before SlowThing answered: unheld, they
	// would come first.
	if m := a.read(); m.Kind() != amiproto.KindResponse || m.ActionID() != "slow" {
		t.Fatalf("first message after the slow action: %s, want its response", m)
	}
	for i := range n {
		m := a.read()
		if m.EventName() != "UserEvent" || m.Get("N") != strconv.Itoa(i) {
			t.Fatalf("message %d after the slow response: %s, want marker %d", i, m, i)
		}
	}
	if m := a.read(); m.ActionID() != "ping" || m.Get("Ping") != "Pong" {
		t.Fatalf("after the held events: %s, want the Ping response", m)
	}
}

// Capture 17: a synchronous Originate to Local/noanswer@test rings for its
// Timeout, then fails; the Ping behind it waits.
func TestOriginate_SyncNoAnswerRingsForItsTimeout(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	const timeout = 200 * time.Millisecond
	begin := time.Now()
	c.writeRaw("Action: Originate\r\nActionID: stall-1\r\nChannel: Local/noanswer@test\r\nApplication: Wait\r\nData: 1\r\n" +
		"Timeout: " + strconv.Itoa(int(timeout/time.Millisecond)) + "\r\n\r\nAction: Ping\r\nActionID: ping-1\r\n\r\n")
	resp := c.readResponse()
	if elapsed := time.Since(begin); elapsed < timeout {
		t.Errorf("answered after %v, before the %v timeout", elapsed, timeout)
	}
	if resp.ActionID() != "stall-1" || resp.Name() != "Error" || resp.Get("Message") != "Originate failed" {
		t.Fatalf("Originate answer: %s", resp)
	}
	if ping := c.readResponse(); ping.ActionID() != "ping-1" {
		t.Fatalf("after the Originate: %s, want the Ping", ping)
	}
}

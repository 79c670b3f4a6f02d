package amiproto_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestWithEvents_RefusesWhatContradicts: an EventDelivery whose parts
// cannot all hold is refused before any connection, naming the clash.
func TestWithEvents_RefusesWhatContradicts(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	for _, tc := range []struct {
		name string
		d    amiproto.EventDelivery
		want string
	}{
		{"func and queue", amiproto.EventDelivery{Func: func(*amiproto.Message) {}, Queue: 8}, "exclude each other"},
		{"borrow without func", amiproto.EventDelivery{Borrow: true}, "borrowed only by a Func"},
		{"shedding alone", amiproto.EventDelivery{Shedding: func() bool { return true }}, "Shedding and Skip go together"},
		{"skip alone", amiproto.EventDelivery{Skip: func(string) bool { return true }}, "Shedding and Skip go together"},
		{"negative queue", amiproto.EventDelivery{Queue: -1}, "event queue -1"},
		{"mask with a newline", amiproto.EventDelivery{Mask: "call\r\nAction: Originate"}, "CR or LF"},
	} {
		c, err := amiproto.Dial(ctx10s(t), srv.URL("admin", "s3cret!"), amiproto.WithEvents(tc.d))
		var de *amiproto.DialError
		if err == nil || !errors.As(err, &de) || de.Op != "options" || !strings.Contains(err.Error(), tc.want) {
			if c != nil {
				c.Close()
			}
			t.Errorf("%s: Dial = %v, want a DialError on options saying %q", tc.name, err, tc.want)
		}
	}
	if n := srv.Sessions(); n != 0 {
		t.Errorf("%d sessions for refused options, want none", n)
	}
}

// TestResponseValue: the value comes from the first entry event that has
// the field, else from the response; "" when none has it.
func TestResponseValue(t *testing.T) {
	f := func(kv ...string) *amiproto.Message {
		m := amiproto.NewMessage()
		for i := 0; i < len(kv); i += 2 {
			m.Add(kv[i], kv[i+1])
		}
		return m
	}
	list := &amiproto.Response{Message: f("Response", "Success", "Val", "head"),
		Events: []*amiproto.Message{f("Event", "Other"), f("Event", "DBGetResponse", "Val", "a"), f("Event", "DBGetResponse", "Val", "b")}}
	if got := list.Value("Val"); got != "a" {
		t.Errorf("Value of a list = %q, want the first entry's a", got)
	}
	single := &amiproto.Response{Message: f("Response", "Success", "Value", "42")}
	if got := single.Value("Value"); got != "42" {
		t.Errorf("Value = %q, want 42", got)
	}
	if got := single.Value("Nope"); got != "" {
		t.Errorf("Value of a missing field = %q, want empty", got)
	}
	var none *amiproto.Response
	if got := none.Value("Value"); got != "" {
		t.Errorf("Value of a nil response = %q", got)
	}
}

// readLog is a connection that notes each read of the socket in a log the
// reader goroutine also writes Func's and Drained's calls to.
type readLog struct {
	net.Conn
	log *[]string
}

func (c readLog) Read(p []byte) (int, error) {
	*c.log = append(*c.log, "read")
	return c.Conn.Read(p)
}

// TestEventDelivery_DrainedOncePerRead: Drained comes right before each
// read of the socket, so after the events of a read have all gone to
// Func and never between two of them, and once more when the reader
// stops, after the last Func.
func TestEventDelivery_DrainedOncePerRead(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	var (
		log     []string // written on the reader goroutine only, read after Done
		events  int
		reached = make(chan struct{}) // Drained after the events of both writes
	)
	const perWrite = 20
	var blob []byte
	for i := range perWrite {
		blob = append(blob, fmt.Sprintf("Event: UserEvent\r\nUserEvent: drained\r\nN: %d\r\n\r\n", i)...)
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return readLog{Conn: c, log: &log}, err
	}
	c, err := amiproto.Dial(ctx10s(t), srv.URL("admin", "s3cret!"), amiproto.WithDialer(dial), amiproto.WithEvents(amiproto.EventDelivery{
		Func: func(m *amiproto.Message) {
			if m.Get("UserEvent") == "drained" {
				events++
				log = append(log, "event")
			}
		},
		Drained: func() {
			log = append(log, "drained")
			if events == 2*perWrite {
				events++ // once
				close(reached)
			}
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	srv.EmitRaw(blob)
	srv.EmitRaw(blob)
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("no Drained after the last event within 10 s")
	}
	c.Close()
	<-c.Done()
	for i, e := range log {
		switch {
		case e == "read" && (i == 0 || log[i-1] != "drained"):
			t.Fatalf("read %d of the socket without Drained right before it: %v", i, log)
		case e == "drained" && i != len(log)-1 && log[i+1] != "read":
			t.Fatalf("Drained at %d followed by %s, not by a read of the socket: %v", i, log[i+1], log)
		}
	}
	if last := log[len(log)-1]; last != "drained" {
		t.Fatalf("the log ends with %s, want Drained once the reader stopped: %v", last, log)
	}
}

package amitest_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// readUntilError reads messages until the connection fails and returns
// them and the error.
func readUntilError(c *rawClient) ([]*amiproto.Message, error) {
	var got []*amiproto.Message
	for {
		m, err := c.tryRead(ioTimeout)
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

func TestFault_DropMidMessage(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")
	srv.DropMidMessage()
	srv.PlayCall(amitest.CallSpec{})
	got, err := readUntilError(c)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %d messages then %v, want io.ErrUnexpectedEOF", len(got), err)
	}
}

func TestFault_DropDuringCollection(t *testing.T) {
	srv := start(t, amitest.Config{Channels: 400})
	c := dialLogin(t, srv)
	srv.DropDuring("CoreShowChannels")
	c.send("CoreShowChannels", "ActionID", "csc")
	got, err := readUntilError(c)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ended with %v, want io.ErrUnexpectedEOF", err)
	}
	if len(got) < 2 || got[0].Get("EventList") != "start" || got[len(got)-1].EventName() != "CoreShowChannel" {
		t.Fatalf("want the start and some entries, got %d messages", len(got))
	}
	// The fault was one-shot: the next session lists everything.
	c2 := dialLogin(t, srv)
	c2.send("CoreShowChannels", "ActionID", "again")
	if m := c2.readEvent("CoreShowChannelsComplete"); m.Get("ListItems") != "400" {
		t.Fatalf("complete:\n%s", m)
	}
}

func TestFault_Stall(t *testing.T) {
	const stall = 100 * time.Millisecond
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	begin := time.Now()
	srv.Stall(stall)
	c.send("Ping", "ActionID", "p1")
	if m := c.read(); m.ActionID() != "p1" {
		t.Fatalf("got:\n%s", m)
	}
	if elapsed := time.Since(begin); elapsed < stall {
		t.Errorf("answered after %v during a %v stall", elapsed, stall)
	}

	srv.Stall(time.Hour)
	c.send("Ping", "ActionID", "p2")
	// The writer holding p2's answer in the stall proves it has not left;
	// nothing may be readable then.
	waitUntil(t, "the answer held by the stall", func() bool { return amitest.StalledWriters(srv) == 1 })
	if _, err := c.tryRead(time.Millisecond); !isTimeout(err) { // reads what is already there
		t.Fatalf("answered during a stall: %v", err)
	}
	srv.Stall(0)
	if m := c.read(); m.ActionID() != "p2" {
		t.Fatalf("after the stall ended:\n%s", m)
	}
}

func TestFault_SlowWritesStillParse(t *testing.T) {
	srv := start(t, amitest.Config{Profile: amitest.Asterisk13})
	c := dialLogin(t, srv)
	srv.SlowWrites(true)
	c.send("Command", "Command", "dialplan show echo@test", "ActionID", "slow")
	m := c.read()
	if out, ok := m.Output(); !ok || !strings.HasSuffix(out, "-= 1 extension (3 priorities) in 1 context. =-") {
		t.Fatalf("got:\n%s", m)
	}
}

func TestFault_WriteGarbage(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	srv.WriteGarbage([]byte("\x00\x01no colon here\r\n\r\n"))
	if m := c.read(); m.Fields()[0] != (amiproto.Field{Value: "\x00\x01no colon here"}) {
		t.Fatalf("garbage parsed as:\n%q", m.Fields())
	}
	srv.WriteGarbage(nil)
	c.send("Ping", "ActionID", "after")
	for {
		m, err := c.tryRead(ioTimeout)
		if err != nil {
			t.Fatalf("after random garbage: %v", err)
		}
		if m.ActionID() == "after" {
			return
		}
	}
}

func TestFault_NeverAnswer(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	srv.NeverAnswer("ping")
	c.send("Ping", "ActionID", "lost")
	c.send("CoreStatus", "ActionID", "cs")
	if m := c.read(); m.ActionID() != "cs" {
		t.Fatalf("first answer:\n%s", m)
	}
	srv.NeverAnswer()
	c.send("Ping", "ActionID", "back")
	if m := c.read(); m.ActionID() != "back" {
		t.Fatalf("after NeverAnswer():\n%s", m)
	}
}

func TestFault_AnswerOutOfOrder(t *testing.T) {
	for _, shuffle := range []bool{false, true} {
		t.Run("shuffle="+strconv.FormatBool(shuffle), func(t *testing.T) {
			const n = 100
			srv := start(t, amitest.Config{})
			c := dialLogin(t, srv)
			srv.AnswerOutOfOrder(16, shuffle)
			var batch strings.Builder
			for i := range n {
				batch.WriteString("Action: Ping\r\nActionID: " + strconv.Itoa(i) + "\r\n\r\n")
			}
			c.writeRaw(batch.String())
			var ids []int
			for range n {
				id, err := strconv.Atoi(c.read().ActionID())
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			if slices.IsSorted(ids) {
				t.Errorf("answers came in order")
			}
			slices.Sort(ids)
			for i, id := range ids {
				if id != i {
					t.Fatalf("answer %d missing or repeated: %v", i, ids)
				}
			}
			srv.AnswerOutOfOrder(0, false)
			c.send("Ping", "ActionID", "in-order")
			if m := c.read(); m.ActionID() != "in-order" {
				t.Fatalf("after turning it off:\n%s", m)
			}
		})
	}
}

func TestFault_HalfOpen(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	srv.HalfOpen()
	c.send("Ping", "ActionID", "void")
	// Once the session has read and dropped the Ping, no answer can come;
	// nothing may be readable, and the socket is still open.
	waitUntil(t, "the Ping dropped", func() bool { return amitest.IgnoredInput(srv) == 1 })
	if _, err := c.tryRead(time.Millisecond); !isTimeout(err) { // reads what is already there
		t.Fatalf("half-open session answered or closed: %v", err)
	}
	c.send("Ping", "ActionID", "still-open") // the socket still takes writes
	c2 := dialLogin(t, srv)
	c2.send("Ping", "ActionID", "fresh")
	if m := c2.read(); m.ActionID() != "fresh" {
		t.Fatalf("new session:\n%s", m)
	}
}

func TestFault_ClearFaults(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	srv.Stall(time.Hour)
	srv.NeverAnswer("Ping")
	srv.AnswerOutOfOrder(8, true)
	srv.SlowWrites(true)
	srv.DropDuring("Ping")
	srv.ClearFaults()
	c.send("Ping", "ActionID", "ok")
	if m := c.read(); m.ActionID() != "ok" {
		t.Fatalf("got:\n%s", m)
	}
}

func TestWriteTimeout_DropsAClientThatDoesNotRead(t *testing.T) {
	srv := start(t, amitest.Config{WriteTimeout: 50 * time.Millisecond, MaxQueue: 64 << 10})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "on")
	ctx, cancel := context.WithCancel(context.Background())
	calls := srv.StartCalls(ctx, 0, 0)
	defer func() {
		cancel()
		calls.Wait()
	}()
	deadline := time.Now().Add(ioTimeout)
	for srv.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session that stopped reading was never dropped")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitUntil polls cond, for at most ioTimeout, for a state the server
// reaches on its own goroutines.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(ioTimeout); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", ioTimeout, what)
		}
	}
}

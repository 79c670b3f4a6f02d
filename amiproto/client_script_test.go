package amiproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scripted runs script as the server side of one AMI connection on
// 127.0.0.1 and returns the URL to dial. The script gets the raw conn and a
// Reader over it; the banner is already sent.
func scripted(t *testing.T, script func(conn net.Conn, r *Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "Asterisk Call Manager/11.0.0\r\n"); err != nil {
			return
		}
		script(conn, NewReader(conn))
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return "admin:s3cret%21@" + ln.Addr().String()
}

// expectAction reads the next action and checks its name.
func expectAction(t *testing.T, r *Reader, name string) *Message {
	t.Helper()
	m, err := r.ReadMessage()
	if err != nil {
		t.Errorf("server: reading %s: %v", name, err)
		return nil
	}
	if m.Kind() != KindAction || !strings.EqualFold(m.Name(), name) {
		t.Errorf("server: got %q, want action %s", m.String(), name)
	}
	return m
}

func acceptLogin(t *testing.T, conn net.Conn, r *Reader, extra string) {
	t.Helper()
	login := expectAction(t, r, "Login")
	if login == nil {
		return
	}
	if got := login.Get("Secret"); got != "s3cret!" {
		t.Errorf("server: secret %q, want the percent-decoded s3cret!", got)
	}
	io.WriteString(conn, "Response: Success\r\nActionID: "+login.ActionID()+"\r\nMessage: Authentication accepted\r\n\r\n"+extra)
}

func dialT(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func nextEvent(t *testing.T, c *Client) *Message {
	t.Helper()
	select {
	case ev, ok := <-c.Events():
		if !ok {
			t.Fatalf("event stream closed: %v", c.Err())
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return nil
}

func TestDial_EventsInTheLoginReadAreDelivered(t *testing.T) {
	url := scripted(t, func(conn net.Conn, r *Reader) {
		// One write: the response and the two events Asterisk sends at once.
		acceptLogin(t, conn, r, "Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"+
			"Event: SuccessfulAuth\r\nPrivilege: security,all\r\nAccountID: admin\r\n\r\n")
		io.Copy(io.Discard, conn)
	})
	c := dialT(t, url)
	for _, want := range []string{"FullyBooted", "SuccessfulAuth"} {
		if got := nextEvent(t, c).EventName(); got != want {
			t.Fatalf("event %q, want %q", got, want)
		}
	}
	if c.Banner() != "Asterisk Call Manager/11.0.0" {
		t.Fatalf("banner %q", c.Banner())
	}
}

func TestClient_OrphanIAXPeerEntriesJoinTheirCollection(t *testing.T) {
	url := scripted(t, func(conn net.Conn, r *Reader) {
		acceptLogin(t, conn, r, "")
		a := expectAction(t, r, "IAXpeers")
		id := a.ActionID()
		io.WriteString(conn, "Response: Success\r\nActionID: "+id+"\r\nEventList: start\r\nMessage: Peer status list will follow\r\n\r\n"+
			"Event: PeerEntry\r\nChanneltype: IAX2\r\nObjectName: testpeer\r\n\r\n"+
			"Event: Newchannel\r\nChannel: Local/x\r\n\r\n"+
			"Event: PeerEntry\r\nChanneltype: IAX2\r\nObjectName: loopback-peer\r\n\r\n"+
			"Event: PeerlistComplete\r\nActionID: "+id+"\r\nEventList: Complete\r\nListItems: 2\r\n\r\n")
		io.Copy(io.Discard, conn)
	})
	c := dialT(t, url)
	resp, err := c.Request(context.Background(), NewAction("IAXpeers", "ActionID", "mine"))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Events) != 2 || resp.Events[1].Get("ObjectName") != "loopback-peer" {
		t.Fatalf("entries %v", resp.Events)
	}
	if resp.Complete.Get("ListItems") != "2" || resp.Get("ActionID") != "mine" || resp.Complete.ActionID() != "mine" {
		t.Fatalf("complete %v / response %v", resp.Complete, resp.Message)
	}
	if ev := nextEvent(t, c); ev.EventName() != "Newchannel" {
		t.Fatalf("event stream got %q", ev.EventName())
	}
}

func TestClient_UnmatchedResponsesAreReportedAndTheSessionGoesOn(t *testing.T) {
	reports := make(chan error, 10)
	url := scripted(t, func(conn net.Conn, r *Reader) {
		acceptLogin(t, conn, r, "")
		a := expectAction(t, r, "Ping")
		// What Asterisk sends for a stray blank line, then an unknown id,
		// then Asterisk 13's raw Queues text, then the real answer.
		io.WriteString(conn, "Response: Error\r\nMessage: Missing action in request\r\n\r\n"+
			"Response: Success\r\nActionID: nobody\r\n\r\n"+
			"default has 0 calls (max unlimited) in 'ringall' strategy (0s holdtime), W:0, C:0\r\n   No Members\r\n\r\n\r\n"+
			"Response: Success\r\nActionID: "+a.ActionID()+"\r\nPing: Pong\r\n\r\n")
		io.Copy(io.Discard, conn)
	})
	c := dialT(t, url, WithReportFunc(func(err error) { reports <- err }))
	resp, err := c.Request(context.Background(), NewAction("Ping"))
	if err != nil || resp.Get("Ping") != "Pong" {
		t.Fatalf("Ping: %v %v", resp, err)
	}
	if resp.Has("ActionID") {
		t.Fatalf("the client's ActionID leaked into the response: %v", resp.Message)
	}
	var unmatched int
	for len(reports) > 0 {
		if ue := (*UnmatchedError)(nil); errors.As(<-reports, &ue) {
			unmatched++
		}
	}
	if unmatched != 3 {
		t.Fatalf("%d unmatched reports, want 3", unmatched)
	}
}

func TestClient_ConnectionLostMidCollectionFailsThePendingRequests(t *testing.T) {
	url := scripted(t, func(conn net.Conn, r *Reader) {
		acceptLogin(t, conn, r, "")
		var list *Message
		for range 2 { // both actions, in whatever order they come
			if a, err := r.ReadMessage(); err == nil && a.Name() == "CoreShowChannels" {
				list = a
			}
		}
		if list == nil {
			t.Error("server: no CoreShowChannels")
			return
		}
		io.WriteString(conn, "Response: Success\r\nActionID: "+list.ActionID()+"\r\nEventList: start\r\n\r\n"+
			"Event: CoreShowChannel\r\nActionID: "+list.ActionID()+"\r\nChannel: SIP/a\r\n\r\nEvent: CoreSh")
	})
	c := dialT(t, url)
	errs := make(chan error, 2)
	for _, name := range []string{"CoreShowChannels", "Ping"} {
		go func() {
			_, err := c.Request(context.Background(), NewAction(name))
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrConnLost) {
			t.Fatalf("err %v, want ErrConnLost", err)
		}
	}
	if !errors.Is(c.Err(), ErrConnLost) {
		t.Fatalf("Err() = %v", c.Err())
	}
	if _, ok := <-c.Events(); ok {
		t.Fatal("event stream still open after the connection ended")
	}
}

func TestClient_CloseFailsPendingRequestsAtOnce(t *testing.T) {
	got := make(chan struct{})
	url := scripted(t, func(conn net.Conn, r *Reader) {
		acceptLogin(t, conn, r, "")
		expectAction(t, r, "CoreShowChannels")
		close(got)
		io.Copy(io.Discard, conn) // never answers
	})
	c := dialT(t, url)
	errs := make(chan error, 1)
	go func() {
		_, err := c.Request(context.Background(), NewAction("CoreShowChannels"))
		errs <- err
	}()
	<-got
	c.Close()
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", err)
	}
	if _, err := c.Request(context.Background(), NewAction("Ping")); !errors.Is(err, ErrClosed) {
		t.Fatalf("request after Close: %v", err)
	}
}

func TestClient_ContextCancelFreesTheSlotAndSwallowsTheLateAnswer(t *testing.T) {
	release := make(chan struct{})
	reports := make(chan error, 10)
	url := scripted(t, func(conn net.Conn, r *Reader) {
		acceptLogin(t, conn, r, "")
		late := expectAction(t, r, "CoreShowChannels")
		<-release
		io.WriteString(conn, "Response: Success\r\nActionID: "+late.ActionID()+"\r\nEventList: start\r\n\r\n"+
			"Event: CoreShowChannel\r\nActionID: "+late.ActionID()+"\r\nChannel: SIP/a\r\n\r\n"+
			"Event: CoreShowChannelsComplete\r\nActionID: "+late.ActionID()+"\r\nEventList: Complete\r\n\r\n")
		ping := expectAction(t, r, "Ping")
		io.WriteString(conn, "Event: Marker\r\n\r\nResponse: Success\r\nActionID: "+ping.ActionID()+"\r\n\r\n")
		io.Copy(io.Discard, conn)
	})
	c := dialT(t, url, WithReportFunc(func(err error) { reports <- err }))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Request(ctx, NewAction("CoreShowChannels")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
	if n := c.Pending(); n != 0 {
		t.Fatalf("%d pending after the deadline", n)
	}
	close(release)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, c); ev.EventName() != "Marker" {
		t.Fatalf("the abandoned list leaked into the event stream: %v", ev)
	}
	if len(reports) != 0 {
		t.Fatalf("late answer reported: %v", <-reports)
	}
}

func TestDial_BadURLsNeverEchoTheSecret(t *testing.T) {
	for _, raw := range []string{"ftp://u:hunter2@h", "u:hunter2@", "u:hunter2@host:99999", "u:hunter2@host:x", "u:hunter2%zz@host", "u:hunter2@/path"} {
		_, err := Dial(context.Background(), raw)
		var de *DialError
		if !errors.As(err, &de) || de.Op != "url" {
			t.Errorf("%q: err %v, want a url DialError", raw, err)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: secret in %q", raw, err)
		}
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want Endpoint
	}{
		{"pbx", Endpoint{Addr: "pbx:5038"}},
		{"pbx:6000", Endpoint{Addr: "pbx:6000"}},
		{"tcp://admin:s3cret%21@pbx:5038", Endpoint{Addr: "pbx:5038", User: "admin", Secret: "s3cret!"}},
		{"tls://admin:p%40ss@pbx", Endpoint{TLS: true, Addr: "pbx:5039", User: "admin", Secret: "p@ss"}},
		{"TLS://[::1]", Endpoint{TLS: true, Addr: "[::1]:5039"}},
		{"[::1]:7000", Endpoint{Addr: "[::1]:7000"}},
		{"a:b:c@127.0.0.1", Endpoint{Addr: "127.0.0.1:5038", User: "a", Secret: "b:c"}},
	} {
		got, err := ParseURL(tc.raw)
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.raw, got, err, tc.want)
		}
	}
	if s := (Endpoint{TLS: true, Addr: "h:1", User: "u", Secret: "x"}).String(); s != "tls://u@h:1" {
		t.Errorf("String() = %q", s)
	}
}

func TestEndpoint_StringRoundTripsOddUsers(t *testing.T) {
	for _, user := range []string{"admin", "a:b", "a@b", "sp ace", "per%cent"} {
		ep := Endpoint{Addr: "pbx:5038", User: user, Secret: "hunter2"}
		s := ep.String()
		if strings.Contains(s, "hunter2") {
			t.Fatalf("secret in %q", s)
		}
		back, err := ParseURL(s)
		if err != nil || back.User != user || back.Addr != ep.Addr {
			t.Errorf("ParseURL(%q) = %+v, %v; want user %q", s, back, err, user)
		}
	}
}

func TestEndpoint_DialURLRoundTripsThroughParseURL(t *testing.T) {
	for _, ep := range []Endpoint{
		{Addr: "pbx:5038"},
		{Addr: "pbx:5038", User: "admin", Secret: "s3cret!"},
		{TLS: true, Addr: "[::1]:5039", User: "us:er@x", Secret: "p@ss:w%rd/ é+\x00"},
		{Addr: "pbx:5038", User: "admin"},
	} {
		back, err := ParseURL(ep.DialURL())
		if err != nil || back != ep {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", ep.DialURL(), back, err, ep)
		}
	}
}

func TestClient_APBXThatStopsReadingNeverHoldsACallerPastItsContext(t *testing.T) {
	stop := make(chan struct{})
	url := scripted(t, func(conn net.Conn, r *Reader) {
		acceptLogin(t, conn, r, "")
		<-stop // reads nothing more: the client's writes fill the socket
	})
	defer close(stop)
	c := dialT(t, url)
	big := NewAction("UserEvent", "UserEvent", "Big", "Data", strings.Repeat("x", 16<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	for range 2 { // the second waits behind the first, stuck in the socket
		if _, err := c.Request(ctx, big); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want DeadlineExceeded", err)
		}
	}
	if d := time.Since(start); d > 10*time.Second { // a guard against hanging, not a speed goal
		t.Fatalf("requests returned after %v", d)
	}
	c.Close() // ends the stuck write
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err() = %v", c.Err())
	}
}

func TestClient_RequestNeedsAnActionFirst(t *testing.T) {
	url := scripted(t, func(conn net.Conn, r *Reader) {
		acceptLogin(t, conn, r, "")
		io.Copy(io.Discard, conn)
	})
	c := dialT(t, url)
	for _, m := range []*Message{
		NewMessage(Field{Key: "Event", Value: "Newchannel"}),
		NewMessage(Field{Key: "Command", Value: "core show uptime"}, Field{Key: "Action", Value: "Command"}),
		NewAction(""),
	} {
		var ae *ActionError
		if _, err := c.Request(context.Background(), m); !errors.As(err, &ae) {
			t.Errorf("Request(%q) = %v, want an ActionError", m.String(), err)
		}
	}
}

// TestClient_ShutdownSendsLogoffOnlyAfterEveryPendingAnswer: the fake PBX
// holds three requests, then, once Shutdown has begun, answers them out of
// order and the last one late. The Logoff must reach it only after the
// last answer went out.
func TestClient_ShutdownSendsLogoffOnlyAfterEveryPendingAnswer(t *testing.T) {
	got := make(chan struct{})
	shutting := make(chan struct{})
	url := scripted(t, func(conn net.Conn, r *Reader) {
		acceptLogin(t, conn, r, "")
		ids := map[string]string{} // N -> ActionID
		for range 3 {
			if a := expectAction(t, r, "Slow"); a != nil {
				ids[a.Get("N")] = a.ActionID()
			}
		}
		close(got)
		<-shutting
		// Whatever the client sends from now on, with how many answers
		// had gone out when it came; the test's probe Pings aside.
		type arrival struct {
			m        *Message
			answered int32
		}
		var answered atomic.Int32
		arrivals := make(chan arrival, 10)
		go func() {
			defer close(arrivals)
			for {
				m, err := r.ReadMessage()
				if err != nil {
					return
				}
				if m.Name() != "Ping" {
					arrivals <- arrival{m, answered.Load()}
				}
			}
		}()
		answer := func(n string) {
			answered.Add(1) // before the write: the client may act on it at once
			io.WriteString(conn, "Response: Success\r\nActionID: "+ids[n]+"\r\nN: "+n+"\r\n\r\n")
		}
		answer("C")
		answer("A")
		late := time.NewTimer(100 * time.Millisecond) // B's answer is late
		select {
		case a := <-arrivals:
			t.Errorf("server: %q arrived with B still unanswered", a.m.Name())
		case <-late.C:
		}
		answer("B")
		a, ok := <-arrivals
		if !ok || !strings.EqualFold(a.m.Name(), "Logoff") || a.answered != 3 {
			t.Errorf("server: after the answers got %v (answered %d), want Logoff", a.m, a.answered)
			return
		}
		io.WriteString(conn, "Response: Goodbye\r\nActionID: "+a.m.ActionID()+"\r\nMessage: Thanks for all the fish.\r\n\r\n")
	})
	c := dialT(t, url)
	results := make(chan error, 3)
	for _, n := range []string{"A", "B", "C"} {
		go func() {
			resp, err := c.Request(context.Background(), NewAction("Slow", "N", n))
			if err == nil && resp.Get("N") != n {
				err = fmt.Errorf("request %s got answer %v", n, resp.Message)
			}
			results <- err
		}()
	}
	<-got
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- c.Shutdown(ctx) }()
	gone, cancelGone := context.WithCancel(context.Background())
	cancelGone()
	for { // Shutdown has begun once new requests are refused
		if _, err := c.Request(gone, NewAction("Ping")); errors.Is(err, ErrClosed) {
			break
		}
	}
	close(shutting)
	for range 3 {
		if err := <-results; err != nil {
			t.Errorf("pending request: %v", err)
		}
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

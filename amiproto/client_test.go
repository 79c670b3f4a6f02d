package amiproto_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

func startPBX(t testing.TB, cfg amitest.Config) *amitest.Server {
	t.Helper()
	if cfg.AuthFailDelay == 0 {
		cfg.AuthFailDelay = -1
	}
	srv, err := amitest.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func dial(t testing.TB, url string, opts ...amiproto.Option) *amiproto.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := amiproto.Dial(ctx, url, opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx10s(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echo answers with the request's Value, so a test can tell that every
// answer reached the request that asked for it.
func echo(w *amitest.ResponseWriter, r *amitest.Request) { w.Success("Echo", r.Get("Value")) }

func TestClient_10000ActionsFrom50GoroutinesAnsweredOutOfOrder(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	srv.HandleFunc("Echo", echo)
	srv.AnswerOutOfOrder(64, true)
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}))
	ctx := ctx10s(t)
	const goroutines, each = 50, 200
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("g%d-%d", g, i)
				resp, err := c.Request(ctx, amiproto.NewAction("Echo", "Value", id, "ActionID", "caller-"+id))
				if err != nil {
					errs <- err
					return
				}
				if resp.Get("Echo") != id || resp.ActionID() != "caller-"+id {
					errs <- fmt.Errorf("request %s got echo %q, ActionID %q", id, resp.Get("Echo"), resp.ActionID())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := c.Pending(); n != 0 {
		t.Fatalf("%d requests still pending", n)
	}
}

func TestClient_CollectionsInterleavedWithEvents(t *testing.T) {
	srv := startPBX(t, amitest.Config{Channels: 300})
	c := dial(t, srv.URL("admin", "s3cret!"))
	ctx := ctx10s(t)
	calls := srv.StartCalls(ctx, 0, 200)

	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				resp, err := c.CoreShowChannels(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				items, _ := strconv.Atoi(resp.Complete.Get("ListItems"))
				if !resp.IsCollection() || len(resp.Events) != items || items != 300 {
					t.Errorf("collection: %d entries, ListItems %d", len(resp.Events), items)
					return
				}
				for _, ev := range resp.Events {
					if ev.EventName() != "CoreShowChannel" {
						t.Errorf("entry %q in the collection", ev.EventName())
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := calls.Wait(); err != nil {
		t.Fatal(err)
	}
	// The calls' 4,400 events all reach the stream, and no list entry does.
	_, want, _ := calls.Count()
	for got := int64(0); got < want; {
		ev := <-c.Events()
		switch ev.EventName() {
		case "CoreShowChannel", "CoreShowChannelsComplete":
			t.Fatalf("list event %q leaked into the event stream", ev.EventName())
		case "FullyBooted", "SuccessfulAuth":
		default:
			got++
		}
	}
}

func TestClient_DroppedMidCollectionGivesErrorsNotHangs(t *testing.T) {
	srv := startPBX(t, amitest.Config{Channels: 2000})
	c := dial(t, srv.URL("admin", "s3cret!"))
	srv.DropDuring("CoreShowChannels")
	_, err := c.CoreShowChannels(ctx10s(t))
	if !errors.Is(err, amiproto.ErrConnLost) {
		t.Fatalf("err %v, want ErrConnLost", err)
	}
	if _, err := c.Request(ctx10s(t), amiproto.NewAction("Ping")); !errors.Is(err, amiproto.ErrConnLost) {
		t.Fatalf("request after the loss: %v", err)
	}
}

// TestClient_MD5LoginNeverPutsTheSecretOnTheWire logs in to a PBX that
// refuses plain secrets and records what crosses the wire: the login
// works, and the secret never went over.
func TestClient_MD5LoginNeverPutsTheSecretOnTheWire(t *testing.T) {
	const secret = "s3cret!-md5-only"
	srv := startPBX(t, amitest.Config{RequireMD5: true, RecordReceived: true,
		Users: map[string]amitest.User{"admin": {Secret: secret, Write: true}}})
	c := dial(t, srv.URL("admin", secret), amiproto.WithMD5Auth())
	if err := c.Ping(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	wire := string(srv.Received())
	if !strings.Contains(wire, "Action: Challenge\r\n") || !strings.Contains(wire, "AuthType: MD5\r\n") || !strings.Contains(wire, "Key: ") {
		t.Fatalf("no Challenge/MD5 login on the wire:\n%s", wire)
	}
	if strings.Contains(wire, secret) || strings.Contains(strings.ToLower(wire), "secret:") {
		t.Fatalf("the secret crossed the wire:\n%s", wire)
	}

	// The same PBX refuses the plain login, so the check above has teeth.
	_, err := amiproto.Dial(ctx10s(t), srv.URL("admin", secret))
	var ae *amiproto.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("plain login: %v, want an AuthError", err)
	}
}

func TestClient_WrongSecretIsAnAuthErrorWithoutTheSecret(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	for _, opts := range [][]amiproto.Option{nil, {amiproto.WithMD5Auth()}} {
		_, err := amiproto.Dial(ctx10s(t), srv.URL("admin", "wrong-hunter2"), opts...)
		var de *amiproto.DialError
		var ae *amiproto.AuthError
		if !errors.As(err, &de) || de.Op != "login" || !errors.As(err, &ae) {
			t.Fatalf("err %v, want a login DialError wrapping an AuthError", err)
		}
		if got := ae.Response.Get("Message"); got != "Authentication failed" {
			t.Fatalf("Asterisk's answer %q", got)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("secret in error: %v", err)
		}
		for _, hint := range []string{"Authentication failed", "secret", "permit/deny", "manager.conf", "displayconnects", "Asterisk log"} {
			if !strings.Contains(err.Error(), hint) {
				t.Errorf("%q does not mention %q", err, hint)
			}
		}
	}
}

func TestClient_TLSWithASelfSignedCertificate(t *testing.T) {
	cert, pool, err := amitest.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	srv := startPBX(t, amitest.Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	url := srv.URL("admin", "s3cret!")
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("URL %q", url)
	}
	c := dial(t, url, amiproto.WithTLSConfig(&tls.Config{RootCAs: pool}))
	if err := c.Ping(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	_, err = amiproto.Dial(ctx10s(t), url) // system roots do not know it
	var de *amiproto.DialError
	if !errors.As(err, &de) || de.Op != "tls" {
		t.Fatalf("err %v, want a tls DialError", err)
	}
	if msg := err.Error(); strings.Contains(msg, "tls: tls:") || !strings.Contains(msg, ": tls: failed to verify certificate") {
		t.Fatalf("error %q: want one \"tls:\" before the cause", msg)
	}
}

// userEvent is an event the test can number.
func userEvent(n int) *amiproto.Message {
	return amiproto.NewMessage(
		amiproto.Field{Key: "Event", Value: "UserEvent"}, amiproto.Field{Key: "Privilege", Value: "user,all"},
		amiproto.Field{Key: "UserEvent", Value: "Burst"}, amiproto.Field{Key: "N", Value: strconv.Itoa(n)},
	)
}

func TestClient_SlowConsumerLosesNothingUpToTheBoundAndCountsTheRest(t *testing.T) {
	const bound = 1000
	srv := startPBX(t, amitest.Config{})
	var reported sync.Map
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Queue: bound, Mask: "user"}),
		amiproto.WithReportFunc(func(err error) {
			if de := (*amiproto.DroppedEventsError)(nil); errors.As(err, &de) {
				reported.Store(de.Total, true)
			}
		}))
	ctx := ctx10s(t)
	// The consumer sleeps through the burst: nobody reads Events.
	for i := range bound {
		srv.Emit(userEvent(i))
	}
	// The Ping's answer comes after the burst, so once it is here the reader
	// has taken every event off the socket.
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if d := c.Dropped(); d != 0 {
		t.Fatalf("%d dropped within the bound", d)
	}
	for i := range bound {
		if ev := <-c.Events(); ev.Get("N") != strconv.Itoa(i) {
			t.Fatalf("event %d is %q: lost or reordered", i, ev.Get("N"))
		}
	}
	for i := range bound + 500 {
		srv.Emit(userEvent(i))
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if d := c.Dropped(); d != 500 {
		t.Fatalf("dropped %d, want 500", d)
	}
	if _, ok := reported.Load(uint64(500)); !ok {
		t.Fatal("the drops were not reported")
	}
	for i := range bound { // the first bound events survive, in order
		if ev := <-c.Events(); ev.Get("N") != strconv.Itoa(i) {
			t.Fatalf("event %d is %q", i, ev.Get("N"))
		}
	}
}

func TestClient_KeepaliveDetectsAHalfOpenConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*amitest.Server)
	}{
		{"half open", (*amitest.Server).HalfOpen},
		{"Ping never answered", func(s *amitest.Server) { s.NeverAnswer("Ping", "CoreStatus") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startPBX(t, amitest.Config{})
			c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}),
				amiproto.WithKeepalive(20*time.Millisecond, 100*time.Millisecond))
			tc.fault(srv)
			testKeepaliveEnds(t, c)
		})
	}
}

func testKeepaliveEnds(t *testing.T, c *amiproto.Client) {
	pending := make(chan error, 1)
	go func() {
		_, err := c.Request(context.Background(), amiproto.NewAction("CoreStatus"))
		pending <- err
	}()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("half-open connection not detected")
	}
	if err := c.Err(); !errors.Is(err, amiproto.ErrConnLost) || !errors.Is(err, amiproto.ErrKeepalive) {
		t.Fatalf("Err() = %v", err)
	}
	if err := <-pending; !errors.Is(err, amiproto.ErrConnLost) {
		t.Fatalf("pending request: %v", err)
	}
}

// TestClient_KeepaliveOutlastsAStallLongerThanItsInterval: a PBX that
// sends nothing for a while (Asterisk while one of the session's actions
// runs) is not dead; the default timeout is well above the interval.
func TestClient_KeepaliveOutlastsAStallLongerThanItsInterval(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}), amiproto.WithKeepalive(5*time.Millisecond, 0))
	srv.Stall(300 * time.Millisecond) // 60 intervals
	if err := c.Ping(ctx10s(t)); err != nil {
		t.Fatalf("Ping after the stall: %v", err)
	}
}

// TestClient_KeepaliveCountsEveryByteAsLife holds the answer to the
// keepalive's Ping back while events flow for several timeouts: the
// session stays up. Once the events stop, the unanswered Ping ends it.
func TestClient_KeepaliveCountsEveryByteAsLife(t *testing.T) {
	// Events come every timeout/30: only a stall of the whole process
	// for a timeout, on a loaded CI machine, could end the session early.
	const timeout = 300 * time.Millisecond
	srv := startPBX(t, amitest.Config{RecordReceived: true})
	// The Pings go unanswered while events still flow, as when a Ping's
	// answer waits behind a backlog of events. (A handler that blocks
	// would not do: amitest, as Asterisk, holds a session's events while
	// one of its actions runs.)
	srv.NeverAnswer("Ping")
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "user"}), amiproto.WithKeepalive(time.Millisecond, timeout))
	tick := time.NewTicker(timeout / 30) // paces the events, waits for nothing
	defer tick.Stop()
	for i := range 90 { // 3 timeouts
		<-tick.C
		srv.Emit(userEvent(i))
		if ev, ok := <-c.Events(); !ok {
			t.Fatalf("the session ended while events flowed: %v", c.Err())
		} else if ev.Get("N") != strconv.Itoa(i) {
			t.Fatalf("event %d is %v", i, ev)
		}
	}
	// Pings went out every millisecond and none was answered: only the
	// events kept the session up.
	if !bytes.Contains(srv.Received(), []byte("Action: Ping")) {
		t.Fatal("no keepalive Ping was sent while the events flowed")
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the unanswered Ping never ended the silent session")
	}
	if err := c.Err(); !errors.Is(err, amiproto.ErrKeepalive) {
		t.Fatalf("Err() = %v", err)
	}
}

func TestClient_ShutdownWaitsForPendingThenLogsOff(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	release := make(chan struct{})
	started := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	srv.HandleFunc("Slow", func(w *amitest.ResponseWriter, r *amitest.Request) {
		close(started)
		<-release
		w.Success("Message", "done")
	})
	c := dial(t, srv.URL("admin", "s3cret!"))
	slow := make(chan error, 1)
	go func() {
		resp, err := c.Request(context.Background(), amiproto.NewAction("Slow"))
		if err == nil && resp.Get("Message") != "done" {
			err = fmt.Errorf("slow answer %v", resp)
		}
		slow <- err
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- c.Shutdown(ctx10s(t)) }()
	// New requests are refused as soon as Shutdown has begun. The probe
	// does not wait for its answer: the fake PBX, like Asterisk, answers
	// nothing else while Slow runs.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		_, err := c.Request(gone, amiproto.NewAction("Ping"))
		if errors.Is(err, amiproto.ErrClosed) {
			break
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
	once.Do(func() { close(release) })
	if err := <-slow; err != nil {
		t.Fatalf("pending request: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if !errors.Is(c.Err(), amiproto.ErrClosed) {
		t.Fatalf("Err() = %v", c.Err())
	}
}

func TestClient_CommandOutputInBothFramings(t *testing.T) {
	for _, p := range []amitest.Profile{amitest.Asterisk22, amitest.Asterisk13} {
		t.Run(p.String(), func(t *testing.T) {
			srv := startPBX(t, amitest.Config{Profile: p})
			c := dial(t, srv.URL("admin", "s3cret!"))
			out, err := c.Command(ctx10s(t), "core show version")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(out, "Asterisk "+p.AsteriskVersion()) || strings.Contains(out, "END COMMAND") {
				t.Fatalf("output %q", out)
			}
			if c.Banner() != p.Banner() {
				t.Fatalf("banner %q", c.Banner())
			}
		})
	}
}

func TestClient_ResponseErrorIsTypedAndKeepsTheResponse(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	c := dial(t, srv.URL("admin", "s3cret!"))
	resp, err := c.Request(ctx10s(t), amiproto.NewAction("NoSuchThing"))
	var re *amiproto.ResponseError
	if !errors.As(err, &re) || re.Response != resp || !resp.IsError() {
		t.Fatalf("err %v resp %v", err, resp)
	}
	if !strings.HasPrefix(resp.Get("Message"), "Invalid/unknown command: NoSuchThing.") {
		t.Fatalf("message %q", resp.Get("Message"))
	}
}

func TestClient_OriginateResponseEventCarriesTheCallersActionID(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	c := dial(t, srv.URL("admin", "s3cret!"))
	o := amiproto.Originate{Channel: "Local/echo@test", Application: "Echo", Async: true}
	a := o.Action().Add("ActionID", "my-call-1")
	resp, err := c.Request(ctx10s(t), a)
	if err != nil || resp.ActionID() != "my-call-1" {
		t.Fatalf("resp %v err %v", resp, err)
	}
	for {
		ev := <-c.Events()
		if ev.EventName() == "OriginateResponse" {
			if ev.ActionID() != "my-call-1" || ev.Get("Response") != "Success" {
				t.Fatalf("OriginateResponse %v", ev)
			}
			return
		}
	}
}

func TestClient_InvalidActionSendsNothing(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	c := dial(t, srv.URL("admin", "s3cret!"))
	_, err := c.Request(ctx10s(t), amiproto.NewAction("Ping", "X", "a\r\n\r\nAction: Logoff"))
	var ae *amiproto.ActionError
	if !errors.As(err, &ae) {
		t.Fatalf("err %v, want an ActionError", err)
	}
	if err := c.Ping(ctx10s(t)); err != nil { // the session was not logged off
		t.Fatal(err)
	}
}

func TestClient_EventFuncGetsEveryEventInOrderOnTheReader(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	var got []string // only the reader goroutine appends
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "user",
		Func: func(ev *amiproto.Message) { got = append(got, ev.Get("N")) }}))
	for i := range 100 {
		srv.Emit(userEvent(i))
	}
	if err := c.Ping(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	<-c.Done() // the reader has stopped: no call of the func is left
	if c.Events() != nil {
		t.Fatal("Events is not nil with an EventDelivery.Func")
	}
	if len(got) != 100 {
		t.Fatalf("%d events, want 100", len(got))
	}
	for i, n := range got {
		if n != strconv.Itoa(i) {
			t.Fatalf("event %d is %s", i, n)
		}
	}
}

func TestClient_SurvivesGarbageSlowWritesAndStalls(t *testing.T) {
	srv := startPBX(t, amitest.Config{Channels: 20})
	var reports atomic.Int32
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "user"}),
		amiproto.WithReportFunc(func(error) { reports.Add(1) }))
	ctx := ctx10s(t)

	srv.WriteGarbage(nil) // random bytes, then a blank line
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after garbage: %v", err)
	}
	if reports.Load() == 0 {
		t.Error("the garbage was not reported")
	}

	srv.SlowWrites(true) // one byte per socket write
	for i := range 5 {
		srv.Emit(userEvent(i))
	}
	resp, err := c.CoreShowChannels(ctx)
	if err != nil || len(resp.Events) != 20 {
		t.Fatalf("collection over slow writes: %v, %d entries", err, len(resp.Events))
	}
	for i := range 5 {
		if ev := <-c.Events(); ev.Get("N") != strconv.Itoa(i) {
			t.Fatalf("event %d over slow writes is %v", i, ev)
		}
	}
	srv.SlowWrites(false)

	srv.Stall(100 * time.Millisecond) // answers wait, then all come
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Ping(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := c.Err(); err != nil {
		t.Fatalf("the session ended: %v", err)
	}
}

// serveOne accepts one connection on ln and runs script on it; the
// cleanup closes ln and waits for the script to return.
func serveOne(t *testing.T, ln net.Listener, script func(conn net.Conn, r *amiproto.Reader)) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		script(conn, amiproto.NewReader(conn))
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestDial_CancelAfterTheTLSHandshakeWhileTheBannerIsLate ends ctx once
// the server has finished the TLS handshake and before any banner: Dial
// must fail with ctx's error, and the race detector must see no race on
// the connection Dial replaced by its TLS wrapper. The client may still be
// finishing its side of the handshake when ctx ends, so the run repeats
// until the end lands on the banner at least once.
func TestDial_CancelAfterTheTLSHandshakeWhileTheBannerIsLate(t *testing.T) {
	cert, pool, err := amitest.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if i == 50 {
			t.Fatal("ctx never ended while Dial waited for the banner")
		}
		ln := tls.NewListener(listen(t), &tls.Config{Certificates: []tls.Certificate{cert}})
		handshook := make(chan struct{})
		serveOne(t, ln, func(conn net.Conn, _ *amiproto.Reader) {
			if err := conn.(*tls.Conn).Handshake(); err != nil {
				t.Errorf("server handshake: %v", err)
			}
			close(handshook)
			io.Copy(io.Discard, conn) // no banner, ever
		})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := amiproto.Dial(ctx, "tls://"+ln.Addr().String(), amiproto.WithTLSConfig(&tls.Config{RootCAs: pool}))
			errc <- err
		}()
		<-handshook
		cancel()
		err = <-errc
		var de *amiproto.DialError
		if !errors.As(err, &de) || (de.Op != "banner" && de.Op != "tls") || !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want a banner or tls DialError wrapping context.Canceled", err)
		}
		if de.Op == "banner" {
			return
		}
	}
}

// TestDial_ContextEndingRightAfterTheLoginGivesNoDeadClient ends ctx just
// after the PBX accepted the login. Dial may fail, with ctx's error, or
// hand back a client, but then one whose socket is open: a Ping must work.
// The race between the answer and the end of ctx is run many times.
func TestDial_ContextEndingRightAfterTheLoginGivesNoDeadClient(t *testing.T) {
	for i := range 100 {
		ln := listen(t)
		ctx, cancel := context.WithCancel(context.Background())
		serveOne(t, ln, func(conn net.Conn, r *amiproto.Reader) {
			io.WriteString(conn, "Asterisk Call Manager/11.0.0\r\n")
			login, err := r.ReadMessage()
			if err != nil {
				return
			}
			io.WriteString(conn, "Response: Success\r\nActionID: "+login.ActionID()+"\r\nMessage: Authentication accepted\r\n\r\n")
			cancel()
			for {
				a, err := r.ReadMessage()
				if err != nil {
					return
				}
				io.WriteString(conn, "Response: Success\r\nActionID: "+a.ActionID()+"\r\nPing: Pong\r\n\r\n")
			}
		})
		c, err := amiproto.Dial(ctx, "admin:x@"+ln.Addr().String())
		cancel()
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("run %d: err %v, want one wrapping context.Canceled", i, err)
			}
			continue
		}
		if err := c.Ping(ctx10s(t)); err != nil {
			t.Fatalf("run %d: Dial gave a client whose Ping fails: %v", i, err)
		}
		c.Close()
	}
}

// waitGoroutines polls, for at most 10 s, until the goroutine count is
// back to n: goroutines that closed Done may still be on their way out.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func TestClient_CloseStopsEveryGoroutine(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []amiproto.Option
	}{
		{"events", nil},
		{"event func", []amiproto.Option{amiproto.WithEvents(amiproto.EventDelivery{Func: func(*amiproto.Message) {}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			srv := startPBX(t, amitest.Config{})
			opts := append(tc.opts, amiproto.WithKeepalive(time.Millisecond, 0))
			c, err := amiproto.Dial(ctx10s(t), srv.URL("admin", "s3cret!"), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Ping(ctx10s(t)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			c.Close() // idempotent
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("Done not closed after Close")
			}
			if !errors.Is(c.Err(), amiproto.ErrClosed) {
				t.Fatalf("Err() = %v", c.Err())
			}
			srv.Close() // waits for the server's own goroutines
			waitGoroutines(t, base)
		})
	}
}

// shutdownsWaiting reports how many goroutines are blocked in Shutdown.
func shutdownsWaiting() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "amiproto.(*Client).Shutdown(")
}

func TestClient_ConcurrentShutdownsLogOffOnceAndAllReturn(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	release := make(chan struct{})
	started := make(chan struct{})
	var logoffs atomic.Int32
	srv.HandleFunc("Slow", func(w *amitest.ResponseWriter, r *amitest.Request) {
		close(started)
		<-release
		w.Success()
	})
	srv.HandleFunc("Logoff", func(w *amitest.ResponseWriter, r *amitest.Request) {
		logoffs.Add(1)
		w.Respond("Goodbye", "Message", "Thanks for all the fish.")
		w.CloseAfter()
	})
	c := dial(t, srv.URL("admin", "s3cret!"))
	go c.Request(context.Background(), amiproto.NewAction("Slow"))
	<-started
	shut := make(chan error, 3)
	for range 3 {
		go func() { shut <- c.Shutdown(ctx10s(t)) }()
	}
	// Every Shutdown is waiting for the pending request before it comes.
	for deadline := time.Now().Add(10 * time.Second); shutdownsWaiting() < 3; {
		if time.Now().After(deadline) {
			t.Fatal("the Shutdowns never all waited")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range 3 {
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Shutdown returned before the client stopped")
	}
	if n := logoffs.Load(); n != 1 {
		t.Fatalf("%d Logoffs reached the PBX, want 1", n)
	}
	if err := c.Shutdown(ctx10s(t)); err != nil { // and once more, after the end
		t.Fatalf("a later Shutdown: %v", err)
	}
}

// TestDialEndpoint_ThroughACustomDialerOverNetPipe dials a made-up host
// through WithDialer, which hands over one end of a net.Pipe served by the
// fake PBX, and logs in with a secret that would need URL escaping: the
// Endpoint carries it as it is.
func TestDialEndpoint_ThroughACustomDialerOverNetPipe(t *testing.T) {
	const secret = "p@ss:w%rd/ é"
	srv := startPBX(t, amitest.Config{Users: map[string]amitest.User{"us:er": {Secret: secret, Write: true}}})
	var network, addr string
	c, err := amiproto.DialEndpoint(ctx10s(t), amiproto.Endpoint{Addr: "pbx.invalid:5038", User: "us:er", Secret: secret},
		amiproto.WithDialer(func(ctx context.Context, n, a string) (net.Conn, error) {
			network, addr = n, a
			client, server := net.Pipe()
			return client, srv.ServeConn(server)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if network != "tcp" || addr != "pbx.invalid:5038" {
		t.Fatalf("dialer called with %q %q", network, addr)
	}
	if err := c.Ping(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	if c.Endpoint().User != "us:er" || strings.Contains(c.Endpoint().String(), "w%rd") {
		t.Fatalf("Endpoint %v", c.Endpoint())
	}

	dialErr := errors.New("tunnel down")
	_, err = amiproto.DialEndpoint(ctx10s(t), srv.Endpoint("admin", "s3cret!"),
		amiproto.WithDialer(func(context.Context, string, string) (net.Conn, error) { return nil, dialErr }))
	var de *amiproto.DialError
	if !errors.As(err, &de) || de.Op != "connect" || !errors.Is(err, dialErr) {
		t.Fatalf("err %v, want a connect DialError wrapping the dialer's", err)
	}
}

// TestDial_RefusesAServerThatIsNotAsterisk: a server whose first line is
// not an AMI banner (here an SSH server, which then waits for the client)
// is refused at once, before anything is sent to it.
func TestDial_RefusesAServerThatIsNotAsterisk(t *testing.T) {
	ln := listen(t)
	received := make(chan []byte, 1)
	serveOne(t, ln, func(conn net.Conn, _ *amiproto.Reader) {
		io.WriteString(conn, "SSH-2.0-OpenSSH_9.6\r\n")
		b, _ := io.ReadAll(conn)
		received <- b
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := amiproto.Dial(ctx, "admin:s3cret@"+ln.Addr().String())
	var de *amiproto.DialError
	if !errors.As(err, &de) || de.Op != "banner" || !strings.Contains(err.Error(), "not an AMI banner") {
		t.Fatalf("err %v, want a banner DialError", err)
	}
	if b := <-received; len(b) != 0 {
		t.Fatalf("the client sent %q to a server that is not Asterisk", b)
	}
}

// EventDelivery.Skip drops the events it is asked about unparsed, and never a
// list entry: while a request waits, every event is read as usual.
func TestClient_EventSkipLeavesOutEventsButNoListEntry(t *testing.T) {
	srv := startPBX(t, amitest.Config{Channels: 20})
	var delivered []string // only the reader goroutine appends
	skipped := 0           // the same
	marker := make(chan struct{})
	always := func() bool { return true }
	dial(t, srv.URL("admin", "s3cret!"),
		amiproto.WithEvents(amiproto.EventDelivery{Shedding: always, Skip: func(name string) bool {
			if name == "UserEvent" {
				skipped++
				return true
			}
			return false
		}, Func: func(ev *amiproto.Message) {
			switch ev.Name() {
			case "UserEvent":
				delivered = append(delivered, ev.Get("N"))
			case "Marker":
				close(marker)
			}
		}}))
	// One write, so that the reader finds many events in its buffer.
	var burst []byte
	for i := range 200 {
		var err error
		if burst, err = amiproto.AppendMessage(burst, userEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	srv.EmitRaw(append(burst, "Event: Marker\r\n\r\n"...))
	<-marker
	if skipped == 0 || skipped+len(delivered) != 200 {
		t.Fatalf("%d skipped, %d delivered; want some skipped, 200 in all", skipped, len(delivered))
	}
	last := -1
	for _, n := range delivered {
		i, _ := strconv.Atoi(n)
		if i <= last {
			t.Fatalf("event %d after %d", i, last)
		}
		last = i
	}

	// Not shedding, the client offers nothing: every event is read.
	offered, n := 0, 0
	marker2 := make(chan struct{})
	dial(t, srv.URL("admin", "s3cret!"),
		amiproto.WithEvents(amiproto.EventDelivery{Shedding: func() bool { return false }, Skip: func(string) bool { offered++; return true },
			Func: func(ev *amiproto.Message) {
				if ev.Name() == "Marker2" {
					close(marker2)
				} else if ev.Name() == "UserEvent" {
					n++
				}
			}}))
	srv.EmitRaw(append(burst, "Event: Marker2\r\n\r\n"...)) // to the first client too
	<-marker2
	if offered != 0 || n != 200 {
		t.Fatalf("not shedding: %d offered, %d of 200 read", offered, n)
	}

	// Every entry of a list reaches its request, though skip would take them.
	skipAll := func(string) bool { return true }
	c2 := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Shedding: always, Skip: skipAll, Func: func(*amiproto.Message) {}}))
	for range 20 {
		resp, err := c2.CoreShowChannels(ctx10s(t))
		if err != nil || len(resp.Events) != 20 || resp.Complete == nil {
			t.Fatalf("CoreShowChannels: %v, %d entries", err, len(resp.Events))
		}
	}
}

// clientGoroutines counts the goroutines running in each of the Client's
// loops: its reader, its writer and a keepalive Ping.
func clientGoroutines() (reader, writer, keepalive int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		switch {
		case strings.Contains(g, "amiproto.(*Client).readLoop("):
			reader++
		case strings.Contains(g, "amiproto.(*Client).writeLoop("):
			writer++
		case strings.Contains(g, "amiproto.(*Client).keepalive("):
			keepalive++
		}
	}
	return reader, writer, keepalive
}

// An idle session holds one goroutine, its reader (issue 22: memory of
// idle PBXes): the writer returns once nothing came to write for a
// while, and the keepalive is a timer between its Pings. Both come back
// when needed: the keepalive keeps pinging, and requests are answered.
func TestClient_IdleSessionHoldsOnlyItsReader(t *testing.T) {
	const sessions = 20
	srv := startPBX(t, amitest.Config{RecordReceived: true})
	// The clients of the tests before this one may still be ending: count
	// from none (this test is not parallel, so none start meanwhile).
	deadline := time.Now().Add(10 * time.Second)
	for r, w, k := clientGoroutines(); r+w+k > 0; r, w, k = clientGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("the clients of earlier tests still hold %d readers, %d writers, %d keepalives", r, w, k)
		}
		time.Sleep(5 * time.Millisecond)
	}
	clients := make([]*amiproto.Client, sessions)
	for i := range clients {
		// Pings 300 ms apart: the writer lingers 100 ms after each.
		clients[i] = dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(amiproto.EventDelivery{Mask: "off"}), amiproto.WithKeepalive(300*time.Millisecond, 5*time.Second))
	}
	pings := func() int { return bytes.Count(srv.Received(), []byte("Action: Ping\r\n")) }
	deadline = time.Now().Add(10 * time.Second)
	for {
		r, w, k := clientGoroutines()
		if r == sessions && w == 0 && k == 0 && pings() >= sessions {
			break // idle, after the keepalive pinged
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle sessions hold %d readers, %d writers, %d keepalives (want %d, 0, 0; %d Pings)", r, w, k, sessions, pings())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, c := range clients {
		if err := c.Ping(ctx10s(t)); err != nil {
			t.Fatalf("Ping %d after idle: %v", i, err)
		}
	}
	// The keepalive goes on: every session pings again.
	before := pings()
	for pings() < before+2*sessions {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("the keepalive stopped: %d Pings after %d", pings(), before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, c := range clients {
		c.Close()
		<-c.Done()
	}
	// Done closes in the reader's last deferred call, just before its
	// goroutine ends: nothing can be waited on for the end itself.
	for {
		r, w, k := clientGoroutines()
		if r+w+k == 0 {
			break
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("after Close: %d readers, %d writers, %d keepalives left", r, w, k)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package amiproto_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
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
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEvents(false))
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

func TestClient_MD5Login(t *testing.T) {
	srv := startPBX(t, amitest.Config{})
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithMD5Auth())
	if err := c.Ping(ctx10s(t)); err != nil {
		t.Fatal(err)
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
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEventQueue(bound), amiproto.WithEventMask("user"),
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
	srv := startPBX(t, amitest.Config{})
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithKeepalive(20*time.Millisecond, 100*time.Millisecond))
	srv.HalfOpen()
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
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEventMask("user"),
		amiproto.WithEventFunc(func(ev *amiproto.Message) { got = append(got, ev.Get("N")) }))
	for i := range 100 {
		srv.Emit(userEvent(i))
	}
	if err := c.Ping(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for range c.Events() { // closed once the reader has stopped; delivers nothing
		t.Fatal("an event reached the queue as well")
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
	c := dial(t, srv.URL("admin", "s3cret!"), amiproto.WithEventMask("user"),
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

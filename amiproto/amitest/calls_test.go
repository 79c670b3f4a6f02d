package amitest_test

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// callOrder is the order of a plain call's events in capture 14a (22).
var callOrder = []string{
	"Newchannel", "Newchannel", "Newexten", "LocalBridge", "DialBegin", "Newexten", "Newstate",
	"DeviceStateChange", "Newstate", "DeviceStateChange", "DialEnd", "OriginateResponse", "Newexten",
	"HangupRequest", "Hangup", "Cdr", "SoftHangupRequest", "Newexten", "Hangup", "Cdr",
	"DeviceStateChange", "DeviceStateChange",
}

// normalisedCall renders a call's events with its channel base, Uniqueids,
// times and ActionID replaced by placeholders, sorted, so that two calls
// compare equal when they differ only in those.
func normalisedCall(t *testing.T, events []*amiproto.Message) []string {
	t.Helper()
	var base, uid1, uid2 string
	for _, ev := range events {
		if ev.EventName() == "Newchannel" {
			ch := ev.Get("Channel")
			switch {
			case strings.HasSuffix(ch, ";1"):
				base, uid1 = strings.TrimSuffix(ch, ";1"), ev.Get("Uniqueid")
			case strings.HasSuffix(ch, ";2"):
				uid2 = ev.Get("Uniqueid")
			}
		}
	}
	if base == "" || uid1 == "" || uid2 == "" {
		t.Fatalf("no Newchannel pair among %d events", len(events))
	}
	r := strings.NewReplacer(base, "CHAN", uid1, "U1", uid2, "U2")
	var out []string
	for _, ev := range events {
		var b strings.Builder
		for _, f := range ev.Fields() {
			v := r.Replace(f.Value)
			switch f.Key {
			case "StartTime", "AnswerTime", "EndTime":
				v = "T"
			case "ActionID":
				v = "ID"
			}
			b.WriteString(r.Replace(f.Key) + ": " + v + "\n")
		}
		out = append(out, b.String())
	}
	slices.Sort(out)
	return out
}

// TestOriginate_MatchesCapturedCall originates the call of capture 14a and
// checks that its 22 events are those Asterisk sent, field for field, but
// for ids and clocks.
func TestOriginate_MatchesCapturedCall(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		profile amitest.Profile
	}{{"asterisk-22", amitest.Asterisk22}, {"asterisk-13", amitest.Asterisk13}} {
		t.Run(tc.dir, func(t *testing.T) {
			_, want, err := readAll(bytes.NewReader(append([]byte("banner\r\n"), readFile(t, filepath.Join("testdata", tc.dir, "14a_first_call.recv.bin"))...)))
			if err != nil {
				t.Fatal(err)
			}
			srv := start(t, amitest.Config{Profile: tc.profile})
			c := dial(t, srv.Addr())
			c.login("admin", "s3cret!", "call,cdr,dialplan")
			c.send("Originate", "Channel", "Local/burst@test", "Application", "Wait", "Data", "1", "Async", "true", "ActionID", "b000")
			resp := c.readResponse()
			if resp.Get("Message") != "Originate successfully queued" || resp.ActionID() != "b000" {
				t.Fatalf("response:\n%s", resp)
			}
			var got []*amiproto.Message
			var names []string
			for len(got) < 22 {
				ev := c.read()
				got = append(got, ev)
				names = append(names, ev.EventName())
			}
			if !slices.Equal(names, callOrder) {
				t.Errorf("order %v\nwant  %v", names, callOrder)
			}
			g, w := normalisedCall(t, got), normalisedCall(t, want)
			for i := range w {
				if g[i] != w[i] {
					t.Fatalf("event differs:\n%s\nwant:\n%s", g[i], w[i])
				}
			}
			or := got[slices.Index(names, "OriginateResponse")]
			if or.Kind() != amiproto.KindEvent || or.Get("Response") != "Success" || or.ActionID() != "b000" {
				t.Errorf("OriginateResponse:\n%s", or)
			}
			if cv := or.ChanVariables(); len(cv) != 2 || cv["FOO"] != "" {
				t.Errorf("ChanVariables %v", cv)
			}
		})
	}
}

func TestOriginate_CallerIDAddsCallerEvents(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")
	c.send("Originate", "Channel", "Local/echo@test", "Application", "Wait", "Data", "1", "Async", "true",
		"CallerID", `"AMI Test" <5551234>`, "ActionID", "orig-echo")
	c.readResponse()
	var names []string
	for !slices.Contains(names, "OriginateResponse") {
		ev := c.read()
		names = append(names, ev.EventName())
		if ev.EventName() == "OriginateResponse" && (ev.Get("CallerIDNum") != "5551234" || ev.Get("CallerIDName") != "AMI Test") {
			t.Errorf("OriginateResponse:\n%s", ev)
		}
	}
	want := []string{"Newchannel", "Newchannel", "NewCallerid", "NewConnectedLine", "NewCallerid", "NewConnectedLine"}
	if got := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return !slices.Contains(want, n) }); !slices.Equal(got, want) {
		t.Errorf("events %v", names)
	}
}

func TestOriginate_Failures(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")

	c.send("Originate", "Channel", "Local/nosuchexten@test", "Application", "Wait", "Data", "1", "Async", "true", "ActionID", "bad-async")
	if m := c.readResponse(); m.Get("Message") != "Originate successfully queued" {
		t.Fatalf("async failure response:\n%s", m)
	}
	or := c.readEvent("OriginateResponse")
	if or.Get("Response") != "Failure" || or.Get("Reason") != "0" || or.Get("Uniqueid") != "<unknown>" || or.Get("Channel") != "Local/nosuchexten@test" {
		t.Errorf("OriginateResponse:\n%s", or)
	}

	c.send("Originate", "Channel", "Local/busy@test", "Application", "Wait", "Data", "1", "Async", "true", "ActionID", "busy")
	if or := c.readEvent("OriginateResponse"); or.Get("Reason") != "5" || or.ActionID() != "busy" {
		t.Errorf("busy OriginateResponse:\n%s", or)
	}

	c.send("Originate", "Channel", "Local/nosuchexten@test", "Application", "Wait", "Data", "1", "Async", "false", "ActionID", "bad-sync")
	if m := c.readResponse(); m.Name() != "Error" || m.Get("Message") != "Originate failed" {
		t.Fatalf("sync failure:\n%s", m)
	}
	c.send("Originate", "ActionID", "no-channel")
	if m := c.readResponse(); m.Get("Message") != "Channel not specified" {
		t.Fatalf("no channel:\n%s", m)
	}
}

func TestOriginate_SyncSendsNoOriginateResponse(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")
	c.send("Originate", "Channel", "Local/echo@test", "Context", "test", "Exten", "play", "Priority", "1", "ActionID", "sync")
	if m := c.readResponse(); m.Get("Message") != "Originate successfully queued" {
		t.Fatalf("got:\n%s", m)
	}
	c.send("Ping", "ActionID", "end")
	for {
		m := c.read()
		if m.EventName() == "OriginateResponse" {
			t.Fatalf("sync Originate sent:\n%s", m)
		}
		if m.ActionID() == "end" {
			return
		}
	}
}

func TestStartCalls_UniqueIdsAtARate(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")
	calls := srv.StartCalls(context.Background(), 500, 10)
	if err := calls.Wait(); err != nil {
		t.Fatal(err)
	}
	n, events, _ := calls.Count()
	if n != 10 || events != 220 {
		t.Fatalf("Count() = %d calls, %d events; want 10, 220", n, events)
	}
	linked := map[string]int{}
	channels := map[string]bool{}
	for range 10 * 16 { // 16 of the 22 events are call-class (not Newexten, Cdr)
		ev := c.read()
		if id := ev.Get("Linkedid"); id != "" {
			linked[id]++
		}
		if ev.EventName() == "Newchannel" {
			channels[ev.Get("Channel")] = true
		}
	}
	if len(linked) != 10 || len(channels) != 20 {
		t.Errorf("%d Linkedids and %d channels, want 10 and 20", len(linked), len(channels))
	}
}

func TestStartCalls_StopsWithContext(t *testing.T) {
	srv := start(t, amitest.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	calls := srv.StartCalls(ctx, 1, 0)
	cancel()
	if err := calls.Wait(); err != context.Canceled {
		t.Fatalf("Wait() = %v, want context.Canceled", err)
	}
}

func TestPlayCall_ReturnsNames(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")
	info := srv.PlayCall(amitest.CallSpec{Channel: "Local/demo@test", ActionID: "x"})
	if info.Events != 22 || info.Failed || !strings.HasPrefix(info.Channel, "Local/demo@test-") {
		t.Fatalf("CallInfo %+v", info)
	}
	if ev := c.readEvent("Newchannel"); ev.Get("Channel") != info.Channel || ev.Get("Uniqueid") != info.Uniqueid {
		t.Errorf("Newchannel:\n%s\nwant %+v", ev, info)
	}
}

// AnswerDelay holds a sync Originate's answer, and its session, for the
// call's answer time; an async one is queued at once and its
// OriginateResponse, failing ones included, comes after the delay.
func TestOriginate_AnswerDelay(t *testing.T) {
	const delay = 200 * time.Millisecond
	srv := start(t, amitest.Config{AnswerDelay: delay})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "call")

	sent := time.Now()
	c.send("Originate", "Channel", "Local/busy@test", "Application", "Wait", "Data", "1", "Async", "true", "ActionID", "late-busy")
	if m := c.readResponse(); m.Get("Message") != "Originate successfully queued" {
		t.Fatalf("async response:\n%s", m)
	}
	if d := time.Since(sent); d >= delay {
		t.Errorf("async Originate answered after %v, want at once", d)
	}
	or := c.readEvent("OriginateResponse")
	if d := time.Since(sent); d < delay {
		t.Errorf("OriginateResponse after %v, want at least %v", d, delay)
	}
	if or.ActionID() != "late-busy" || or.Get("Response") != "Failure" || or.Get("Reason") != "5" {
		t.Errorf("OriginateResponse:\n%s", or)
	}

	sent = time.Now()
	c.send("Originate", "Channel", "Local/echo@test", "Application", "Wait", "Data", "1", "ActionID", "sync")
	if m := c.readResponse(); m.Get("Message") != "Originate successfully queued" {
		t.Fatalf("sync response:\n%s", m)
	}
	if d := time.Since(sent); d < delay {
		t.Errorf("sync Originate answered after %v, want at least %v", d, delay)
	}
}

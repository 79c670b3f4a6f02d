package bridge

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// waitHeader is the header of an Originate that waits for its outcome.
func waitHeader() nats.Header {
	return nats.Header{subjects.HeaderWait: {subjects.WaitOriginateResponse}}
}

// pbxListener logs in to pbx with events on and its own ActionIDs map:
// it reads what the PBX sent, to compare the bridge's replies with.
func pbxListener(t *testing.T, pbx *amitest.Server) *amiproto.Client {
	t.Helper()
	c, err := amiproto.Dial(t.Context(), pbx.URL("admin", testSecret))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nextOriginateResponse is the next OriginateResponse c reads.
func nextOriginateResponse(t *testing.T, c *amiproto.Client) *amiproto.Message {
	t.Helper()
	timeout := time.After(waitTime)
	for {
		select {
		case ev := <-c.Events():
			if ev.EventName() == "OriginateResponse" {
				return ev
			}
		case <-timeout:
			t.Fatal("the PBX sent no OriginateResponse")
			return nil
		}
	}
}

// TestOriginateWait_ReplyCarriesTheOutcome: with Ami-Wait, an Originate
// is sent async and its reply holds the response and, in events, the
// OriginateResponse the PBX sent, success or failure, with the
// requester's ActionID (or none when it gave none).
func TestOriginateWait_ReplyCarriesTheOutcome(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{AnswerDelay: 50 * time.Millisecond, RecordReceived: true}))
	r.up()
	listener := pbxListener(t, r.pbx)
	waitSessions(t, r.pbx, perPBX+1)
	for _, tc := range []struct{ body, actionID, response, reason string }{
		{`{"Channel":"Local/echo@test","Application":"Echo","ActionID":"crm-1"}`, "crm-1", "Success", "4"},
		{`{"Channel":"Local/busy@test","Application":"Echo","Async":"yes","ActionID":"crm-2"}`, "crm-2", "Failure", "5"},
		{`{"Channel":"Local/echo@test","Application":"Echo"}`, "", "Success", "4"},
	} {
		m := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Originate"), tc.body, waitHeader())
		sent := nextOriginateResponse(t, listener)
		rb, raw := decodeReply(t, m)
		if rb.Error != nil || rb.Response["Message"] != "Originate successfully queued" || len(rb.Events) != 1 {
			t.Fatalf("%s: reply %s", tc.body, m.Data)
		}
		if _, ok := raw["complete"]; ok {
			t.Errorf("%s: a complete in the reply: %s", tc.body, m.Data)
		}
		ev := rb.Events[0]
		for _, k := range []string{"Event", "Response", "Reason", "Channel", "Uniqueid"} {
			if ev[k] != sent.Get(k) {
				t.Errorf("%s: event's %s is %v, the PBX sent %q", tc.body, k, ev[k], sent.Get(k))
			}
		}
		if ev["Response"] != tc.response || ev["Reason"] != tc.reason {
			t.Errorf("%s: outcome %v/%v, want %s/%s", tc.body, ev["Response"], ev["Reason"], tc.response, tc.reason)
		}
		id, has := ev["ActionID"]
		if tc.actionID == "" && has || tc.actionID != "" && (id != tc.actionID || rb.Response["ActionID"] != tc.actionID) {
			t.Errorf("%s: ActionIDs %v in the event, %v in the response, want %q", tc.body, id, rb.Response["ActionID"], tc.actionID)
		}
	}
	if n := bytes.Count(r.pbx.Received(), []byte("Async: true\r\n")); n != 2 {
		t.Errorf("the PBX got %d Originates with Async: true added, want 2", n)
	}
}

// TestOriginateWait_TimeoutIs504: no OriginateResponse within the
// request's timeout is a 504 that still carries Asterisk's response: the
// call was queued.
func TestOriginateWait_TimeoutIs504(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{AnswerDelay: time.Hour}))
	r.up()
	h := waitHeader()
	h.Set(subjects.HeaderTimeout, "300ms")
	start := time.Now()
	m := request(t, r.cc, subjects.Action("ami", "pbx1"), `{"Action":"Originate","Channel":"Local/echo@test","Application":"Echo","ActionID":"late"}`, h)
	rb, _ := decodeReply(t, m)
	if rb.Error == nil || rb.Error.Code != subjects.CodeTimeout || m.Header.Get(subjects.HeaderErrorCode) != "504" {
		t.Fatalf("reply %s", m.Data)
	}
	if rb.Response["Message"] != "Originate successfully queued" || rb.Response["ActionID"] != "late" || !strings.Contains(rb.Error.Message, "may still be placed") {
		t.Errorf("reply %s", m.Data)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("504 after %v, before the timeout", d)
	}
}

// TestOriginateWait_SessionFreeWhileWaiting: with one action session, a
// request sent after a waiting Originate is answered before the
// Originate's outcome comes: the session was released once the call was
// queued.
func TestOriginateWait_SessionFreeWhileWaiting(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{AnswerDelay: time.Second}), withServer(func(sc *ServerConfig) { sc.ActionSessions = 1 }))
	r.w.waitAllUp()
	originate := make(chan *nats.Msg, 1)
	// Both go on the generic subject, in order, to the one endpoint.
	inbox := nats.NewInbox()
	sub, err := r.cc.ChanSubscribe(inbox, originate)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	err = r.cc.PublishMsg(&nats.Msg{Subject: subjects.Action("ami", "pbx1"), Reply: inbox, Header: waitHeader(),
		Data: []byte(`{"Action":"Originate","Channel":"Local/echo@test","Application":"Echo","ActionID":"slow"}`)})
	if err != nil {
		t.Fatal(err)
	}
	ping := request(t, r.cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil)
	if rb, _ := decodeReply(t, ping); rb.Error != nil || rb.Response["Ping"] != "Pong" {
		t.Fatalf("Ping: %s", ping.Data)
	}
	select {
	case m := <-originate:
		t.Fatalf("the Originate was answered before the Ping: %s", m.Data)
	default:
	}
	select {
	case m := <-originate:
		if rb, _ := decodeReply(t, m); rb.Error != nil || len(rb.Events) != 1 || rb.Events[0]["ActionID"] != "slow" {
			t.Fatalf("Originate: %s", m.Data)
		}
	case <-time.After(waitTime):
		t.Fatal("no reply to the Originate")
	}
}

// TestOriginateWait_BadRequests: Ami-Wait only with its one value, on an
// Originate that is or may be made async.
func TestOriginateWait_BadRequests(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{RecordReceived: true}))
	r.w.waitAllUp()
	for _, tc := range []struct{ body, wait string }{
		{`{"Action":"Originate","Channel":"Local/echo@test","Application":"Echo","Async":"false"}`, "OriginateResponse"},
		{`{"Action":"Originate","Channel":"Local/echo@test","Application":"Echo","Async":"no"}`, "OriginateResponse"},
		{`{"Action":"Ping"}`, "OriginateResponse"},
		{`{"Action":"Originate","Channel":"Local/echo@test","Application":"Echo"}`, "Hangup"},
	} {
		m := request(t, r.cc, subjects.Action("ami", "pbx1"), tc.body, nats.Header{subjects.HeaderWait: {tc.wait}})
		if rb, _ := decodeReply(t, m); rb.Error == nil || rb.Error.Code != subjects.CodeBadRequest {
			t.Errorf("%s with %s: %s", tc.body, tc.wait, m.Data)
		}
	}
	if bytes.Contains(r.pbx.Received(), []byte("Originate")) {
		t.Errorf("a refused Originate reached the PBX:\n%s", r.pbx.Received())
	}
}

// TestOriginateWait_HA: with HA, every process's event session reads the
// PBX's events, so the active and the standby alike answer an Originate
// with its outcome. Requests go to the queue group until each process
// has served some.
func TestOriginateWait_HA(t *testing.T) {
	ns := startNATS(t, natsOptions{jetStream: true})
	cc := connect(t, ns)
	pbx := startPBX(t, amitest.Config{AnswerDelay: 20 * time.Millisecond})
	servers := []ServerConfig{fastServer("pbx1", pbx)}
	a, _ := startBridge(t, connect(t, ns), servers, haBridgeOptions("a", 0))
	waitStatus(t, a, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	b, _ := startBridge(t, connect(t, ns), servers, haBridgeOptions("b", 0))
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleStandby && allUp(st) })
	served := func(b *Bridge) uint64 { return b.Stats()[0].ActionLatency.Count }
	for i := 0; served(a) == 0 || served(b) == 0; i++ {
		if i == 64 {
			t.Fatalf("64 requests and a process served none: active %d, standby %d", served(a), served(b))
		}
		id := "ha-" + strconv.Itoa(i)
		m := request(t, cc, subjects.NamedAction("ami", "pbx1", "Originate"), `{"Channel":"Local/echo@test","Application":"Echo","ActionID":"`+id+`"}`, waitHeader())
		if rb, _ := decodeReply(t, m); rb.Error != nil || len(rb.Events) != 1 || rb.Events[0]["ActionID"] != id || rb.Events[0]["Response"] != "Success" {
			t.Fatalf("request %d: %s", i, m.Data)
		}
	}
}

// An Originate that waits for its outcome, with an idempotency key: the
// retry gets the first request's reply, the OriginateResponse in it,
// although that reply was sent after the handler returned; the PBX
// receives one Originate.
func TestOriginateWait_WithAnIdempotencyKey(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{AnswerDelay: 50 * time.Millisecond, RecordReceived: true}))
	r.up()
	hdr := waitHeader()
	hdr.Set(subjects.HeaderIdempotencyKey, "call-42")
	body := `{"Channel":"Local/echo@test","Application":"Echo","ActionID":"crm-42"}`
	first := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Originate"), body, hdr)
	rb, _ := decodeReply(t, first)
	if rb.Error != nil || len(rb.Events) != 1 || rb.Events[0]["Event"] != "OriginateResponse" {
		t.Fatalf("first reply %s", first.Data)
	}
	retry := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Originate"), body, hdr)
	if !bytes.Equal(retry.Data, first.Data) {
		t.Fatalf("retry's reply\n %s\nwant the first's\n %s", retry.Data, first.Data)
	}
	if n := bytes.Count(r.pbx.Received(), []byte("Action: Originate\r\n")); n != 1 {
		t.Fatalf("the PBX received %d Originates, want 1", n)
	}
}

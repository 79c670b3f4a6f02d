package bridge

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// logins counts the Login actions amitest read from every client.
func logins(pbx *amitest.Server) int {
	return strings.Count(strings.ToLower(string(pbx.Received())), "action: login\r\n")
}

// holdAction has heldRequest's action answered only once release is
// called (at the latest at cleanup, before the PBX closes).
func holdAction(t *testing.T) (answer func(*amitest.ResponseWriter), release func()) {
	ch := make(chan struct{})
	release = sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return func(w *amitest.ResponseWriter) {
		<-ch
		w.Success("Message", "done")
	}, release
}

// An action that Asterisk holds past its deadline leaves its session
// stuck: Asterisk runs a session's actions one at a time. The bridge
// checks that session even while requests keep coming, replaces it, and
// the requests go on succeeding on the other session and on the new one,
// instead of a 504 each for those that land on the stuck session.
func TestBridge_StuckActionSessionIsReplacedWhileRequestsKeepComing(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{RecordReceived: true}), withServer(func(sc *ServerConfig) {
		sc.ActionTimeout = 250 * time.Millisecond
		sc.PingInterval = 100 * time.Millisecond // overdue check: 200 ms
	}))
	cc, pbx, w := r.cc, r.pbx, r.w
	w.waitAllUp()
	waitSessions(t, pbx, perPBX)
	before := logins(pbx)

	answer, _ := holdAction(t)
	held := heldRequest(t, cc, pbx, "Hold", answer)
	const run = 2 * time.Second
	hdr := nats.Header{subjects.HeaderTimeout: {"3s"}} // far above the check: a Ping behind Hold fails by it
	ok, failed := 0, 0
	for end := time.Now().Add(run); time.Now().Before(end); {
		m, err := cc.RequestMsg(&nats.Msg{Subject: subjects.Action("ami", "pbx1"), Data: []byte(`{"Action":"Ping"}`), Header: hdr}, waitTime)
		switch {
		case err == nil && m.Header.Get(micro.ErrorCodeHeader) == "":
			ok++
		case err == nil: // a 503 from the stuck session, or a 504 behind it
			failed++
		case errors.Is(err, nats.ErrNoResponders): // between two instances of the service
			failed++
		default:
			t.Fatalf("Ping %d: %v %v", ok+failed+1, err, m)
		}
	}
	if m := <-held; m == nil || m.Header.Get(micro.ErrorCodeHeader) != "504" {
		t.Fatalf("held action's reply %v, want a 504", m)
	}
	t.Logf("%d Pings answered, %d failed in %v", ok, failed, run)
	if ok < 50 || failed > (ok+failed)/10 {
		t.Errorf("%d of %d Pings answered over %v, want at least 50 and 90%%", ok, ok+failed, run)
	}
	for {
		st := w.next()
		if allUp(st) && st.Sessions[1].Reconnects+st.Sessions[2].Reconnects > 0 {
			break
		}
	}
	// At least one: on a loaded machine a keepalive may replace another.
	if n := logins(pbx); n < before+1 {
		t.Errorf("the PBX saw no login after the stuck action")
	}
}

// A request that waited behind a held action until its requester gave up
// is never sent to Asterisk: on the generic subject, and on a per-action
// one, whose endpoint takes turns with the generic one on the session.
func TestBridge_RequestPastItsDeadlineIsNotSent(t *testing.T) {
	for _, tc := range []struct{ name, subject, late string }{
		{"Generic", subjects.Action("ami", "pbx1"), `{"Action":"UserEvent","UserEvent":"too-late"}`},
		{"PerAction", subjects.NamedAction("ami", "pbx1", "UserEvent"), `{"UserEvent":"too-late"}`},
	} {
		t.Run(tc.name, func(t *testing.T) { requestPastItsDeadline(t, tc.subject, tc.late) })
	}
}

func requestPastItsDeadline(t *testing.T, subject, late string) {
	r := newWorld(t, withPBX(amitest.Config{RecordReceived: true}), withServiceConn(),
		withServer(func(sc *ServerConfig) { sc.ActionSessions = 1 })) // so that the late request queues behind the held one
	cc, pbx, w, b := r.cc, r.pbx, r.w, r.b
	w.waitAllUp()
	// The session has read its ListCommands, so a named request does not
	// wait behind Hold for that.
	request(t, cc, subjects.NamedAction("ami", "pbx1", "Ping"), "", nil)
	answer, release := holdAction(t)
	held := heldRequest(t, cc, pbx, "Hold", answer)

	// The requester waits a little longer than its Ami-Timeout, so that
	// the deadline has surely passed in the bridge too (its arrival stamp
	// may lag the publish by a scheduling delay).
	_, err := cc.RequestMsg(&nats.Msg{Subject: subject, Data: []byte(late),
		Header: nats.Header{subjects.HeaderTimeout: {"100ms"}}}, 300*time.Millisecond)
	if !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("request behind the held action: %v, want the requester's timeout", err)
	}
	release()
	if m := <-held; m == nil || m.Header.Get(micro.ErrorCodeHeader) != "" {
		t.Fatalf("held action's reply %v", m)
	}
	// A request after it is run on the same session, once the late one
	// was handled: the PBX has then read all the bridge sent before.
	m := request(t, cc, subjects.Action("ami", "pbx1"), `{"Action":"UserEvent","UserEvent":"in-time"}`, nil)
	if m.Header.Get(micro.ErrorCodeHeader) != "" {
		t.Fatalf("request after: %s", m.Data)
	}
	wire := string(pbx.Received())
	if !strings.Contains(wire, "in-time") {
		t.Fatalf("the PBX never read the request after")
	}
	if strings.Contains(wire, "too-late") {
		t.Errorf("the PBX ran the request whose requester had given up")
	}
	if st := b.Stats()[0]; st.RequestsExpired != 1 || st.RequestsOverLimit != 0 {
		t.Errorf("stats: %d expired, %d over the limit; want 1 and 0", st.RequestsExpired, st.RequestsOverLimit)
	}
}

// What waits for a session is bounded: past MaxPendingRequests, the
// running one included, a request is dropped and counted.
func TestBridge_PendingLimitDropsAndCounts(t *testing.T) {
	const maxPending = 3
	r := newWorld(t, withPBX(amitest.Config{RecordReceived: true}), withServer(func(sc *ServerConfig) {
		sc.ActionSessions = 1
		sc.MaxPendingRequests = maxPending
	}))
	cc, pbx, w, b := r.cc, r.pbx, r.w, r.b
	w.waitAllUp()
	answer, release := holdAction(t)
	held := heldRequest(t, cc, pbx, "Hold", answer)

	replies, err := cc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	const sent = 20
	for range sent {
		if err := cc.PublishRequest(subjects.Action("ami", "pbx1"), replies.Subject, []byte(`{"Action":"UserEvent","UserEvent":"queued"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The held request counts: nats.go holds it until its handler returns.
	kept := maxPending - 1
	wantDropped := uint64(sent - kept)
	waitStats(t, b, 0, func(st Stats) bool { return st.RequestsOverLimit >= wantDropped })
	release()
	<-held
	for i := range kept {
		m, err := replies.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("reply %d of the %d kept: %v", i+1, kept, err)
		}
		if m.Header.Get(micro.ErrorCodeHeader) != "" {
			t.Fatalf("reply %d: %s", i+1, m.Data)
		}
	}
	// A request after them is run, so the PBX has read all before it.
	request(t, cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil)
	if m, err := replies.NextMsg(10 * time.Millisecond); err == nil {
		t.Errorf("a reply beyond the limit: %s", m.Data)
	}
	if n := strings.Count(string(pbx.Received()), "UserEvent: queued"); n != kept {
		t.Errorf("the PBX ran %d of the queued requests, want %d", n, kept)
	}
	if st := b.Stats()[0]; st.RequestsOverLimit != wantDropped || st.RequestsExpired != 0 {
		t.Errorf("stats: %d over the limit, %d expired; want %d and 0", st.RequestsOverLimit, st.RequestsExpired, wantDropped)
	}
}

// What is left of a request's deadline, after its wait for the session,
// bounds its wait for Asterisk: the requester gets its 504 when its own
// Ami-Timeout ends, not that long after the session was free.
func TestBridge_QueuedRequestKeepsItsDeadline(t *testing.T) {
	r := newWorld(t, withServiceConn(), withServer(func(sc *ServerConfig) { sc.ActionSessions = 1 }))
	cc, pbx, w, b := r.cc, r.pbx, r.w, r.b
	w.waitAllUp()
	pbx.NeverAnswer("Getvar")
	answer, release := holdAction(t)
	held := heldRequest(t, cc, pbx, "Hold", answer)

	const timeout, queued = time.Second, 600 * time.Millisecond
	start := time.Now()
	reply := make(chan *nats.Msg, 1)
	go func() {
		m, err := cc.RequestMsg(&nats.Msg{Subject: subjects.Action("ami", "pbx1"), Data: []byte(`{"Action":"Getvar","Variable":"X"}`),
			Header: nats.Header{subjects.HeaderTimeout: {timeout.String()}}}, waitTime)
		if err != nil {
			t.Errorf("request: %v", err)
		}
		reply <- m
	}()
	time.Sleep(queued) // the scenario: the request waits this long behind Hold
	release()
	<-held
	m := <-reply
	took := time.Since(start)
	if m == nil || m.Header.Get(micro.ErrorCodeHeader) != "504" {
		t.Fatalf("reply %v, want a 504", m)
	}
	if took > timeout+queued/2 {
		t.Errorf("the 504 came %v after the request, want about its Ami-Timeout of %v", took, timeout)
	}
	// The latency counts from arrival: Hold's at least queued, the
	// Getvar's at least its timeout, its wait for the session included.
	if h := b.Stats()[0].ActionLatency; h.Count != 2 || h.Sum < (timeout+queued).Seconds() {
		t.Errorf("action latency: %d requests, %.3fs in all; want 2 and at least %v", h.Count, h.Sum, timeout+queued)
	}
}

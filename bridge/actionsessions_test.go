package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// A slow action runs on an action session; the event session goes on
// publishing, and no session's keepalive takes the wait for a dead link.
// amitest holds a session's events while one of its actions runs, as
// Asterisk does (capture 17), so a bridge that ran actions on its event
// session would publish none of the markers while the action is held.
func TestBridge_SlowActionStallsNeitherEventsNorKeepalive(t *testing.T) {
	r := newWorld(t, withoutBridge())
	nc, cc, pbx, w := r.nc, r.cc, r.pbx, r.w
	pings := make(chan struct{}, 1024)
	pbx.HandleFunc("Ping", func(w *amitest.ResponseWriter, _ *amitest.Request) {
		select {
		case pings <- struct{}{}:
		default:
		}
		w.Success("Ping", "Pong", "Timestamp", "0")
	})
	sub := eventSub(t, cc, "ami")
	sc := fastServer("pbx1", pbx)
	sc.PingInterval = 20 * time.Millisecond
	b, _ := startBridge(t, nc, []ServerConfig{sc}, Options{})
	w.waitAllUp()
	waitSessions(t, pbx, perPBX)

	release := make(chan struct{})
	letGo := sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // before the PBX closes, which waits for the handler
	reply := heldRequest(t, cc, pbx, "SlowThing", func(w *amitest.ResponseWriter) {
		<-release
		w.Success("Message", "done")
	})
	const n = 200
	for i := 1; i <= n; i++ {
		pbx.Emit(userEvent("during", i))
	}
	seqs := newSeqChecker(t)
	for got := 0; got < n; {
		m, err := sub.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("%d of %d events published while the action is held: %v", got, n, err)
		}
		seqs.check(m)
		if m.Header.Get(subjects.HeaderEvent) == "UserEvent" {
			got++
		}
	}
	// Let the keepalives of the other sessions run many deadlines while
	// the action is still held.
	for len(pings) > 0 {
		<-pings
	}
	for range 20 {
		select {
		case <-pings:
		case <-time.After(waitTime):
			t.Fatal("no keepalive Ping while the action is held")
		}
	}
	for len(w.ch) > 0 {
		if st := w.next(); st.State != subjects.StateConnected {
			t.Fatalf("status while the action is held: %+v", st)
		}
	}
	letGo()
	m := <-reply
	if m == nil {
		t.FailNow()
	}
	if rep, _ := decodeReply(t, m); rep.Error != nil || rep.Response["Message"] != "done" {
		t.Fatalf("slow action reply %s", m.Data)
	}
	for _, ss := range b.Status()[0].Sessions {
		if ss.Reconnects != 0 || ss.State != subjects.StateConnected {
			t.Errorf("session %+v: the slow action cost a reconnect", ss)
		}
	}
}

// An idle action session that stops answering is found out by its own
// keepalive and replaced.
func TestBridge_ActionSessionKeepalive(t *testing.T) {
	r := newWorld(t, withServer(func(sc *ServerConfig) {
		sc.PingInterval = 20 * time.Millisecond
		sc.ActionSessions = 1
	}))
	pbx, w := r.pbx, r.w
	w.waitAllUp()
	pbx.NeverAnswer("Ping")
	for {
		st := w.next()
		if st.Sessions[1].State == subjects.StateDisconnected {
			if e := st.Sessions[1].Error; !strings.Contains(e, "keepalive") {
				t.Errorf("action session error %q", e)
			}
			break
		}
	}
	pbx.ClearFaults()
	if st := w.waitAllUp(); st.Sessions[1].Reconnects == 0 {
		t.Errorf("action session back without a reconnect counted: %+v", st.Sessions[1])
	}
}

// Two bridges for one PBX, one with a wrong secret: the misconfigured one
// never joins the queue group, so every request reaches the good one.
func TestBridge_MisconfiguredBridgeTakesNoRequests(t *testing.T) {
	r := newWorld(t, withoutBridge())
	good, bad, cc, pbx, w := r.nc, connect(t, r.ns), r.cc, r.pbx, r.w
	wrong := fastServer("pbx1", pbx)
	wrong.URL = pbx.URL("admin", "Wrong-Secret")
	startBridge(t, bad, []ServerConfig{wrong}, Options{})
	w.waitState(subjects.StateAuthFailed)
	startBridge(t, good, []ServerConfig{fastServer("pbx1", pbx)}, Options{})
	w.waitAllUp()
	for i := range 10 {
		m := request(t, cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil)
		if rep, _ := decodeReply(t, m); rep.Error != nil || rep.Response["Ping"] != "Pong" {
			t.Fatalf("Ping %d of 10: %s", i+1, m.Data)
		}
	}
}

// statsOf sums the endpoint stats of every instance of the service.
func statsOf(t *testing.T, nc *nats.Conn, instances int) micro.EndpointStats {
	t.Helper()
	var sum micro.EndpointStats
	for _, data := range serviceAnswers(t, nc, "STATS", instances) {
		var st micro.Stats
		if err := json.Unmarshal(data, &st); err != nil {
			t.Fatal(err)
		}
		for _, ep := range st.Endpoints {
			sum.NumRequests += ep.NumRequests
			sum.NumErrors += ep.NumErrors
			sum.ProcessingTime += ep.ProcessingTime
			if ep.LastError != "" {
				sum.LastError = ep.LastError
			}
		}
	}
	return sum
}

// serviceAnswers sends the service's $SRV.<verb> request and returns the
// bodies of n answers, one per instance.
func serviceAnswers(t *testing.T, nc *nats.Conn, verb string, n int) [][]byte {
	t.Helper()
	inbox := nats.NewInbox()
	replies, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer replies.Unsubscribe()
	if err := nc.PublishRequest("$SRV."+verb+"."+subjects.ServiceName, inbox, nil); err != nil {
		t.Fatal(err)
	}
	answers := make([][]byte, n)
	for i := range answers {
		m, err := replies.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("after %d of %d $SRV.%s answers: %v", i, n, verb, err)
		}
		answers[i] = m.Data
	}
	return answers
}

// The service stats count every request from its arrival to its reply:
// errors found at once (400, 403) and errors from the PBX (422) or its
// silence (504) alike, and the time the PBX took.
func TestBridge_MicroStatsCoverEveryReply(t *testing.T) {
	r := newWorld(t, withServer(func(sc *ServerConfig) { sc.ActionSessions = 1 })) // one instance, so the stats are one endpoint's
	cc, pbx, w := r.cc, r.pbx, r.w
	w.waitAllUp()
	const slow = 150 * time.Millisecond
	pbx.HandleFunc("Slow", func(w *amitest.ResponseWriter, _ *amitest.Request) {
		time.Sleep(slow) // the PBX's work, which the stats must include
		w.Success()
	})
	pbx.NeverAnswer("Getvar")
	reqs := []struct {
		body string
		hdr  nats.Header
		code int
	}{
		{`{"Action":"Ping"}`, nil, 0},
		{`{"Action":"Slow"}`, nil, 0},
		{`not json`, nil, 400},
		{`{"Action":"Logoff"}`, nil, 403},
		{`{"Action":"NoSuchThing"}`, nil, 422},
		{`{"Action":"Getvar","Variable":"X"}`, nats.Header{subjects.HeaderTimeout: {"50ms"}}, 504},
	}
	errs := 0
	for _, rq := range reqs {
		m := request(t, cc, subjects.Action("ami", "pbx1"), rq.body, rq.hdr)
		if got := m.Header.Get(micro.ErrorCodeHeader); got != map[bool]string{true: strconv.Itoa(rq.code), false: ""}[rq.code != 0] {
			t.Fatalf("%s: code %q, want %d", rq.body, got, rq.code)
		}
		if rq.code != 0 {
			errs++
		}
	}
	// micro counts a request when its handler returns, which may be just
	// after the requester has the reply.
	st := waitFor(t, func() micro.EndpointStats { return statsOf(t, cc, 1) },
		func(st micro.EndpointStats) bool { return st.NumRequests >= len(reqs) })
	if st.NumRequests != len(reqs) || st.NumErrors != errs {
		t.Errorf("stats: %d requests, %d errors; want %d and %d", st.NumRequests, st.NumErrors, len(reqs), errs)
	}
	if want := fmt.Sprint(subjects.CodeTimeout); len(st.LastError) < 3 || st.LastError[:3] != want {
		t.Errorf("last error %q, want the 504", st.LastError)
	}
	if st.ProcessingTime < slow+50*time.Millisecond {
		t.Errorf("processing time %v, below the PBX's %v and the 504's 50ms", st.ProcessingTime, slow)
	}
}

// An async Originate goes out on an action session, but its
// OriginateResponse arrives on the event session: it still carries the
// requester's ActionID, never the bridge's own.
func TestBridge_OriginateResponseCarriesTheRequestersActionID(t *testing.T) {
	r := newWorld(t)
	cc, pbx, w := r.cc, r.pbx, r.w
	w.waitAllUp()
	waitSessions(t, pbx, perPBX)
	sub, err := cc.SubscribeSync(subjects.Event("ami", "pbx1", "OriginateResponse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Flush(); err != nil {
		t.Fatal(err)
	}
	m := request(t, cc, subjects.Action("ami", "pbx1"),
		`{"Action":"Originate","Channel":"Local/burst@test","Application":"Wait","Data":"1","Async":"true","ActionID":"mine-1"}`, nil)
	if rep, _ := decodeReply(t, m); rep.Error != nil || rep.Response["ActionID"] != "mine-1" {
		t.Fatalf("Originate reply %s", m.Data)
	}
	ev, err := sub.NextMsg(waitTime)
	if err != nil {
		t.Fatalf("no OriginateResponse: %v", err)
	}
	var body map[string]any
	if err := json.Unmarshal(ev.Data, &body); err != nil {
		t.Fatal(err)
	}
	if body["ActionID"] != "mine-1" {
		t.Errorf("OriginateResponse ActionID %v, want the requester's mine-1: %s", body["ActionID"], ev.Data)
	}
}

// After Shutdown nothing the Bridge started is left running: every
// session's loop, client, keepalive and service, the publisher and the
// status ticker. Goroutines end a little after they are told to (a
// client's writer, a drained subscription): poll.
func TestBridge_ShutdownLeavesNoGoroutine(t *testing.T) {
	// Without JetStream: its async-publish reply subscription lives with
	// the NATS connection, which the caller owns, and the stream's
	// goroutines are the server's.
	r := newWorld(t, withoutBridge())
	nc, cc, pbx, w := r.nc, r.cc, r.pbx, r.w
	sc := fastServer("pbx1", pbx)
	sc.PingInterval = 10 * time.Millisecond
	// The test's first request starts its connection's reply
	// subscription: start it before counting.
	_, _ = cc.Request("warm.up", nil, waitTime)
	baseline := runtime.NumGoroutine()

	b, err := New(nc, []ServerConfig{sc}, Options{StatusInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.waitAllUp()
	waitSessions(t, pbx, perPBX)
	pbx.Emit(userEvent("x", 1))
	request(t, cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTime)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Shutdown, %d before Start:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// logoffs counts the Logoff actions the fake PBX received, from its own
// record, as logins (hang_test.go) counts the Logins.
func logoffs(pbx *amitest.Server) int {
	return bytes.Count(bytes.ToLower(pbx.Received()), []byte("action: logoff\r\n"))
}

// onDemandWorld is a world whose pbx1 has actions.idle_logoff set to idle
// and n action sessions, recording what the PBX receives (a withPBX in
// opts replaces that, and must record too); it returns once
// the PBX is up with its action sessions idle.
func onDemandWorld(t testing.TB, idle time.Duration, n int, opts ...worldOption) *world {
	t.Helper()
	opts = append([]worldOption{withPBX(amitest.Config{RecordReceived: true})}, opts...)
	opts = append(opts, withServer(func(sc *ServerConfig) {
		sc.ActionIdleLogoff, sc.ActionSessions = idle, n
	}))
	w := newWorld(t, opts...)
	w.waitIdle()
	return w
}

// waitIdle waits for a status of pbx1 connected with its action sessions
// idle, and for the PBX to have the event session alone.
func (w *world) waitIdle() subjects.PBXStatus {
	w.t.Helper()
	deadline := time.Now().Add(waitTime)
	for time.Now().Before(deadline) {
		st := w.w.next()
		if st.State == subjects.StateConnected && sessionStates(st) == "events:connected"+strings.Repeat(" action:idle", len(st.Sessions)-1) {
			waitSessions(w.t, w.pbx, 1)
			return st
		}
	}
	w.t.Fatal("no status with the action sessions idle in time")
	return subjects.PBXStatus{}
}

// sessionStates is a status's sessions as "role:state ...".
func sessionStates(st subjects.PBXStatus) string {
	var b strings.Builder
	for i, ss := range st.Sessions {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(ss.Role + ":" + ss.State)
	}
	return b.String()
}

// The action sessions start logged off, their endpoints registered; the
// first request logs one in and is answered, and the PBX is connected
// throughout.
func TestOnDemand_FirstRequestLogsIn(t *testing.T) {
	w := onDemandWorld(t, time.Hour, 2)
	if n := logins(w.pbx); n != 1 {
		t.Fatalf("logins at the PBX before any request: %d, want 1 (the event session)", n)
	}
	pingOK(t, w.cc)
	if n := logins(w.pbx); n != 2 {
		t.Errorf("logins at the PBX after the first request: %d, want 2", n)
	}
	if n := w.pbx.Sessions(); n != 2 {
		t.Errorf("sessions at the PBX: %d, want 2", n)
	}
	for {
		st := w.w.next()
		if st.State != subjects.StateConnected {
			t.Fatalf("PBX state %q while a session logs in: %+v", st.State, st)
		}
		if got := sessionStates(st); strings.Contains(got, "action:connected") {
			if got != "events:connected action:connected action:idle" && got != "events:connected action:idle action:connected" {
				t.Fatalf("sessions after one request: %s", got)
			}
			break
		}
	}
	// Later requests reuse the login.
	for range 5 {
		pingOK(t, w.cc)
	}
	if n := logins(w.pbx); n > 3 {
		t.Errorf("logins at the PBX after 6 requests: %d, want at most 3 (one per session)", n)
	}
}

// A session idle for the idle time logs off: the PBX receives a Logoff
// and holds the event session alone; the status says idle, the PBX stays
// connected, and the next request logs in again.
func TestOnDemand_IdleLogoff(t *testing.T) {
	w := onDemandWorld(t, 50*time.Millisecond, 1)
	pingOK(t, w.cc)
	var st subjects.PBXStatus
	loggedIn := false
	// Through the login and the logoff, the PBX stays connected.
statuses:
	for {
		st = w.w.next()
		if st.State != subjects.StateConnected {
			t.Fatalf("PBX state %q around an on-demand login and logoff: %+v", st.State, st)
		}
		switch sessionStates(st) {
		case "events:connected action:connected":
			loggedIn = true
		case "events:connected action:idle":
			if loggedIn {
				break statuses
			}
		}
	}
	waitSessions(t, w.pbx, 1) // the PBX saw the session go
	if n := logoffs(w.pbx); n != 1 {
		t.Errorf("Logoffs at the PBX: %d, want 1", n)
	}
	if st.Sessions[1].Error != "" {
		t.Errorf("an idle logoff is no error: %+v", st.Sessions[1])
	}
	if s := w.b.Stats()[0]; !s.Up {
		t.Errorf("Stats with the action session idle: %+v, want up", s)
	}
	pingOK(t, w.cc)
	if n := logins(w.pbx); n != 3 {
		t.Errorf("logins at the PBX: %d, want 3 (events, two on-demand logins)", n)
	}
}

// Concurrent first requests to a logged-off session make one login.
func TestOnDemand_ConcurrentFirstRequestsOneLogin(t *testing.T) {
	w := onDemandWorld(t, time.Hour, 1)
	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			m, err := w.cc.Request(subjects.Action("ami", "pbx1"), []byte(`{"Action":"Ping"}`), waitTime)
			if err != nil || !bytes.Contains(m.Data, []byte(`"Pong"`)) {
				t.Errorf("concurrent first request: %v %v", err, m)
			}
		})
	}
	wg.Wait()
	if got := logins(w.pbx); got != 2 {
		t.Errorf("logins at the PBX after %d concurrent first requests: %d, want 2 (events, one action session)", n, got)
	}
}

// A login refused on the first request answers it 503 with the reason;
// the status says so, and events go on being published.
func TestOnDemand_LoginFailureAnswers503(t *testing.T) {
	w := onDemandWorld(t, time.Hour, 1, withEvents())
	w.pbx.HandleFunc("Login", func(rw *amitest.ResponseWriter, _ *amitest.Request) { rw.Error("Authentication failed") })
	r, _ := decodeReply(t, request(t, w.cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil))
	if r.Error == nil || r.Error.Code != subjects.CodeUnavailable || !strings.Contains(r.Error.Message, "Authentication failed") {
		t.Fatalf("reply to a request whose login failed: %+v, want 503 with the PBX's reason", r.Error)
	}
	if strings.Contains(r.Error.Message, testSecret) {
		t.Fatalf("the secret in a reply: %s", r.Error.Message)
	}
	st := w.w.waitState(subjects.StateAuthFailed)
	if ss := st.Sessions[1]; ss.State != subjects.StateAuthFailed || !strings.Contains(ss.Error, "Authentication failed") {
		t.Errorf("action session after a failed login: %+v", ss)
	}
	if s := w.b.Stats()[0]; s.LoginFailures != 1 || s.Up {
		t.Errorf("Stats after a refused on-demand login: login failures %d, up %v; want 1, false", s.LoginFailures, s.Up)
	}
	w.pbx.Emit(userEvent("after", 1))
	for {
		m, err := w.events.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("no event published after the failed login: %v", err)
		}
		if m.Header.Get(subjects.HeaderEvent) == "UserEvent" {
			break
		}
	}
}

// An Originate with Ami-Wait and an idempotency key, as the first
// request of a logged-off session: the login comes first, the
// OriginateResponse (on the event session) reaches the reply, the retry
// gets the same reply and the PBX receives one Originate.
func TestOnDemand_OriginateWaitWithIdempotencyKey(t *testing.T) {
	w := onDemandWorld(t, time.Hour, 2, withPBX(amitest.Config{AnswerDelay: 50 * time.Millisecond, RecordReceived: true}))
	hdr := waitHeader()
	hdr.Set(subjects.HeaderIdempotencyKey, "call-42")
	body := `{"Channel":"Local/echo@test","Application":"Echo","ActionID":"crm-42"}`
	first := request(t, w.cc, subjects.NamedAction("ami", "pbx1", "Originate"), body, hdr)
	rb, _ := decodeReply(t, first)
	if rb.Error != nil || len(rb.Events) != 1 || rb.Events[0]["Event"] != "OriginateResponse" || rb.Events[0]["ActionID"] != "crm-42" {
		t.Fatalf("first reply %s", first.Data)
	}
	retry := request(t, w.cc, subjects.NamedAction("ami", "pbx1", "Originate"), body, hdr)
	if !bytes.Equal(retry.Data, first.Data) {
		t.Fatalf("retry's reply\n %s\nwant the first's\n %s", retry.Data, first.Data)
	}
	if n := bytes.Count(w.pbx.Received(), []byte("Action: Originate\r\n")); n != 1 {
		t.Fatalf("the PBX received %d Originates, want 1", n)
	}
	if n := logins(w.pbx); n < 2 {
		t.Fatalf("logins at the PBX: %d, want the event session's and an action session's", n)
	}
}

// BenchmarkOnDemandFirstRequest is a Ping request's round trip on a
// session logged in (logged-in) and on one logged off, whose request logs
// it in first (first-request): their difference is what the first request
// after an idle time pays. The logoff between requests is not timed.
func BenchmarkOnDemandFirstRequest(b *testing.B) {
	ping := []byte(`{"Action":"Ping"}`)
	run := func(b *testing.B, w *world, loggedOff bool) {
		b.ReportAllocs()
		subject := subjects.Action("ami", "pbx1")
		for b.Loop() {
			if loggedOff {
				b.StopTimer()
				waitSessions(b, w.pbx, 1)
				b.StartTimer()
			}
			m, err := w.cc.Request(subject, ping, waitTime)
			if err != nil || !bytes.Contains(m.Data, []byte(`"Pong"`)) {
				b.Fatalf("Ping: %v %v", err, m)
			}
		}
	}
	b.Run("logged-in", func(b *testing.B) {
		w := newWorld(b, withServer(func(sc *ServerConfig) { sc.ActionSessions = 1 }))
		w.w.waitAllUp()
		waitSessions(b, w.pbx, 2)
		run(b, w, false)
	})
	b.Run("first-request", func(b *testing.B) {
		// Idle for 1ns: the session logs off as soon as a request ends.
		run(b, onDemandWorld(b, time.Nanosecond, 1), true)
	})
}

// PBXes whose action sessions are on demand share one instance of the
// service (service.go, sharedService), beside the per-PBX instance of a
// PBX whose sessions stay logged in: its endpoints name their PBX and
// count that PBX's requests, and at Shutdown every one leaves the queue
// group with the side subscriptions that stamp arrivals, so requesters
// get no responders at once.
func TestOnDemand_OneSharedInstance(t *testing.T) {
	lazy := []string{"lazy1", "lazy2"}
	tw := newWorld(t, withServiceConn(), watching(lazy...), withServers(func(w *world) []ServerConfig {
		servers := []ServerConfig{fastServer("pbx1", w.pbx)}
		for _, name := range lazy {
			sc := fastServer(name, startPBX(t, amitest.Config{}))
			sc.ActionIdleLogoff, sc.ActionSessions = time.Hour, 2
			servers = append(servers, sc)
		}
		return servers
	}))
	tw.w.waitAllUp()
	for _, name := range lazy { // up, their endpoints registered
		waitFor(t, tw.watch(name).next, func(st subjects.PBXStatus) bool {
			return sessionStates(st) == "events:connected action:idle action:idle"
		})
	}
	cc := tw.cc

	// Two instances: pbx1's, and the shared one, which no PBX names.
	var shared micro.Info
	for _, info := range serviceInfos(t, cc, 2) {
		switch info.Metadata["server"] {
		case "pbx1":
		case "":
			shared = info
		default:
			t.Fatalf("an instance of its own for %s: %+v", info.Metadata["server"], info)
		}
	}
	perServer := map[string]int{}
	for _, ep := range shared.Endpoints {
		perServer[ep.Metadata["server"]]++
		if ep.QueueGroup != subjects.QueueGroup {
			t.Errorf("endpoint %s in queue group %q", ep.Name, ep.QueueGroup)
		}
	}
	if perServer["lazy1"] != 2*2 || perServer["lazy2"] != 2*2 || len(perServer) != 2 {
		t.Fatalf("endpoints of the shared instance per PBX: %v, want 4 (2 sessions, 2 subjects) for each PBX on demand", perServer)
	}
	if _, err := cc.Request("$SRV.PING."+subjects.ServiceName+"."+shared.ID, nil, waitTime); err != nil {
		t.Fatalf("the shared instance: %v", err)
	}
	extra, err := cc.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.PublishRequest("$SRV.PING."+subjects.ServiceName, extra.Subject, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := extra.NextMsg(waitTime); err != nil {
			t.Fatalf("PING answer %d: %v", i, err)
		}
	}
	if m, err := extra.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("a third instance answers PING: %s", m.Data)
	}

	// Each PBX's endpoints count its own requests.
	for i, name := range lazy {
		for range i + 1 {
			if m := request(t, cc, subjects.Action("ami", name), `{"Action":"Ping"}`, nil); m.Header.Get(micro.ErrorCodeHeader) != "" {
				t.Fatalf("%s: %q %s", name, m.Header.Get(micro.ErrorCodeHeader), m.Data)
			}
		}
	}
	counts := func() map[string]int {
		n := map[string]int{}
		var st micro.Stats
		m, err := cc.Request("$SRV.STATS."+subjects.ServiceName+"."+shared.ID, nil, waitTime)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.Fatal(err)
		}
		for _, ep := range st.Endpoints {
			n[ep.Name] += ep.NumRequests
		}
		return n
	}
	waitFor(t, counts, func(n map[string]int) bool { return n["lazy1"] == 1 && n["lazy2"] == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := tw.b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range lazy {
		expectNoResponders(t, cc, name)
	}
}

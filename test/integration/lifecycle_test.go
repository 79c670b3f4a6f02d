package integration

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// asyncRequest sends a request and returns a channel that receives its
// reply, or nil on a NATS error (reported on the test).
func (w *world) asyncRequest(server, body string, hdr ...string) <-chan *nats.Msg {
	ch := make(chan *nats.Msg, 1)
	m := nats.NewMsg("ami." + server + ".action")
	m.Data = []byte(body)
	for i := 0; i+1 < len(hdr); i += 2 {
		m.Header.Set(hdr[i], hdr[i+1])
	}
	go func() {
		resp, err := w.nc.RequestMsg(m, replyTimeout)
		if err != nil {
			w.t.Errorf("request %s %s: %v", m.Subject, body, err)
		}
		ch <- resp
	}()
	return ch
}

// awaitReply waits for an asyncRequest's reply and checks it.
func (w *world) awaitReply(server string, ch <-chan *nats.Msg) *reply {
	w.t.Helper()
	m := <-ch
	if m == nil {
		w.t.FailNow()
	}
	return w.checkReply(server, m)
}

// holdAction makes p answer nothing to action, and report on the returned
// channel each time one arrives: a request in flight the test can see.
func holdAction(p *pbx, action string) <-chan struct{} {
	arrived := make(chan struct{}, 16)
	p.HandleFunc(action, func(*amitest.ResponseWriter, *amitest.Request) {
		arrived <- struct{}{}
	})
	return arrived
}

func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(replyTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// seqOf returns the Ami-Seq of an event message.
func seqOf(t *testing.T, m *nats.Msg) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(m.Header.Get("Ami-Seq"), 10, 64)
	if err != nil {
		t.Fatalf("%s: Ami-Seq %q: %v", m.Subject, m.Header.Get("Ami-Seq"), err)
	}
	return n
}

// TestReconnect_PBXRestarts drops the bridge's AMI session, first by
// dropping every connection of the PBX and then by restarting the PBX on
// the same port. Each time the status goes disconnected then connected,
// the pending action gets a 503, and events keep flowing with Ami-Seq
// continuing, never reset, with no gap.
func TestReconnect_PBXRestarts(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	p := w.startPBX("rc", amitest.Config{Profile: amitest.Asterisk22})
	held := holdAction(p, "ItHold")
	w.startBridge(w.config(w.serverFor("rc", p, viaEnv)))
	w.waitReady("rc")

	restarts := []struct {
		name string
		do   func()
	}{
		{"DropConnections", p.DropConnections},
		{"CloseAndRestartOnSamePort", func() {
			p.restart()
			// The restarted server is a new amitest.Server.
			held = holdAction(p, "ItHold")
		}},
	}
	for round, r := range restarts {
		tag := "before-" + r.name
		p.emit("ItMark", "Tag", tag)
		_, before := w.events.waitFor(t, 0, eventTimeout, "ItMark "+tag, func(m *nats.Msg) bool {
			return m.Subject == "ami.rc.event.ItMark" && strings.Contains(string(m.Data), tag)
		})
		seqBefore := seqOf(t, before)

		pending := w.asyncRequest("rc", `{"Action":"ItHold"}`)
		waitSignal(t, held, "ItHold to reach the PBX")
		statusMark := w.status.len()
		eventMark := w.events.len()
		r.do()

		rep := w.awaitReply("rc", pending)
		wantCode(t, rep, 503)
		i, _ := w.waitState("rc", statusMark, readyTimeout, "disconnected")
		_, st := w.waitState("rc", i+1, readyTimeout, "connected")
		if n, _ := st.raw["reconnects"].(float64); int(n) != round+1 {
			t.Errorf("%s: status reconnects = %v, want %d", r.name, st.raw["reconnects"], round+1)
		}
		// Wait until the new session takes events, then send one.
		w.waitEvent(eventMark, "ami.rc.event.SuccessfulAuth")
		tag = "after-" + r.name
		p.emit("ItMark", "Tag", tag)
		_, after := w.events.waitFor(t, eventMark, eventTimeout, "ItMark "+tag, func(m *nats.Msg) bool {
			return m.Subject == "ami.rc.event.ItMark" && strings.Contains(string(m.Data), tag)
		})
		if s := seqOf(t, after); s <= seqBefore {
			t.Errorf("%s: Ami-Seq %d after the reconnect, %d before: it must continue, not restart", r.name, s, seqBefore)
		}
		wantSuccess(t, w.request("rc", `{"Action":"Ping"}`))
	}
	states := w.statesOf("rc", 0)
	t.Logf("states: %v", states)
	var seqs []uint64
	for _, m := range w.events.snapshot() {
		seqs = append(seqs, seqOf(t, m))
	}
	wantSeqFromOne(t, "rc", seqs)
}

// TestIndependence_OnePBXDownOthersFlow runs a bridge for a PBX that
// works next to one where nothing listens, one that accepts and never
// answers, and one that refuses the secret. The working one is connected,
// flows and answers as if alone; the others report their state with an
// error and are in no queue group (NATS answers "no responders" at once);
// once a PBX appears at the dead address, it is
// bridged too.
func TestIndependence_OnePBXDownOthersFlow(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	up := w.startPBX("up", amitest.Config{Profile: amitest.Asterisk22})
	refusing := w.startPBX("refusing", amitest.Config{Profile: amitest.Asterisk13, AuthFailDelay: -1})
	dead, deadSecret := deadAddr(t), w.newSecret("dead")
	wrong := w.newSecret("wrong")
	cfg := w.config(
		w.serverAt("silent", silentAddr(t), w.newSecret("silent"), viaURL),
		w.serverAt("dead", dead, deadSecret, viaFile),
		w.serverAt("refusing", refusing.Addr(), wrong, viaEnv),
		w.serverFor("up", up, viaURL),
	)
	begin := time.Now()
	w.startBridge(cfg)
	w.waitReady("up")
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("the working PBX took %v to be bridged", d)
	}

	_, st := w.waitState("refusing", 0, readyTimeout, "auth_failed")
	if st.Error == "" {
		t.Error("auth_failed status without an error")
	}
	_, st = w.waitState("dead", 0, readyTimeout, "disconnected")
	if st.Error == "" {
		t.Error("disconnected status without an error")
	}
	_, st = w.waitState("silent", 0, readyTimeout, "connecting", "disconnected")

	const n = 200
	for i := range n {
		up.emit("ItFlow", "Index", strconv.Itoa(i))
	}
	for _, server := range []string{"silent", "dead", "refusing"} {
		w.wantNoResponders(server)
	}
	wantSuccess(t, w.request("up", `{"Action":"Ping"}`))
	w.events.waitFor(t, 0, eventTimeout, "ItFlow #"+strconv.Itoa(n-1), func(m *nats.Msg) bool {
		return m.Subject == "ami.up.event.ItFlow" && strings.Contains(string(m.Data), `"Index":"`+strconv.Itoa(n-1)+`"`)
	})
	var idx []string
	for _, m := range w.events.snapshot() {
		if m.Subject == "ami.up.event.ItFlow" {
			f, err := parseFields(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			idx = append(idx, f.value("Index"))
		}
	}
	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	if !slices.Equal(idx, want) {
		t.Errorf("ItFlow indexes %v, want 0..%d in order", idx, n-1)
	}

	// A PBX comes up at the dead address: it is bridged without a restart.
	late := &pbx{name: "dead", t: t, cfg: amitest.Config{Profile: amitest.Asterisk22, Addr: dead}}
	late.cfg.Users = map[string]amitest.User{amiUser: {Secret: deadSecret, Write: true}}
	late.start()
	mark := w.status.len()
	w.waitState("dead", mark, readyTimeout, "connected")
	wantSuccess(t, w.request("dead", `{"Action":"Ping"}`))
	for _, s := range w.statesOf("up", 0) {
		if s != "connecting" && s != "connected" {
			t.Errorf("the working PBX went %s", s)
		}
	}
}

// TestShutdown_SIGTERMIsGraceful sends SIGTERM while an action is in
// flight: the action is still answered, the PBX gets a Logoff, the last
// status is "stopped", and the exit code is 0.
func TestShutdown_SIGTERMIsGraceful(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	p := w.startPBX("gs", amitest.Config{Profile: amitest.Asterisk22})
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	p.HandleFunc("ItSlow", func(rw *amitest.ResponseWriter, _ *amitest.Request) {
		entered <- struct{}{}
		<-release
		rw.Success("Message", "finished")
	})
	logoff := make(chan struct{}, 1)
	p.HandleFunc("Logoff", func(rw *amitest.ResponseWriter, _ *amitest.Request) {
		select { // one per AMI session of the bridge
		case logoff <- struct{}{}:
		default:
		}
		rw.Respond("Goodbye", "Message", "Thanks for all the fish.")
		rw.CloseAfter()
	})
	b := w.startBridge(w.config(w.serverFor("gs", p, viaURL)))
	w.waitReady("gs")

	pending := w.asyncRequest("gs", `{"Action":"ItSlow","ActionID":"in-flight"}`)
	waitSignal(t, entered, "ItSlow to reach the PBX")
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	b.log.waitFor(t, "shutting down", readyTimeout, b.done)
	if b.exited() {
		t.Fatal("ami-bridge exited before its in-flight action was answered")
	}
	close(release)

	r := w.awaitReply("gs", pending)
	wantSuccess(t, r)
	if r.Response.value("Message") != "finished" || r.Response.value("ActionID") != "in-flight" {
		t.Errorf("in-flight reply = %v", r.Response)
	}
	if code := b.wait(exitTimeout); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	select {
	case <-logoff:
	default:
		t.Error("the PBX got no Logoff")
	}
	// The process has exited: nothing can follow the stopped status.
	i, _ := w.waitState("gs", 0, eventTimeout, "stopped")
	if after := w.statesOf("gs", i+1); len(after) > 0 {
		t.Errorf("states %v after stopped", after)
	}
	if !strings.Contains(string(b.log.Bytes()), "stopped") {
		t.Error("no \"stopped\" line in the log")
	}
}

// TestNATSOutage_ReadingNeverStalls stops the NATS server under a running
// bridge while its PBX sends a burst of about 1.3 MB. The PBX drops a
// session that does not read for 100 ms, as Asterisk does: it must keep
// the bridge's session. The burst waits in the bridge and arrives in
// order, numbered without a gap, once NATS is back.
func TestNATSOutage_ReadingNeverStalls(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	var closed atomic.Int32
	p := w.startPBX("outage", amitest.Config{
		Profile:      amitest.Asterisk22,
		WriteTimeout: 100 * time.Millisecond,
		Logf: func(format string, args ...any) {
			if strings.HasSuffix(format, "closed") {
				closed.Add(1)
			}
		},
	})
	b := w.startBridge(w.config(w.serverFor("outage", p, viaURL)))
	w.waitReady("outage")
	p.emit("ItBefore")
	w.waitEvent(0, "ami.outage.event.ItBefore")

	reconnected := make(chan struct{}, 1)
	w.nc.SetReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} })
	start := w.restartNATS()
	// Events sent before the bridge notices the outage may go to the dead
	// socket; the contract is about an outage the bridge knows of.
	b.log.waitFor(t, "NATS disconnected", readyTimeout, b.done)

	const n = 3000
	pad := strings.Repeat("x", 300)
	for i := range n {
		p.emit("ItDuring", "Index", strconv.Itoa(i), "Pad", pad)
	}
	start()
	waitSignal(t, reconnected, "the test client to reconnect to NATS")
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p.emit("ItAfter")
	w.events.waitFor(t, 0, readyTimeout, "ItAfter", func(m *nats.Msg) bool {
		return m.Subject == "ami.outage.event.ItAfter"
	})
	if c := closed.Load(); c != 0 {
		t.Errorf("the PBX dropped %d session(s): the bridge stopped reading during the NATS outage", c)
	}
	var seqs []uint64
	var during []string
	for _, m := range w.events.snapshot() {
		seqs = append(seqs, seqOf(t, m))
		if m.Subject == "ami.outage.event.ItDuring" {
			f, err := parseFields(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			during = append(during, f.value("Index"))
		}
	}
	wantSeqFromOne(t, "outage", seqs)
	if len(during) != n {
		t.Fatalf("%d of the %d events sent during the outage arrived", len(during), n)
	}
	for i, v := range during {
		if v != strconv.Itoa(i) {
			t.Fatalf("event #%d of the outage has Index %s", i, v)
		}
	}
	wantSuccess(t, w.request("outage", `{"Action":"Ping"}`))
	// Stop before the cleanup stops the restarted NATS server.
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

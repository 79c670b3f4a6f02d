package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// The soak test's knobs.
const (
	soakDefaultDuration = 2 * time.Minute
	// At least a minute: the leak check compares the end with the RSS at
	// soakBaselineAt, and the schedule needs a restart and the NATS
	// outage before the end.
	soakMinDuration = time.Minute
	soakMaxDuration = 30 * time.Minute

	soakCallRate     = 100 // calls per second per PBX: 2,200 events/s
	soakEventsInCall = 22  // events of one generated call
	soakChannels     = 8   // fake live channels of each PBX

	soakRestartEvery = 20 * time.Second
	soakFirstRestart = 15 * time.Second
	soakBaselineAt   = 20 * time.Second // the RSS the end is compared with
	// From the NATS shutdown to its restart. The bridge's nats.go retries
	// at once, then every 2 s; the test's client every 20 ms. Restarting
	// halfway between two attempts of the bridge lets the client
	// resubscribe before the bridge flushes what it held.
	soakNATSOutage = 3 * time.Second
	// Between two requests of one requester: about 50 requests/s per PBX.
	soakRequestEvery = 20 * time.Millisecond

	// Events a PBX had queued to the bridge when its connection went are
	// lost with it (Asterisk does the same). More than two seconds of
	// the generator's output would mean the bridge was that far behind.
	soakMaxLostPerRestart = 2 * soakCallRate * soakEventsInCall

	soakMaxFailures = 20 // failures reported one by one; the rest are counted
)

// TestSoak runs the daemon for AMI_SOAK_DURATION (default 2m, at most 30m)
// with two PBXes, one Asterisk 22 and one Asterisk 13, each making 100
// calls a second (2,200 events/s). Meanwhile a subscriber on
// ami.*.event.> checks that each server's Ami-Seq goes up by one from
// event to event; one requester per PBX sends Ping, CoreShowChannels and
// Command in a loop and checks every reply, allowing a 503 or a NATS error
// only while that PBX or NATS is down; every 20 s one PBX drops its
// connections or is closed and restarted on the same port; once, NATS
// stops for 3 s; the daemon's VmRSS is sampled every second.
//
// The generator of a PBX is stopped just before its restart, so that the
// events of each AMI session can be counted: all of those of the last
// session must arrive, and those of an ended one may miss only what the
// PBX had queued when the connection went. Before the NATS outage both
// generators stop until every event has arrived, since core NATS loses
// what is published into a connection that is going away, and start
// again once the bridge knows NATS is gone: every event sent during the
// outage must arrive. At the end the final status of each server must
// show no dropped event and the last Ami-Seq the subscriber saw, the RSS
// must be at most twice the one at 20 s, the open files about the same
// as at the start, and SIGTERM must end the process with 0; its log must
// hold no secret, data race or panic.
//
// It runs only with AMI_SOAK=1. Under -race the daemon is a race build
// too, whose RSS is only logged; without -race it is checked:
//
//	AMI_SOAK=1 AMI_SOAK_DURATION=10m go test -run TestSoak -v -count=1 -timeout 20m ./test/integration/
func TestSoak(t *testing.T) {
	if os.Getenv("AMI_SOAK") != "1" {
		t.Skip("set AMI_SOAK=1 to run the soak test")
	}
	d := soakDuration(t)
	// The final drain and the shutdown take a few seconds; a slow machine
	// more.
	if dl, ok := t.Deadline(); ok && time.Until(dl) < d+2*time.Minute {
		t.Fatalf("the test deadline is %v away, too close for a %v soak: give go test -timeout %v",
			time.Until(dl).Round(time.Second), d, d+5*time.Minute)
	}
	sk := newSoak(t)
	sk.run(d)
}

// soakDuration reads AMI_SOAK_DURATION, bounded to [soakMinDuration,
// soakMaxDuration].
func soakDuration(t *testing.T) time.Duration {
	d := soakDefaultDuration
	if v := os.Getenv("AMI_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("AMI_SOAK_DURATION=%q: %v", v, err)
		}
	}
	if b := min(max(d, soakMinDuration), soakMaxDuration); b != d {
		t.Logf("AMI_SOAK_DURATION %v is out of [%v, %v]: running %v", d, soakMinDuration, soakMaxDuration, b)
		d = b
	}
	return d
}

// soak is the state of one soak run.
type soak struct {
	t       *testing.T
	w       *world
	b       *bridgeProc
	servers []*soakServer
	byName  map[string]*soakServer // read-only once the subscriber runs
	excuses excuses

	reqOK, req503, reqNATSErr atomic.Int64

	mu       sync.Mutex
	failures int
	ended    bool // the test is over: failures are no longer reported
}

// soakServer is one PBX of the soak and what is known of its events.
type soakServer struct {
	name  string
	p     *pbx
	tally *seqTally

	// The generator and the counts below belong to the test goroutine.
	gen       *amitest.Calls
	stopGen   context.CancelFunc
	generated []int64 // call events generated, per AMI session of the bridge
	restarts  int
}

func newSoak(t *testing.T) *soak {
	// The world's own event inbox would keep every event of the run.
	w := newWorldNoEvents(t, natsOptions{})
	sk := &soak{t: t, w: w, byName: map[string]*soakServer{}}
	t.Cleanup(func() {
		sk.mu.Lock()
		defer sk.mu.Unlock()
		sk.ended = true
		if sk.failures > soakMaxFailures {
			t.Errorf("%d more failures not shown", sk.failures-soakMaxFailures)
		}
	})
	for _, c := range []struct {
		name    string
		profile amitest.Profile
	}{
		{"soak22", amitest.Asterisk22},
		{"soak13", amitest.Asterisk13},
	} {
		s := &soakServer{
			name:      c.name,
			p:         w.startPBX(c.name, amitest.Config{Profile: c.profile, Channels: soakChannels}),
			tally:     newSeqTally(),
			generated: []int64{0},
		}
		sk.servers = append(sk.servers, s)
		sk.byName[c.name] = s
	}
	return sk
}

// fail reports a failure seen by any goroutine, the first soakMaxFailures
// of them in full.
func (sk *soak) fail(format string, args ...any) {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	if sk.ended {
		return
	}
	sk.failures++
	if sk.failures <= soakMaxFailures {
		sk.t.Errorf(format, args...)
	}
}

func (sk *soak) run(d time.Duration) {
	t, w := sk.t, sk.w
	sub, err := w.nc.Subscribe("ami.*.event.>", sk.onEvent)
	if err != nil {
		t.Fatalf("subscribe ami.*.event.>: %v", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s22, s13 := sk.servers[0], sk.servers[1]
	sk.b = w.startBridge(w.config(w.serverFor(s22.name, s22.p, viaURL), w.serverFor(s13.name, s13.p, viaEnv)))
	w.waitConnected(s22.name, s13.name)
	for _, s := range sk.servers {
		s.tally.waitSessions(t, s.name, 1, readyTimeout)
	}
	pid := sk.b.cmd.Process.Pid
	fdStart := countFDs(t, pid)
	threadsStart := sk.procStatus("Threads")

	begin := time.Now()
	rss := startRSSSampler(pid, time.Second)
	for _, s := range sk.servers {
		s.startCalls()
	}
	stopReq := make(chan struct{})
	var reqWG sync.WaitGroup
	for _, s := range sk.servers {
		reqWG.Add(1)
		go func() {
			defer reqWG.Done()
			sk.requester(s, stopReq)
		}()
	}
	// Also when the test fails halfway.
	stopRequesters := sync.OnceFunc(func() {
		close(stopReq)
		reqWG.Wait()
	})
	t.Cleanup(stopRequesters)

	for _, st := range sk.schedule(d) {
		// The schedule is the test's own clock: nothing to wait on.
		time.Sleep(time.Until(begin.Add(st.at)))
		t.Logf("%5.1fs: %s", time.Since(begin).Seconds(), st.what)
		st.do()
	}
	time.Sleep(time.Until(begin.Add(d)))

	stopRequesters()
	for _, s := range sk.servers {
		s.stopCalls(sk)
	}
	for _, s := range sk.servers {
		last := len(s.generated) - 1
		s.tally.waitCalls(t, s.name, last, s.generated[last], eventTimeout)
	}
	samples := rss.finish()
	rssEnd := sk.procStatus("VmRSS")
	fdEnd := countFDs(t, pid)
	threadsEnd := sk.procStatus("Threads")

	mark := w.status.len()
	if code := sk.b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	// The stopped status follows the last event on the bridge's connection.
	var perServer []string
	for _, s := range sk.servers {
		perServer = append(perServer, sk.checkServer(s, mark))
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Errorf("unsubscribe: %v", err)
	}
	base, peak := rssBaseline(samples, soakBaselineAt), rssEnd
	for _, x := range samples {
		peak = max(peak, x.kib)
	}
	switch {
	case raceEnabled:
		// A race build's memory grows with the detector's own state: it
		// says nothing of a leak in the daemon.
		t.Log("race build: VmRSS logged, not checked")
	case base == 0:
		t.Errorf("no RSS sample at %v of the run", soakBaselineAt)
	case rssEnd > 2*base:
		t.Errorf("VmRSS %d KiB at the end, %d KiB at %v: more than doubled, a leak", rssEnd, base, soakBaselineAt)
	}
	// A socket per PBX and one to NATS, each replaced at a reconnect: a
	// few more than at the start means one leaks at every reconnect.
	if fdEnd > fdStart+3 {
		t.Errorf("%d open files at the end, %d at the start", fdEnd, fdStart)
	}
	restarts := 0
	for _, s := range sk.servers {
		restarts += s.restarts
	}
	t.Logf("soak %v at %d calls/s per PBX: %s; requests: %d ok, %d 503 and %d NATS errors while down; "+
		"%d PBX restarts, 1 NATS outage of %v; VmRSS KiB: %d at %v, %d at the end, %d max; open files %d→%d; threads %d→%d",
		d, soakCallRate, strings.Join(perServer, "; "), sk.reqOK.Load(), sk.req503.Load(), sk.reqNATSErr.Load(),
		restarts, soakNATSOutage, base, soakBaselineAt, rssEnd, peak, fdStart, fdEnd, threadsStart, threadsEnd)
}

// checkServer checks the events of s against its generators and its
// final status, published at or after index mark of the status inbox, and
// returns its part of the summary.
func (sk *soak) checkServer(s *soakServer, mark int) string {
	t := sk.t
	_, st := sk.w.waitState(s.name, mark, eventTimeout, "stopped")
	tl := s.tally
	tl.mu.Lock()
	defer tl.mu.Unlock()
	num := func(key string) uint64 {
		n, ok := st.raw[key].(float64)
		if !ok {
			t.Errorf("%s: final status without %s: %v", s.name, key, st.raw)
		}
		return uint64(n)
	}
	if n := num("events_dropped"); n != 0 {
		t.Errorf("%s: final status events_dropped = %d, want 0", s.name, n)
	}
	if n := num("last_seq"); n != tl.last {
		t.Errorf("%s: final status last_seq = %d, the subscriber's last Ami-Seq %d", s.name, n, tl.last)
	}
	if n := num("events_published"); n != tl.last {
		t.Errorf("%s: final status events_published = %d, last Ami-Seq %d", s.name, n, tl.last)
	}
	if uint64(tl.events) != tl.last {
		t.Errorf("%s: %d events arrived, last Ami-Seq %d", s.name, tl.events, tl.last)
	}
	if len(tl.calls) != len(s.generated) {
		t.Errorf("%s: %d AMI sessions seen in the events, %d expected (%d restarts)", s.name, len(tl.calls), len(s.generated), s.restarts)
	}
	var generated, arrived, lost int64
	for i, g := range s.generated {
		generated += g
		if i >= len(tl.calls) {
			continue
		}
		a := tl.calls[i]
		arrived += a
		switch {
		case a > g:
			t.Errorf("%s: session %d: %d call events arrived, %d generated", s.name, i+1, a, g)
		case i == len(s.generated)-1 && a != g:
			t.Errorf("%s: last session: %d of %d call events arrived", s.name, a, g)
		case g-a > soakMaxLostPerRestart:
			t.Errorf("%s: session %d lost %d of its %d call events when its connection went", s.name, i+1, g-a, g)
		}
		lost += g - a
	}
	return fmt.Sprintf("%s %d events (%d of %d generated call events, %d lost in %d restarts)",
		s.name, tl.events, arrived, generated, lost, s.restarts)
}

// procStatus returns a field of the daemon's /proc/<pid>/status.
func (sk *soak) procStatus(field string) int64 {
	sk.t.Helper()
	n, err := readProcStatus(sk.b.cmd.Process.Pid, field)
	if err != nil {
		sk.t.Fatalf("%v; the daemon exited: %v", err, sk.b.exited())
	}
	return n
}

func countFDs(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("open files of the daemon: %v", err)
	}
	return len(fds)
}

// soakStep is a disruption at a time of the run.
type soakStep struct {
	at   time.Duration
	what string
	do   func()
}

// schedule returns the disruptions of a run of d: every soakRestartEvery
// a PBX restart, alternating the PBXes and the ways, and the NATS outage
// once, halfway, between two restarts. Nothing happens in the last 5 s.
func (sk *soak) schedule(d time.Duration) []soakStep {
	ways := []struct {
		name string
		do   func(*pbx)
	}{
		{"drops its connections", func(p *pbx) { p.DropConnections() }},
		{"closes and restarts on the same port", (*pbx).restart},
	}
	outageAt := max(soakFirstRestart+soakRestartEvery/2, (d/2-soakFirstRestart)/soakRestartEvery*soakRestartEvery+soakFirstRestart+soakRestartEvery/2)
	var steps []soakStep
	outage := false
	for k := 0; ; k++ {
		at := soakFirstRestart + time.Duration(k)*soakRestartEvery
		if !outage && outageAt < at {
			outage = true
			steps = append(steps, soakStep{outageAt, "NATS stops", sk.natsOutage})
		}
		if at >= d-5*time.Second {
			break
		}
		// Each PBX gets both ways in turn: 22 drop, 13 restart, 22
		// restart, 13 drop…
		s := sk.servers[k%2]
		way := ways[(k+1)/2%2]
		steps = append(steps, soakStep{at, s.name + " " + way.name, func() { sk.restart(s, way.do) }})
	}
	return steps
}

func (s *soakServer) startCalls() {
	ctx, cancel := context.WithCancel(context.Background())
	s.gen, s.stopGen = s.p.StartCalls(ctx, soakCallRate, 0), cancel
}

// stopCalls stops the generator and adds its events to the current AMI
// session's.
func (s *soakServer) stopCalls(sk *soak) {
	s.stopGen()
	if err := s.gen.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		sk.fail("%s: call generator: %v", s.name, err)
	}
	_, events, _ := s.gen.Count()
	s.generated[len(s.generated)-1] += events
	s.gen = nil
}

// restart restarts the PBX of s one way and waits until the bridge has a
// new session with it.
func (sk *soak) restart(s *soakServer, way func(*pbx)) {
	w := sk.w
	s.stopCalls(sk)
	sessions := len(s.generated)
	mark := w.status.len()
	ex := sk.excuses.open(s.name)
	way(s.p)
	i, _ := w.waitState(s.name, mark, readyTimeout, "disconnected")
	w.waitState(s.name, i+1, readyTimeout, "connected")
	s.tally.waitSessions(sk.t, s.name, sessions+1, readyTimeout)
	sk.excuses.close(ex)
	s.restarts++
	s.generated = append(s.generated, 0)
	s.startCalls()
}

// natsOutage stops NATS for soakNATSOutage while the PBXes make calls.
func (sk *soak) natsOutage() {
	t, w := sk.t, sk.w
	// Core NATS loses what is published into a connection going away:
	// the contract holds for an outage the bridge knows of, so nothing
	// may be in flight when it starts.
	for _, s := range sk.servers {
		s.stopCalls(sk)
	}
	for _, s := range sk.servers {
		last := len(s.generated) - 1
		s.tally.waitCalls(t, s.name, last, s.generated[last], eventTimeout)
	}
	ex := sk.excuses.open("")
	reconnected := make(chan struct{}, 1)
	w.nc.SetReconnectHandler(func(*nats.Conn) {
		select {
		case reconnected <- struct{}{}:
		default:
		}
	})
	defer w.nc.SetReconnectHandler(nil)
	down := time.Now()
	start := w.restartNATS()
	sk.b.log.waitFor(t, "NATS disconnected", readyTimeout, sk.b.done)
	for _, s := range sk.servers {
		s.startCalls()
	}
	time.Sleep(time.Until(down.Add(soakNATSOutage)))
	start()
	waitSignal(t, reconnected, "the test client to reconnect to NATS")
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	sk.b.log.waitFor(t, "NATS reconnected", readyTimeout, sk.b.done)
	// The bridge's subscriptions are back once a request is answered.
	for _, s := range sk.servers {
		sk.pingUntilAnswered(s.name, readyTimeout)
	}
	sk.excuses.close(ex)
	t.Logf("NATS and the bridge back %v after the NATS shutdown", time.Since(down).Round(time.Millisecond))
}

// pingUntilAnswered sends Ping to server until it gets a success.
func (sk *soak) pingUntilAnswered(server string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		m, err := sk.w.nc.Request("ami."+server+".action", []byte(`{"Action":"Ping"}`), time.Second)
		if err == nil {
			if r, err := parseReply(m); err == nil && !r.has("error") {
				return
			}
		}
		if time.Now().After(deadline) {
			sk.t.Fatalf("%s: no Ping answered within %v of the NATS restart (last error %v)", server, timeout, err)
		}
		// Nothing tells when the bridge's subscriptions are back.
		time.Sleep(50 * time.Millisecond)
	}
}

// onEvent is the subscriber on ami.*.event.>.
func (sk *soak) onEvent(m *nats.Msg) {
	name := m.Header.Get("Ami-Server")
	s := sk.byName[name]
	if s == nil {
		sk.fail("event on %s with Ami-Server %q", m.Subject, name)
		return
	}
	if p := s.tally.add(m, name); p != "" {
		sk.fail("%s", p)
	}
}

// seqTally follows the events of one server as they arrive.
type seqTally struct {
	mu     sync.Mutex
	last   uint64  // the highest Ami-Seq
	events int64   // events arrived
	calls  []int64 // call events, per event-session login: calls[i] follows the i+1th FullyBooted

	// A waiter's target: changed is closed and replaced when calls[targetI]
	// reaches target, and at every FullyBooted.
	targetI int
	target  int64
	changed chan struct{}
}

func newSeqTally() *seqTally {
	return &seqTally{targetI: -1, changed: make(chan struct{})}
}

func (st *seqTally) signal() {
	close(st.changed)
	st.changed = make(chan struct{})
}

// add counts m, an event of server, and returns what is wrong with it, or
// "".
func (st *seqTally) add(m *nats.Msg, server string) string {
	seq, err := strconv.ParseUint(m.Header.Get("Ami-Seq"), 10, 64)
	event := m.Header.Get("Ami-Event")
	st.mu.Lock()
	defer st.mu.Unlock()
	st.events++
	var problem string
	switch {
	case err != nil:
		problem = fmt.Sprintf("%s: Ami-Seq %q: %v", m.Subject, m.Header.Get("Ami-Seq"), err)
	case seq <= st.last:
		problem = fmt.Sprintf("%s: Ami-Seq %d after %d: it went back", m.Subject, seq, st.last)
	case seq != st.last+1:
		problem = fmt.Sprintf("%s: Ami-Seq %d after %d: %d events missing", m.Subject, seq, st.last, seq-st.last-1)
	}
	if err == nil && seq > st.last {
		st.last = seq
	}
	if problem == "" && (event == "" || m.Subject != "ami."+server+".event."+event || !json.Valid(m.Data)) {
		problem = fmt.Sprintf("%s: Ami-Event %q, body %s", m.Subject, event, truncate(m.Data, 512))
	}
	switch event {
	case "FullyBooted":
		// Once per login of the event session, in its Login answer.
		st.calls = append(st.calls, 0)
		st.signal()
	case "SuccessfulAuth":
		// One per login of any session, the bridge's action sessions too.
	default:
		if len(st.calls) == 0 {
			if problem == "" {
				problem = fmt.Sprintf("%s: a call event before the session's FullyBooted", m.Subject)
			}
			break
		}
		i := len(st.calls) - 1
		st.calls[i]++
		if i == st.targetI && st.calls[i] == st.target {
			st.targetI = -1
			st.signal()
		}
	}
	return problem
}

// waitSessions waits until n FullyBooted events of server have arrived.
func (st *seqTally) waitSessions(t *testing.T, server string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		st.mu.Lock()
		got, changed := len(st.calls), st.changed
		st.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s: timed out after %v waiting for the FullyBooted of AMI session %d", server, timeout, n)
		}
	}
}

// waitCalls waits until session i of server has want call events. It fails
// when no event arrives for stall: the bridge may be working through a
// backlog, which is fine as long as it moves.
func (st *seqTally) waitCalls(t *testing.T, server string, i int, want int64, stall time.Duration) {
	t.Helper()
	count := func() int64 {
		if i < len(st.calls) {
			return st.calls[i]
		}
		return 0
	}
	for {
		st.mu.Lock()
		got := count()
		if got >= want {
			st.mu.Unlock()
			return
		}
		st.targetI, st.target = i, want
		changed := st.changed
		st.mu.Unlock()
		select {
		case <-changed:
		case <-time.After(stall):
			st.mu.Lock()
			now := count()
			st.mu.Unlock()
			if now == got {
				t.Fatalf("%s: %d of %d call events of AMI session %d arrived, and none for %v", server, got, want, i+1, stall)
			}
		}
	}
}

// requester sends Ping, CoreShowChannels and Command to s in turn until
// stop is closed, and checks every reply.
func (sk *soak) requester(s *soakServer, stop <-chan struct{}) {
	tick := time.NewTicker(soakRequestEvery)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		a := soakActions[n%len(soakActions)]
		id := "soak-" + strconv.Itoa(n)
		m := nats.NewMsg("ami." + s.name + ".action")
		m.Data = []byte(a.body(id))
		sent := time.Now()
		resp, err := sk.w.nc.RequestMsg(m, replyTimeout)
		got := time.Now()
		if err != nil {
			if sk.excuses.cover(s.name, sent, got) {
				sk.reqNATSErr.Add(1)
			} else {
				sk.fail("%s: %s: %v", s.name, a.name, err)
			}
			continue
		}
		r, problem := sk.checkReply(s.name, resp)
		switch {
		case problem != "":
		case r.has("error"):
			if r.Code == 503 && sk.excuses.cover(s.name, sent, got) {
				sk.req503.Add(1)
				continue
			}
			problem = fmt.Sprintf("error %d outside a restart", r.Code)
		default:
			problem = a.check(r, id)
		}
		if problem != "" {
			sk.fail("%s: %s: %s: %s", s.name, a.name, problem, truncate(resp.Data, 1024))
			continue
		}
		sk.reqOK.Add(1)
	}
}

// checkReply is w.checkReply for any goroutine: it returns the first
// problem instead of failing the test.
func (sk *soak) checkReply(server string, m *nats.Msg) (*reply, string) {
	if s := sk.w.leakedSecret(m.Data); s != "" {
		return nil, fmt.Sprintf("the reply holds the secret %q", s)
	}
	for k, vs := range m.Header {
		if s := sk.w.leakedSecret([]byte(k + ": " + strings.Join(vs, ", "))); s != "" {
			return nil, fmt.Sprintf("a reply header holds the secret %q", s)
		}
	}
	r, err := parseReply(m)
	switch {
	case err != nil:
		return nil, err.Error()
	case r.Server != server || len(r.keys) == 0 || r.keys[0] != "server":
		return nil, fmt.Sprintf("keys %v, server %q", r.keys, r.Server)
	case r.has("error") && (r.HeaderCode != strconv.Itoa(r.Code) || r.HeaderMessage == "" || r.Message == ""):
		return nil, fmt.Sprintf("error %d %q with headers %q %q", r.Code, r.Message, r.HeaderCode, r.HeaderMessage)
	case !r.has("error") && (r.HeaderCode != "" || r.HeaderMessage != "" || !r.has("response")):
		return nil, "a success with error headers or without a response"
	case r.has("events") != r.has("complete"):
		return nil, fmt.Sprintf("keys %v: events without complete or the reverse", r.keys)
	}
	return r, ""
}

// soakAction is a request of the requesters and the check of its
// success.
type soakAction struct {
	name  string
	body  func(id string) string
	check func(r *reply, id string) string // what is wrong, or ""
}

var soakActions = []soakAction{
	{
		name: "Ping",
		body: func(id string) string { return `{"Action":"Ping","ActionID":"` + id + `"}` },
		check: func(r *reply, id string) string {
			if r.Response.value("Response") != "Success" || r.Response.value("Ping") != "Pong" || r.Response.value("ActionID") != id {
				return "not a Pong to " + id
			}
			return ""
		},
	},
	{
		name: "CoreShowChannels",
		body: func(id string) string { return `{"Action":"CoreShowChannels","ActionID":"` + id + `"}` },
		check: func(r *reply, id string) string {
			if got := strings.Join(r.keys, ","); got != "server,response,events,complete" {
				return "keys " + got
			}
			if r.Response.value("ActionID") != id {
				return "response not to " + id
			}
			if len(r.Events) != soakChannels {
				return fmt.Sprintf("%d channels, want %d", len(r.Events), soakChannels)
			}
			for _, ev := range r.Events {
				if ev.value("Event") != "CoreShowChannel" {
					return "an event " + ev.value("Event")
				}
			}
			c := r.Complete
			if c.value("Event") != "CoreShowChannelsComplete" || c.value("ListItems") != strconv.Itoa(soakChannels) {
				return "complete " + c.String()
			}
			return ""
		},
	},
	{
		name: "Command",
		body: func(id string) string {
			return `{"Action":"Command","Command":"core show channels concise","ActionID":"` + id + `"}`
		},
		check: func(r *reply, id string) string {
			if r.Output == nil || r.has("events") {
				return fmt.Sprintf("keys %v", r.keys)
			}
			if r.Response.value("ActionID") != id {
				return "response not to " + id
			}
			n := 0
			for l := range strings.SplitSeq(*r.Output, "\n") {
				if strings.HasPrefix(l, "Local/long@test-") {
					n++
				}
			}
			if n != soakChannels {
				return fmt.Sprintf("%d channels in the output, want %d", n, soakChannels)
			}
			return ""
		},
	},
}

// excuses are the times a server, or NATS, was down: a request that
// overlaps one may fail.
type excuses struct {
	mu   sync.Mutex
	wins []excuse
}

type excuse struct {
	server   string // "": every server (NATS)
	from, to time.Time
}

// open starts an excuse for server ("" for all) and returns its index.
func (e *excuses) open(server string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.wins = append(e.wins, excuse{server: server, from: time.Now()})
	return len(e.wins) - 1
}

func (e *excuses) close(i int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.wins[i].to = time.Now()
}

// cover reports whether a request to server from sent to got overlaps an
// excuse.
func (e *excuses) cover(server string, sent, got time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, x := range e.wins {
		if (x.server == "" || x.server == server) && !got.Before(x.from) && (x.to.IsZero() || !sent.After(x.to)) {
			return true
		}
	}
	return false
}

// rssSample is the VmRSS of the daemon at a time of the run.
type rssSample struct {
	at  time.Duration
	kib int64
}

// rssSampler reads the VmRSS of a process at an interval.
type rssSampler struct {
	stop    chan struct{}
	done    chan struct{}
	samples []rssSample
}

func startRSSSampler(pid int, every time.Duration) *rssSampler {
	r := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	begin := time.Now()
	go func() {
		defer close(r.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
			kib, err := readProcStatus(pid, "VmRSS")
			if err != nil {
				// The process died; the test finds out from the process.
				return
			}
			r.samples = append(r.samples, rssSample{time.Since(begin), kib})
		}
	}()
	return r
}

// finish stops sampling and returns the samples.
func (r *rssSampler) finish() []rssSample {
	close(r.stop)
	<-r.done
	return r.samples
}

// rssBaseline returns the first sample at or after at, or 0.
func rssBaseline(samples []rssSample, at time.Duration) int64 {
	for _, x := range samples {
		if x.at >= at {
			return x.kib
		}
	}
	return 0
}

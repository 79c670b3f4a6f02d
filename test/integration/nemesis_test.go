package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// The nemesis test (issue 16, Required 6) runs two ha.enabled bridges on
// one amitest PBX and one nats-server with JetStream, plays traffic that
// alternates call bursts with silences, and meanwhile applies a seeded
// random schedule of faults: kill -9, SIGTERM (then a restart) and
// SIGSTOP/SIGCONT of either bridge, both bridges killed at once, a
// nats-server stop and restart on the same port and store, and a cut of a
// bridge's AMI link. At the end it reads the whole stream and compares it
// with what a reference AMI session of the test read from the PBX.
//
// TestNemesis runs short (about a minute, seed 16) in the default run.
// AMI_NEMESIS=long runs at least 5 minutes of traffic with silences of up
// to 2 minutes, and AMI_NEMESIS (short or long) also runs
// TestNemesis_HandoverTimes; AMI_NEMESIS_SEED picks the seed (printed at
// the start, so a failure can be replayed):
//
//	AMI_NEMESIS=long AMI_NEMESIS_SEED=7 go test -race -count=1 -run TestNemesis -v -timeout 30m ./test/integration/
//
// The seed fixes the schedule: each fault's kind, whether it strikes the
// active or the standby, how long it lasts, the pauses, and the traffic's
// phases. Which process is active when, and where each fault lands among
// the events, are not fixed: both run on the wall clock.
func nemesisLong() bool { return os.Getenv("AMI_NEMESIS") == "long" }

// needNemesis skips a run that only AMI_NEMESIS asks for.
func needNemesis(t *testing.T) {
	t.Helper()
	if os.Getenv("AMI_NEMESIS") == "" {
		t.Skip("AMI_NEMESIS=short or long runs it")
	}
}

// defaultNemesisSeed is the seed of the default run.
const defaultNemesisSeed = 16

func nemesisSeed(t *testing.T) uint64 {
	t.Helper()
	s := os.Getenv("AMI_NEMESIS_SEED")
	if s == "" {
		return defaultNemesisSeed
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("AMI_NEMESIS_SEED=%q: %v", s, err)
	}
	return n
}

const (
	nemStream = "IT_NEMESIS"
	nemPBX    = "nem"
	// nemRate is the calls a second of a burst: about 900 events/s.
	nemRate = 40
	// nemSlackBefore is how long before both bridges were down an event
	// may be lost: read by the active but not yet acknowledged when it
	// died. nemSlackAfter covers the clocks of the test's goroutines.
	nemSlackBefore = time.Second
	nemSlackAfter  = 200 * time.Millisecond
)

// timedRef is the test's own AMI session on the PBX: the events amitest
// sent, in order, with when they were read. Session events are left out,
// as the bridges leave them out with HA.
type timedRef struct {
	mu     sync.Mutex
	events [][]byte
	at     []time.Time
}

func (r *timedRef) add(m *amiproto.Message) {
	if notShared(m) {
		return
	}
	b := m.AppendJSON(nil)
	now := time.Now()
	r.mu.Lock()
	r.events = append(r.events, b)
	r.at = append(r.at, now)
	r.mu.Unlock()
}

func (r *timedRef) snapshot() ([][]byte, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.events...), append([]time.Time(nil), r.at...)
}

// nemSlot is one of the two bridge places: its AMI link, its
// configuration and the process running there now.
type nemSlot struct {
	name string
	link *wanLink
	cfg  bridgeConfig
	b    *haBridge
}

// nemOp is one fault of the nemesis log.
type nemOp struct {
	n          int
	kind       string // kill9, sigterm, sigstop, ami-cut, nats-restart, kill9-both
	target     string // slot, with the process, or "nats"
	start, end time.Time
	note       string
}

// interval is a span of time.
type interval struct{ from, to time.Time }

// nemRig is the world of a nemesis test.
type nemRig struct {
	t     *testing.T
	w     *world
	node  *natsNode
	js    jetstream.JetStream
	pbx   *pbx
	ref   *timedRef
	slots [2]*nemSlot
	t0    time.Time

	ops  []nemOp
	down [2][]interval // per slot: when its bridge was dead, stopped or cut from the PBX
	nats []interval    // when nats-server was down (not a reason to lose events)
}

func newNemRig(t *testing.T) *nemRig {
	t.Helper()
	node := startNode(t, &server.Options{Host: "127.0.0.1", Port: freePort(t), JetStream: true, StoreDir: t.TempDir()})
	w := &world{t: t, dir: t.TempDir(), ns: node.ns}
	nc, err := nats.Connect(node.url(), nats.Name("integration-test"), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	w.nc = nc
	w.status = w.collect("ami.*.status")
	t.Cleanup(w.checkStatusesHoldNoSecret)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	r := &nemRig{t: t, w: w, node: node, js: js, ref: &timedRef{}, t0: time.Now()}
	// Asterisk drops a session that stops reading for its write timeout:
	// a SIGSTOPped bridge loses its session after a second.
	r.pbx = w.startPBX(nemPBX, amitest.Config{Profile: amitest.Asterisk22, WriteTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c, err := amiproto.DialEndpoint(ctx, r.pbx.Endpoint(amiUser, r.pbx.secret), amiproto.WithEvents(amiproto.EventDelivery{Func: r.ref.add}))
	if err != nil {
		t.Fatalf("reference session: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	for i, name := range []string{"A", "B"} {
		link := startWANLink(t, r.pbx.Addr())
		cfg := w.config(w.serverAt(nemPBX, link.addr, r.pbx.secret, viaURL))
		cfg.Log.Level = "info"
		cfg.JetStream = &jetStreamConf{Enabled: true, Stream: nemStream}
		cfg.HA = &haConf{Enabled: true}
		r.slots[i] = &nemSlot{name: name, link: link, cfg: cfg}
	}
	return r
}

// since is t as seconds from the start of the rig, for the logs.
func (r *nemRig) since(t time.Time) string { return fmt.Sprintf("+%.2fs", t.Sub(r.t0).Seconds()) }

// nemStatus is what the nemesis reads of a status.
type nemStatus struct {
	State   string    `json:"state"`
	LastSeq uint64    `json:"last_seq"`
	HA      *haStatus `json:"ha"`
}

func parseNemStatus(m *nats.Msg) (nemStatus, bool) {
	var s nemStatus
	if json.Unmarshal(m.Data, &s) != nil || s.HA == nil {
		return s, false
	}
	return s, true
}

// waitStatus waits for a status at index from or later that ok accepts,
// and returns its index; false after timeout.
func (r *nemRig) waitStatus(from int, timeout time.Duration, ok func(nemStatus) bool) (int, nemStatus, bool) {
	var got nemStatus
	i, _, found := r.w.status.find(from, timeout, func(m *nats.Msg) bool {
		s, is := parseNemStatus(m)
		if !is || !ok(s) {
			return false
		}
		got = s
		return true
	})
	return i, got, found
}

// up waits until b, from status index from on, has its AMI session and a
// role.
func (r *nemRig) up(b *haBridge, from int) bool {
	_, _, ok := r.waitStatus(from, readyTimeout, func(s nemStatus) bool {
		return s.HA.Self == b.self && s.State == "connected" && (s.HA.Role == "active" || s.HA.Role == "standby")
	})
	return ok
}

// startSlot starts a bridge process in slot i and waits until it is up.
func (r *nemRig) startSlot(i int) {
	r.t.Helper()
	mark := r.w.status.len()
	b := r.w.startBridge(r.slots[i].cfg)
	host, _ := os.Hostname()
	r.slots[i].b = &haBridge{bridgeProc: b, self: host + ":" + strconv.Itoa(b.cmd.Process.Pid)}
	if !r.up(r.slots[i].b, mark) {
		r.t.Fatalf("bridge %s (%s) not up within %v", r.slots[i].name, r.slots[i].b.self, readyTimeout)
	}
}

// startPair starts A, waits for it to be active, then B.
func (r *nemRig) startPair() {
	r.t.Helper()
	r.startSlot(0)
	if _, _, ok := r.waitStatus(0, readyTimeout, func(s nemStatus) bool {
		return s.HA.Self == r.slots[0].b.self && s.HA.Role == "active"
	}); !ok {
		r.t.Fatalf("bridge A not active within %v", readyTimeout)
	}
	r.startSlot(1)
}

// active returns the slot whose process published "active" last, or -1.
func (r *nemRig) active() int {
	msgs := r.w.status.snapshot()
	for i := len(msgs) - 1; i >= 0; i-- {
		s, ok := parseNemStatus(msgs[i])
		if !ok {
			continue
		}
		for k, sl := range r.slots {
			if s.HA.Self == sl.b.self && !sl.b.exited() {
				if s.HA.Role == "active" {
					return k
				}
				if s.HA.Role == "standby" {
					return 1 - k
				}
			}
		}
	}
	return -1
}

// nemTraffic is the traffic's schedule: phases of calls or of silence.
type nemPhase struct {
	busy bool
	d    time.Duration
	// singles is how many lone UserEvents a silence holds, evenly spaced:
	// a quiet PBX's handover must carry them exactly too.
	singles int
}

func nemTrafficPlan(rng *rand.Rand, total time.Duration) []nemPhase {
	busy := func() time.Duration { return dur(rng, 2*time.Second, 4*time.Second) }
	quiet := func() time.Duration { return dur(rng, 4*time.Second, 8*time.Second) }
	if nemesisLong() {
		busy = func() time.Duration { return dur(rng, 5*time.Second, 20*time.Second) }
		quiet = func() time.Duration { return dur(rng, 30*time.Second, 120*time.Second) }
	}
	var plan []nemPhase
	var sum time.Duration
	for i := 0; sum < total; i++ {
		p := nemPhase{busy: i%2 == 0}
		if p.busy {
			p.d = busy()
		} else {
			p.d, p.singles = quiet(), 1+rng.IntN(3)
		}
		plan = append(plan, p)
		sum += p.d
	}
	return plan
}

// dur is a random duration in [lo, hi).
func dur(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// play runs the plan; the schedule is the test's own clock, so it sleeps.
func (r *nemRig) play(ctx context.Context, plan []nemPhase) error {
	single := 0
	for _, p := range plan {
		if p.busy {
			gen := r.pbx.StartCalls(ctx, nemRate, int(nemRate*p.d.Seconds()))
			if err := gen.Wait(); err != nil {
				return err
			}
			continue
		}
		step := p.d / time.Duration(p.singles+1)
		for range p.singles {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(step):
			}
			single++
			r.pbx.emit("UserEvent", "UserEvent", "NemesisQuiet", "N", strconv.Itoa(single))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(step):
		}
	}
	return nil
}

// nemesis applies random faults until stop, each healed before the next.
func (r *nemRig) nemesis(rng *rand.Rand, until time.Time) {
	pause := func() time.Duration { return dur(rng, time.Second, 3*time.Second) }
	if nemesisLong() {
		pause = func() time.Duration { return dur(rng, 2*time.Second, 15*time.Second) }
	}
	kinds := []struct {
		kind   string
		weight int
	}{{"kill9", 3}, {"sigterm", 3}, {"sigstop", 2}, {"ami-cut", 2}, {"nats-restart", 1}, {"kill9-both", 1}}
	sum := 0
	for _, k := range kinds {
		sum += k.weight
	}
	for n := 1; n <= 200; n++ {
		// Every draw is made whatever the state, so the schedule depends
		// on the seed only.
		wait := pause()
		x := rng.IntN(sum)
		kind := ""
		for _, k := range kinds {
			if x -= k.weight; x < 0 {
				kind = k.kind
				break
			}
		}
		onActive := rng.IntN(10) < 7
		hold := dur(rng, 500*time.Millisecond, 4*time.Second)
		if time.Now().Add(wait + hold).After(until) {
			return
		}
		time.Sleep(wait)
		slot := r.active()
		if slot < 0 {
			slot = 0
		}
		if !onActive {
			slot = 1 - slot
		}
		op := nemOp{n: n, kind: kind, start: time.Now()}
		sl := r.slots[slot]
		op.target = sl.name + " " + sl.b.self
		switch kind {
		case "kill9":
			r.kill(slot)
			time.Sleep(hold)
			r.restart(slot, op.start)
		case "sigterm":
			sl.b.signal(syscall.SIGTERM)
			if code := sl.b.wait(exitTimeout); code != 0 {
				r.t.Errorf("nemesis #%d: %s exited %d after SIGTERM, want 0", n, op.target, code)
			}
			time.Sleep(hold)
			r.restart(slot, op.start)
		case "sigstop":
			mark := r.w.status.len()
			sl.b.signal(syscall.SIGSTOP)
			time.Sleep(hold)
			sl.b.signal(syscall.SIGCONT)
			cont := time.Now()
			// If the PBX dropped the frozen session, the bridge logs in
			// again: it was cut from the PBX until then. A session that
			// survived may send no new status: then it was down until
			// SIGCONT only. Counting it down until its next status (a
			// role change too) errs on the lenient side.
			end := cont
			if _, _, ok := r.waitStatus(mark, 3*time.Second, func(s nemStatus) bool {
				return s.HA.Self == sl.b.self && s.State == "connected"
			}); ok {
				end = time.Now()
				op.note = fmt.Sprintf("SIGCONT at %s, connected status at %s", r.since(cont), r.since(end))
			} else {
				op.note = fmt.Sprintf("SIGCONT at %s, no status within 3s", r.since(cont))
			}
			r.down[slot] = append(r.down[slot], interval{op.start, end})
		case "ami-cut":
			mark := r.w.status.len()
			sl.link.cut()
			time.Sleep(hold)
			sl.link.up()
			if !r.up(sl.b, mark) {
				r.t.Errorf("nemesis #%d: %s not back on the PBX within %v of the link's return", n, op.target, readyTimeout)
			}
			r.down[slot] = append(r.down[slot], interval{op.start, time.Now()})
		case "nats-restart":
			op.target = "nats"
			mark := r.w.status.len()
			r.node.stop()
			time.Sleep(hold)
			r.node.start()
			r.nats = append(r.nats, interval{op.start, time.Now()})
			if _, _, ok := r.waitStatus(mark, readyTimeout, func(s nemStatus) bool { return s.HA.Role == "active" }); !ok {
				op.note = "no active bridge within " + readyTimeout.String()
			}
		case "kill9-both":
			op.target = "A " + r.slots[0].b.self + ", B " + r.slots[1].b.self
			r.kill(0)
			r.kill(1)
			time.Sleep(hold)
			r.restart(0, op.start)
			r.restart(1, op.start)
		}
		op.end = time.Now()
		r.ops = append(r.ops, op)
		r.t.Logf("nemesis #%d %s %s at %s, held %v, healed at %s %s", n, kind, op.target, r.since(op.start),
			hold.Round(time.Millisecond), r.since(op.end), op.note)
		if r.t.Failed() {
			return
		}
	}
}

func (r *nemRig) kill(slot int) {
	b := r.slots[slot].b
	b.signal(syscall.SIGKILL)
	<-b.done
}

// restart starts a new process in slot, down since from.
func (r *nemRig) restart(slot int, from time.Time) {
	r.startSlot(slot)
	r.down[slot] = append(r.down[slot], interval{from, time.Now()})
}

// bothDown returns when both slots were down at once.
func (r *nemRig) bothDown() []interval {
	var out []interval
	for _, a := range r.down[0] {
		for _, b := range r.down[1] {
			from, to := a.from, a.to
			if b.from.After(from) {
				from = b.from
			}
			if b.to.Before(to) {
				to = b.to
			}
			if from.Before(to) {
				out = append(out, interval{from, to})
			}
		}
	}
	return out
}

// settle emits a last event and waits until the stream's last message is
// it: everything the bridges will ever store is then stored.
func (r *nemRig) settle(timeout time.Duration) bool {
	r.pbx.emit("UserEvent", "UserEvent", "NemesisEnd")
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		want, _ := r.ref.snapshot()
		if n := len(want); n > 0 && bytes.Contains(want[n-1], []byte("NemesisEnd")) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := r.js.Stream(ctx, nemStream)
			if err == nil {
				var m *jetstream.RawStreamMsg
				m, err = s.GetLastMsgForSubject(ctx, "ami."+nemPBX+".event.>")
				if err == nil && bytes.Equal(m.Data, want[n-1]) {
					cancel()
					return true
				}
			}
			cancel()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// readAll returns every message of the stream, in order.
func (r *nemRig) readAll() []storedEvent {
	r.t.Helper()
	return storedEvents(r.t, r.js, nemStream, 2*time.Minute)
}

// reportedGaps returns every gap any bridge reported in a status.
func (r *nemRig) reportedGaps() map[[2]uint64]string {
	out := map[[2]uint64]string{}
	for _, m := range r.w.status.snapshot() {
		s, ok := parseNemStatus(m)
		if !ok {
			continue
		}
		for _, g := range s.HA.Gaps {
			if _, seen := out[[2]uint64{g.From, g.To}]; !seen {
				out[[2]uint64{g.From, g.To}] = s.HA.Self
			}
		}
	}
	return out
}

// check reads the stream, compares it with what the PBX sent (nemHistory's
// check) and fails the test on every problem found, after a summary.
func (r *nemRig) check() {
	t := r.t
	t.Helper()
	h := nemHistory{seed: nemesisSeed(t), t0: r.t0, got: r.readAll(), gaps: r.reportedGaps(),
		both: r.bothDown(), ops: r.ops, natsOutages: len(r.nats)}
	h.want, h.at = r.ref.snapshot()
	summary, justified, problems := h.check()
	for _, j := range justified {
		t.Logf("justified: %s", j)
	}
	t.Log(summary)
	for i, p := range problems {
		if i == 30 {
			t.Errorf("… and %d more", len(problems)-30)
			break
		}
		t.Error(p)
	}
}

// nemHistory is what a nemesis run did and what the stream holds.
type nemHistory struct {
	seed        uint64
	t0          time.Time
	want        [][]byte    // the PBX's events, from the reference session
	at          []time.Time // when the reference session read each
	got         []storedEvent
	gaps        map[[2]uint64]string // reported gaps, by who reported them
	both        []interval           // when both bridges were down
	ops         []nemOp
	natsOutages int
}

func (h *nemHistory) since(t time.Time) string { return fmt.Sprintf("+%.2fs", t.Sub(h.t0).Seconds()) }

// check compares the stream with what the PBX sent. A problem is any
// event lost outside a time both bridges were down or without a jump in
// Ami-Seq, any event twice or not from the PBX, any Ami-Seq step other
// than +1 that is not a reported gap (exact bounds) at a time both were
// down, any reported gap the stream does not show, and a change of
// epoch. It returns a summary and the lost ranges it found justified.
func (h *nemHistory) check() (summary string, justifiedLost, problems []string) {
	want, at, got, gaps, both := h.want, h.at, h.got, h.gaps, h.both
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	// justified reports whether the span from, to lies within a time when
	// both bridges were down, give or take the slack.
	justified := func(from, to time.Time) bool {
		for _, iv := range both {
			if !from.Before(iv.from.Add(-nemSlackBefore)) && !to.After(iv.to.Add(nemSlackAfter)) {
				return true
			}
		}
		return false
	}
	// between reports whether both bridges were down at some time between
	// two stored events: a jump in Ami-Seq there may be a true gap.
	between := func(from, to time.Time) bool {
		for _, iv := range both {
			if iv.from.Before(to.Add(nemSlackAfter)) && iv.to.After(from.Add(-nemSlackBefore)) {
				return true
			}
		}
		return false
	}
	around := func(from, to time.Time) string {
		var s []string
		for _, op := range h.ops {
			if op.end.After(from.Add(-3*time.Second)) && op.start.Before(to.Add(3*time.Second)) {
				s = append(s, fmt.Sprintf("#%d %s %s %s..%s", op.n, op.kind, op.target, h.since(op.start), h.since(op.end)))
			}
		}
		if len(s) == 0 {
			s = append(s, "none within 3s")
		}
		// On a quiet PBX the fault that made a jump comes after the last
		// event before it, maybe long after: name the next one too.
		for _, op := range h.ops {
			if op.start.After(to.Add(3 * time.Second)) {
				s = append(s, fmt.Sprintf("next: #%d %s %s %s..%s", op.n, op.kind, op.target, h.since(op.start), h.since(op.end)))
				break
			}
		}
		return strings.Join(s, "; ")
	}

	// Match the stream to the PBX's events, in order.
	index := map[string][]int{}
	for i, e := range want {
		index[string(e)] = append(index[string(e)], i)
	}
	match := make([]int, len(got))              // index in want, or -1
	type missing struct{ from, to, before int } // want[from..to], before stream event before
	var lost []missing
	dups, foreign := 0, 0
	next := 0
	for k, e := range got {
		idx := index[string(e.data)]
		j := sort.SearchInts(idx, next)
		switch {
		case j < len(idx):
			if idx[j] > next {
				lost = append(lost, missing{next, idx[j] - 1, k})
			}
			match[k] = idx[j]
			next = idx[j] + 1
		case len(idx) > 0:
			match[k] = -1
			if dups++; dups <= 10 {
				i := idx[len(idx)-1]
				bad("stream message %d (Ami-Seq %d, %s) repeats the PBX's event %d, sent %s, stored before (ops: %s)",
					k+1, e.seq, e.id, i+1, h.since(at[i]), around(at[i], at[i]))
			}
		default:
			match[k] = -1
			if foreign++; foreign <= 10 {
				bad("stream message %d (Ami-Seq %d) is no event the PBX sent: %.200s", k+1, e.seq, e.data)
			}
		}
	}
	if next < len(want) {
		lost = append(lost, missing{next, len(want) - 1, len(got)})
	}

	// Ami-Seq: +1, or a jump that is a reported gap at a time both
	// bridges were down.
	ids := map[string]bool{}
	epoch := ""
	seenGap := map[[2]uint64]bool{}
	var jumps []string
	timeOf := func(k int) time.Time {
		for ; k >= 0; k-- {
			if match[k] >= 0 {
				return at[match[k]]
			}
		}
		return h.t0
	}
	for k, e := range got {
		if ids[e.id] {
			bad("Nats-Msg-Id %s stored twice (message %d)", e.id, k+1)
		}
		ids[e.id] = true
		if parts := strings.Split(e.id, ":"); len(parts) == 3 {
			if epoch == "" {
				epoch = parts[1]
			} else if parts[1] != epoch {
				bad("message %d has epoch %s, the ones before %s", k+1, parts[1], epoch)
				epoch = parts[1]
			}
		}
		if k == 0 {
			if e.seq != 1 {
				bad("the first message has Ami-Seq %d", e.seq)
			}
			continue
		}
		prev := got[k-1].seq
		switch {
		case e.seq == prev+1:
		case e.seq <= prev:
			bad("message %d has Ami-Seq %d after %d (at %s; ops: %s)", k+1, e.seq, prev, h.since(timeOf(k)), around(timeOf(k-1), timeOf(k)))
		default:
			g := [2]uint64{prev + 1, e.seq - 1}
			seenGap[g] = true
			from, to := timeOf(k-1), timeOf(k)
			who, reported := gaps[g]
			ok := between(from, to)
			rep := "reported by " + who
			if !reported {
				rep = "not reported"
				for o, w := range gaps {
					if o[0] <= g[1] && o[1] >= g[0] {
						rep += fmt.Sprintf(" (%s reported %d-%d)", w, o[0], o[1])
					}
				}
			}
			line := fmt.Sprintf("Ami-Seq jump %d-%d between events sent %s and %s: %s, both bridges down %v (ops: %s)",
				g[0], g[1], h.since(from), h.since(to), rep, ok, around(from, to))
			jumps = append(jumps, line)
			if !reported || !ok {
				bad("%s", line)
			}
		}
	}
	for g, who := range gaps {
		if seenGap[g] {
			continue
		}
		// A new active that reported a gap and died before it published
		// anything: the next one, planning from the same stored event,
		// reports a wider gap from the same number, and the stream shows
		// that one.
		nested := false
		for w := range seenGap {
			if w[0] == g[0] && w[1] > g[1] {
				nested = true
			}
		}
		if !nested {
			bad("gap %d-%d reported by %s, but the stream has no such jump in Ami-Seq", g[0], g[1], who)
		}
	}

	// Lost events: at a reported jump, in a time both were down.
	nLost := 0
	for _, m := range lost {
		n := m.to - m.from + 1
		nLost += n
		seqBefore, seqAfter := uint64(0), uint64(0)
		if m.before > 0 {
			seqBefore = got[m.before-1].seq
		}
		if m.before < len(got) {
			seqAfter = got[m.before].seq
		}
		ok := justified(at[m.from], at[m.to])
		line := fmt.Sprintf("lost %d events: the PBX's %d-%d, sent %s..%s, between stored Ami-Seq %d and %d; both bridges down %v (ops: %s)",
			n, m.from+1, m.to+1, h.since(at[m.from]), h.since(at[m.to]), seqBefore, seqAfter, ok, around(at[m.from], at[m.to]))
		if !ok || (m.before < len(got) && seqAfter == seqBefore+1) {
			if seqAfter == seqBefore+1 {
				line += "; Ami-Seq continuous across them: a silent loss"
			}
			bad("%s", line)
		} else {
			justifiedLost = append(justifiedLost, line)
		}
	}

	// The summary.
	var sb strings.Builder
	fmt.Fprintf(&sb, "nemesis summary (seed %d):\n", h.seed)
	fmt.Fprintf(&sb, "  events sent by the PBX %d, stored %d, matched %d, duplicates %d, not from the PBX %d, lost %d in %d ranges\n",
		len(want), len(got), len(got)-dups-foreign, dups, foreign, nLost, len(lost))
	fmt.Fprintf(&sb, "  gaps reported %d, Ami-Seq jumps %d, times both bridges down %d, nats-server outages %d, problems %d\n",
		len(gaps), len(jumps), len(both), h.natsOutages, len(problems))
	for _, iv := range both {
		fmt.Fprintf(&sb, "  both down %s..%s\n", h.since(iv.from), h.since(iv.to))
	}
	for _, j := range jumps {
		fmt.Fprintf(&sb, "  %s\n", j)
	}
	for _, op := range h.ops {
		fmt.Fprintf(&sb, "  op #%d %s %s %s..%s %s\n", op.n, op.kind, op.target, h.since(op.start), h.since(op.end), op.note)
	}
	return sb.String(), justifiedLost, problems
}

// TestNemesis is issue 16's randomized fault test: see nemesisLong.
func TestNemesis(t *testing.T) {
	seed := nemesisSeed(t)
	traffic, nemFor := 40*time.Second, 36*time.Second
	if nemesisLong() {
		traffic, nemFor = 5*time.Minute, 5*time.Minute
	}
	t.Logf("AMI_NEMESIS_SEED=%d (long run: %v)", seed, nemesisLong())
	r := newNemRig(t)
	r.startPair()

	plan := nemTrafficPlan(rand.New(rand.NewPCG(seed, 1)), traffic)
	var desc []string
	for _, p := range plan {
		if p.busy {
			desc = append(desc, fmt.Sprintf("calls %v", p.d.Round(100*time.Millisecond)))
		} else {
			desc = append(desc, fmt.Sprintf("silence %v (%d lone events)", p.d.Round(100*time.Millisecond), p.singles))
		}
	}
	t.Logf("traffic: %s", strings.Join(desc, ", "))

	ctx, cancel := context.WithCancel(context.Background())
	played := make(chan error, 1)
	// Owned by the test: cancelled and waited for below (and at cleanup,
	// should the test end early).
	go func() { played <- r.play(ctx, plan) }()
	stopTraffic := sync.OnceValue(func() error {
		cancel()
		return <-played
	})
	t.Cleanup(func() { stopTraffic() })

	r.nemesis(rand.New(rand.NewPCG(seed, 2)), time.Now().Add(nemFor))
	var err error
	select {
	case err = <-played:
		played <- err
	case <-time.After(traffic + time.Minute):
		t.Errorf("the traffic did not end in time")
	}
	if err := stopTraffic(); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("traffic: %v", err)
	}
	if !r.settle(30 * time.Second) {
		t.Errorf("the stream's last message is not the PBX's last event within 30s of the end")
	}
	r.check()
}

// arrivals records when each event of the PBX reached a core subscriber
// of the test, with its Ami-Seq.
type arrivals struct {
	mu      sync.Mutex
	at      []time.Time
	seq     []uint64
	changed chan struct{} // closed and replaced on every event
}

func (r *nemRig) watchArrivals() *arrivals {
	r.t.Helper()
	a := &arrivals{changed: make(chan struct{})}
	sub, err := r.w.nc.Subscribe("ami."+nemPBX+".event.>", func(m *nats.Msg) {
		seq, _ := strconv.ParseUint(m.Header.Get("Ami-Seq"), 10, 64)
		now := time.Now()
		a.mu.Lock()
		a.at, a.seq = append(a.at, now), append(a.seq, seq)
		close(a.changed)
		a.changed = make(chan struct{})
		a.mu.Unlock()
	})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { sub.Unsubscribe() })
	return a
}

// first returns the first event that ok accepts, waiting up to timeout.
func (a *arrivals) first(timeout time.Duration, ok func(at time.Time, seq uint64) bool) (time.Time, uint64, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i := 0; ; {
		a.mu.Lock()
		at, seq, changed := a.at, a.seq, a.changed
		a.mu.Unlock()
		for ; i < len(at); i++ {
			if ok(at[i], seq[i]) {
				return at[i], seq[i], true
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			return time.Time{}, 0, false
		}
	}
}

// TestNemesis_HandoverTimes measures issue 16's Required 8: the time from
// a kill -9 of the active to the first event the new active publishes,
// and from a SIGTERM to the standby's first publication, on a busy PBX
// (calls at about 900 events/s) and on a quiet one (one event after a
// silence: 3 s, 30 s with AMI_NEMESIS=long). It logs the figures and
// asserts only generous bounds, then checks the stream as TestNemesis
// does (no gap is justified: one bridge is always up).
func TestNemesis_HandoverTimes(t *testing.T) {
	needNemesis(t)
	silence := 3 * time.Second
	if nemesisLong() {
		silence = 30 * time.Second
	}
	const ttl = 2 * time.Second // ha.lease_ttl's default
	r := newNemRig(t)
	arr := r.watchArrivals()
	r.startPair()
	var figures []string
	for i, c := range []struct {
		kind string
		busy bool
	}{{"kill9", true}, {"kill9", false}, {"sigterm", true}, {"sigterm", false}} {
		slot := r.active()
		if slot < 0 {
			t.Fatal("no active bridge")
		}
		old := r.slots[slot].b
		what := fmt.Sprintf("%s of the active, %s PBX", c.kind, map[bool]string{true: "busy", false: "quiet"}[c.busy])
		var gen *amitest.Calls
		if c.busy {
			gen = r.pbx.StartCalls(context.Background(), nemRate, nemRate*4)
			// The schedule is the test's own clock: strike mid-burst.
			time.Sleep(1500 * time.Millisecond)
		} else {
			time.Sleep(silence)
		}
		mark := r.w.status.len()
		t0 := time.Now()
		var took time.Duration
		var note string
		switch c.kind {
		case "kill9":
			old.signal(syscall.SIGKILL)
			<-old.done
			dead := time.Now()
			if !c.busy {
				r.pbx.emit("UserEvent", "UserEvent", "MeasureQuiet")
			}
			// What arrives after the process is gone comes from the new
			// active (50 ms for messages NATS had already read).
			at, seq, ok := arr.first(readyTimeout, func(at time.Time, _ uint64) bool { return at.After(dead.Add(50 * time.Millisecond)) })
			if !ok {
				t.Fatalf("%s: no event from the new active within %v", what, readyTimeout)
			}
			took, note = at.Sub(t0), fmt.Sprintf("first Ami-Seq %d; goal lease_ttl+0.5s = %v", seq, ttl+500*time.Millisecond)
			if took > ttl+3*time.Second {
				t.Errorf("%s: the new active's first event came %v after the kill, want well under %v", what, took, ttl+3*time.Second)
			}
		case "sigterm":
			old.signal(syscall.SIGTERM)
			if !c.busy {
				r.pbx.emit("UserEvent", "UserEvent", "MeasureQuiet")
			}
			_, nst, ok := r.waitStatus(mark, eventTimeout, func(s nemStatus) bool {
				return s.HA.Self != old.self && s.HA.Role == "active" && s.HA.LastTakeover != nil && s.HA.LastTakeover.At.After(t0)
			})
			if !ok {
				t.Fatalf("%s: the standby did not take over within %v", what, eventTimeout)
			}
			if !c.busy {
				// The old active may have published the lone event
				// before it let go: one more as soon as the standby says
				// it took over, which only the new active can publish.
				r.pbx.emit("UserEvent", "UserEvent", "MeasureQuiet2")
			}
			if code := old.wait(exitTimeout); code != 0 {
				t.Errorf("%s: exit code %d, want 0", what, code)
			}
			_, st, ok := r.waitStatus(mark, eventTimeout, func(s nemStatus) bool { return s.HA.Self == old.self && s.State == "stopped" })
			if !ok {
				t.Fatalf("%s: no stopped status from %s", what, old.self)
			}
			at, seq, ok := arr.first(readyTimeout, func(_ time.Time, seq uint64) bool { return seq > st.LastSeq })
			if !ok {
				t.Fatalf("%s: no event after Ami-Seq %d (the old active's last) within %v", what, st.LastSeq, readyTimeout)
			}
			took = at.Sub(t0)
			note = fmt.Sprintf("old active's last Ami-Seq %d, first of the new %d; goal 100ms; the standby's takeover status says %v after the signal",
				st.LastSeq, seq, nst.HA.LastTakeover.At.Sub(t0).Round(time.Millisecond))
			if took > 2*time.Second {
				t.Errorf("%s: the standby's first event came %v after the signal, want well under 2s", what, took)
			}
		}
		figures = append(figures, fmt.Sprintf("%-32s %8v  (%s)", what, took.Round(time.Millisecond), note))
		if gen != nil {
			if err := gen.Wait(); err != nil {
				t.Fatalf("call generator: %v", err)
			}
		}
		r.restart(slot, t0)
		r.ops = append(r.ops, nemOp{n: i + 1, kind: c.kind, target: r.slots[slot].name + " " + old.self, start: t0, end: time.Now(), note: what})
	}
	t.Logf("handover and takeover times (lease_ttl %v):\n  %s", ttl, strings.Join(figures, "\n  "))
	if !r.settle(30 * time.Second) {
		t.Errorf("the stream's last message is not the PBX's last event within 30s of the end")
	}
	r.check()
}

// TestNemesisChecker runs the nemesis checker on made-up histories: it
// must pass an exact stream and a true gap, and catch each way of getting
// it wrong.
func TestNemesisChecker(t *testing.T) {
	t0 := time.Now()
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	want := [][]byte{[]byte(`{"n":1}`), []byte(`{"n":2}`), []byte(`{"n":3}`), []byte(`{"n":4}`), []byte(`{"n":5}`)}
	at := []time.Time{sec(1), sec(2), sec(10), sec(20), sec(21)}
	// stored: the PBX's events (1-based) with their Ami-Seq.
	stored := func(pairs ...int) []storedEvent {
		var out []storedEvent
		for i := 0; i < len(pairs); i += 2 {
			seq := uint64(pairs[i+1])
			out = append(out, storedEvent{seq: seq, id: fmt.Sprintf("nem:1:%d", seq), data: want[pairs[i]-1]})
		}
		return out
	}
	downAt10 := []interval{{sec(9), sec(12)}}
	for _, c := range []struct {
		name string
		got  []storedEvent
		gaps map[[2]uint64]string
		both []interval
		want string // a problem must hold it; "" for none
	}{
		{name: "exact", got: stored(1, 1, 2, 2, 3, 3, 4, 4, 5, 5)},
		{name: "true gap", got: stored(1, 1, 2, 2, 4, 10, 5, 11), gaps: map[[2]uint64]string{{3, 9}: "b"}, both: downAt10},
		{name: "true gap, nothing lost", got: stored(1, 1, 2, 2, 3, 10, 4, 11, 5, 12), gaps: map[[2]uint64]string{{3, 9}: "b"}, both: downAt10},
		{name: "duplicate", got: stored(1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6), want: "repeats the PBX's event 3"},
		{name: "same id twice", got: stored(1, 1, 2, 2, 3, 3, 4, 3, 5, 4), want: "Nats-Msg-Id nem:1:3 stored twice"},
		{name: "silent loss", got: stored(1, 1, 2, 2, 4, 3, 5, 4), both: downAt10, want: "silent loss"},
		{name: "loss, one bridge up", got: stored(1, 1, 2, 2, 4, 10, 5, 11), gaps: map[[2]uint64]string{{3, 9}: "b"}, want: "both bridges down false"},
		{name: "false gap", got: stored(1, 1, 2, 2, 3, 10, 4, 11, 5, 12), gaps: map[[2]uint64]string{{3, 9}: "b"}, want: "Ami-Seq jump 3-9"},
		{name: "gap bounds off", got: stored(1, 1, 2, 2, 4, 10, 5, 11), gaps: map[[2]uint64]string{{2, 9}: "b"}, both: downAt10, want: "b reported 2-9"},
		{name: "gap unreported", got: stored(1, 1, 2, 2, 4, 10, 5, 11), both: downAt10, want: "not reported"},
		{name: "a gap, then a wider one from the same place", got: stored(1, 1, 2, 2, 4, 20, 5, 21), gaps: map[[2]uint64]string{{3, 9}: "b", {3, 19}: "a"}, both: downAt10},
		{name: "a gap the stream does not show", got: stored(1, 1, 2, 2, 3, 3, 4, 4, 5, 5), gaps: map[[2]uint64]string{{6, 9}: "b"}, want: "no such jump"},
		{name: "out of order", got: stored(1, 1, 2, 2, 4, 3, 3, 4, 5, 5), want: "repeats"},
		{name: "not from the PBX", got: append(stored(1, 1, 2, 2, 3, 3, 4, 4, 5, 5), storedEvent{seq: 6, id: "nem:1:6", data: []byte(`{}`)}), want: "no event the PBX sent"},
		{name: "lost tail", got: stored(1, 1, 2, 2, 3, 3), want: "lost 2 events: the PBX's 4-5"},
	} {
		h := nemHistory{t0: t0, want: want, at: at, got: c.got, gaps: c.gaps, both: c.both}
		summary, _, problems := h.check()
		found := false
		for _, p := range problems {
			found = found || (c.want != "" && strings.Contains(p, c.want))
		}
		switch {
		case c.want == "" && len(problems) > 0:
			t.Errorf("%s: problems %q\n%s", c.name, problems, summary)
		case c.want != "" && !found:
			t.Errorf("%s: no problem holds %q; problems %q\n%s", c.name, c.want, problems, summary)
		}
	}
}

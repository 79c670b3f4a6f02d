package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// The HA tests (issue 9) run two bridges on one amitest PBX under a call
// load of about 2,000 events/s, with JetStream, and stop the active one in
// five ways. By default the load lasts a few seconds; AMI_HA_LONG=1 runs
// it for 20 s:
//
//	AMI_HA_LONG=1 go test -race -count=1 -run TestHA -v ./test/integration/
func haLong() bool { return os.Getenv("AMI_HA_LONG") == "1" }

// haCallsPerSecond gives about 2,000 events/s at 22 events a call.
const haCallsPerSecond = 91

const haStream = "IT_HA"

// haLoad returns the load's length and when, from its start, the test
// strikes.
func haLoad() (length, strike time.Duration) {
	if haLong() {
		return 20 * time.Second, 8 * time.Second
	}
	return 3 * time.Second, time.Second
}

// haRig is one PBX, its reference session and the HA bridges of a test.
type haRig struct {
	w   *world
	pbx *pbx
	js  jetstream.JetStream
	ref *refSession
	cfg bridgeConfig
}

// refSession is an AMI session of the test's own on the PBX: what it reads
// is what amitest sent, the events every bridge must publish, in order.
// notShared reports whether m is left out of the stream with HA: a
// session event (FullyBooted, SuccessfulAuth), or a bridge's mark
// (docs/ha.md, "Marks").
func notShared(m *amiproto.Message) bool {
	n := m.EventName()
	return n == "FullyBooted" || n == "SuccessfulAuth" || (n == "UserEvent" && m.Get("UserEvent") == "AmiBridgeMark")
}

// refSession is what a session of the test's own read: what the stream
// must hold, but what notShared leaves out.
type refSession struct {
	mu     sync.Mutex
	events [][]byte // JSON, as the bridge publishes it
}

func (r *refSession) add(m *amiproto.Message) {
	if notShared(m) {
		return
	}
	b := m.AppendJSON(nil)
	r.mu.Lock()
	r.events = append(r.events, b)
	r.mu.Unlock()
}

func (r *refSession) snapshot() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.events...)
}

func newHARig(t *testing.T) *haRig {
	t.Helper()
	w := newWorld(t, natsOptions{jetStream: true})
	// Asterisk drops a session that stops reading; a second keeps a
	// race-built bridge on a busy machine in.
	p := w.startPBX("ha1", amitest.Config{Profile: amitest.Asterisk22, WriteTimeout: time.Second})
	ref := &refSession{}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c, err := amiproto.DialEndpoint(ctx, p.Endpoint(amiUser, p.secret), amiproto.WithEvents(amiproto.EventDelivery{Func: ref.add}))
	if err != nil {
		t.Fatalf("reference session: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	js, err := jetstream.New(w.nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.config(w.serverFor("ha1", p, viaURL))
	cfg.Log.Level = "info"
	cfg.JetStream = &jetStreamConf{Enabled: true, Stream: haStream}
	cfg.HA = &haConf{Enabled: true}
	return &haRig{w: w, pbx: p, js: js, ref: ref, cfg: cfg}
}

// haBridge is one bridge process of an HA test and its holder name.
type haBridge struct {
	*bridgeProc
	self string
}

func (r *haRig) start() *haBridge { return r.startWith(r.cfg) }

func (r *haRig) startWith(cfg bridgeConfig) *haBridge {
	r.w.t.Helper()
	b := r.w.startBridge(cfg)
	host, _ := os.Hostname()
	return &haBridge{bridgeProc: b, self: host + ":" + strconv.Itoa(b.cmd.Process.Pid)}
}

// signal sends sig to the process.
func (b *haBridge) signal(sig syscall.Signal) {
	b.w.t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		b.w.t.Fatalf("%v to %s: %v", sig, b.self, err)
	}
}

// haStatus is the ha part of a status message.
type haStatus struct {
	Role         string `json:"role"`
	Self         string `json:"self"`
	Holder       string `json:"holder"`
	LastTakeover *struct {
		At       time.Time `json:"at"`
		From     uint64    `json:"from_seq"`
		Replayed int       `json:"replayed"`
		Matched  bool      `json:"matched"`
	} `json:"last_takeover"`
	Gaps []struct {
		From uint64 `json:"from_seq"`
		To   uint64 `json:"to_seq"`
	} `json:"gaps"`
}

func haOf(m *nats.Msg) (haStatus, bool) {
	var s struct {
		State string    `json:"state"`
		HA    *haStatus `json:"ha"`
	}
	if json.Unmarshal(m.Data, &s) != nil || s.HA == nil {
		return haStatus{}, false
	}
	return *s.HA, true
}

// waitHA waits for a status of b, published at or after index from, that
// ok accepts, and returns it with its index.
func (r *haRig) waitHA(b *haBridge, from int, what string, ok func(haStatus) bool) (int, haStatus) {
	r.w.t.Helper()
	var got haStatus
	i, _ := r.w.status.waitFor(r.w.t, from, readyTimeout, b.self+": "+what, func(m *nats.Msg) bool {
		s, is := haOf(m)
		if is && s.Self == b.self && ok(s) {
			got = s
			return true
		}
		return false
	})
	return i, got
}

// startPair starts a bridge, waits for it to be active, then a second one
// and waits for it to stand by behind the first.
func (r *haRig) startPair() (active, standby *haBridge) { return r.startPairWith(r.cfg) }

// startPairWith is startPair with the first bridge's configuration.
func (r *haRig) startPairWith(first bridgeConfig) (active, standby *haBridge) {
	r.w.t.Helper()
	active = r.startWith(first)
	r.waitHA(active, 0, "active", func(s haStatus) bool { return s.Role == "active" })
	standby = r.start()
	r.waitHA(standby, 0, "standby behind "+active.self, func(s haStatus) bool {
		return s.Role == "standby" && s.Holder == active.self
	})
	return active, standby
}

// load plays calls for length and calls strike after strikeAt; it returns
// once the PBX has sent every call.
func (r *haRig) load(strike func()) {
	r.w.t.Helper()
	length, strikeAt := haLoad()
	gen := r.pbx.StartCalls(context.Background(), haCallsPerSecond, int(haCallsPerSecond*length.Seconds()))
	// The schedule is the test's own clock: nothing to wait on.
	time.Sleep(strikeAt)
	strike()
	if err := gen.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		r.w.t.Fatalf("call generator: %v", err)
	}
	_, sent, _ := gen.Count()
	// The reference session has read them all once it has as many.
	deadline := time.Now().Add(eventTimeout)
	for int64(len(r.ref.snapshot())) < sent && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := len(r.ref.snapshot()); int64(got) != sent {
		r.w.t.Fatalf("the reference session read %d events, the PBX sent %d", got, sent)
	}
}

// storedEvent is a message of the stream.
type storedEvent struct {
	seq  uint64
	id   string
	data []byte
}

// stream waits until the stream holds want events and returns them in
// order.
func (r *haRig) stream(want int) []storedEvent {
	t := r.w.t
	t.Helper()
	waitStreamMsgs(t, r.js, haStream, uint64(want), storeStall)
	return storedEvents(t, r.js, haStream, time.Minute)
}

// storedEvents returns every message the stream holds now, in order, read
// within timeout.
func storedEvents(t *testing.T, js jetstream.JetStream, name string, timeout time.Duration) []storedEvent {
	t.Helper()
	var out []storedEvent
	readStream(t, js, name, timeout, func(m jetstream.Msg) {
		seq, _ := strconv.ParseUint(m.Headers().Get("Ami-Seq"), 10, 64)
		out = append(out, storedEvent{seq: seq, id: m.Headers().Get("Nats-Msg-Id"), data: m.Data()})
	})
	return out
}

// streamUntil returns the stream once it ends with the last storeTail of
// the events want holds.
func (r *haRig) streamUntil(want [][]byte) []storedEvent {
	r.w.t.Helper()
	deadline := time.Now().Add(storeStall)
	for {
		got := r.stream(0)
		if endsWith(got, want, storeTail) {
			return got
		}
		if time.Now().After(deadline) {
			r.w.t.Fatalf("the stream (%d events) did not end with the PBX's last %d events within %v", len(got), storeTail, storeStall)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// storeTail is how many of the PBX's last events the stream must end with
// to count as caught up: Asterisk repeats payloads (DeviceStateChange), so
// one equal last event may be an older one while the stream still fills.
const storeTail = 32

// endsWith reports whether got's last n payloads are want's last n.
func endsWith(got []storedEvent, want [][]byte, n int) bool {
	n = min(n, len(want))
	if len(got) < n || n == 0 {
		return false
	}
	for i := 1; i <= n; i++ {
		if !bytes.Equal(got[len(got)-i].data, want[len(want)-i]) {
			return false
		}
	}
	return true
}

// checkExactlyOnce fails unless the stream holds every event the PBX sent,
// once, in order, numbered 1, 2, 3… with distinct Nats-Msg-Ids.
func (r *haRig) checkExactlyOnce() {
	t := r.w.t
	t.Helper()
	want := r.ref.snapshot()
	got := r.stream(len(want))
	if len(got) != len(want) {
		t.Errorf("the stream holds %d events, the PBX sent %d", len(got), len(want))
	}
	ids := map[string]bool{}
	for i := range min(len(got), len(want)) {
		if !bytes.Equal(got[i].data, want[i]) {
			t.Fatalf("stream event %d (Ami-Seq %d) is not the PBX's event %d:\n got %s\nwant %s", i+1, got[i].seq, i+1, got[i].data, want[i])
		}
		if got[i].seq != uint64(i+1) {
			t.Fatalf("stream event %d has Ami-Seq %d", i+1, got[i].seq)
		}
		if ids[got[i].id] {
			t.Fatalf("Nats-Msg-Id %s stored twice", got[i].id)
		}
		ids[got[i].id] = true
	}
	t.Logf("the stream holds all %d events the PBX sent, once each, in order", len(want))
}

// coreSeqs returns the Ami-Seq of every ha1 event a core subscriber got,
// in arrival order, with its Ami-Time.
func (r *haRig) coreSeqs() (seqs []uint64, times []time.Time) {
	for _, m := range r.w.events.snapshot() {
		seq, err := strconv.ParseUint(m.Header.Get("Ami-Seq"), 10, 64)
		if err != nil {
			r.w.t.Fatalf("event without Ami-Seq: %v", m.Header)
		}
		at, _ := time.Parse(time.RFC3339Nano, m.Header.Get("Ami-Time"))
		seqs, times = append(seqs, seq), append(times, at)
	}
	return seqs, times
}

// TestHA_KillActive runs both bridges with the config of docs/ha.md's
// "Enable it", whose lease_ttl 2s the takeover is held to.
func TestHA_KillActive(t *testing.T) {
	r := newHARig(t)
	blocks := docBlocks(t, docPage("ha.md"), "## Enable it")
	if len(blocks) == 0 || !strings.Contains(blocks[0], "lease_ttl: 2s ") {
		t.Fatal(`docs/ha.md: "## Enable it" has no config block with lease_ttl 2s`)
	}
	r.cfg.docYAML = blocks[0]
	a, b := r.startPair()
	var killed time.Time
	r.load(func() {
		a.signal(syscall.SIGKILL)
		killed = time.Now()
	})
	<-a.done
	_, st := r.waitHA(b, 0, "active", func(s haStatus) bool { return s.Role == "active" && s.LastTakeover != nil })
	took := st.LastTakeover.At.Sub(killed)
	t.Logf("kill -9 of the active: the standby took over %v later (lease ttl 2s), replaying %d events from its buffer",
		took.Round(time.Millisecond), st.LastTakeover.Replayed)
	if took > 3*time.Second || !st.LastTakeover.Matched {
		t.Errorf("takeover %v after the kill, matched %v; want at most 3s, on the checkpoint", took, st.LastTakeover.Matched)
	}
	r.checkExactlyOnce()
}

// TestHA_SIGTERMHandsOver: a SIGTERM hands the lease over at once. The
// lease TTL is long, so a takeover before half of it can only be a
// handover, never the lease's expiry; the time itself is measured by
// TestNemesis_HandoverTimes, not held here to a bound a loaded machine
// may miss.
func TestHA_SIGTERMHandsOver(t *testing.T) {
	r := newHARig(t)
	const ttl = 20 * time.Second
	r.cfg.HA.LeaseTTL = ttl.String()
	a, b := r.startPair()
	var sent time.Time
	r.load(func() {
		sent = time.Now()
		a.signal(syscall.SIGTERM)
	})
	if code := a.wait(exitTimeout); code != 0 {
		t.Errorf("the active exited %d after SIGTERM, want 0", code)
	}
	_, st := r.waitHA(b, 0, "active", func(s haStatus) bool { return s.Role == "active" && s.LastTakeover != nil })
	took := st.LastTakeover.At.Sub(sent)
	t.Logf("SIGTERM of the active: the standby took over %v later", took.Round(time.Millisecond))
	if took >= ttl/2 || !st.LastTakeover.Matched {
		t.Errorf("handover %v after SIGTERM, matched %v; want a handover (under half the lease TTL, %v), on the checkpoint", took, st.LastTakeover.Matched, ttl/2)
	}
	r.checkExactlyOnce()
	// A core subscriber saw no repeat and no gap either.
	seqs, _ := r.coreSeqs()
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("core subscriber: message %d has Ami-Seq %d (the one before: %d)", i+1, s, seqs[max(i-1, 0)])
		}
	}
	t.Logf("a core subscriber got Ami-Seq 1 to %d, no repeat, no gap", len(seqs))
}

func TestHA_FrozenActiveStopsPublishing(t *testing.T) {
	r := newHARig(t)
	a, b := r.startPair()
	var resumed time.Time
	r.load(func() {
		a.signal(syscall.SIGSTOP)
		stopped := time.Now()
		_, st := r.waitHA(b, 0, "active", func(s haStatus) bool { return s.Role == "active" })
		t.Logf("SIGSTOP of the active: the standby took over %v later", st.LastTakeover.At.Sub(stopped).Round(time.Millisecond))
		resumed = time.Now()
		a.signal(syscall.SIGCONT)
	})
	r.waitHA(a, 0, "standby after SIGCONT", func(s haStatus) bool { return s.Role == "standby" })
	r.checkExactlyOnce()
	// Once resumed, the old active must publish nothing: an event it read
	// after SIGCONT would come again under an Ami-Seq the new active
	// already gave. What it had handed to NATS before the freeze may
	// still go out, and was read before it.
	seqs, times := r.coreSeqs()
	seen := map[uint64]bool{}
	for i, s := range seqs {
		if seen[s] && times[i].After(resumed) {
			t.Fatalf("Ami-Seq %d came again, read at %v, after SIGCONT at %v: the resumed bridge published", s, times[i], resumed)
		}
		seen[s] = true
	}
}

func TestHA_BothKilledGapReported(t *testing.T) {
	r := newHARig(t)
	a, b := r.startPair()
	var c *haBridge
	r.load(func() {
		for _, p := range []*haBridge{b, a} {
			p.signal(syscall.SIGKILL)
			<-p.done
		}
		// Events go on while no bridge is up: at least 200 are lost.
		from := len(r.ref.snapshot())
		deadline := time.Now().Add(eventTimeout)
		for len(r.ref.snapshot()) < from+200 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		c = r.start()
	})
	i, st := r.waitHA(c, 0, "active with a gap", func(s haStatus) bool { return s.Role == "active" && len(s.Gaps) > 0 })
	checkDocsHAStatus(t, r.w.status.snapshot()[i].Data)
	gap := st.Gaps[0]
	t.Logf("both bridges killed: the next one reports the gap Ami-Seq %d-%d and publishes from %d", gap.From, gap.To, st.LastTakeover.From)

	// What the stream holds: the first active's events 1..n, in order,
	// then the new one's from To+1, the PBX's events in between lost.
	want := r.ref.snapshot()
	got := r.streamUntil(want)
	n := 0
	for n < len(got) && got[n].seq == uint64(n+1) && bytes.Equal(got[n].data, want[n]) {
		n++
	}
	if n == 0 || n == len(got) {
		t.Fatalf("stream of %d events: %d from the first active; want some, then a gap", len(got), n)
	}
	if gap.From > uint64(n)+1 || gap.To < uint64(n)+1 || got[n].seq != gap.To+1 || st.LastTakeover.From != gap.To+1 {
		t.Errorf("gap %d-%d, the first active published 1-%d, the next event stored is Ami-Seq %d: want the gap to cover %d and the next one after it",
			gap.From, gap.To, n, got[n].seq, n+1)
	}
	// The rest is the PBX's events from some point on, in order.
	k := 0
	for k < len(want) && !bytes.Equal(want[k], got[n].data) {
		k++
	}
	lost := k - n
	for i := n; i < len(got); i++ {
		if k+i-n >= len(want) || !bytes.Equal(got[i].data, want[k+i-n]) || got[i].seq != got[n].seq+uint64(i-n) {
			t.Fatalf("stream event %d (Ami-Seq %d) is not the PBX's event %d", i+1, got[i].seq, k+i-n+1)
		}
	}
	if k+len(got)-n != len(want) || lost < 200 {
		t.Errorf("after the gap the stream ends %d events short of the PBX's %d; %d lost", len(want)-(k+len(got)-n), len(want), lost)
	}
	t.Logf("%d events lost while no bridge was up, reported as the gap; the %d after it are all there", lost, len(got)-n)
}

func TestHA_ActiveLosesItsAMISession(t *testing.T) {
	r := newHARig(t)
	// The first bridge reaches the PBX through a link the test can cut.
	link := startWANLink(t, r.pbx.Addr())
	cfg := r.cfg
	cfg.Servers = []serverConfig{r.w.serverAt("ha1", link.addr, r.pbx.secret, viaURL)}
	a, b := r.startPairWith(cfg)
	var cut time.Time
	r.load(func() {
		link.cut()
		cut = time.Now()
	})
	_, st := r.waitHA(b, 0, "active", func(s haStatus) bool { return s.Role == "active" && s.LastTakeover != nil })
	took := st.LastTakeover.At.Sub(cut)
	t.Logf("the active lost its AMI session: it released the lease and the standby took over %v later, replaying %d events",
		took.Round(time.Millisecond), st.LastTakeover.Replayed)
	if took >= time.Second || !st.LastTakeover.Matched {
		t.Errorf("takeover %v after the cut, matched %v; want under 1s (a release, not an expiry), on the checkpoint", took, st.LastTakeover.Matched)
	}
	r.waitHA(a, 0, "standby", func(s haStatus) bool { return s.Role == "standby" })
	r.checkExactlyOnce()
}

// checkDocsHAStatus compares the "ha" object of a status with the sample
// of docs/ha.md's "Status and metrics": the same keys, at every level.
func checkDocsHAStatus(t *testing.T, status []byte) {
	t.Helper()
	blocks := docBlocks(t, docPage("ha.md"), "## Status and metrics")
	if len(blocks) == 0 {
		t.Fatal(`docs/ha.md: no block in "## Status and metrics"`)
	}
	var doc, got map[string]any
	if err := json.Unmarshal([]byte("{"+blocks[0]+"}"), &doc); err != nil {
		t.Fatalf("docs/ha.md's status sample is not JSON: %v\n%s", err, blocks[0])
	}
	if err := json.Unmarshal(status, &got); err != nil {
		t.Fatal(err)
	}
	if d, g := jsonKeys("", doc["ha"]), jsonKeys("", got["ha"]); !slices.Equal(d, g) {
		t.Errorf("docs/ha.md's status sample has the keys %q, the bridge's %q:\n%s", d, g, status)
	}
}

// jsonKeys returns the sorted paths of the keys of v, a decoded JSON
// value; a list's paths are its first element's.
func jsonKeys(path string, v any) []string {
	var keys []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			keys = append(keys, path+k)
			keys = append(keys, jsonKeys(path+k+".", e)...)
		}
	case []any:
		if len(v) > 0 {
			keys = jsonKeys(path, v[0])
		}
	}
	slices.Sort(keys)
	return keys
}

package bridge

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// waitStats polls b's stats of server i until ok holds.
func waitStats(t testing.TB, b *Bridge, i int, ok func(Stats) bool) Stats {
	t.Helper()
	return waitFor(t, func() Stats { return b.Stats()[i] }, ok)
}

// TestStats_EventsActionsAndLogins sends known events and requests and
// checks every count against what the test sent, with core NATS and with
// JetStream, where every ack is timed.
func TestStats_EventsActionsAndLogins(t *testing.T) {
	for _, js := range []bool{false, true} {
		t.Run(map[bool]string{false: "core", true: "jetstream"}[js], func(t *testing.T) { testStats(t, js) })
	}
}

func testStats(t *testing.T, js bool) {
	wrong := startPBX(t, amitest.Config{AuthFailDelay: -1})
	bad := fastServer("pbx2", wrong)
	bad.URL = wrong.URL("admin", "not-the-secret")
	tw := newWorld(t, withNATS(natsOptions{jetStream: js}), withServers(func(tw *world) []ServerConfig {
		tw.pbx.HandleFunc("MyOwnAction", func(w *amitest.ResponseWriter, _ *amitest.Request) { w.Success() })
		sc := fastServer("pbx1", tw.pbx)
		sc.EventsInclude = []string{"UserEvent"}
		return []ServerConfig{sc, bad}
	}), withOptions(Options{EventBuffer: 100, JetStream: JetStreamOptions{Enabled: js}}))
	tw.up() // the event session and the action sessions
	cc, pbx, b := tw.cc, tw.pbx, tw.b
	// The logins' SuccessfulAuth events reach the event session in its
	// stream, before a marker sent now: once the marker is published the
	// counters hold them all.
	pbx.Emit(userEvent("marker", 0))
	waitStats(t, b, 0, func(s Stats) bool { return s.EventsPublished == 1 })

	before := b.Stats()[0]
	if !before.Up || before.State != subjects.StateConnected || before.BufferCapacity != 100 {
		t.Fatalf("stats after connecting: %+v", before)
	}
	const passed, filtered = 30, 12
	start := time.Now()
	for i := range passed {
		if i < filtered {
			pbx.Emit(newEvent("Newexten", "N", "x"))
		}
		pbx.Emit(userEvent("stats", i))
	}
	st := waitStats(t, b, 0, func(s Stats) bool { return s.EventsPublished == before.EventsPublished+passed })
	if got := st.EventsFiltered - before.EventsFiltered; got != filtered {
		t.Errorf("filtered %d, want %d", got, filtered)
	}
	if got := st.EventsReceived - before.EventsReceived; got != passed+filtered {
		t.Errorf("received %d, want %d", got, passed+filtered)
	}
	if st.LastSeq-before.LastSeq != passed || st.EventsDropped != 0 {
		t.Errorf("last seq %d after %d, dropped %d; want %d more, 0", st.LastSeq, before.LastSeq, st.EventsDropped, passed)
	}
	if st.LastEvent.Before(start.Truncate(time.Second)) || st.LastEvent.After(time.Now()) {
		t.Errorf("last event at %v, want after %v", st.LastEvent, start)
	}

	subj := subjects.Action("ami", "pbx1")
	for _, body := range []string{
		`{"Action":"Ping"}`, `{"Action":"ping"}`, // 200, one name whatever the case
		`{"Action":"NoSuchAction"}`,             // 422 from Asterisk, counted as other
		`{"Action":"MyOwnAction"}`,              // 200, other
		`{"Action":"Events","EventMask":"off"}`, // 403 by the default deny
		`not json`,                              // 400, other
	} {
		request(t, cc, subj, body, nil)
	}
	st = b.Stats()[0]
	want := []ActionCount{
		{"Events", subjects.CodeForbidden, 1},
		{"Ping", 200, 2},
		{otherAction, 200, 1},
		{otherAction, subjects.CodeBadRequest, 1},
		{otherAction, subjects.CodeAMIError, 1},
	}
	if !slices.Equal(st.Actions, want) {
		t.Errorf("actions %+v\nwant    %+v", st.Actions, want)
	}
	if h := st.ActionLatency; h.Count != 6 || h.Counts[len(h.Counts)-1] != 6 || h.Sum <= 0 {
		t.Errorf("action latency %+v, want 6 observations", h)
	}
	if st.JetStream != js || st.JSPublishLatency.Count != map[bool]uint64{false: 0, true: st.EventsPublished}[js] || st.JSFailures != 0 {
		t.Errorf("JetStream stats (JetStream %v): %+v", js, st)
	}

	// Each of pbx2's sessions counts its refused logins; the state is the
	// event session's, which may still be connecting when the action
	// sessions have failed twice.
	st2 := waitStats(t, b, 1, func(s Stats) bool { return s.LoginFailures >= 2 && s.State == subjects.StateAuthFailed })
	if st2.Up || st2.Server != "pbx2" {
		t.Errorf("stats of the PBX refusing the login: %+v", st2)
	}
}

func TestLatencyHistogram_CumulativeBuckets(t *testing.T) {
	var h latencyHistogram
	for _, d := range []time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 3 * time.Millisecond, 2 * time.Minute} {
		h.observe(d)
	}
	s := h.snapshot()
	at := func(bound float64) uint64 { return s.Counts[slices.Index(s.Bounds, bound)] }
	if at(0.0001) != 2 || at(0.0025) != 2 || at(0.005) != 3 || at(30) != 3 || s.Count != 4 {
		t.Errorf("histogram %+v", s)
	}
	if want := (2*time.Minute + 3150*time.Microsecond).Seconds(); s.Sum != want {
		t.Errorf("sum %v, want %v", s.Sum, want)
	}
}

func TestActionIndex_BoundedLabels(t *testing.T) {
	for name, want := range map[string]string{"Ping": "Ping", "PING": "Ping", "originate": "Originate", "": otherAction, "Nope": otherAction} {
		i := actionIndex(name)
		got := otherAction
		if i < len(knownActions) {
			got = knownActions[i]
		}
		if got != want {
			t.Errorf("actionIndex(%q) is %q, want %q", name, got, want)
		}
	}
}

// An action reply with an unexpected code still lands in a bounded cell.
func TestActionMeter_UnknownCode(t *testing.T) {
	var st pbxStats
	m := st.meter(time.Now())
	m.action = "Ping"
	m.replied(nats.Header{"Nats-Service-Error-Code": {"599"}})
	m.replied(nil) // a later streamed part is not counted
	if n := st.actions.Load()[actionIndex("Ping")][codeIndex(subjects.CodeUnavailable)].Load(); n != 1 {
		t.Errorf("count %d, want 1 under 503", n)
	}
}

// BufferBytes is the AMI text of the events waiting for the publisher,
// not of those it acknowledged, which the ring keeps for replay.
func TestStats_BufferBytesAreTheUnacknowledged(t *testing.T) {
	b, p := idlePBX(t, ServerConfig{}, Options{})
	waiting := 0
	for i := 1; i <= 6; i++ {
		ev := userEvent(strings.Repeat("x", 10*i), i)
		p.accept(ev)
		if i > 2 {
			waiting += ev.Size()
		}
	}
	p.ring.ack(2)
	st := b.Stats()[0]
	if st.BufferEvents != 4 || st.BufferBytes != waiting {
		t.Fatalf("%d events, %d bytes waiting; want 4, %d", st.BufferEvents, st.BufferBytes, waiting)
	}
}

// TestStats_BoundsAreACopy: a snapshot's histogram bounds are its own, so
// an importer that changes them changes no later snapshot's.
func TestStats_BoundsAreACopy(t *testing.T) {
	b, _ := idlePBX(t, ServerConfig{}, Options{})
	st := b.Stats()[0]
	want := st.ActionLatency.Bounds[0]
	st.ActionLatency.Bounds[0] = 99
	if got := b.Stats()[0].ActionLatency.Bounds[0]; got != want {
		t.Errorf("after a caller changed a snapshot's bound, the next snapshot's is %v, want %v", got, want)
	}
}

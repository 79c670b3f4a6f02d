package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary play the children's roles, as the command
// does: run() starts them from the running executable.
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "amiload %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

const testRepo = "../../.."

// binDir holds the daemon built for the smoke tests; TestMain removes it.
var binDir string

// daemonBin builds the daemon once for all the smoke tests.
var daemonBin = sync.OnceValues(func() (string, error) {
	var err error
	if binDir, err = os.MkdirTemp("", "amiload-test-"); err != nil {
		return "", err
	}
	return buildDaemon(testRepo, binDir)
})

// smoke runs the smoke options restricted to modes, and returns the report
// and what it printed.
func smoke(t *testing.T, modes string) (*report, string) {
	t.Helper()
	return smokeWith(t, modes, nil)
}

// smokeWith is smoke with the options changed by set first.
func smokeWith(t *testing.T, modes string, set func(*options)) (*report, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the daemon and other processes")
	}
	bin, err := daemonBin()
	if err != nil {
		t.Fatal(err)
	}
	o := smokeOptions(testRepo)
	o.Bin, o.Modes = bin, parseModesMust(modes)
	if set != nil {
		set(&o)
	}
	var out strings.Builder
	rep, err := run(o, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	return rep, out.String()
}

// TestSmoke is the zero-loss search and idle memory of amiload -smoke:
// every process and measurement of the tool on small trials, with what
// must hold at any speed: nothing lost at a modest paced rate, and every
// event the flood loses counted by a gap in Ami-Seq. Loss is counted from
// what the fake PBXes sent.
func TestSmoke(t *testing.T) {
	rep, out := smoke(t, "search,idle")
	for _, c := range rep.Ceiling {
		if c.Lost() != 0 || c.Delivered == 0 {
			t.Errorf("ceiling: %d of %d raw events delivered", c.Delivered, c.Sent)
		}
	}
	if len(rep.Search) != 1 || !rep.Search[0].ok(1) {
		t.Errorf("the paced trial lost events or fell behind: %+v", rep.Search)
	}
	if len(rep.Floods) != 2 {
		t.Errorf("%d floods, want 2", len(rep.Floods))
	}
	for _, f := range rep.Floods {
		if f.Delivered == 0 || f.Back != 0 || (f.Cut == 0 && f.Gaps != f.Lost()) {
			t.Errorf("flood: lost %d, Ami-Seq gaps %d, out of order %d, sessions cut %d: every loss must show as a gap", f.Lost(), f.Gaps, f.Back, f.Cut)
		}
	}
	// The defaults, and the large fan-in choice the target is for.
	if len(rep.Idles) != 2 || rep.Idles[0].Choice || !rep.Idles[1].Choice || rep.Idles[1].Logoff != largeFanIn.logoff || rep.Idles[1].Sessions != 2 {
		t.Errorf("idle rows %+v, want the defaults then the large fan-in choice", rep.Idles)
	}
	for _, r := range rep.Idles {
		if r.RSS <= r.Base {
			t.Errorf("idle PBXes, %s: VmRSS %d KiB, not above the one-PBX %d KiB", r.name(), r.RSS, r.Base)
		}
	}
	for _, want := range []string{"| zero-loss sustained rate / the highest ceiling |", "| memory per idle PBX (3 sessions)", "| memory per idle PBX (2 sessions, actions.idle_logoff 5m0s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("the summary lacks %q", want)
		}
	}
}

// TestSmokeIdleFanIn is the idle mode with the large fan-in choice
// (-idle-logoff, -action-sessions 1): the daemon runs with those keys and
// the summary says so.
func TestSmokeIdleFanIn(t *testing.T) {
	rep, out := smokeWith(t, "idle", func(o *options) { o.IdleLogoff, o.ActionSessions = 5*time.Minute, 1 })
	if len(rep.Idles) != 1 || !rep.Idles[0].Choice || rep.Idles[0].RSS <= rep.Idles[0].Base {
		t.Errorf("idle rows %+v, want the one asked for, VmRSS above the one-PBX", rep.Idles)
	}
	if want := "| memory per idle PBX (2 sessions, actions.idle_logoff 5m0s)"; !strings.Contains(out, want) {
		t.Errorf("the summary lacks %q", want)
	}
}

// TestSmokeCeilings: both ceilings without a bridge deliver every event
// published, and the summary holds the zero-loss rate to the highest.
func TestSmokeCeilings(t *testing.T) {
	rep, out := smoke(t, "ceilings")
	for name, c := range map[string]*trial{"in-process": rep.InProc, "TCP": rep.TCPPlain} {
		if c == nil || c.Delivered != c.Sent || c.Sent != int64(smokeOptions("").Events) || c.Rcvd <= 0 || c.CPU <= 0 {
			t.Errorf("%s ceiling: %+v", name, c)
		}
	}
	if !strings.Contains(out, "| ceiling: in-process → an embedded server |") {
		t.Error("the summary lacks the in-process ceiling")
	}
}

// TestSmokePace: at each pace the bridge, the relay and the bridge with
// state deliver every event the fake PBX sent, each with a CPU time
// measured, and the bridges' latency counts every event they delivered;
// the bridge with state publishes call records.
func TestSmokePace(t *testing.T) {
	rep, out := smoke(t, "pace")
	o := smokeOptions("")
	if len(rep.Pace) != len(o.PaceRates) {
		t.Fatalf("%d paces measured, want %d", len(rep.Pace), len(o.PaceRates))
	}
	for i, p := range rep.Pace {
		want := int64(max(1, int(o.PaceRates[i]*o.PaceSeconds))) + 1 // and the end-of-trial mark
		for name, tr := range map[string]trial{"bridge": p.Bridge, "relay": p.Relay, "bridge+state": p.State} {
			if !tr.lossless() || tr.Sent != want || tr.CPU <= 0 || tr.Wakeups <= 0 {
				t.Errorf("%.0f/s, %s: sent %d (want %d), %+v", p.Rate, name, tr.Sent, want, tr)
			}
		}
		for name, tr := range map[string]trial{"bridge": p.Bridge, "bridge+state": p.State} {
			if tr.Lat.N != int(tr.Delivered) || tr.Lat.P50 <= 0 || tr.Lat.Max < tr.Lat.P99 {
				t.Errorf("%.0f/s: %s latency %+v for %d events", p.Rate, name, tr.Lat, tr.Delivered)
			}
		}
		// The state contender runs the model: at the paces whose events
		// end calls (12,000/s), their records come.
		if p.Rate >= 12000 && p.State.Records == 0 {
			t.Errorf("%.0f/s: bridge+state published no call record", p.Rate)
		}
		if p.Relay.Lat.N != 0 {
			t.Errorf("%.0f/s: the relay sets no Ami-Time, yet %d latencies", p.Rate, p.Relay.Lat.N)
		}
	}
	for _, want := range []string{"| CPU per event at 12000/s, bridge / relay (threads scheduled in per event) |", "| latency at 12000/s, Ami-Time → subscriber |",
		"| bridge+state at 12000/s: CPU per event, / the bridge without state; threads scheduled in per event; latency |"} {
		if !strings.Contains(out, want) {
			t.Errorf("the summary lacks %q", want)
		}
	}
}

// TestSmokeStateBurst: with state and records on, a burst at 12,000
// events/s (a few hundred ms of it) loses no event and gives one call
// record per call that ends in what the fake PBX sent, counted here from
// the capture's Newchannel and Hangup events, each with its end seen.
func TestSmokeStateBurst(t *testing.T) {
	rep, out := smoke(t, "stateburst")
	o := smokeOptions("")
	s := rep.StateBurst
	if s == nil {
		t.Fatal("no state burst trial")
	}
	burst, err := loadBurst(filepath.Join(testRepo, capturePath))
	if err != nil {
		t.Fatal(err)
	}
	// The test's own count: the capture's calls are one Local pair each,
	// ended by the Hangup of its second channel; a smoke sends less than
	// one pass of the capture, then the mark (its first event).
	sent := int(o.StateBurst * o.PaceSeconds)
	if sent >= burst.len() {
		t.Fatalf("the smoke sends %d events, more than one pass of the capture's %d: the count below assumes less", sent, burst.len())
	}
	hangups := map[string]int{}
	want := 0
	for _, m := range burst.msgs[:sent] {
		if m.EventName() == "Hangup" {
			if hangups[m.Get("Linkedid")]++; hangups[m.Get("Linkedid")] == 2 {
				want++
			}
		}
	}
	if want == 0 {
		t.Fatal("no call ends in the events sent: the smoke checks nothing")
	}
	if !s.T.lossless() || s.T.Sent != int64(sent)+1 {
		t.Errorf("events: sent %d (want %d and the mark), %+v", s.T.Sent, sent, s.T)
	}
	if s.Want != want || s.Records != int64(want) || s.Unseen != 0 {
		t.Errorf("call records %d (%d closed unseen), the run expected %d, the capture holds %d", s.Records, s.Unseen, s.Want, want)
	}
	if !strings.Contains(out, "| state burst at 12000/s for 0.3 s, state and records on: lost; Ami-Seq gaps; call records / calls ended in the capture; closed unseen |") {
		t.Error("the summary lacks the state burst row")
	}
}

// TestCallsEnded: the capture ends its 200 calls (its Hangups are in its
// last two fifths); four fifths of it end some, and a pass and four
// fifths end 200 and those again.
func TestCallsEnded(t *testing.T) {
	b, err := loadBurst(filepath.Join(testRepo, capturePath))
	if err != nil {
		t.Fatal(err)
	}
	part := b.len() * 4 / 5
	first := callsEnded(b, []int{part})
	if first == 0 || first >= 200 {
		t.Fatalf("four fifths of the capture end %d calls", first)
	}
	if got := callsEnded(b, []int{b.len()}); got != 200 {
		t.Errorf("the capture ends %d calls, want its 200", got)
	}
	if got := callsEnded(b, []int{b.len() + part}); got != 200+first {
		t.Errorf("a pass and four fifths end %d calls, want %d", got, 200+first)
	}
	if got := callsEnded(b, []int{part, part}); got != 2*first {
		t.Errorf("two runs of four fifths end %d calls, want %d", got, 2*first)
	}
}

// TestSmokeReplay: a capture replayed at its recorded timing reaches the
// subscriber whole: as many events as the capture holds, by the test's
// own count of its Event: messages.
func TestSmokeReplay(t *testing.T) {
	rep, _ := smoke(t, "replay")
	raw, err := os.ReadFile(filepath.Join(testRepo, smokeReplay+".recv.bin"))
	if err != nil {
		t.Fatal(err)
	}
	events := strings.Count(string(raw), "\r\nEvent: ") + strings.Count(string(raw[:7]), "Event: ") -
		strings.Count(string(raw), "Event: FullyBooted") - strings.Count(string(raw), "Event: SuccessfulAuth")
	if rep.Replay == nil {
		t.Fatal("no replay trial")
	}
	if r := rep.Replay; !r.lossless() || r.Sent != int64(events)+1 || r.Lat.N != int(r.Delivered) {
		t.Errorf("replay: sent %d, want the capture's %d events and the mark; %+v", r.Sent, events, r)
	}
}

// TestReplayDefaultIsTimed: the full run's replay has a recorded timing
// (without it the mode is skipped) and holds the whole burst: every event
// of the capture, by the test's own count of its Event: messages, in
// batches that never go back in time and span the burst's second or more.
func TestReplayDefaultIsTimed(t *testing.T) {
	o, err := parseFlags([]string{"-repo", testRepo})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(testRepo, o.Replay)
	raw, err := os.ReadFile(path + ".recv.bin")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Count(string(raw), "\r\nEvent: ") -
		strings.Count(string(raw), "Event: FullyBooted") - strings.Count(string(raw), "Event: SuccessfulAuth")
	batches, err := loadTimed(path)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for i, b := range batches {
		got += b.Events
		if i > 0 && b.At < batches[i-1].At {
			t.Fatalf("batch %d at %v, before batch %d at %v", i, b.At, i-1, batches[i-1].At)
		}
	}
	if got != want || want < 4000 {
		t.Errorf("%d events in the timed batches, want the capture's %d (the 4,400 of the burst)", got, want)
	}
	if span := batches[len(batches)-1].At - batches[0].At; span < time.Second {
		t.Errorf("the replay spans %v, want the burst's second or more", span)
	}
}

// TestSmokeJetStream: with JetStream the bridge loses nothing and its
// send-to-ack histogram counted the trial's publishes.
func TestSmokeJetStream(t *testing.T) {
	o := smokeOptions("")
	rep, out := smoke(t, "jetstream")
	if len(rep.JS) != len(o.PaceRates) {
		t.Fatalf("%d JetStream trials, want %d", len(rep.JS), len(o.PaceRates))
	}
	for _, tr := range rep.JS {
		if !tr.lossless() || tr.Ack == nil || tr.Ack.N < 1 || tr.Ack.N > float64(tr.Sent) || tr.Ack.P50 <= 0 {
			t.Errorf("%.0f/s: %+v, acks %+v", tr.Rate, tr, tr.Ack)
		}
	}
	if !strings.Contains(out, "JetStream send → ack: p50 ≤") {
		t.Error("no send-to-ack latency printed")
	}
}

// TestSmokeFanIn: PBXes fanned in lose nothing and leave no Ami-Seq gap,
// and the time to deliver is measured.
func TestSmokeFanIn(t *testing.T) {
	rep, out := smoke(t, "fanin")
	o := smokeOptions("")
	if len(rep.Fans) != len(o.Fans) {
		t.Fatalf("%d fan-in cases, want %d", len(rep.Fans), len(o.Fans))
	}
	for _, f := range rep.Fans {
		want := int64(f.PBX * (max(1, int(f.Rate*f.Seconds)) + 1))
		if !f.T.lossless() || f.T.Sent != want || f.T.Within <= 0 || f.T.Lat.N != int(f.T.Delivered) {
			t.Errorf("fan-in %dx%.0f: sent %d (want %d), %+v", f.PBX, f.Rate, f.T.Sent, want, f.T)
		}
	}
	if !strings.Contains(out, "| fan-in 10 PBXes × 1000/s for 0.5 s: delivered within; lost; PBXes with a loss or gap; sessions cut |") {
		t.Error("the summary lacks the fan-in row")
	}
}

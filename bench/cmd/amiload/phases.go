package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// fanCase is one fan-in: PBX fake PBXes, each at Rate events/s, for
// Seconds.
type fanCase struct {
	PBX     int
	Rate    float64
	Seconds float64
}

// phaseCeilings measures the ceilings that need no bridge: the raw
// payloads published to an embedded nats-server in the relay's process,
// once over its in-process connection (how the daemon connects to its
// own server) and once by a plain TCP client in another process; the
// subscriber is in a third process, as for the daemon.
func phaseCeilings(o options, w io.Writer, rep *report, _, _, capture string) error {
	b, err := startRelayBench(capture, false)
	if err != nil {
		return err
	}
	defer b.stop()
	b.quiet = o.Quiet
	fmt.Fprintf(w, "\nceilings without a bridge: the same payloads to an embedded nats-server\n")
	in, err := b.ceilingBy(b.relay, o.Events)
	if err != nil {
		return err
	}
	rep.InProc = &in
	fmt.Fprintf(w, "  in-process connection, publisher in the server's process (as the daemon)\n")
	printTrial(w, "    ", in, 1)
	tcp, err := b.ceiling(o.Events)
	if err != nil {
		return err
	}
	rep.TCPPlain = &tcp
	fmt.Fprintf(w, "  plain TCP client in another process\n")
	printTrial(w, "    ", tcp, 1)
	return nil
}

// phasePace runs the bridge and the minimal relay side by side at each
// pace: one fake PBX each, replaying the capture in batches once a
// millisecond, the same events one trial after the other, and compares
// their CPU per event; the bridge's trials also give its latency.
//
// A third contender, the bridge with the live call state and records on
// (state.enabled), runs the same trials in the same run: its CPU per
// event against the bridge without state is issue 19's cost, and two
// runs a few minutes apart on a shared machine differ by more than what
// is measured. The capture's 200 Local-channel calls with their Cdr
// events drive the model through every event it keeps.
func phasePace(o options, w io.Writer, rep *report, bin, dir, capture string) error {
	// The bridge is the one without state whatever -state says: the
	// bridge+state contender beside it is the comparison.
	bb, err := startBenchState(bin, dir, capture, 1, false, false, false)
	if err != nil {
		return err
	}
	defer bb.stop()
	bb.quiet = o.Quiet
	sb, err := startBenchState(bin, dir, capture, 1, false, false, true)
	if err != nil {
		return err
	}
	defer sb.stop()
	sb.quiet = o.Quiet
	rb, err := startRelayBench(capture, true)
	if err != nil {
		return err
	}
	defer rb.stop()
	rb.quiet = o.Quiet
	fmt.Fprintf(w, "\npaced: the bridge and the minimal relay (reads AMI lines, finds the event name, publishes the raw text in-process to an embedded nats-server), %g s per trial\n", o.PaceSeconds)
	for i, rate := range o.PaceRates {
		events := max(1, int(rate*o.PaceSeconds))
		row := paceRow{Rate: rate}
		// -perf: where each spends its time at the last pace.
		perf := ""
		if o.Perf != "" && i == len(o.PaceRates)-1 {
			perf = fmt.Sprintf("%s.pace%.0f", o.Perf, rate)
		}
		var bridgeTop, relayTop string
		if row.Bridge, bridgeTop, err = profiled(perf, bb, func() (trial, error) { return bb.paced(rate, events) }); err != nil {
			return err
		}
		if row.Relay, relayTop, err = profiled(strings.Replace(perf, ".pace", ".relay", 1), rb, func() (trial, error) { return rb.paced(rate, events) }); err != nil {
			return err
		}
		if row.State, _, err = profiled("", sb, func() (trial, error) { return sb.paced(rate, events) }); err != nil {
			return err
		}
		rep.Pace = append(rep.Pace, row)
		fmt.Fprintf(w, "  %.0f/s\n", rate)
		printTrial(w, "    bridge       ", row.Bridge, 1)
		printTrial(w, "    relay        ", row.Relay, 1)
		printTrial(w, "    bridge+state ", row.State, 1)
		fmt.Fprintf(w, "    CPU per event, bridge / relay: %.2f / %.2f µs = %.2f×; wake-ups per event %.2f / %.2f\n",
			row.Bridge.CPU, row.Relay.CPU, row.Ratio(), row.Bridge.Wakeups, row.Relay.Wakeups)
		fmt.Fprintf(w, "    CPU per event, bridge+state / bridge: %.2f / %.2f µs = %.2f×; wake-ups per event %.2f / %.2f; call records %d\n",
			row.State.CPU, row.Bridge.CPU, row.StateRatio(), row.State.Wakeups, row.Bridge.Wakeups, row.State.Records)
		if bridgeTop != "" || relayTop != "" {
			fmt.Fprintf(w, "\n    where the daemon's time goes at %.0f/s (perf, self time):\n%s\n    where the relay's time goes:\n%s", rate, bridgeTop, relayTop)
		}
	}
	return nil
}

// profiled runs trial under perf record of b's measured process when path
// is set, and returns perf's top symbols too.
func profiled(path string, b *bench, run func() (trial, error)) (trial, string, error) {
	stop, err := startPerf(path, b.pid)
	if err != nil {
		return trial{}, "", err
	}
	t, err := run()
	return t, stop(), err
}

// phaseReplay replays the capture -replay at its recorded timing,
// -replay-speed times faster, through the bridge.
func phaseReplay(o options, w io.Writer, rep *report, bin, dir, capture string) error {
	path := filepath.Join(o.Repo, strings.TrimSuffix(o.Replay, ".recv.bin"))
	rep.ReplayOf = filepath.Base(path)
	fmt.Fprintf(w, "\nreplay: %s at its recorded timing", rep.ReplayOf)
	if o.ReplaySpeed != 1 {
		fmt.Fprintf(w, ", %g times faster", o.ReplaySpeed)
	}
	fmt.Fprintln(w)
	if _, err := os.Stat(path + ".chunks.jsonl"); err != nil {
		fmt.Fprintf(w, "  skipped: %s.chunks.jsonl is missing, so its timing is not known\n", rep.ReplayOf)
		return nil
	}
	b, err := startBench(bin, dir, capture, 1, false, false)
	if err != nil {
		return err
	}
	defer b.stop()
	b.quiet = o.Quiet
	t, err := b.play(pbxRequest{Op: "replay", Replay: path, Speed: o.ReplaySpeed})
	if err != nil {
		return err
	}
	t.Label = "recorded"
	rep.Replay = &t
	printTrial(w, "  ", t, 1)
	return nil
}

// phaseJetStream runs the paces through a bridge that also stores the
// events in a JetStream stream of its embedded server, and reads the
// send-to-ack latency from the daemon's histogram.
func phaseJetStream(o options, w io.Writer, rep *report, bin, dir, capture string) error {
	b, err := startBench(bin, dir, capture, 1, false, true)
	if err != nil {
		return err
	}
	defer b.stop()
	b.quiet = o.Quiet
	fmt.Fprintf(w, "\njetstream: the bridge with jetstream.enabled, %g s per trial\n", o.PaceSeconds)
	for _, rate := range o.PaceRates {
		t, err := b.paced(rate, max(1, int(rate*o.PaceSeconds)))
		if err != nil {
			return err
		}
		rep.JS = append(rep.JS, t)
		printTrial(w, "  ", t, 1)
	}
	return nil
}

// phaseStateBurst is issue 19's "with state and records on, a 12,000
// events/s burst loses nothing": one trial of -state-burst events/s for
// -pace-seconds through a fresh daemon with state.enabled. Beside the
// events' loss and Ami-Seq gaps, the call records that reach the
// subscriber must be the calls that end in what the fake PBX sent, by
// this process's own reading of the capture (callsEnded), each with its
// end seen.
func phaseStateBurst(o options, w io.Writer, rep *report, bin, dir, capture string) error {
	burst, err := loadBurst(capture)
	if err != nil {
		return err
	}
	b, err := startBenchState(bin, dir, capture, 1, false, false, true)
	if err != nil {
		return err
	}
	defer b.stop()
	b.quiet = o.Quiet
	events := max(1, int(o.StateBurst*o.PaceSeconds))
	t, err := b.paced(o.StateBurst, events)
	if err != nil {
		return err
	}
	// What was sent: events 0 to events-1 of the repeated capture, then
	// the end-of-trial mark, event 0 again (see play).
	want := callsEnded(burst, []int{events, 1})
	// The records go out at the writer's next flush after each call's
	// last Hangup: wait for them, or until none came for a while.
	sr, err := b.waitRecords(int64(want), 3*time.Second)
	if err != nil {
		return err
	}
	sb := stateBurstRow{T: t, Seconds: o.PaceSeconds, Want: want, Records: sr.Records, Unseen: sr.RecordsUnseen}
	rep.StateBurst = &sb
	fmt.Fprintf(w, "\nstate burst: the bridge with state.enabled (live state in KV, call records) at %.0f events/s for %g s\n", o.StateBurst, o.PaceSeconds)
	printTrial(w, "  ", t, 1)
	fmt.Fprintf(w, "  call records: %d, calls ended in the events sent (from the capture): %d; closed without their end seen: %d\n",
		sb.Records, sb.Want, sb.Unseen)
	return nil
}

// callsEnded counts the calls that end in the events the fake PBX sends
// for runs, each a send of that many events from the capture's first
// (pace loops over it): a call ends at the Hangup of the last live
// channel of its Linkedid. It reads the capture, not the bridge.
func callsEnded(b *burst, runs []int) int {
	live := map[string]map[string]bool{} // Linkedid → its live Uniqueids
	ended := 0
	for _, n := range runs {
		for i := range n {
			m := b.msgs[i%b.len()]
			lid, uid := m.Get("Linkedid"), m.Get("Uniqueid")
			switch m.EventName() {
			case "Newchannel":
				if live[lid] == nil {
					live[lid] = map[string]bool{}
				}
				live[lid][uid] = true
			case "Hangup":
				if ch := live[lid]; ch[uid] {
					if delete(ch, uid); len(ch) == 0 {
						delete(live, lid)
						ended++
					}
				}
			}
		}
	}
	return ended
}

// phaseFanIn runs each fan-in case: many PBXes into one daemon.
func phaseFanIn(o options, w io.Writer, rep *report, bin, dir, capture string) error {
	for _, c := range o.Fans {
		b, err := startBench(bin, dir, capture, c.PBX, false, false)
		if err != nil {
			return err
		}
		b.quiet = o.Quiet
		t, err := b.paced(c.Rate, max(1, int(c.Rate*c.Seconds)))
		b.stop()
		if err != nil {
			return err
		}
		rep.Fans = append(rep.Fans, fanRow{PBX: c.PBX, Rate: c.Rate, Seconds: c.Seconds, T: t})
		fmt.Fprintf(w, "\nfan-in: %d PBXes at %.0f events/s each for %g s\n", c.PBX, c.Rate, c.Seconds)
		printTrial(w, "  ", t, c.PBX)
		fmt.Fprintf(w, "  delivered within %.2f s of the first event sent; PBXes with a loss or an Ami-Seq gap: %d of %d\n", t.Within, t.GapPBX, c.PBX)
		for _, s := range t.Worst {
			fmt.Fprintf(w, "    %s\n", s)
		}
	}
	return nil
}

// largeFanIn is the documented choice for large fan-ins
// (docs/operations.md, "Large fan-in"): action sessions that log in on
// demand, one per PBX. The idle target is for it.
var largeFanIn = struct {
	logoff   time.Duration
	sessions int
}{5 * time.Minute, 1}

// phaseIdle measures the daemon's memory with one PBX and with -idle
// idle PBXes: with the run's settings, and, when those are the defaults,
// with the large fan-in choice too.
func phaseIdle(o options, w io.Writer, rep *report, bin, dir, capture string) error {
	if o.Idle < 2 {
		return nil
	}
	rows := []idleRow{{Logoff: o.IdleLogoff, Sessions: sessionsPerPBX, Choice: o.IdleLogoff > 0}}
	if o.IdleLogoff == 0 && o.ActionSessions == 0 {
		rows = append(rows, idleRow{Logoff: largeFanIn.logoff, Sessions: 1 + largeFanIn.sessions, Choice: true})
	}
	defer func(l time.Duration, a, s int) { idleLogoff, actionSessions, sessionsPerPBX = l, a, s }(idleLogoff, actionSessions, sessionsPerPBX)
	for _, r := range rows {
		idleLogoff, actionSessions, sessionsPerPBX = r.Logoff, r.Sessions-1, r.Sessions // what startDaemon reads
		for _, n := range []int{1, o.Idle} {
			b, err := startBench(bin, dir, capture, n, false, false)
			if err != nil {
				return err
			}
			time.Sleep(o.Settle) // the sessions' start-up garbage collected
			rss, err := memKiB(b.d.pid(), "VmRSS")
			b.stop()
			if err != nil {
				return err
			}
			if n == 1 {
				r.Base = rss
			} else {
				r.RSS = rss
			}
		}
		rep.Idles = append(rep.Idles, r)
		loggedIn := r.Sessions
		if r.Logoff > 0 {
			loggedIn = 1 // the event session
		}
		fmt.Fprintf(w, "\nidle, %s: %d PBXes: VmRSS %.1f MiB, with 1 PBX %.1f MiB: %.1f KiB per idle PBX, %.1f KiB per AMI session logged in\n",
			r.name(), o.Idle, float64(r.RSS)/1024, float64(r.Base)/1024, r.KiB(o.Idle), r.KiB(o.Idle)/float64(loggedIn))
	}
	return nil
}

// name says how the PBXes were configured.
func (r idleRow) name() string {
	if r.Logoff <= 0 {
		return fmt.Sprintf("%d AMI sessions per PBX", r.Sessions)
	}
	return fmt.Sprintf("%d AMI sessions per PBX, actions.idle_logoff %v (the action sessions logged off)", r.Sessions, r.Logoff)
}

// ms formats nanoseconds as milliseconds.
func ms(ns int64) string { return fmt.Sprintf("%.2f ms", float64(ns)/1e6) }

// latencyText is a trial's latency, Ami-Time to the subscriber.
func latencyText(l latencyReport) string {
	if l.N == 0 {
		return "no Ami-Time"
	}
	return fmt.Sprintf("p50 %s, p99 %s, max %s", ms(l.P50), ms(l.P99), ms(l.Max))
}

// ackText is a trial's send-to-ack latency, as bucket bounds.
func ackText(a *ackLatency) string {
	if a == nil || a.N == 0 {
		return "no acks counted"
	}
	f := func(s float64) string {
		if math.IsInf(s, 1) {
			return "> 30 s"
		}
		return fmt.Sprintf("≤ %g ms", s*1e3)
	}
	return fmt.Sprintf("p50 %s, p99 %s, max %s (%.0f acks)", f(a.P50), f(a.P99), f(a.Max), a.N)
}

// verdict is "ok" or "MISS".
func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}

// printSummary prints every figure measured with issue 22's target, as a
// Markdown table.
func printSummary(w io.Writer, o options, rep *report) {
	fmt.Fprintf(w, "\nsummary (issue 22's targets, and issue 19's cost)\n\n| figure | measured | target | |\n|---|---|---|---|\n")
	row := func(fig, got, target, v string) { fmt.Fprintf(w, "| %s | %s | %s | %s |\n", fig, got, target, v) }
	for _, p := range rep.Pace {
		target, v := "≤ 1.5× the relay", verdict(p.Ratio() <= 1.5)
		if p.Rate < 1000 {
			target, v = "(reported)", ""
		}
		row(fmt.Sprintf("CPU per event at %.0f/s, bridge / relay (threads scheduled in per event)", p.Rate),
			fmt.Sprintf("%.2f / %.2f µs = %.2f× (%.2f / %.2f)", p.Bridge.CPU, p.Relay.CPU, p.Ratio(), p.Bridge.Wakeups, p.Relay.Wakeups), target, v)
	}
	for _, p := range rep.Pace {
		target, v := "(reported)", ""
		if p.Rate >= 12000 {
			target, v = "p99 ≤ 5 ms", verdict(p.Bridge.Lat.N > 0 && p.Bridge.Lat.P99 <= 5e6)
		}
		row(fmt.Sprintf("latency at %.0f/s, Ami-Time → subscriber", p.Rate), latencyText(p.Bridge.Lat), target, v)
	}
	for _, p := range rep.Pace {
		row(fmt.Sprintf("bridge+state at %.0f/s: CPU per event, / the bridge without state; threads scheduled in per event; latency", p.Rate),
			fmt.Sprintf("%.2f µs = %.2f× of %.2f µs; %.2f; %s", p.State.CPU, p.StateRatio(), p.Bridge.CPU, p.State.Wakeups, latencyText(p.State.Lat)),
			"(reported)", "")
	}
	if s := rep.StateBurst; s != nil {
		row(fmt.Sprintf("state burst at %.0f/s for %g s, state and records on: lost; Ami-Seq gaps; call records / calls ended in the capture; closed unseen", s.T.Rate, s.Seconds),
			fmt.Sprintf("%d; %d; %d / %d; %d (sent at %.0f/s)", s.T.Lost(), s.T.Gaps, s.Records, s.Want, s.Unseen, s.T.SendRate),
			"0; 0; equal; 0", verdict(s.ok()))
	}
	if o.Modes["replay"] {
		got := "not measured: no recorded timing"
		if rep.Replay != nil {
			got = latencyText(rep.Replay.Lat) + fmt.Sprintf(", %d events, lost %d", rep.Replay.Sent, rep.Replay.Lost())
		}
		row("latency, "+rep.ReplayOf+" at its recorded timing", got, "(reported)", "")
	}
	for _, t := range rep.JS {
		row(fmt.Sprintf("JetStream at %.0f/s: send → ack; Ami-Time → subscriber", t.Rate), ackText(t.Ack)+"; "+latencyText(t.Lat), "(reported)", "")
	}
	for _, f := range rep.Fans {
		within := 1.1 * f.Seconds // issue 22: 10 s of traffic delivered within 11 s
		row(fmt.Sprintf("fan-in %d PBXes × %.0f/s for %g s: delivered within; lost; PBXes with a loss or gap; sessions cut", f.PBX, f.Rate, f.Seconds),
			fmt.Sprintf("%.2f s; %d; %d; %d", f.T.Within, f.T.Lost(), f.T.GapPBX, f.T.Cut),
			fmt.Sprintf("≤ %.3g s; 0; 0; 0", within), verdict(f.T.Within <= within && f.T.lossless()))
	}
	for _, r := range rep.Idles {
		name := fmt.Sprintf("memory per idle PBX (%d sessions), %d PBXes", r.Sessions, rep.Idle)
		if r.Logoff > 0 {
			name = fmt.Sprintf("memory per idle PBX (%d sessions, actions.idle_logoff %v), %d PBXes", r.Sessions, r.Logoff, rep.Idle)
		}
		got := fmt.Sprintf("%.1f KiB", r.KiB(rep.Idle))
		if r.Choice {
			row(name, got, "≤ 64 KiB with a documented choice", verdict(r.KiB(rep.Idle) <= 64))
		} else {
			row(name, got, "(reported)", "")
		}
	}
	if len(rep.Ceiling) > 0 {
		row("ceiling: TCP client → the daemon's server (mean of 2)", fmt.Sprintf("%.0f/s", rep.CeilingRate()), "(reported)", "")
	}
	if rep.InProc != nil {
		row("ceiling: in-process → an embedded server", fmt.Sprintf("%.0f/s", rep.InProc.Rcvd), "(reported)", "")
	}
	if rep.TCPPlain != nil {
		row("ceiling: TCP client → an embedded server", fmt.Sprintf("%.0f/s", rep.TCPPlain.Rcvd), "(reported)", "")
	}
	if o.Modes["search"] {
		best, name := rep.HighestCeiling()
		got := "no paced trial passed"
		ok := false
		if z := rep.ZeroLoss; z != nil && best > 0 {
			got = fmt.Sprintf("%.0f/s = %.0f %% of %.0f/s (%s)", z.Rate, 100*z.Rate/best, best, name)
			if len(o.Rates) > 0 {
				got += ", of the fixed -rates, not a search"
			}
			ok = z.Rate >= 0.7*best
		}
		row("zero-loss sustained rate / the highest ceiling", got, "≥ 70 %", verdict(ok))
	}
}

package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// trial is one measured run of events through the daemon (or, for the
// ceiling, past it).
type trial struct {
	Rate      float64  // target events/s per PBX; 0: unpaced
	Label     string   // printed in place of the rate, when set
	Sent      int64    // events the fake PBXes sent (or the raw publisher published)
	Delivered int64    // events the subscriber got
	Gaps      int64    // Ami-Seq numbers skipped: events the bridge counted as dropped
	Back      int64    // events whose Ami-Seq did not increase
	Slow      int64    // slow-consumer errors at the subscriber
	Cut       int      // sessions the fake PBX cut for not reading (writetimeout) and not back, or opened again during the trial
	GapPBX    int      // PBXes that lost an event or have an Ami-Seq gap
	Worst     []string // the first 10 of those, with their figures
	SendRate  float64  // events/s the fake PBXes achieved, all together
	Lag       float64  // seconds the fake PBXes' pacer ran behind its schedule, at worst
	Rcvd      float64  // events/s at the subscriber, first event to last
	CPU       float64  // daemon (or relay) CPU µs per delivered event
	Wakeups   float64  // times its threads were scheduled in, per delivered event
	PBXCPU    float64  // the fake PBXes' CPU µs per delivered event: what they took from the shared cores
	SubCPU    float64  // the subscriber's CPU µs per delivered event, for the same reason
	PeakRSS   int64    // daemon peak VmRSS during the trial, KiB
	Within    float64  // seconds from the first event sent to the last delivered
	Lat       latencyReport
	Ack       *ackLatency // with JetStream: the daemon's send-to-ack histogram over the trial
	Records   int64       // with state: call records the subscriber got by the trial's end
}

// lossless reports whether every event arrived, in order, with no Ami-Seq
// gap and no session cut: what must hold at any speed, unlike the pace.
func (t trial) lossless() bool {
	return t.Lost() == 0 && t.Gaps == 0 && t.Back == 0 && t.Cut == 0 && t.Slow == 0 && t.GapPBX == 0
}

// Lost is what was sent and never arrived.
func (t trial) Lost() int64 { return t.Sent - t.Delivered }

// ok reports whether the trial lost nothing and kept its pace at both
// ends: the fake PBXes were not held back by a bridge that read too
// slowly, and the subscriber got the events at the pace they were sent.
// The second matters because the bridge may wait for room in its buffer
// before it reads on: a rate it cannot sustain then backs up into its
// buffer and TCP, which a trial of a few seconds would absorb, and only
// the rate at the subscriber shows it.
func (t trial) ok(pbxes int) bool {
	pace := 0.97 * t.Rate * float64(pbxes)
	return t.Lost() == 0 && t.Gaps == 0 && t.Back == 0 && t.Cut == 0 && t.Slow == 0 && t.GapPBX == 0 &&
		(t.Rate == 0 || (t.SendRate >= pace && t.Rcvd >= pace))
}

// report is everything one run measured.
type report struct {
	Ceiling    []trial // raw publishes over TCP to the daemon's server: before and after the bridge's trials
	InProc     *trial  // raw publishes in-process to an embedded server without a bridge (the relay's)
	TCPPlain   *trial  // raw publishes over TCP to that server
	Pace       []paceRow
	Replay     *trial
	ReplayOf   string
	JS         []trial
	Fans       []fanRow
	StateBurst *stateBurstRow
	Floods     []trial // unpaced: before and after the paced trials
	Search     []trial
	ZeroLoss   *trial    // the fastest paced trial that passed
	Idles      []idleRow // the idle mode's measurements, one per configuration
	Idle       int       // idle PBXes in each
	PerfTop    string
}

// paceRow is one pace of the relay comparison: the bridge and the relay
// on the same fake PBX pacing, one after the other.
type paceRow struct {
	Rate          float64
	Bridge, Relay trial
	State         trial // the bridge with state.enabled
}

// StateRatio is the CPU per event of the bridge with state over the
// bridge's without.
func (p paceRow) StateRatio() float64 { return p.State.CPU / max(p.Bridge.CPU, 1e-9) }

// stateBurstRow is the state burst's trial and the call records it gave.
type stateBurstRow struct {
	T       trial
	Seconds float64
	Want    int   // calls that end in the events sent, from the capture
	Records int64 // call records the subscriber got
	Unseen  int64 // of those, closed without their end seen
}

// ok reports whether the burst lost nothing, kept its pace, and gave one
// record per call ended, each with its end seen.
func (s stateBurstRow) ok() bool {
	return s.T.ok(1) && s.Records == int64(s.Want) && s.Unseen == 0
}

// Ratio is the bridge's CPU per event over the relay's.
func (p paceRow) Ratio() float64 { return p.Bridge.CPU / max(p.Relay.CPU, 1e-9) }

// fanRow is one fan-in case.
type fanRow struct {
	PBX     int
	Rate    float64 // per PBX
	Seconds float64
	T       trial
}

// HighestCeiling is the fastest of every ceiling measured, and its name.
func (r *report) HighestCeiling() (float64, string) {
	best, name := r.CeilingRate(), "TCP to the daemon's server"
	if len(r.Ceiling) == 0 {
		best = 0
	}
	if r.InProc != nil && r.InProc.Rcvd > best {
		best, name = r.InProc.Rcvd, "in-process to an embedded server"
	}
	if r.TCPPlain != nil && r.TCPPlain.Rcvd > best {
		best, name = r.TCPPlain.Rcvd, "TCP to an embedded server"
	}
	return best, name
}

// SearchStart is the rate the zero-loss search starts at: the highest
// ceiling measured so far, the daemon's own first ceiling included. A
// fresh daemon's first ceiling often reads low (by up to 40 %,
// bench/README.md): a search that started there passed its first trial
// and could find no zero-loss rate above it, whatever the bridge did.
func (r *report) SearchStart() float64 {
	h, _ := r.HighestCeiling()
	return h
}

// FloodRate is the mean delivered rate of the floods.
func (r *report) FloodRate() float64 { return meanRcvd(r.Floods) }

// CeilingRate is the mean delivered rate of the raw publishes.
func (r *report) CeilingRate() float64 { return meanRcvd(r.Ceiling) }

// meanRcvd is the mean rate at the subscriber of ts, 0 for none.
func meanRcvd(ts []trial) float64 {
	s := 0.0
	for _, t := range ts {
		s += t.Rcvd
	}
	return s / float64(max(1, len(ts)))
}

// sessionsPerPBX is how many AMI sessions the daemon keeps with each PBX:
// the event session and the action sessions (-action-sessions, else the
// default).
var sessionsPerPBX = 1 + bridge.DefaultActionSessions

// actionSessions is options.ActionSessions for every daemon the run starts.
var actionSessions int

// idleRow is the idle mode's measurement of one configuration.
type idleRow struct {
	Logoff   time.Duration // actions.idle_logoff (0: off)
	Sessions int           // AMI sessions per PBX
	Choice   bool          // the documented choice for large fan-ins, which the target is for
	Base     int64         // VmRSS with one idle PBX, KiB
	RSS      int64         // VmRSS with report.Idle idle PBXes, KiB
}

// KiB is the memory of one idle PBX.
func (r idleRow) KiB(pbxes int) float64 {
	return float64(r.RSS-r.Base) / float64(max(1, pbxes-1))
}

// bench is the processes of one phase: fake PBXes, the daemon (or the
// relay), the subscriber and, for a ceiling, the raw publisher.
type bench struct {
	pbx, sub, raw *child
	d             *daemon
	relay         *child // the relay, in place of the daemon
	pid           int    // the process measured: the daemon or the relay
	pbxes         int
	quiet         time.Duration // how long nothing new must arrive before a trial begins (0: 1 s)
}

func startBench(bin, dir, capture string, pbxes int, withRaw, jetStream bool) (*bench, error) {
	return startBenchState(bin, dir, capture, pbxes, withRaw, jetStream, stateOn)
}

// startBenchState is startBench with the live call state on or off
// whatever -state says; with it on, the subscriber also counts the call
// records.
func startBenchState(bin, dir, capture string, pbxes int, withRaw, jetStream, state bool) (*bench, error) {
	b := &bench{pbxes: pbxes}
	var addrs []string
	var err error
	if b.pbx, err = startChild("pbx", &addrs, "-n", fmt.Sprint(pbxes), "-capture", capture); err != nil {
		return nil, err
	}
	if b.d, err = startDaemon(bin, dir, addrs, jetStream, state); err != nil {
		b.stop()
		return nil, err
	}
	b.pid = b.d.pid()
	subArgs := []string{"-nats", b.d.natsURL}
	if state {
		subArgs = append(subArgs, "-records", subjects.AllCallRecords("ami"))
	}
	if b.sub, err = startChild("sub", nil, subArgs...); err != nil {
		b.stop()
		return nil, err
	}
	if withRaw {
		if b.raw, err = startChild("raw", nil, "-nats", b.d.natsURL, "-capture", capture); err != nil {
			b.stop()
			return nil, err
		}
	}
	if err := b.pbx.call(pbxRequest{Op: "wait"}, nil); err != nil {
		b.stop()
		return nil, fmt.Errorf("%w (daemon log: %s)", err, b.d.logPath)
	}
	return b, nil
}

// startRelayBench is startBench with the minimal relay in place of the
// daemon. With pbx false it has no fake PBX: a ceiling's bench, with the
// raw publisher over TCP to the relay's server.
func startRelayBench(capture string, pbx bool) (*bench, error) {
	b := &bench{pbxes: 1}
	args := []string{"-capture", capture}
	if pbx {
		var addrs []string
		var err error
		if b.pbx, err = startChild("pbx", &addrs, "-n", "1", "-capture", capture); err != nil {
			return nil, err
		}
		args = append(args, "-ami", addrs[0], "-name", pbxName(0))
	}
	var ready relayReady
	var err error
	if b.relay, err = startChild("relay", &ready, args...); err != nil {
		b.stop()
		return nil, err
	}
	b.pid = b.relay.cmd.Process.Pid
	if b.sub, err = startChild("sub", nil, "-nats", ready.URL, "-subject", "relay.>,ami.*.event.>"); err != nil {
		b.stop()
		return nil, err
	}
	if !pbx {
		if b.raw, err = startChild("raw", nil, "-nats", ready.URL, "-capture", capture); err != nil {
			b.stop()
			return nil, err
		}
		return b, nil
	}
	if err := b.pbx.call(pbxRequest{Op: "wait"}, nil); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

// stop ends the phase's processes, the daemon first so that it logs off
// from live PBXes.
func (b *bench) stop() {
	if b.d != nil {
		b.d.stop()
	}
	b.relay.stop()
	b.raw.stop()
	b.sub.stop()
	b.pbx.stop()
}

// settle waits until every one of want events is accounted for, delivered
// or skipped in Ami-Seq, or nothing new has come for quiet, and returns
// the subscriber's counts.
func (b *bench) settle(want int64, quiet time.Duration) (subReport, error) {
	deadline := time.Now().Add(5 * time.Minute)
	last, since := int64(-1), time.Now()
	for {
		var rep subReport
		if err := b.sub.call(subRequest{Op: "report"}, &rep); err != nil {
			return rep, err
		}
		seen := rep.Events
		for _, c := range rep.Servers {
			seen += c.Gaps
		}
		switch {
		case seen >= want:
			return rep, nil
		case seen != last:
			last, since = seen, time.Now()
		case time.Since(since) > quiet || time.Now().After(deadline):
			return rep, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRecords waits until want call records have arrived, or none came
// for quiet, and returns the subscriber's counts.
func (b *bench) waitRecords(want int64, quiet time.Duration) (subReport, error) {
	last, since := int64(-1), time.Now()
	for {
		var rep subReport
		if err := b.sub.call(subRequest{Op: "report"}, &rep); err != nil {
			return rep, err
		}
		switch {
		case rep.Records >= want:
			return rep, nil
		case rep.Records != last:
			last, since = rep.Records, time.Now()
		case time.Since(since) > quiet:
			return rep, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// meter holds the daemon's counters at the start of a trial.
type meter struct {
	cpu    time.Duration
	runs   int64
	pbxCPU time.Duration // the fake PBXes' process, which shares the cores
	subCPU time.Duration // the subscriber's, which does too
	rss    *rssSampler
}

// begin waits for the previous trial's tail, zeroes the subscriber's
// counts and starts measuring the daemon.
func (b *bench) begin() (meter, error) {
	quiet := b.quiet
	if quiet == 0 {
		quiet = time.Second
	}
	if _, err := b.settle(math.MaxInt64, quiet); err != nil {
		return meter{}, err
	}
	if err := b.sub.call(subRequest{Op: "reset"}, nil); err != nil {
		return meter{}, err
	}
	cpu, runs, err := procCPU(b.pid)
	if err != nil {
		return meter{}, err
	}
	m := meter{cpu: cpu, runs: runs}
	if b.pbx != nil {
		if m.pbxCPU, _, err = procCPU(b.pbx.cmd.Process.Pid); err != nil {
			return meter{}, err
		}
	}
	if m.subCPU, _, err = procCPU(b.sub.cmd.Process.Pid); err != nil {
		return meter{}, err
	}
	m.rss = startRSS(b.pid)
	return m, nil
}

// end waits until sent events are accounted for and fills t from the
// subscriber's counts and the daemon's.
func (b *bench) end(m meter, t *trial, sent int64) (subReport, error) {
	rep, err := b.settle(sent, 5*time.Second)
	t.PeakRSS = m.rss.stop()
	if err != nil {
		return rep, err
	}
	cpu, runs, err := procCPU(b.pid)
	if err != nil {
		return rep, err
	}
	if err := b.sub.call(subRequest{Op: "latency"}, &t.Lat); err != nil {
		return rep, err
	}
	t.Sent, t.Delivered, t.Slow, t.Records = sent, rep.Events, rep.Slow, rep.Records
	for _, c := range rep.Servers {
		t.Gaps += c.Gaps
		t.Back += c.Back
	}
	t.CPU = float64(cpu-m.cpu) / 1e3 / float64(max(1, rep.Events))
	t.Wakeups = float64(runs-m.runs) / float64(max(1, rep.Events))
	if b.pbx != nil {
		pcpu, _, err := procCPU(b.pbx.cmd.Process.Pid)
		if err != nil {
			return rep, err
		}
		t.PBXCPU = float64(pcpu-m.pbxCPU) / 1e3 / float64(max(1, rep.Events))
	}
	scpu, _, err := procCPU(b.sub.cmd.Process.Pid)
	if err != nil {
		return rep, err
	}
	t.SubCPU = float64(scpu-m.subCPU) / 1e3 / float64(max(1, rep.Events))
	return rep, nil
}

// rcvdRate is the subscriber's rate from its first event to its last.
func rcvdRate(rep subReport) float64 {
	if rep.Last <= rep.First {
		return 0
	}
	return float64(rep.Events) / (float64(rep.Last-rep.First) / 1e9)
}

// paced runs events per PBX at rate each (0: unpaced) through the daemon.
func (b *bench) paced(rate float64, events int) (trial, error) {
	// One PBX gives every pass over the capture its own Uniqueids and
	// Linkedids (relabel): a pass is then new calls, as on a real PBX, not
	// the first pass's calls again (which the live state rightly ignores,
	// publishing no second record). Many PBXes share the capture's bytes.
	return b.play(pbxRequest{Op: "send", Rate: rate, Events: events, Relabel: b.pbxes == 1})
}

// play runs what req asks the fake PBXes to send through the daemon (or
// the relay).
func (b *bench) play(req pbxRequest) (trial, error) {
	var t trial
	var ack0 map[float64]float64
	if b.d != nil && b.d.metricsURL != "" {
		var err error
		if ack0, err = scrapeAck(b.d.metricsURL); err != nil {
			return t, err
		}
	}
	if err := b.pbx.call(pbxRequest{Op: "wait"}, nil); err != nil { // a cut session is back
		return t, err
	}
	m, err := b.begin()
	if err != nil {
		return t, err
	}
	send := func(req pbxRequest) (int64, sendReport, error) {
		var sr sendReport
		if err := b.pbx.call(req, &sr); err != nil {
			return 0, sr, err
		}
		var n int64
		for _, s := range sr.Sent {
			n += int64(s)
		}
		return n, sr, nil
	}
	sent, sr, err := send(req)
	if err != nil {
		m.rss.stop()
		return t, err
	}
	rep, err := b.settle(sent, 5*time.Second)
	if err != nil {
		m.rss.stop()
		return t, err
	}
	t.Rcvd = rcvdRate(rep)
	if rep.Last > sr.Start {
		t.Within = float64(rep.Last-sr.Start) / 1e9
	}
	// One more event per PBX, once the bridge has caught up: the gap before
	// it counts the events it dropped at the end of the trial, which no
	// later event would show.
	marks, mr, err := send(pbxRequest{Op: "send", Events: 1})
	if err != nil {
		m.rss.stop()
		return t, err
	}
	if rep, err = b.end(m, &t, sent+marks); err != nil {
		return t, err
	}
	if ack0 != nil {
		ack1, err := scrapeAck(b.d.metricsURL)
		if err != nil {
			return t, err
		}
		t.Ack = ackDelta(ack0, ack1)
	}
	// Sessions cut and gone at the end, and those opened again meanwhile.
	t.Rate, t.Cut, t.Lag = req.Rate, sr.Dropped+int(mr.Accepted-sr.AcceptedBefore), sr.MaxLag
	if sr.Seconds > 0 {
		t.SendRate = float64(sent) / sr.Seconds
	}
	for i, s := range sr.Sent {
		c := rep.Servers[pbxName(i)]
		if c == nil {
			c = &serverCount{}
		}
		if c.Events != int64(s)+1 || c.Gaps > 0 {
			t.GapPBX++
			if len(t.Worst) < 10 {
				t.Worst = append(t.Worst, fmt.Sprintf("%s: %d of %d lost, Ami-Seq gaps %d", pbxName(i), int64(s)+1-c.Events, s+1, c.Gaps))
			}
		}
	}
	return t, nil
}

// ceiling publishes events straight to NATS, unpaced, from the raw
// publisher over TCP.
func (b *bench) ceiling(events int) (trial, error) { return b.ceilingBy(b.raw, events) }

// ceilingBy is ceiling from publisher: the raw child, or the relay child
// over its in-process connection.
func (b *bench) ceilingBy(publisher *child, events int) (trial, error) {
	var t trial
	m, err := b.begin()
	if err != nil {
		return t, err
	}
	var secs float64
	if err := publisher.call(rawRequest{Events: events}, &secs); err != nil {
		m.rss.stop()
		return t, err
	}
	rep, err := b.end(m, &t, int64(events))
	t.Rcvd = rcvdRate(rep)
	t.Lat = latencyReport{} // an unpaced publisher's queue, not a latency
	if secs > 0 {
		t.SendRate = float64(events) / secs
	}
	return t, err
}

// run measures what o asks for and prints it to w as it goes, then the
// summary table.
// stateOn is options.State for every daemon the run starts.
var stateOn bool

// idleLogoff is options.IdleLogoff for every daemon the run starts.
var idleLogoff time.Duration

func run(o options, w io.Writer) (*report, error) {
	stateOn = o.State
	idleLogoff = o.IdleLogoff
	actionSessions = o.ActionSessions
	sessionsPerPBX = 1 + bridge.DefaultActionSessions
	if actionSessions > 0 {
		sessionsPerPBX = 1 + actionSessions
	}
	header(w, o)
	dir, err := os.MkdirTemp("", "amiload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := o.Bin
	if bin == "" {
		if bin, err = buildDaemon(o.Repo, dir); err != nil {
			return nil, err
		}
	}
	capture := filepath.Join(o.Repo, capturePath)
	rep := &report{Idle: o.Idle}
	phases := []struct {
		mode string
		f    func(options, io.Writer, *report, string, string, string) error
	}{
		// The ceilings without a bridge come first: the zero-loss
		// search starts from the highest ceiling known.
		{"ceilings", phaseCeilings}, {"search", phaseOne}, {"pace", phasePace}, {"replay", phaseReplay},
		{"jetstream", phaseJetStream}, {"stateburst", phaseStateBurst}, {"fanin", phaseFanIn}, {"idle", phaseIdle},
	}
	for _, p := range phases {
		if !o.Modes[p.mode] {
			continue
		}
		if err := p.f(o, w, rep, bin, dir, capture); err != nil {
			return rep, fmt.Errorf("%s: %w", p.mode, err)
		}
	}
	printSummary(w, o, rep)
	return rep, nil
}

// phaseOne is one PBX: idle memory, the ceiling, the flood, then the
// zero-loss search, and the ceiling again.
func phaseOne(o options, w io.Writer, rep *report, bin, dir, capture string) error {
	b, err := startBench(bin, dir, capture, 1, true, false)
	if err != nil {
		return err
	}
	defer b.stop()
	b.quiet = o.Quiet

	c, err := b.ceiling(o.Events)
	if err != nil {
		return err
	}
	rep.Ceiling = append(rep.Ceiling, c)
	fmt.Fprintf(w, "\nceiling: the same payloads published raw to the daemon's NATS server\n")
	printTrial(w, "  ", c, 1)

	// The flood runs twice, like the ceiling, before and after the paced
	// trials: on a shared machine one trial can be off by 15 %.
	flood := func(title, perf string) error {
		stopPerf, err := startPerf(perf, b.d.pid())
		if err != nil {
			return err
		}
		f, err := b.paced(0, o.Events)
		if top := stopPerf(); top != "" {
			rep.PerfTop = top
		}
		if err != nil {
			return err
		}
		rep.Floods = append(rep.Floods, f)
		fmt.Fprintf(w, "\n%s\n", title)
		printTrial(w, "  ", f, 1)
		fmt.Fprintf(w, "  dropped events counted exactly (Ami-Seq gaps = lost): %v\n", f.Gaps == f.Lost())
		return nil
	}
	if err := flood("flood: unpaced, as fast as the daemon takes the events", o.Perf); err != nil {
		return err
	}

	fmt.Fprintf(w, "\npaced trials\n")
	try := func(rate float64) (bool, error) {
		t, err := b.paced(rate, o.Events)
		if err != nil {
			return false, err
		}
		rep.Search = append(rep.Search, t)
		printTrial(w, "  ", t, 1)
		if t.ok(1) && (rep.ZeroLoss == nil || t.Rate > rep.ZeroLoss.Rate) {
			rep.ZeroLoss = &rep.Search[len(rep.Search)-1]
		}
		return t.ok(1), nil
	}
	if len(o.Rates) > 0 {
		for _, r := range o.Rates {
			if _, err := try(r); err != nil {
				return err
			}
		}
	} else {
		// RFC 2544: halve the interval between the fastest pass and the
		// slowest failure.
		lo, hi := 0.0, rep.SearchStart()
		rate := hi
		for range o.Steps {
			pass, err := try(math.Round(rate/1000) * 1000)
			if err != nil {
				return err
			}
			if pass {
				lo = rate
			} else {
				hi = rate
			}
			if hi-lo <= o.Resolution*hi {
				break
			}
			rate = (lo + hi) / 2
		}
	}

	if c, err = b.ceiling(o.Events); err != nil {
		return err
	}
	rep.Ceiling = append(rep.Ceiling, c)
	fmt.Fprintf(w, "\nceiling again\n")
	printTrial(w, "  ", c, 1)
	if err := flood("flood again", ""); err != nil {
		return err
	}
	ceil := rep.CeilingRate()
	fmt.Fprintf(w, "\nsummary\n  ceiling (mean of 2): %.0f events/s\n", ceil)
	if z := rep.ZeroLoss; z != nil {
		fmt.Fprintf(w, "  zero-loss rate: %.0f events/s (%.0f%% of the ceiling), %.1f µs CPU per event, peak RSS %.0f MiB\n",
			z.Rate, 100*z.Rate/ceil, z.CPU, float64(z.PeakRSS)/1024)
	} else {
		fmt.Fprintf(w, "  zero-loss rate: none of the paced trials passed\n")
	}
	var lost, sent, peak int64
	cpu := 0.0
	for _, f := range rep.Floods {
		lost, sent, peak = lost+f.Lost(), sent+f.Sent, max(peak, f.PeakRSS)
		cpu += f.CPU / float64(len(rep.Floods))
	}
	fr := rep.FloodRate()
	fmt.Fprintf(w, "  flood (mean of %d): %.0f events/s delivered (%.0f%% of the ceiling", len(rep.Floods), fr, 100*fr/ceil)
	if z := rep.ZeroLoss; z != nil {
		fmt.Fprintf(w, ", %.0f%% of the zero-loss rate", 100*fr/z.Rate)
	}
	fmt.Fprintf(w, "), %.1f%% lost, %.1f µs CPU per delivered event, peak RSS %.0f MiB\n",
		100*float64(lost)/float64(max(1, sent)), cpu, float64(peak)/1024)
	if rep.PerfTop != "" {
		fmt.Fprintf(w, "\nwhere the daemon's time goes under the flood (perf, self time):\n%s", rep.PerfTop)
	}
	return nil
}

func printTrial(w io.Writer, indent string, t trial, pbxes int) {
	rate := "unpaced"
	if t.Label != "" {
		rate = t.Label
	} else if t.Rate > 0 {
		rate = fmt.Sprintf("%.0f/s", t.Rate*float64(pbxes))
	}
	verdict := "FAIL"
	if t.ok(pbxes) {
		verdict = "pass"
	}
	fmt.Fprintf(w, "%s%-10s %s sent %d at %.0f/s, delivered %d at %.0f/s, lost %d, Ami-Seq gaps %d, cut %d, slow %d, CPU %.2f µs/event, %.2f wake-ups/event, peak RSS %.0f MiB\n",
		indent, rate, verdict, t.Sent, t.SendRate, t.Delivered, t.Rcvd, t.Lost(), t.Gaps, t.Cut, t.Slow, t.CPU, t.Wakeups, float64(t.PeakRSS)/1024)
	if t.PBXCPU > 0 {
		fmt.Fprintf(w, "%s%-10s the fake PBXes' own CPU: %.2f µs/event; their pacer late by %.1f ms at worst; the subscriber's: %.2f µs/event\n", indent, "", t.PBXCPU, t.Lag*1e3, t.SubCPU)
	}
	if t.Lat.N > 0 {
		fmt.Fprintf(w, "%s%-10s latency Ami-Time → subscriber: %s\n", indent, "", latencyText(t.Lat))
	}
	if t.Ack != nil {
		fmt.Fprintf(w, "%s%-10s JetStream send → ack: %s\n", indent, "", ackText(t.Ack))
	}
}

// startPerf starts perf record on pid when path is set. The returned
// function stops it and returns perf report's top symbols by self time.
func startPerf(path string, pid int) (stop func() string, err error) {
	if path == "" {
		return func() string { return "" }, nil
	}
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", fmt.Sprint(pid), "-o", path)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	return func() string {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		out, err := exec.Command("perf", "report", "-i", path, "--stdio", "--no-children", "-q",
			"--sort", "symbol", "--percent-limit", "0.7", "-g", "none").Output()
		if err != nil {
			return fmt.Sprintf("perf report: %v\n", err)
		}
		var b strings.Builder
		for line := range strings.Lines(string(out)) {
			// Drop the IPC columns, "-  -" without hardware counters.
			line = strings.TrimRight(line, " \n")
			line = strings.TrimRight(strings.TrimSuffix(line, "-      -"), " ")
			if line != "" {
				b.WriteString(line + "\n")
			}
		}
		return b.String()
	}, nil
}

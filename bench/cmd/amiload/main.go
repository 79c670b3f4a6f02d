// Command amiload measures ami-bridge's event throughput the way a user
// would see it, each part in its own process: a fake PBX (amitest)
// replaying the events of a real Asterisk 22 burst at fixed rates, the
// ami-bridge daemon built from ./cmd/ami-bridge with its embedded NATS
// server, and a subscriber counting what arrives. The ceiling is the same
// payloads published straight to the same NATS server, in the same run.
//
// It reports the highest paced rate at which a run of -events events loses
// nothing (an RFC 2544 binary search), the unpaced flood's delivered rate,
// the daemon's CPU time per event and peak RSS, 100 PBXes fanned in at
// 1,000 events/s each, and the memory of idle PBXes. Loss is what the
// fake PBX sent minus what the subscriber got; the bridge's own counters
// are not trusted for it. Every run stops by itself.
//
// Run it from the bench module:
//
//	cd bench && go run ./cmd/amiload
//
// The processes: the orchestrator (this command), and the children it
// starts from its own executable, told their role by AMILOAD_ROLE: "pbx",
// "sub" and "raw" (the ceiling's publisher).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "amiload %s: %v\n", role, err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "amiload:", err)
		os.Exit(2)
	}
	if _, err := run(opts, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "amiload:", err)
		os.Exit(1)
	}
}

// runRole runs a child process's part.
func runRole(role string, args []string) error {
	switch role {
	case "pbx":
		return runPBX(args)
	case "sub":
		return runSub(args)
	case "raw":
		return runRaw(args)
	case "relay":
		return runRelay(args)
	}
	return fmt.Errorf("unknown role %q", role)
}

// options is what one run measures.
type options struct {
	Repo        string          // the ami-bridge repository
	Bin         string          // a daemon already built from it (tests); empty: build one
	Modes       map[string]bool // the parts of the run (allModes)
	Events      int             // events per trial (ceilings, flood, each trial of the search)
	Steps       int             // paced trials of the search, at most
	Resolution  float64         // the search stops when its bounds are this close, relative
	Rates       []float64       // fixed paced rates, instead of the search
	PaceRates   []float64       // the paces of the relay comparison and of the JetStream trials
	PaceSeconds float64         // length of each of those trials
	Replay      string          // capture replayed at its recorded timing, relative to Repo
	ReplaySpeed float64         // replay time runs this many times faster
	Fans        []fanCase       // fan-in cases
	Idle        int             // idle PBXes whose memory is measured (0: none)
	Perf        string          // when set, perf record the daemon under the flood into this file
	Settle      time.Duration   // wait before reading an idle daemon's memory
	IdleLogoff  time.Duration   // servers[].actions.idle_logoff of every daemon (0: off)
	StateBurst  float64         // the state burst's events/s, for PaceSeconds
	State       bool            // every daemon keeps the live call state and publishes call records (state.enabled)
	Quiet       time.Duration   // before a trial, the previous one's tail is over once nothing came for this long

	ActionSessions int // servers[].action_sessions of every daemon (0: the default)
}

// allModes are the parts of a run, in the order they run: the zero-loss
// search with the TCP ceiling and the flood (issue 7); the ceilings
// without a bridge, the bridge against the minimal relay (and the bridge
// with state) at real paces, the replay at recorded timing, JetStream,
// fan-in and idle memory (issue 22); the burst with state and records
// (issue 19).
var allModes = []string{"search", "ceilings", "pace", "replay", "jetstream", "stateburst", "fanin", "idle"}

func parseModes(v string) (map[string]bool, error) {
	m := map[string]bool{}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(allModes, s) {
			return nil, fmt.Errorf("-modes: unknown mode %q (known: %s)", s, strings.Join(allModes, ","))
		}
		m[s] = true
	}
	return m, nil
}

// parseRates reads comma-separated positive numbers.
func parseRates(flagName, v string) ([]float64, error) {
	var out []float64
	for _, r := range strings.Split(v, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		f, err := strconv.ParseFloat(r, 64)
		if err != nil || f <= 0 {
			return nil, fmt.Errorf("%s: bad rate %q", flagName, r)
		}
		out = append(out, f)
	}
	return out, nil
}

// parseFans reads fan-in cases, "PBXESxRATE" comma-separated, each for
// seconds.
func parseFans(v string, seconds float64) ([]fanCase, error) {
	var out []fanCase
	for _, c := range strings.Split(v, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		n, r, ok := strings.Cut(c, "x")
		pbx, err1 := strconv.Atoi(n)
		rate, err2 := strconv.ParseFloat(r, 64)
		if !ok || err1 != nil || err2 != nil || pbx < 1 || rate <= 0 {
			return nil, fmt.Errorf("-fan: bad case %q, want PBXESxRATE such as 500x300", c)
		}
		out = append(out, fanCase{PBX: pbx, Rate: rate, Seconds: seconds})
	}
	return out, nil
}

func parseFlags(args []string) (options, error) {
	// -smoke changes the defaults; flags given with it still apply.
	o := options{Events: 880_000, Steps: 7, Resolution: 0.03, Idle: 1000, Settle: 3 * time.Second, Quiet: time.Second,
		PaceRates: []float64{100, 1000, 12000}, PaceSeconds: 10, Replay: replayCapture, ReplaySpeed: 1, StateBurst: 12000}
	modes, fans, fanSeconds, paceRates := strings.Join(allModes, ","), "100x1000,500x300,1000x100", 10.0, "100,1000,12000"
	if slices.ContainsFunc(args, func(a string) bool {
		return strings.TrimLeft(a, "-") == "smoke" || strings.TrimLeft(a, "-") == "smoke=true"
	}) {
		o = smokeOptions("")
		fans, fanSeconds, paceRates = "10x1000", 0.5, "100,1000,12000"
	}
	fs := flag.NewFlagSet("amiload", flag.ContinueOnError)
	fs.Bool("smoke", false, "a run of a few seconds: small trials, one fixed rate, 10 PBXes, 50 idle PBXes")
	fs.StringVar(&o.Repo, "repo", "", "ami-bridge repository (default: found above the working directory)")
	fs.StringVar(&o.Bin, "bin", "", "the ami-bridge executable to run (default: built from the repository)")
	fs.IntVar(&o.Events, "events", o.Events, "events per trial (880,000: 200 passes over the burst's 4,400)")
	fs.IntVar(&o.Steps, "steps", o.Steps, "paced trials of the zero-loss search, at most")
	fs.Float64Var(&o.Resolution, "resolution", o.Resolution, "stop the search when its bounds are this close, relative")
	rates := fs.String("rates", "", "comma-separated paced rates (events/s) to try instead of the search")
	fs.StringVar(&modes, "modes", modes, "comma-separated parts to run: "+strings.Join(allModes, ","))
	fs.StringVar(&paceRates, "pace", paceRates, "comma-separated paces (events/s) of the bridge-vs-relay and JetStream trials")
	fs.Float64Var(&o.PaceSeconds, "pace-seconds", o.PaceSeconds, "seconds of each paced bridge, relay and JetStream trial")
	fs.Float64Var(&o.StateBurst, "state-burst", o.StateBurst, "events/s of the stateburst mode's trial, for -pace-seconds, with state.enabled")
	fs.StringVar(&o.Replay, "replay", o.Replay, "capture replayed at its recorded timing (needs its .chunks.jsonl), relative to the repository")
	fs.Float64Var(&o.ReplaySpeed, "replay-speed", o.ReplaySpeed, "replay this many times faster than recorded")
	fs.StringVar(&fans, "fan", fans, "comma-separated fan-in cases, PBXESxRATE (events/s per PBX)")
	fs.Float64Var(&fanSeconds, "fan-seconds", fanSeconds, "seconds of each fan-in case")
	fs.IntVar(&o.Idle, "idle", o.Idle, "idle PBXes whose memory is measured, each with the daemon's default 3 AMI sessions (0: skip)")
	fs.DurationVar(&o.Quiet, "quiet", o.Quiet, "before each trial, wait until nothing came for this long")
	fs.DurationVar(&o.IdleLogoff, "idle-logoff", o.IdleLogoff, "servers[].actions.idle_logoff of every daemon: action sessions log in on demand (0: always logged in)")
	fs.IntVar(&o.ActionSessions, "action-sessions", o.ActionSessions, "servers[].action_sessions of every daemon (0: the daemon's default)")
	fs.DurationVar(&o.Settle, "settle", o.Settle, "wait before reading an idle daemon's memory")
	fs.BoolVar(&o.State, "state", o.State, "run every daemon with state.enabled: live call state in KV and call records (the pace mode always compares the bridge with and without state)")
	fs.StringVar(&o.Perf, "perf", "", "perf record the daemon during the flood into `file` and print where its time goes")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if *rates != "" {
		if o.Rates, err = parseRates("-rates", *rates); err != nil {
			return o, err
		}
	}
	if o.PaceRates, err = parseRates("-pace", paceRates); err != nil {
		return o, err
	}
	if o.Modes, err = parseModes(modes); err != nil {
		return o, err
	}
	if o.Fans, err = parseFans(fans, fanSeconds); err != nil {
		return o, err
	}
	if o.PaceSeconds <= 0 || fanSeconds <= 0 || o.ReplaySpeed <= 0 || o.StateBurst <= 0 {
		return o, errors.New("-pace-seconds, -fan-seconds, -replay-speed and -state-burst must be positive")
	}
	if o.Repo == "" {
		if o.Repo, err = findRepo(); err != nil {
			return o, err
		}
	}
	return o, nil
}

// smokeOptions is a run of a few seconds for CI: it checks that every part
// works and loses nothing at a modest rate, not how fast it is. The replay
// uses a small capture with its timing, 10 times faster.
func smokeOptions(repo string) options {
	return options{Repo: repo, Modes: parseModesMust(strings.Join(allModes, ",")), Events: 20_000, Rates: []float64{10_000},
		PaceRates: []float64{100, 1000, 12000}, PaceSeconds: 0.3, Replay: smokeReplay, ReplaySpeed: 10, StateBurst: 12000,
		Fans: []fanCase{{PBX: 10, Rate: 1000, Seconds: 0.5}}, Idle: 50, Settle: time.Second, Quiet: 200 * time.Millisecond}
}

// replayCapture is the full run's replay: capture 14a's burst (200 Async
// Originates on Asterisk 22.10.1) recorded again with its timing, as the
// observer session saw it: events on and no actions, as the bridge's event
// session. 4,400 events in 1.4 s, 15,900 events/s over its busiest 100 ms,
// delivered in 435 socket reads of up to 64 KiB.
const replayCapture = "amiproto/testdata/captures/asterisk-22/14d_burst_200_timed_observer"

// smokeReplay is a capture with its .chunks.jsonl: 41 events over 3.3 s.
const smokeReplay = "amiproto/testdata/captures/asterisk-22/07b_originate_vars_userevent_getvar_setvar"

func parseModesMust(v string) map[string]bool {
	m, err := parseModes(v)
	if err != nil {
		panic(err)
	}
	return m
}

// findRepo returns the first directory at or above the working directory
// that holds cmd/ami-bridge.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "cmd", "ami-bridge", "main.go")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no ami-bridge repository above the working directory; use -repo")
		}
		dir = parent
	}
}

// header prints what the run is and where.
func header(w io.Writer, o options) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "amiload %s on %s: %s/%s, %d CPUs, %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), host,
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(w, "load average at start: %s\n", strings.Join(strings.Fields(string(b))[:3], " "))
	}
	fmt.Fprintf(w, "burst: %s, %d events per trial\n", capturePath, o.Events)
	if o.State {
		fmt.Fprintf(w, "daemon: state.enabled (live call state in KV, call records)\n")
	}
}

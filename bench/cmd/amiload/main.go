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
	}
	return fmt.Errorf("unknown role %q", role)
}

// options is what one run measures.
type options struct {
	Repo       string        // the ami-bridge repository
	Events     int           // events per trial (ceiling, flood, each paced trial)
	Steps      int           // paced trials of the search, at most
	Resolution float64       // the search stops when its bounds are this close, relative
	Rates      []float64     // fixed paced rates, instead of the search
	FanPBX     int           // PBXes of the fan-in run (0: none)
	FanRate    float64       // events/s per PBX
	FanSeconds float64       // length of the fan-in run
	Idle       int           // idle PBXes whose memory is measured (0: none)
	Perf       string        // when set, perf record the daemon under the flood into this file
	Settle     time.Duration // wait before reading an idle daemon's memory
	State      bool          // the daemon keeps the live call state and publishes call records (state.enabled)
}

func parseFlags(args []string) (options, error) {
	// -smoke changes the defaults; flags given with it still apply.
	o := options{Events: 880_000, Steps: 7, Resolution: 0.03, FanPBX: 100, FanRate: 1000, FanSeconds: 10, Idle: 1000, Settle: 3 * time.Second}
	if slices.ContainsFunc(args, func(a string) bool {
		return strings.TrimLeft(a, "-") == "smoke" || strings.TrimLeft(a, "-") == "smoke=true"
	}) {
		o = smokeOptions("")
	}
	fs := flag.NewFlagSet("amiload", flag.ContinueOnError)
	fs.Bool("smoke", false, "a run of a few seconds: small trials, one fixed rate, 10 PBXes, 50 idle PBXes")
	fs.StringVar(&o.Repo, "repo", "", "ami-bridge repository (default: found above the working directory)")
	fs.IntVar(&o.Events, "events", o.Events, "events per trial (880,000: 200 passes over the burst's 4,400)")
	fs.IntVar(&o.Steps, "steps", o.Steps, "paced trials of the zero-loss search, at most")
	fs.Float64Var(&o.Resolution, "resolution", o.Resolution, "stop the search when its bounds are this close, relative")
	rates := fs.String("rates", "", "comma-separated paced rates (events/s) to try instead of the search")
	fs.IntVar(&o.FanPBX, "fan-pbx", o.FanPBX, "PBXes fanned in (0: skip)")
	fs.Float64Var(&o.FanRate, "fan-rate", o.FanRate, "events/s per fanned-in PBX")
	fs.Float64Var(&o.FanSeconds, "fan-seconds", o.FanSeconds, "seconds of the fan-in run")
	fs.IntVar(&o.Idle, "idle", o.Idle, "idle PBXes whose memory is measured, each with the daemon's default 3 AMI sessions (0: skip)")
	fs.DurationVar(&o.Settle, "settle", o.Settle, "wait before reading an idle daemon's memory")
	fs.BoolVar(&o.State, "state", o.State, "run the daemon with state.enabled: live call state in KV and call records; compare the CPU per event with a run without")
	fs.StringVar(&o.Perf, "perf", "", "perf record the daemon during the flood into `file` and print where its time goes")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *rates != "" {
		o.Rates = nil
	}
	for _, r := range strings.Split(*rates, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		v, err := strconv.ParseFloat(r, 64)
		if err != nil || v <= 0 {
			return o, fmt.Errorf("-rates: bad rate %q", r)
		}
		o.Rates = append(o.Rates, v)
	}
	if o.Repo == "" {
		var err error
		if o.Repo, err = findRepo(); err != nil {
			return o, err
		}
	}
	return o, nil
}

// smokeOptions is a run of a few seconds for CI: it checks that every part
// works and loses nothing at a modest rate, not how fast it is.
func smokeOptions(repo string) options {
	return options{Repo: repo, Events: 20_000, Rates: []float64{10_000}, FanPBX: 10, FanRate: 1000, FanSeconds: 2, Idle: 50, Settle: time.Second}
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

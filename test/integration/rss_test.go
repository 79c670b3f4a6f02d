package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// BenchmarkDaemon_RSS measures the resident memory of the real ami-bridge
// process, bridging one amitest PBX to the test's in-process NATS server
// (so the daemon's RSS holds no NATS server), with a subscriber on
// ami.*.event.> counting what arrives. Run it without -race:
//
//	go test -run '^$' -bench Daemon_RSS -benchtime 1x ./test/integration
//
// Each sub-benchmark starts its own daemon and runs its scenario once,
// whatever b.N is: the timer runs through the whole of it, settle second
// included, so the default -benchtime of 1s does not run it again either.
// It reports:
//
//   - rss-rest-KiB: VmRSS once connected and idle;
//   - rss-load-KiB: the peak VmRSS, sampled every 50 ms, while the PBX
//     makes calls and until the subscriber has every event;
//   - events/s: events delivered to the subscriber per second, from the
//     first call to the last event;
//   - lost: generated events the subscriber never got; any loss fails the
//     benchmark.
//
// Under -race the tests' binary is a race build, whose memory says nothing
// about the real daemon, so the benchmark builds a plain one.
func BenchmarkDaemon_RSS(b *testing.B) {
	bin := bridgeBin
	if raceEnabled {
		bin = buildPlainBridge(b, b.TempDir())
	}
	scenarios := []struct {
		name string
		rate float64 // calls per second; 0: as fast as the bridge reads
		// calls, 22 events each. The rate scenario lasts 5 s at 22,000
		// events/s, about twice the peak of a busy real Asterisk. The
		// burst is 44,000 events, below the bridge's 65,536-event buffer,
		// so the bridge may fall behind for a moment without dropping.
		calls int
	}{
		{"rate=22k-events-per-s", 1000, 5000},
		{"burst", 0, 2000},
	}
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			runRSSScenario(b, bin, sc.rate, sc.calls)
		})
	}
}

func runRSSScenario(b *testing.B, bin string, rate float64, calls int) {
	ns := startNATS(b, natsOptions{})
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("rss-benchmark"))
	if err != nil {
		b.Fatalf("connect to the embedded NATS server: %v", err)
	}
	b.Cleanup(nc.Close)

	status := &inbox{changed: make(chan struct{})}
	if _, err := nc.Subscribe("ami.*.status", status.add); err != nil {
		b.Fatal(err)
	}
	ev := newEventCounter()
	sub, err := nc.Subscribe("ami.*.event.>", ev.add)
	if err != nil {
		b.Fatal(err)
	}
	// A burst must never be dropped by the benchmark's own client.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}

	const secret = "rss-bench-secret"
	pbx, err := amitest.Start(amitest.Config{Users: map[string]amitest.User{amiUser: {Secret: secret, Write: true}}})
	if err != nil {
		b.Fatalf("amitest PBX: %v", err)
	}
	b.Cleanup(func() { pbx.Close() })

	cfg := bridgeConfig{
		NATS: natsConfig{URL: ns.ClientURL()},
		Servers: []serverConfig{{
			Name:      "pbx1",
			URL:       pbx.URL(amiUser, secret),
			Reconnect: fastReconnect,
		}},
		// Info, as in production: the RSS is the daemon's, not a debug
		// log's.
		Log:             logConfig{Level: "info", Format: "json"},
		ShutdownTimeout: "5s",
	}
	proc := startRSSProcess(b, bin, cfg)

	status.waitFor(b, 0, readyTimeout, "status connected of pbx1", func(m *nats.Msg) bool {
		s, err := parseStatus(m)
		return err == nil && s.Server == "pbx1" && s.State == "connected"
	})
	// The session's SuccessfulAuth is sent once it is in the PBX's event
	// stream: from then on every generated event reaches the bridge.
	select {
	case <-ev.authed:
	case <-time.After(eventTimeout):
		b.Fatal("timed out waiting for the SuccessfulAuth event of pbx1")
	}

	// RSS settling (the GC and the scavenger returning startup garbage)
	// has no event to wait on, so the idle daemon gets a fixed second.
	time.Sleep(time.Second)
	rest := proc.rss(b, "VmRSS")

	samples := make(chan int64, 1)
	stop := make(chan struct{})
	go func() { samples <- sampleRSS(proc.pid(), 50*time.Millisecond, stop) }()

	start := time.Now()
	gen := pbx.StartCalls(context.Background(), rate, calls)
	if err := gen.Wait(); err != nil {
		b.Fatalf("call generator: %v", err)
	}
	_, events, _ := gen.Count()
	got, last := ev.waitCount(events, eventTimeout)
	close(stop)
	peak := <-samples

	if got != events {
		var st []byte
		if msgs := status.snapshot(); len(msgs) > 0 {
			st = msgs[len(msgs)-1].Data
		}
		b.Fatalf("the subscriber got %d of %d generated events (lost %d); last status: %s", got, events, events-got, st)
	}
	b.ReportMetric(float64(rest), "rss-rest-KiB")
	b.ReportMetric(float64(max(peak, rest)), "rss-load-KiB")
	b.ReportMetric(float64(got)/last.Sub(start).Seconds(), "events/s")
	b.ReportMetric(float64(events-got), "lost")
	// One scenario per run: a time per op would mean nothing.
	b.ReportMetric(0, "ns/op")
}

// eventCounter counts the events of the call generator; the session's own
// SuccessfulAuth and FullyBooted are not among them.
type eventCounter struct {
	authed   chan struct{} // closed on the first SuccessfulAuth
	authOnce sync.Once

	mu      sync.Mutex
	n       int64
	last    time.Time     // when the latest counted event arrived
	target  int64         // signal reached when n gets there; 0: none
	reached chan struct{} // buffered, one signal
}

func newEventCounter() *eventCounter {
	return &eventCounter{authed: make(chan struct{}), reached: make(chan struct{}, 1)}
}

func (c *eventCounter) add(m *nats.Msg) {
	switch m.Subject {
	case "ami.pbx1.event.SuccessfulAuth":
		c.authOnce.Do(func() { close(c.authed) })
		return
	case "ami.pbx1.event.FullyBooted":
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	c.last = time.Now()
	if c.n == c.target {
		c.reached <- struct{}{}
	}
}

// waitCount waits until want events are counted, or at most timeout, and
// returns the count and when the latest one arrived.
func (c *eventCounter) waitCount(want int64, timeout time.Duration) (int64, time.Time) {
	c.mu.Lock()
	if c.n >= want {
		defer c.mu.Unlock()
		return c.n, c.last
	}
	c.target = want
	c.mu.Unlock()
	select {
	case <-c.reached:
	case <-time.After(timeout):
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.last
}

// sampleRSS returns the highest VmRSS of process pid, read every interval
// until stop is closed. A failed read (the process died) ends sampling;
// the caller finds out from the process itself.
func sampleRSS(pid int, interval time.Duration, stop <-chan struct{}) int64 {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var peak int64
	for {
		kib, err := readProcStatus(pid, "VmRSS")
		if err != nil {
			return peak
		}
		peak = max(peak, kib)
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
	}
}

// readProcStatus returns a "<field>: N kB" line of /proc/<pid>/status, in
// KiB.
func readProcStatus(pid int, field string) (int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", path, field, err)
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return 0, fmt.Errorf("%s has no %s line", path, field)
}

// rssProcess is an ami-bridge process run by the benchmark.
type rssProcess struct {
	cmd  *exec.Cmd
	log  *logLines
	done chan struct{} // closed once the process has exited
}

func (p *rssProcess) pid() int { return p.cmd.Process.Pid }

// rss returns field (such as VmRSS) of the running process in KiB.
func (p *rssProcess) rss(b *testing.B, field string) int64 {
	b.Helper()
	kib, err := readProcStatus(p.pid(), field)
	if err != nil {
		b.Fatalf("%v; ami-bridge output:\n%s", err, p.log.Bytes())
	}
	return kib
}

// startRSSProcess runs bin --config on cfg with the default Go runtime
// settings. At the end of the benchmark the process gets SIGTERM and must
// exit 0 with no panic in its output.
func startRSSProcess(b *testing.B, bin string, cfg bridgeConfig) *rssProcess {
	b.Helper()
	data, err := yaml.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "ami-bridge.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	// GOGC and GOMEMLIMIT in the caller's environment would change the
	// very thing measured.
	var env []string
	for _, kv := range processEnv() {
		if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			env = append(env, kv)
		}
	}
	p := &rssProcess{cmd: exec.Command(bin, "--config", path), log: newLogLines(), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	b.Cleanup(func() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			b.Errorf("SIGTERM: %v", err)
		}
		select {
		case <-p.done:
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				b.Errorf("ami-bridge exited %d after SIGTERM, want 0", code)
			}
		case <-time.After(exitTimeout):
			p.cmd.Process.Kill()
			<-p.done
			b.Errorf("ami-bridge did not exit within %v of SIGTERM; killed", exitTimeout)
		}
		out := p.log.Bytes()
		for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
			if bytes.Contains(out, []byte(bad)) {
				b.Errorf("the ami-bridge output holds %q", bad)
			}
		}
		if b.Failed() {
			b.Logf("ami-bridge output:\n%s", out)
		}
	})
	return p
}

// buildPlainBridge builds ./cmd/ami-bridge without the race detector into
// dir.
func buildPlainBridge(b *testing.B, dir string) string {
	b.Helper()
	root, err := moduleRoot()
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(dir, "ami-bridge")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ami-bridge")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build -o %s ./cmd/ami-bridge: %v\n%s", bin, err, out)
	}
	return bin
}

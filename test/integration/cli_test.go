package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// natsCLI returns the path of the nats CLI, failing the test (never
// skipping it) when it is not installed.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "nats")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	t.Fatal("the nats CLI is neither on PATH nor in $(go env GOPATH)/bin; " +
		"install it with: go install github.com/nats-io/natscli/nats@v0.5.0 (.ci/run does)")
	return ""
}

// cli runs the nats CLI against the world's NATS server.
type cli struct {
	w      *world
	server string // NATS URL
	path   string
	env    []string
}

func newCLI(w *world) *cli {
	// A private HOME keeps the user's nats contexts out of the test.
	home := filepath.Join(w.dir, "cli-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		w.t.Fatal(err)
	}
	var env []string
	for _, kv := range processEnv() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
	return &cli{w: w, server: w.ns.ClientURL(), path: natsCLI(w.t), env: env}
}

func (c *cli) command(ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	args = append([]string{"--server", c.server}, args...)
	cmd := exec.CommandContext(ctx, c.path, args...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// run runs the CLI to its end and returns its standard output; a non-zero
// exit fails the test.
func (c *cli) run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd, stdout, stderr := c.command(ctx, args...)
	if err := cmd.Run(); err != nil {
		t.Fatalf("nats %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	if s := c.w.leakedSecret(stdout.Bytes()); s != "" {
		t.Errorf("nats %s printed the secret %q", strings.Join(args, " "), s)
	}
	return stdout.String()
}

// jsonLines returns the lines of out that are JSON objects.
func jsonLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "{") && json.Valid([]byte(l)) {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestNATSCLI drives the bridge with the real nats CLI, as the README and
// docs/contract.md tell a newcomer to: a Ping request, a streamed collection, an event
// subscription, and the micro service discovery commands.
func TestNATSCLI(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	c := newCLI(w)
	p := w.startPBX("cli", amitest.Config{Profile: amitest.Asterisk22, Channels: 30})
	w.startBridge(w.config(w.serverFor("cli", p, viaURL)))
	w.waitReady("cli")

	t.Run("ReqPing", func(t *testing.T) {
		out := c.run(t, "req", "ami.cli.action", `{"Action":"Ping","ActionID":"cli-1"}`)
		lines := jsonLines(out)
		if len(lines) != 1 {
			t.Fatalf("want one JSON reply, got:\n%s", out)
		}
		var r struct {
			Server   string            `json:"server"`
			Response map[string]string `json:"response"`
		}
		if err := json.Unmarshal([]byte(lines[0]), &r); err != nil {
			t.Fatal(err)
		}
		if r.Server != "cli" || r.Response["Ping"] != "Pong" || r.Response["ActionID"] != "cli-1" {
			t.Errorf("reply %s", lines[0])
		}
	})

	t.Run("ReqError", func(t *testing.T) {
		out := c.run(t, "req", "ami.cli.action", `{"Action":"Login"}`)
		if !strings.Contains(out, `"code":403`) {
			t.Errorf("want the 403 body, got:\n%s", out)
		}
	})

	t.Run("ReqStreamWaitForEmpty", func(t *testing.T) {
		out := c.run(t, "req", "ami.cli.action", `{"Action":"CoreShowChannels"}`,
			"-H", "Ami-Stream:true", "--wait-for-empty", "--replies", "0", "--raw")
		lines := jsonLines(out)
		if len(lines) != 1+30+1 {
			t.Fatalf("%d JSON replies, want envelope + 30 entries + complete:\n%s", len(lines), out)
		}
		if !strings.Contains(lines[0], `"server":"cli"`) || !strings.Contains(lines[31], "CoreShowChannelsComplete") {
			t.Errorf("envelope %s, complete %s", lines[0], lines[31])
		}
		for _, l := range lines[1:31] {
			if !strings.Contains(l, `"Event":"CoreShowChannel"`) {
				t.Fatalf("entry %s", l)
			}
		}
	})

	t.Run("SubEvents", func(t *testing.T) {
		const n = 5
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd, stdout, stderr := c.command(ctx, "sub", "ami.cli.event.>", "--count", strconv.Itoa(n))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitForSubscription(t, w.ns, "ami.cli.event.>")
		for i := range n {
			p.emit("ItCli", "Index", strconv.Itoa(i))
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("nats sub: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
		}
		out := stdout.String()
		if got := strings.Count(out, `Received on "ami.cli.event.ItCli"`); got != n {
			t.Errorf("%d ItCli events, want %d:\n%s", got, n, out)
		}
		var seqs []int
		for _, m := range regexp.MustCompile(`(?m)^Ami-Seq: (\d+)$`).FindAllStringSubmatch(out, -1) {
			s, _ := strconv.Atoi(m[1])
			seqs = append(seqs, s)
		}
		if len(seqs) != n {
			t.Fatalf("Ami-Seq headers %v in:\n%s", seqs, out)
		}
		for i := 1; i < n; i++ {
			if seqs[i] != seqs[0]+i {
				t.Errorf("Ami-Seq %v: want consecutive", seqs)
			}
		}
		var idx []string
		for _, l := range jsonLines(out) {
			f, err := parseFields([]byte(l))
			if err != nil {
				t.Fatal(err)
			}
			idx = append(idx, f.value("Index"))
		}
		if !slices.Equal(idx, []string{"0", "1", "2", "3", "4"}) {
			t.Errorf("events out of order: %v", idx)
		}
	})

	t.Run("MicroLs", func(t *testing.T) {
		out := c.run(t, "micro", "ls")
		if !strings.Contains(out, "ami-bridge") {
			t.Errorf("nats micro ls does not list ami-bridge:\n%s", out)
		}
	})

	t.Run("MicroInfo", func(t *testing.T) {
		out := c.run(t, "micro", "info", "ami-bridge")
		for _, want := range []string{"ami-bridge", "Queue Group: ami-bridge"} {
			if !strings.Contains(out, want) {
				t.Errorf("nats micro info lacks %q:\n%s", want, out)
			}
		}
		// Per action session, the generic endpoint and the per-action one.
		for _, re := range []string{`Name: cli\s+Subject: ami\.cli\.action\s`, `Name: cli-by-action\s+Subject: ami\.cli\.action\.\*\s`} {
			if n := len(regexp.MustCompile(re).FindAllString(out, -1)); n != 2 {
				t.Errorf("nats micro info shows %d endpoints matching %s, want one per action session:\n%s", n, re, out)
			}
		}
	})

	t.Run("ReqPerAction", func(t *testing.T) {
		out := c.run(t, "req", "ami.cli.action.Ping", "")
		if lines := jsonLines(out); len(lines) != 1 || !strings.Contains(lines[0], `"Ping":"Pong"`) {
			t.Errorf("nats req ami.cli.action.Ping '': %s", out)
		}
		out = c.run(t, "req", "ami.cli.action.ping", "")
		if !strings.Contains(out, `"code":400`) || !strings.Contains(out, "ami.cli.action.Ping") {
			t.Errorf("nats req ami.cli.action.ping '': want a 400 naming ami.cli.action.Ping: %s", out)
		}
	})

	t.Run("MicroStats", func(t *testing.T) {
		out := c.run(t, "micro", "stats", "ami-bridge")
		if !strings.Contains(out, "cli") {
			t.Errorf("nats micro stats lacks the cli endpoint:\n%s", out)
		}
	})
}

// waitForSubscription waits until some client of ns is subscribed to
// subject. The server offers no notification for that, so this polls.
func waitForSubscription(t *testing.T, ns *server.Server, subject string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		cz, err := ns.Connz(&server.ConnzOptions{Subscriptions: true})
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		for _, ci := range cz.Conns {
			if slices.Contains(ci.Subs, subject) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no client subscribed to %s", subject)
}

// TestDemo_RunsWithNoSetup runs "ami-bridge demo", the README's first
// command, on a free port: it prints where its NATS server is and the
// commands to try, shows a live feed of the fake PBX's calls, answers the
// Ping it suggests through the real nats CLI, and stops cleanly on
// SIGTERM.
func TestDemo_RunsWithNoSetup(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	b := w.runBridge(processEnv(), "demo", "--listen", "127.0.0.1:0", "--rate", "20")
	b.log.waitFor(t, "Live feed", readyTimeout, b.done)
	m := regexp.MustCompile(`embedded NATS server at (nats://127\.0\.0\.1:\d+)`).FindSubmatch(b.log.Bytes())
	if m == nil {
		t.Fatalf("the demo does not say where its NATS server is:\n%s", b.log.Bytes())
	}
	url := string(m[1])
	for _, want := range []string{"nats -s " + url + " sub 'ami.demo.event.>'", "nats -s " + url + " req ami.demo.action '{\"Action\":\"Ping\"}'", "micro ls"} {
		if !bytes.Contains(b.log.Bytes(), []byte(want)) {
			t.Errorf("the demo does not suggest %q", want)
		}
	}
	b.log.waitFor(t, "Newchannel", eventTimeout, b.done)
	b.log.waitFor(t, "Hangup", eventTimeout, b.done)

	c := newCLI(w)
	c.server = url
	out := c.run(t, "req", "ami.demo.action", `{"Action":"Ping"}`)
	if !strings.Contains(out, `"Ping":"Pong"`) {
		t.Errorf("the demo's Ping:\n%s", out)
	}
	// The live state's recipe: the call records it suggests arrive, and
	// the bucket it names exists.
	for _, want := range []string{"nats -s " + url + " kv watch AMI_STATE 'demo.calls.>'", "nats -s " + url + " sub 'ami.demo.call.>'"} {
		if !bytes.Contains(b.log.Bytes(), []byte(want)) {
			t.Errorf("the demo does not suggest %q", want)
		}
	}
	if out := c.run(t, "sub", "ami.demo.call.>", "--count", "1"); !strings.Contains(out, `"linkedid"`) {
		t.Errorf("no call record from the demo:\n%s", out)
	}
	if out := c.run(t, "kv", "info", "AMI_STATE"); !strings.Contains(out, "AMI_STATE") {
		t.Errorf("nats kv info AMI_STATE:\n%s", out)
	}
	// Calls that last are in the bucket while they run: the watch the
	// demo suggests shows one.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch := startCLI(t, c, ctx, []string{"kv", "watch", "AMI_STATE", "demo.calls.>"})
	watch.out.waitFor(t, `"linkedid"`, eventTimeout, watch.done)
	watch.cmd.Process.Kill()
	<-watch.done
	m = regexp.MustCompile(`Metrics for Prometheus: http://(127\.0\.0\.1:\d+)/metrics`).FindSubmatch(b.log.Bytes())
	if m == nil {
		t.Fatalf("the demo does not say where its metrics are:\n%s", b.log.Bytes())
	}
	runCurlSession(t, operationsBlocks(t)[1], string(m[1]))
	if code := b.terminate(); code != 0 {
		t.Errorf("demo exit code %d after SIGTERM, want 0", code)
	}
	if !bytes.Contains(b.log.Bytes(), []byte("stopped")) {
		t.Errorf("the demo did not say it stopped:\n%s", truncate(b.log.Bytes(), 4096))
	}
}

// runCurlSession runs the "$ " commands of a docs console block with sh,
// its address 127.0.0.1:7038 replaced by addr, and compares each output
// with the lines the block shows after the command, numbers at the end of
// a line being any number.
func runCurlSession(t *testing.T, block, addr string) {
	t.Helper()
	type step struct {
		cmd  string
		want []string
	}
	var steps []step
	for _, line := range strings.Split(block, "\n") {
		if cmd, ok := strings.CutPrefix(line, "$ "); ok {
			steps = append(steps, step{cmd: replaceAll(t, cmd, "127.0.0.1:7038", addr)})
		} else if len(steps) > 0 && line != "" {
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, line)
		}
	}
	if len(steps) == 0 {
		t.Fatalf("no command in the console block:\n%s", block)
	}
	number := regexp.MustCompile(`\d+$`)
	for _, s := range steps {
		out, err := exec.Command("sh", "-c", s.cmd).Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", s.cmd, err, out)
		}
		got := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		ok := len(got) == len(s.want)
		for i := 0; ok && i < len(got); i++ {
			ok = regexp.MustCompile("^" + number.ReplaceAllString(regexp.QuoteMeta(s.want[i]), `\d+`) + "$").MatchString(got[i])
		}
		if !ok {
			t.Errorf("%s:\n%s\nthe docs show:\n%s", s.cmd, out, strings.Join(s.want, "\n"))
		}
	}
}

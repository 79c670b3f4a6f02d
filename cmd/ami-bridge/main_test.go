package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// testTimeout bounds every wait of these tests.
const testTimeout = 20 * time.Second

// output is a concurrency-safe writer whose content can be waited on.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{} // a token after each write
}

func newOutput() *output { return &output{written: make(chan struct{}, 1)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	n, err := o.buf.Write(p)
	o.mu.Unlock()
	select {
	case o.written <- struct{}{}:
	default:
	}
	return n, err
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output holds a line for which match is true,
// and returns that line.
func (o *output) waitFor(t *testing.T, what string, match func(line string) bool) string {
	t.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		for _, line := range strings.Split(o.String(), "\n") {
			if match(line) {
				return line
			}
		}
		select {
		case <-o.written:
		case <-deadline.C:
			t.Fatalf("no %s after %s; output:\n%s", what, testTimeout, o.String())
		}
	}
}

// waitSessionsUp waits for the log lines that say every AMI session of
// the one PBX is logged in: the event session, which then gets every
// event, and each action session, which logs it once its service is in
// the queue group. One "connected" line alone may be an action session's.
func waitSessionsUp(t *testing.T, stderr *output) {
	t.Helper()
	sessions := []string{subjects.RoleEvents}
	for i := range bridge.DefaultActionSessions {
		sessions = append(sessions, fmt.Sprintf("%s-%d", subjects.RoleAction, i+1))
	}
	for _, s := range sessions {
		stderr.waitFor(t, s+" session connected", func(l string) bool {
			return strings.Contains(l, `"session":"`+s+`"`) && strings.Contains(l, `"state":"connected"`)
		})
	}
}

func contains(s string) func(string) bool {
	return func(line string) bool { return strings.Contains(line, s) }
}

// eventLine matches a demo feed line of the named event: time, server,
// seq, event, fields.
func eventLine(name string) func(string) bool {
	return func(line string) bool {
		f := strings.Fields(line)
		return len(f) >= 4 && strings.HasPrefix(f[2], "#") && f[3] == name
	}
}

// runMain runs mainCommand in the background and returns its exit code
// channel. The command sets the runtime's memory limit, which the tests
// share: it is put back before the exit code is sent.
func runMain(ctx context.Context, args, environ []string, stdout, stderr *output) <-chan int {
	code := make(chan int, 1)
	go func() {
		prev := debug.SetMemoryLimit(-1)
		c := mainCommand(ctx, args, environ, stdout, stderr)
		debug.SetMemoryLimit(prev)
		code <- c
	}()
	return code
}

func waitExit(t *testing.T, code <-chan int) int {
	t.Helper()
	select {
	case c := <-code:
		return c
	case <-time.After(testTimeout):
		t.Fatalf("ami-bridge did not exit within %s", testTimeout)
		return -1
	}
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUseConsole(t *testing.T) {
	tests := []struct {
		format string
		tty    bool
		want   bool
	}{
		{"auto", true, true},
		{"auto", false, false},
		{"console", false, true},
		{"console", true, true},
		{"json", true, false},
		{"json", false, false},
	}
	for _, tt := range tests {
		if got := useConsole(tt.format, tt.tty); got != tt.want {
			t.Errorf("useConsole(%q, tty=%v) = %v, want %v", tt.format, tt.tty, got, tt.want)
		}
	}
}

func TestNewLogger_AutoIsJSONOffTerminal(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Log{Level: "info", Format: "auto"}, &buf)
	log.Debug().Msg("hidden")
	log.Info().Str("k", "v").Msg("shown")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	if line["message"] != "shown" || line["k"] != "v" || line["level"] != "info" || line["time"] == nil {
		t.Errorf("line = %v", line)
	}
}

func TestNewLogger_Console(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Log{Level: "debug", Format: "console"}, &buf)
	log.Debug().Str("k", "v").Msg("shown")
	out := buf.String()
	if json.Valid(buf.Bytes()) || !strings.Contains(out, "DBG") || !strings.Contains(out, "shown") || !strings.Contains(out, "k=v") {
		t.Errorf("console line = %q", out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colours off a terminal: %q", out)
	}
}

func TestVersionFrom(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	tests := []struct {
		name, ldflags string
		bi            *debug.BuildInfo
		want          string
	}{
		{"ldflags win", "v9.9.9", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v9.9.9"},
		{"go install @version", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"git checkout, Go 1.24+", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261201150000-0123456789ab+dirty"}}, "v0.0.0-20261201150000-0123456789ab+dirty"},
		{"revision only", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs.revision", "0123456789abcdef0123", "vcs.modified", "true")}, "dev-0123456789ab-dirty"},
		{"nothing recorded", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"no build info", "", nil, "dev"},
	}
	for _, tt := range tests {
		if got := versionFrom(tt.ldflags, tt.bi); got != tt.want {
			t.Errorf("%s: versionFrom = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestVersionCommand(t *testing.T) {
	old := version
	version = "v9.8.7"
	defer func() { version = old }()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		stdout, stderr := newOutput(), newOutput()
		if code := mainCommand(context.Background(), args, nil, stdout, stderr); code != exitOK {
			t.Errorf("%v: exit %d", args, code)
		}
		if stdout.String() != "v9.8.7\n" {
			t.Errorf("%v printed %q", args, stdout.String())
		}
	}
}

func TestUnknownCommandIsUsageError(t *testing.T) {
	stdout, stderr := newOutput(), newOutput()
	if code := mainCommand(context.Background(), []string{"frobnicate"}, nil, stdout, stderr); code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	if !strings.Contains(stderr.String(), `unknown command "frobnicate"`) {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestRun_InvalidConfigExits2WithEveryProblemAndNoSecret(t *testing.T) {
	path := writeConfig(t, `
servers:
  - name: "bad name"
    url: "tcp://admin:Hunter2Secret@pbx:99999"
  - name: ok
    url: "tcp://admin@pbx"
    secret_env: PBX_SECRET
log:
  format: xml
`)
	stdout, stderr := newOutput(), newOutput()
	code := mainCommand(context.Background(), []string{"run", "--config", path, "--log-level", "loud"}, nil, stdout, stderr)
	if code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	msg := stderr.String()
	for _, want := range []string{"5 problems", `name: "bad name": want`, "invalid port", "PBX_SECRET is not set", `log.format: "xml"`, `log.level: "loud"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "Hunter2Secret") {
		t.Errorf("stderr holds the secret:\n%s", msg)
	}
}

func TestRun_WithoutConfigPointsToTheDemo(t *testing.T) {
	stdout, stderr := newOutput(), newOutput()
	if code := mainCommand(context.Background(), nil, nil, stdout, stderr); code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	msg := stderr.String()
	first, _, _ := strings.Cut(msg, "\n")
	if !strings.Contains(first, "no --config FILE given") || !strings.Contains(first, "ami-bridge demo") {
		t.Errorf("first line %q does not point to --config and the demo; stderr:\n%s", first, msg)
	}
	if strings.Contains(msg, "at least one PBX") {
		t.Errorf("stderr has the config's servers problem too:\n%s", msg)
	}
	if !strings.Contains(msg, "--nats-url") {
		t.Errorf("no usage:\n%s", msg)
	}
}

func TestRun_ServersFromTheEnvironmentNeedNoConfigFile(t *testing.T) {
	stdout, stderr := newOutput(), newOutput()
	environ := []string{config.ServersEnv + `=[{"name":"pbx1","url":"tcp://bridge@127.0.0.1:5038"}]`}
	if code := mainCommand(context.Background(), nil, environ, stdout, stderr); code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	// The config is loaded and its own problem reported.
	if msg := stderr.String(); !strings.Contains(msg, "servers[0] (pbx1): no secret") || strings.Contains(msg, "no --config") {
		t.Errorf("stderr = %s", msg)
	}
}

// TestBadFlagsPrintTheErrorAndUsage: pflag's ContinueOnError prints
// nothing by itself, and a mistyped flag used to exit 2 silently.
func TestBadFlagsPrintTheErrorAndUsage(t *testing.T) {
	tests := []struct {
		args           []string
		errText, usage string
	}{
		{[]string{"--conf", "x.yaml"}, "unknown flag: --conf", "Usage: ami-bridge [run] --config FILE"},
		{[]string{"run", "--bogus=1"}, "unknown flag: --bogus", "Usage: ami-bridge [run] --config FILE"},
		{[]string{"--no-such-flag"}, "unknown flag: --no-such-flag", "--nats-url"},
		{[]string{"run", "--shutdown-timeout", "soon"}, `invalid argument "soon"`, "--shutdown-timeout"},
		{[]string{"demo", "--bogus"}, "unknown flag: --bogus", "Usage: ami-bridge demo"},
		{[]string{"demo", "--rate", "many"}, `invalid argument "many"`, "--profile"},
	}
	for _, tt := range tests {
		stdout, stderr := newOutput(), newOutput()
		if code := mainCommand(context.Background(), tt.args, nil, stdout, stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tt.args, code, exitUsage)
		}
		msg := stderr.String()
		if !strings.Contains(msg, tt.errText) || !strings.Contains(msg, tt.usage) {
			t.Errorf("%v: stderr lacks %q or the usage (%q):\n%s", tt.args, tt.errText, tt.usage, msg)
		}
	}
}

func TestHelpShowsTheCommandsAndRunFlags(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		stdout, stderr := newOutput(), newOutput()
		if code := mainCommand(context.Background(), args, nil, stdout, stderr); code != exitOK {
			t.Errorf("%v: exit %d", args, code)
		}
		out := stdout.String()
		for _, want := range []string{"ami-bridge demo [flags]", "ami-bridge version", "ami-bridge [run] --config FILE", "--nats-url", "--log-level"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: stdout lacks %q:\n%s", args, want, out)
			}
		}
	}
	for _, args := range [][]string{{"run", "--help"}, {"demo", "--help"}} {
		stdout, stderr := newOutput(), newOutput()
		if code := mainCommand(context.Background(), args, nil, stdout, stderr); code != exitOK {
			t.Errorf("%v: exit %d", args, code)
		}
		if !strings.Contains(stderr.String(), "Usage: ami-bridge "+args[0]) && !strings.Contains(stderr.String(), "Usage: ami-bridge [run]") {
			t.Errorf("%v: no usage:\n%s", args, stderr.String())
		}
	}
}

// takenPort returns an address something already listens on.
func takenPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

func TestRun_EmbeddedPortTakenFailsClearly(t *testing.T) {
	path := writeConfig(t, "servers:\n  - name: pbx\n    url: tcp://a:b@127.0.0.1:1\n")
	stdout, stderr := newOutput(), newOutput()
	code := mainCommand(context.Background(), []string{"--config", path, "--nats-listen", takenPort(t), "--log-format", "json"}, nil, stdout, stderr)
	if code != exitFailed {
		t.Errorf("exit %d, want %d", code, exitFailed)
	}
	if msg := stderr.String(); !strings.Contains(msg, "address already in use") || !strings.Contains(msg, "--nats-listen") {
		t.Errorf("stderr = %s", msg)
	}
}

// startPBX starts a fake Asterisk with one user.
func startPBX(t *testing.T, user, secret string) *amitest.Server {
	t.Helper()
	pbx, err := amitest.Start(amitest.Config{Users: map[string]amitest.User{user: {Secret: secret, Write: true}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pbx.Close() })
	return pbx
}

// readyURL waits for the JSON "ready" log line and returns its nats_url.
func readyURL(t *testing.T, stderr *output) string {
	t.Helper()
	line := stderr.waitFor(t, `"ready" log line`, contains(`"message":"ready"`))
	var ready struct {
		URL string `json:"nats_url"`
	}
	if err := json.Unmarshal([]byte(line), &ready); err != nil || ready.URL == "" {
		t.Fatalf("ready line %q: %v", line, err)
	}
	return ready.URL
}

func TestRun_BridgesAPBXAndStopsCleanly(t *testing.T) {
	const secret = "Run-Secret-42"
	pbx := startPBX(t, "bridge", secret)
	path := writeConfig(t, fmt.Sprintf(`
nats:
  embedded: {listen: "127.0.0.1:0"}
servers:
  - name: pbx1
    url: tcp://bridge@%s
    secret_env: PBX1_SECRET
log: {level: debug, format: json}
`, pbx.Addr()))

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stdout, stderr := newOutput(), newOutput()
	code := runMain(ctx, []string{"run", "--config", path}, []string{"PBX1_SECRET=" + secret}, stdout, stderr)

	nc, err := nats.Connect(readyURL(t, stderr))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// memory_limit auto for one PBX with the default buffers: 73 MiB.
	if !strings.Contains(stderr.String(), `"memory_limit":76546048,"memory_limit_source":"auto"`) {
		t.Errorf("the ready line lacks the memory limit:\n%s", stderr.String())
	}
	if got := debug.SetMemoryLimit(-1); got != 73<<20 {
		t.Errorf("the runtime's memory limit is %d while the bridge runs, want 73 MiB", got)
	}
	status, err := nc.SubscribeSync("ami.pbx1.status")
	if err != nil {
		t.Fatal(err)
	}
	events, err := nc.SubscribeSync("ami.*.event.>")
	if err != nil {
		t.Fatal(err)
	}
	// The first "connected" status may go out before the subscription:
	// the log says it too.
	waitSessionsUp(t, stderr)

	reply, err := nc.Request("ami.pbx1.action", []byte(`{"Action":"Ping"}`), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var pong struct {
		Server   string            `json:"server"`
		Response map[string]string `json:"response"`
	}
	if err := json.Unmarshal(reply.Data, &pong); err != nil || pong.Server != "pbx1" || pong.Response["Response"] != "Success" {
		t.Errorf("Ping reply %s: %v", reply.Data, err)
	}

	pbx.StartCalls(ctx, 0, 1)
	ev, err := events.NextMsg(testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Header.Get("Ami-Server") != "pbx1" || ev.Header.Get("Ami-Seq") == "" {
		t.Errorf("event %s headers %v", ev.Subject, ev.Header)
	}

	stop() // as SIGTERM does
	if c := waitExit(t, code); c != exitOK {
		t.Errorf("exit %d, want 0; stderr:\n%s", c, stderr.String())
	}
	waitStatus(t, status, "stopped")
	logs := stderr.String()
	if !strings.Contains(logs, `"message":"stopped"`) {
		t.Errorf("no stopped line:\n%s", logs)
	}
	if strings.Contains(logs, secret) || strings.Contains(stdout.String(), secret) {
		t.Errorf("the secret is in the output:\n%s", logs)
	}
}

func TestRun_EmbeddedJetStreamStoresEvents(t *testing.T) {
	pbx := startPBX(t, "bridge", "js-secret")
	path := writeConfig(t, fmt.Sprintf(`
nats:
  embedded: {listen: "127.0.0.1:0", store_dir: %q}
jetstream: {enabled: true, stream: DEMO_EVENTS}
servers:
  - name: pbx1
    url: tcp://bridge:js-secret@%s
log: {format: json}
`, t.TempDir(), pbx.Addr()))

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stdout, stderr := newOutput(), newOutput()
	code := runMain(ctx, []string{"--config", path}, nil, stdout, stderr)
	nc, err := nats.Connect(readyURL(t, stderr))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitSessionsUp(t, stderr) // amitest sends calls to logged-in sessions only

	calls := pbx.StartCalls(ctx, 0, 2)
	if err := calls.Wait(); err != nil {
		t.Fatal(err)
	}
	_, want, _ := calls.Count()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, "DEMO_EVENTS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"ami.pbx1.event.Hangup"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Two calls hang up two channels each.
	for i := range 4 {
		if _, err := cons.Next(jetstream.FetchMaxWait(testTimeout)); err != nil {
			t.Fatalf("Hangup %d of 4 (of %d call events) not in the stream: %v", i+1, want, err)
		}
	}

	stop()
	if c := waitExit(t, code); c != exitOK {
		t.Errorf("exit %d, want 0; stderr:\n%s", c, stderr.String())
	}
}

func TestRun_EmbeddedServerRequiresTheConfiguredCredentials(t *testing.T) {
	path := writeConfig(t, `
nats:
  embedded: {listen: "127.0.0.1:0"}
  user: bridge
servers:
  - name: pbx1
    url: tcp://a:b@127.0.0.1:1
log: {format: json}
`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stdout, stderr := newOutput(), newOutput()
	code := runMain(ctx, []string{"--config", path}, []string{"AMI_BRIDGE_NATS__PASSWORD=nats-pw-123"}, stdout, stderr)
	url := readyURL(t, stderr)

	if nc, err := nats.Connect(url, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Errorf("connected without credentials")
	}
	nc, err := nats.Connect(url, nats.UserInfo("bridge", "nats-pw-123"))
	if err != nil {
		t.Fatalf("with credentials: %v", err)
	}
	nc.Close()

	stop()
	if c := waitExit(t, code); c != exitOK {
		t.Errorf("exit %d, want 0", c)
	}
	if strings.Contains(stderr.String(), "nats-pw-123") {
		t.Errorf("the NATS password is in the log:\n%s", stderr.String())
	}
}

// waitStatus reads status messages until one has the given state.
func waitStatus(t *testing.T, sub *nats.Subscription, state string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no %q status: %v", state, err)
		}
		var st struct {
			State string `json:"state"`
		}
		if json.Unmarshal(m.Data, &st) == nil && st.State == state {
			return
		}
	}
}

func TestDemo_ShowsLiveEventsAndStopsCleanly(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stdout, stderr := newOutput(), newOutput()
	code := runMain(ctx, []string{"demo", "--listen", "127.0.0.1:0", "--rate", "5", "--duration", "60s"}, nil, stdout, stderr)

	stdout.waitFor(t, "connected status line", contains("status  connected"))
	line := stdout.waitFor(t, "Newchannel line", eventLine("Newchannel"))
	for _, want := range []string{"demo", "#", "Channel="} {
		if !strings.Contains(line, want) {
			t.Errorf("event line %q lacks %q", line, want)
		}
	}
	stdout.waitFor(t, "Hangup line", eventLine("Hangup"))
	if got := debug.SetMemoryLimit(-1); got != 73<<20 {
		t.Errorf("the runtime's memory limit is %d while the demo runs, want 73 MiB (auto for one PBX)", got)
	}
	stop()
	if c := waitExit(t, code); c != exitOK {
		t.Errorf("exit %d, want 0; stderr:\n%s", c, stderr.String())
	}

	out := stdout.String()
	for _, want := range []string{
		"sub 'ami.demo.event.>'",
		`req ami.demo.action '{"Action":"Ping"}'`,
		`req ami.demo.action '{"Action":"Command","Command":"core show channels"}'`,
		"micro ls",
		"stopped: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
}

func TestDemo_SummaryAndDurationStopByItself(t *testing.T) {
	stdout, stderr := newOutput(), newOutput()
	code := runMain(context.Background(), []string{"demo", "--listen", "", "--rate", "50", "--summary", "--duration", "2500ms"}, nil, stdout, stderr)
	if c := waitExit(t, code); c != exitOK {
		t.Errorf("exit %d, want 0; stderr:\n%s", c, stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "events/s") || !strings.Contains(out, "Newchannel=") {
		t.Errorf("no summary line:\n%s", out)
	}
	if strings.Contains(out, "nats sub") {
		t.Errorf("in-process demo suggests a second terminal:\n%s", out)
	}
}

func TestDemo_PortTakenSuggestsAFreeOne(t *testing.T) {
	stdout, stderr := newOutput(), newOutput()
	code := mainCommand(context.Background(), []string{"demo", "--listen", takenPort(t)}, nil, stdout, stderr)
	if code != exitFailed {
		t.Errorf("exit %d, want %d", code, exitFailed)
	}
	if msg := stderr.String(); !strings.Contains(msg, "address already in use") || !strings.Contains(msg, "--listen 127.0.0.1:0") {
		t.Errorf("stderr = %s", msg)
	}
}

func TestDemo_BadFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--rate", "0"},
		{"demo", "--listen", "nope"},
		{"demo", "--profile", "11"},
		{"demo", "extra"},
	} {
		stdout, stderr := newOutput(), newOutput()
		if code := mainCommand(context.Background(), args, nil, stdout, stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

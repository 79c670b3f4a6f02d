package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// Bounds on every wait. They are generous because the machine running the
// tests may be busy (and the binary may run under the race detector); a
// passing run takes a small fraction of them.
const (
	readyTimeout = 20 * time.Second // the bridge connected to its PBXes
	replyTimeout = 15 * time.Second // one action reply
	eventTimeout = 15 * time.Second // events to arrive
	exitTimeout  = 20 * time.Second // the process to exit after SIGTERM
)

// The AMI user every PBX of the tests has; its secret differs per PBX.
const amiUser = "bridge"

// natsOptions configure the embedded NATS server of one test.
type natsOptions struct {
	maxPayload int32 // 0: nats-server's default (1 MiB)
	jetStream  bool
	user, pass string // client authentication, when set
}

// world is what one test runs against: an embedded NATS server, a client
// connection with collectors on the status and event subjects (subscribed
// before any bridge starts, so nothing is missed), the PBXes and the bridge
// processes. Every secret it hands out is checked, at the end of the
// test, to appear in no log, reply or status.
type world struct {
	t        *testing.T
	ns       *server.Server
	natsOpts natsOptions
	nc       *nats.Conn
	dir      string

	status *inbox // every message on ami.*.status
	events *inbox // every message on ami.*.event.>

	mu      sync.Mutex
	secrets []string
}

func newWorld(t *testing.T, o natsOptions) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), natsOpts: o}
	w.ns = startNATS(t, o)
	// The test's client comes back at once after a NATS restart, well
	// before the bridge (nats.go's default wait is 2 s), so that its
	// subscriptions are in place when the bridge flushes what it held.
	opts := []nats.Option{nats.Name("integration-test"), nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond)}
	if o.user != "" {
		opts = append(opts, nats.UserInfo(o.user, o.pass))
		w.addSecret(o.pass)
	}
	nc, err := nats.Connect(w.ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect to the embedded NATS server: %v", err)
	}
	t.Cleanup(nc.Close)
	w.nc = nc
	w.status = w.collect("ami.*.status")
	w.events = w.collect("ami.*.event.>")
	t.Cleanup(w.checkStatusesHoldNoSecret)
	return w
}

// restartNATS shuts the NATS server down and returns a function that
// starts a new one on the same port.
func (w *world) restartNATS() (start func()) {
	w.t.Helper()
	port := w.ns.Addr().(*net.TCPAddr).Port
	w.ns.Shutdown()
	w.ns.WaitForShutdown()
	return func() {
		w.t.Helper()
		w.ns = startNATSOn(w.t, w.natsOpts, port)
	}
}

// startNATS starts an in-process nats-server on a random local port.
func startNATS(t *testing.T, o natsOptions) *server.Server {
	t.Helper()
	return startNATSOn(t, o, server.RANDOM_PORT)
}

func startNATSOn(t *testing.T, o natsOptions, port int) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       port,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: o.maxPayload,
		Username:   o.user,
		Password:   o.pass,
	}
	if o.jetStream {
		opts.JetStream = true
		opts.StoreDir = t.TempDir()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not get ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

func (w *world) addSecret(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.secrets = append(w.secrets, s)
}

// secretForms returns every secret of the world as written and in the
// encodings a URL or a log could give it.
func (w *world) secretForms() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, s := range w.secrets {
		out = append(out, s, url.QueryEscape(s), url.PathEscape(s), strings.ReplaceAll(url.QueryEscape(s), "+", "%20"))
	}
	return out
}

// leakedSecret returns the first secret form found in b, or "".
func (w *world) leakedSecret(b []byte) string {
	for _, s := range w.secretForms() {
		if bytes.Contains(b, []byte(s)) {
			return s
		}
	}
	return ""
}

func (w *world) checkStatusesHoldNoSecret() {
	for _, m := range w.status.snapshot() {
		if s := w.leakedSecret(m.Data); s != "" {
			w.t.Errorf("status on %s holds the secret %q: %s", m.Subject, s, m.Data)
		}
	}
}

// newSecret returns a fresh AMI secret that the test will look for in
// logs, replies and statuses.
func (w *world) newSecret(tag string) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		w.t.Fatal(err)
	}
	s := "sec-" + tag + "-" + hex.EncodeToString(b[:])
	w.addSecret(s)
	return s
}

// pbx is a fake Asterisk with one AMI user, amiUser.
type pbx struct {
	*amitest.Server
	name   string
	secret string
	cfg    amitest.Config
	t      *testing.T
}

// startPBX starts an amitest PBX whose user amiUser has a fresh secret.
func (w *world) startPBX(name string, cfg amitest.Config) *pbx {
	w.t.Helper()
	p := &pbx{name: name, secret: w.newSecret(name), t: w.t}
	if cfg.Users == nil {
		cfg.Users = map[string]amitest.User{amiUser: {Secret: p.secret, Write: true}}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	p.cfg = cfg
	p.start()
	return p
}

func (p *pbx) start() {
	p.t.Helper()
	s, err := amitest.Start(p.cfg)
	if err != nil {
		p.t.Fatalf("amitest PBX %s: %v", p.name, err)
	}
	// Restarts come back on the same port.
	p.cfg.Addr = s.Addr()
	p.Server = s
	p.t.Cleanup(func() { s.Close() })
}

// restart closes the PBX, dropping every session and the listener, and
// starts a new one on the same port, as a restarted Asterisk would.
func (p *pbx) restart() {
	p.t.Helper()
	if err := p.Close(); err != nil {
		p.t.Fatalf("close PBX %s: %v", p.name, err)
	}
	p.start()
}

// emit sends an event from the PBX: "Event: name" then the key, value
// pairs.
func (p *pbx) emit(name string, kv ...string) {
	m := &amiproto.Message{Fields: []amiproto.Field{{Key: "Event", Value: name}}}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Fields = append(m.Fields, amiproto.Field{Key: kv[i], Value: kv[i+1]})
	}
	p.Emit(m)
}

// deadAddr returns a local address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// silentAddr returns a local address that accepts connections and never
// says a word: a PBX hung before its banner.
func silentAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// The configuration file, with the keys of the issue. Durations are
// strings such as "200ms".
type bridgeConfig struct {
	NATS            natsConfig     `yaml:"nats"`
	Servers         []serverConfig `yaml:"servers"`
	Log             logConfig      `yaml:"log"`
	JetStream       *jetStreamConf `yaml:"jetstream,omitempty"`
	ShutdownTimeout string         `yaml:"shutdown_timeout,omitempty"`

	extraEnv []string // NAME=value entries added to the process environment
}

type natsConfig struct {
	URL      string `yaml:"url"`
	Prefix   string `yaml:"prefix,omitempty"`
	User     string `yaml:"user,omitempty"`
	Password string `yaml:"password,omitempty"`
}

type serverConfig struct {
	Name             string         `yaml:"name"`
	URL              string         `yaml:"url"`
	SecretEnv        string         `yaml:"secret_env,omitempty"`
	SecretFile       string         `yaml:"secret_file,omitempty"`
	Auth             string         `yaml:"auth,omitempty"`
	Events           *eventsConfig  `yaml:"events,omitempty"`
	Actions          *actionsConfig `yaml:"actions,omitempty"`
	ActionTimeout    string         `yaml:"action_timeout,omitempty"`
	MaxActionTimeout string         `yaml:"max_action_timeout,omitempty"`
	PingInterval     string         `yaml:"ping_interval,omitempty"`
	Reconnect        *backoffConfig `yaml:"reconnect,omitempty"`

	env []string // NAME=value entries the process needs for this server
}

type eventsConfig struct {
	Include []string `yaml:"include,omitempty"`
	Exclude []string `yaml:"exclude,omitempty"`
}

type actionsConfig struct {
	Allow []string `yaml:"allow,omitempty"`
	Deny  []string `yaml:"deny,omitempty"`
}

type backoffConfig struct {
	Min string `yaml:"min,omitempty"`
	Max string `yaml:"max,omitempty"`
}

type logConfig struct {
	Level  string `yaml:"level,omitempty"`
	Format string `yaml:"format,omitempty"`
}

type jetStreamConf struct {
	Enabled    bool   `yaml:"enabled"`
	Stream     string `yaml:"stream,omitempty"`
	MaxAge     string `yaml:"max_age,omitempty"`
	Duplicates string `yaml:"duplicates,omitempty"`
}

// secretVia says how the bridge gets a PBX's secret.
type secretVia int

const (
	viaURL  secretVia = iota // user:secret@host:port in the url key
	viaEnv                   // secret_env naming a variable of the process
	viaFile                  // secret_file
)

// fastReconnect is the backoff of the tests' PBXes, so a restart is seen
// in milliseconds.
var fastReconnect = &backoffConfig{Min: "20ms", Max: "200ms"}

// serverFor returns the configuration of PBX p under name, with its
// secret given the way via says.
func (w *world) serverFor(name string, p *pbx, via secretVia) serverConfig {
	return w.serverAt(name, p.Addr(), p.secret, via)
}

// serverAt returns the configuration of a PBX at addr whose amiUser has
// secret.
func (w *world) serverAt(name, addr, secret string, via secretVia) serverConfig {
	sc := serverConfig{Name: name, Reconnect: fastReconnect, PingInterval: "0s"}
	switch via {
	case viaURL:
		sc.URL = "tcp://" + url.UserPassword(amiUser, secret).String() + "@" + addr
	case viaEnv:
		sc.URL = "tcp://" + amiUser + "@" + addr
		sc.SecretEnv = "IT_AMI_SECRET_" + strings.ToUpper(strings.NewReplacer("-", "_").Replace(name))
		sc.env = append(sc.env, sc.SecretEnv+"="+secret)
	case viaFile:
		sc.URL = "tcp://" + amiUser + "@" + addr
		sc.SecretFile = filepath.Join(w.dir, name+".secret")
		if err := os.WriteFile(sc.SecretFile, []byte(secret+"\n"), 0o600); err != nil {
			w.t.Fatal(err)
		}
	}
	return sc
}

// config returns a configuration for servers with the world's NATS
// server and a debug log, so that the secret checks see as much as the
// bridge can log.
func (w *world) config(servers ...serverConfig) bridgeConfig {
	return bridgeConfig{
		NATS:    natsConfig{URL: w.ns.ClientURL()},
		Servers: servers,
		Log:     logConfig{Level: "debug", Format: "json"},
		// Graceful stops at the end of each test need not wait long.
		ShutdownTimeout: "5s",
	}
}

// bridgeProc is one running ami-bridge process.
type bridgeProc struct {
	w      *world
	cmd    *exec.Cmd
	log    *logLines
	cancel context.CancelFunc
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's error, once done
}

// startBridge writes cfg to a YAML file and runs ami-bridge --config on
// it. At the end of the test the process gets SIGTERM (if still running)
// and must exit 0, and its output must hold no secret, data race or panic.
func (w *world) startBridge(cfg bridgeConfig) *bridgeProc {
	w.t.Helper()
	path := w.writeConfig(cfg)
	env := processEnv()
	for _, s := range cfg.Servers {
		env = append(env, s.env...)
	}
	env = append(env, cfg.extraEnv...)
	return w.runBridge(env, "--config", path)
}

// writeConfig writes cfg as YAML into the test's directory and returns
// the file's path.
func (w *world) writeConfig(cfg bridgeConfig) string {
	w.t.Helper()
	data, err := yaml.Marshal(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	path := filepath.Join(w.dir, fmt.Sprintf("ami-bridge-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path
}

// processEnv is the test's environment without AMI_BRIDGE_ variables,
// which would change the configuration under test.
func processEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AMI_BRIDGE_") {
			env = append(env, kv)
		}
	}
	return env
}

func (w *world) runBridge(env []string, args ...string) *bridgeProc {
	w.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bridgeBin, args...)
	cmd.Env = env
	// Cancelling is a graceful stop; a process that ignores it is killed.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = exitTimeout
	b := &bridgeProc{w: w, cmd: cmd, log: newLogLines(), cancel: cancel, done: make(chan struct{})}
	cmd.Stdout = b.log
	cmd.Stderr = b.log
	if err := cmd.Start(); err != nil {
		cancel()
		w.t.Fatalf("start %s: %v", bridgeBin, err)
	}
	go func() {
		b.err = cmd.Wait()
		close(b.done)
	}()
	w.t.Cleanup(b.cleanup)
	return b
}

func (b *bridgeProc) cleanup() {
	t := b.w.t
	select {
	case <-b.done:
	default:
		if code := b.terminate(); code != 0 {
			t.Errorf("ami-bridge exited %d after SIGTERM at the end of the test, want 0", code)
		}
	}
	b.cancel()
	out := b.log.Bytes()
	if s := b.w.leakedSecret(out); s != "" {
		t.Errorf("the ami-bridge log holds the secret %q", s)
	}
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if bytes.Contains(out, []byte(bad)) {
			t.Errorf("the ami-bridge log holds %q", bad)
		}
	}
	if t.Failed() {
		const tail = 24 << 10
		if len(out) > tail {
			out = append([]byte("…\n"), out[len(out)-tail:]...)
		}
		t.Logf("ami-bridge output:\n%s", out)
	}
}

// terminate sends SIGTERM and returns the exit code; it fails the test
// when the process does not exit in time.
func (b *bridgeProc) terminate() int {
	b.w.t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		b.w.t.Errorf("SIGTERM: %v", err)
	}
	return b.wait(exitTimeout)
}

// wait returns the exit code once the process has exited.
func (b *bridgeProc) wait(timeout time.Duration) int {
	b.w.t.Helper()
	select {
	case <-b.done:
	case <-time.After(timeout):
		b.cmd.Process.Kill()
		<-b.done
		b.w.t.Errorf("ami-bridge did not exit within %v; killed", timeout)
	}
	return b.cmd.ProcessState.ExitCode()
}

// exited reports whether the process has exited.
func (b *bridgeProc) exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// logLines collects a process's output and lets a test wait for a line.
type logLines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// Bytes returns a copy of everything written so far.
func (l *logLines) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes())
}

// waitFor waits until the output holds substr; done ends the wait early
// (the process exited).
func (l *logLines) waitFor(t *testing.T, substr string, timeout time.Duration, done <-chan struct{}) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		found := bytes.Contains(l.buf.Bytes(), []byte(substr))
		changed := l.changed
		l.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-done:
			if !bytes.Contains(l.Bytes(), []byte(substr)) {
				t.Fatalf("the process exited without logging %q", substr)
			}
			return
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %q in the output", timeout, substr)
		}
	}
}

// inbox collects every message of a subscription, in arrival order, and
// lets a test wait for one that matches.
type inbox struct {
	mu      sync.Mutex
	msgs    []*nats.Msg
	changed chan struct{} // closed and replaced on every message
}

// collect subscribes to subject with an inbox.
func (w *world) collect(subject string) *inbox {
	w.t.Helper()
	in := &inbox{changed: make(chan struct{})}
	sub, err := w.nc.Subscribe(subject, in.add)
	if err != nil {
		w.t.Fatalf("subscribe %s: %v", subject, err)
	}
	// A burst must never be dropped by the test's own client.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		w.t.Fatal(err)
	}
	if err := w.nc.Flush(); err != nil {
		w.t.Fatal(err)
	}
	return in
}

func (in *inbox) add(m *nats.Msg) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs = append(in.msgs, m)
	close(in.changed)
	in.changed = make(chan struct{})
}

func (in *inbox) snapshot() []*nats.Msg {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*nats.Msg(nil), in.msgs...)
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.msgs)
}

// waitFor returns the first message at index from or later that matches,
// and its index. It fails the test after timeout.
func (in *inbox) waitFor(t *testing.T, from int, timeout time.Duration, what string, match func(*nats.Msg) bool) (int, *nats.Msg) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i := from; ; {
		in.mu.Lock()
		msgs, changed := in.msgs, in.changed
		in.mu.Unlock()
		for ; i < len(msgs); i++ {
			if match(msgs[i]) {
				return i, msgs[i]
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// status is a message of ami.<server>.status.
type status struct {
	Server string `json:"server"`
	State  string `json:"state"`
	Since  string `json:"since"`
	Error  string `json:"error"`

	raw map[string]any
}

func parseStatus(m *nats.Msg) (status, error) {
	var s status
	if err := json.Unmarshal(m.Data, &s); err != nil {
		return s, fmt.Errorf("status on %s is not JSON: %v: %s", m.Subject, err, m.Data)
	}
	if err := json.Unmarshal(m.Data, &s.raw); err != nil {
		return s, err
	}
	return s, nil
}

// waitState waits for a status of server in one of states, published at
// or after index from of the status inbox, and returns its index.
func (w *world) waitState(server string, from int, timeout time.Duration, states ...string) (int, status) {
	w.t.Helper()
	var got status
	i, _ := w.status.waitFor(w.t, from, timeout, fmt.Sprintf("status %v of %s", states, server), func(m *nats.Msg) bool {
		if m.Subject != "ami."+server+".status" {
			return false
		}
		s, err := parseStatus(m)
		if err != nil {
			w.t.Error(err)
			return false
		}
		for _, st := range states {
			if s.State == st {
				got = s
				return true
			}
		}
		return false
	})
	return i, got
}

// waitConnected waits until every named server has published the status
// "connected" and returns the status inbox length at that point.
func (w *world) waitConnected(servers ...string) int {
	w.t.Helper()
	last := 0
	for _, name := range servers {
		i, _ := w.waitState(name, 0, readyTimeout, "connected")
		last = max(last, i+1)
	}
	return last
}

// statesOf returns the states server published, in order, from index
// from of the status inbox.
func (w *world) statesOf(server string, from int) []string {
	var out []string
	for _, m := range w.status.snapshot()[from:] {
		if m.Subject != "ami."+server+".status" {
			continue
		}
		if s, err := parseStatus(m); err == nil {
			out = append(out, s.State)
		}
	}
	return out
}

// field is one key of an AMI message rendered as JSON: a string, or an
// array of strings for a key repeated on the wire.
type field struct {
	Key    string
	Values []string
	Array  bool
}

// fields is a JSON object read in order.
type fields []field

// get returns the (first) value of key, matched exactly as Asterisk spells
// it, and whether it is there.
func (fs fields) get(key string) (string, bool) {
	for _, f := range fs {
		if f.Key == key && len(f.Values) > 0 {
			return f.Values[0], true
		}
	}
	return "", false
}

func (fs fields) value(key string) string {
	v, _ := fs.get(key)
	return v
}

func (fs fields) String() string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteString(", ")
		}
		if f.Array {
			fmt.Fprintf(&b, "%s: %q", f.Key, f.Values)
		} else {
			fmt.Fprintf(&b, "%s: %q", f.Key, f.Values[0])
		}
	}
	return "{" + b.String() + "}"
}

// parseFields reads a JSON object whose values are strings or arrays of
// strings, keeping the order of its keys: the encoding of an AMI message.
func parseFields(data []byte) (fields, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("want a JSON object, got %v", tok)
	}
	var out fields
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		f := field{Key: tok.(string)}
		tok, err = dec.Token()
		if err != nil {
			return nil, err
		}
		switch v := tok.(type) {
		case string:
			f.Values = []string{v}
		case json.Delim:
			if v != '[' {
				return nil, fmt.Errorf("key %q: want a string or an array of strings, got an object", f.Key)
			}
			f.Array = true
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					return nil, err
				}
				s, ok := tok.(string)
				if !ok {
					return nil, fmt.Errorf("key %q: array element %v is not a string", f.Key, tok)
				}
				f.Values = append(f.Values, s)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("key %q: want a string or an array of strings, got %T", f.Key, tok)
		}
		out = append(out, f)
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return out, nil
}

// reply is the answer to an action request, read according to the
// contract: {"server","error":{"code","message"},"response","events",
// "complete","output"}.
type reply struct {
	msg  *nats.Msg
	keys []string // top-level keys, in order

	Server   string
	Code     int    // 0 unless "error" is there
	Message  string // error.message
	Response fields
	Events   []fields
	Complete fields
	Output   *string

	// From the Nats-Service-Error and Nats-Service-Error-Code headers.
	HeaderCode    string
	HeaderMessage string
}

func (r *reply) has(key string) bool {
	for _, k := range r.keys {
		if k == key {
			return true
		}
	}
	return false
}

func (r *reply) String() string {
	return fmt.Sprintf("headers %v body %s", r.msg.Header, truncate(r.msg.Data, 2048))
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + fmt.Sprintf("… (%d bytes)", len(b))
}

// parseReply reads a reply body; the shape checks that hold for every
// reply are made by checkReply.
func parseReply(m *nats.Msg) (*reply, error) {
	r := &reply{msg: m}
	if m.Header != nil {
		r.HeaderCode = m.Header.Get("Nats-Service-Error-Code")
		r.HeaderMessage = m.Header.Get("Nats-Service-Error")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(m.Data, &top); err != nil {
		return r, fmt.Errorf("reply is not a JSON object: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(m.Data))
	dec.Token()
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return r, err
		}
		r.keys = append(r.keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return r, err
		}
	}
	if raw, ok := top["server"]; ok {
		if err := json.Unmarshal(raw, &r.Server); err != nil {
			return r, fmt.Errorf("server: %v", err)
		}
	}
	if raw, ok := top["error"]; ok {
		var e struct {
			Code    *int    `json:"code"`
			Message *string `json:"message"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Code == nil || e.Message == nil {
			return r, fmt.Errorf("error: want {\"code\":N,\"message\":\"…\"}, got %s", raw)
		}
		r.Code, r.Message = *e.Code, *e.Message
	}
	var err error
	if raw, ok := top["response"]; ok {
		if r.Response, err = parseFields(raw); err != nil {
			return r, fmt.Errorf("response: %v", err)
		}
	}
	if raw, ok := top["events"]; ok {
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return r, fmt.Errorf("events: %v", err)
		}
		for i, ev := range list {
			fs, err := parseFields(ev)
			if err != nil {
				return r, fmt.Errorf("events[%d]: %v", i, err)
			}
			r.Events = append(r.Events, fs)
		}
	}
	if raw, ok := top["complete"]; ok {
		if r.Complete, err = parseFields(raw); err != nil {
			return r, fmt.Errorf("complete: %v", err)
		}
	}
	if raw, ok := top["output"]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return r, fmt.Errorf("output: %v", err)
		}
		r.Output = &s
	}
	return r, nil
}

// request sends body to ami.<server>.action with the given headers and
// returns the reply, after the checks that hold for every reply: valid
// JSON of the contract's shape, the right server, error headers exactly
// when there is an error and agreeing with the body, no secret.
func (w *world) request(server, body string, hdr ...string) *reply {
	w.t.Helper()
	m := nats.NewMsg("ami." + server + ".action")
	m.Data = []byte(body)
	for i := 0; i+1 < len(hdr); i += 2 {
		m.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := w.nc.RequestMsg(m, replyTimeout)
	if err != nil {
		w.t.Fatalf("request %s %s: %v", m.Subject, body, err)
	}
	return w.checkReply(server, resp)
}

func (w *world) checkReply(server string, m *nats.Msg) *reply {
	w.t.Helper()
	if s := w.leakedSecret(m.Data); s != "" {
		w.t.Errorf("reply holds the secret %q", s)
	}
	for k, vs := range m.Header {
		for _, v := range vs {
			if s := w.leakedSecret([]byte(k + ": " + v)); s != "" {
				w.t.Errorf("reply header holds the secret %q", s)
			}
		}
	}
	r, err := parseReply(m)
	if err != nil {
		w.t.Fatalf("%v\n%s", err, truncate(m.Data, 2048))
	}
	if r.Server != server {
		w.t.Errorf("reply server = %q, want %q (%s)", r.Server, server, r)
	}
	if len(r.keys) == 0 || r.keys[0] != "server" {
		w.t.Errorf("reply keys %v: want \"server\" first", r.keys)
	}
	if r.has("error") {
		if r.HeaderCode != strconv.Itoa(r.Code) {
			w.t.Errorf("Nats-Service-Error-Code = %q, body error.code = %d", r.HeaderCode, r.Code)
		}
		if r.HeaderMessage == "" {
			w.t.Errorf("error reply without a Nats-Service-Error header: %s", r)
		}
	} else if r.HeaderCode != "" || r.HeaderMessage != "" {
		w.t.Errorf("success reply with error headers: %s", r)
	}
	if r.has("events") != r.has("complete") {
		w.t.Errorf("a reply has both events and complete or neither: keys %v", r.keys)
	}
	return r
}

// wantCode fails the test unless r is an error reply with code.
func wantCode(t *testing.T, r *reply, code int) {
	t.Helper()
	if r.Code != code {
		t.Fatalf("code = %d, want %d: %s", r.Code, code, r)
	}
	if r.Message == "" {
		t.Errorf("code %d with an empty error message", code)
	}
}

// wantSuccess fails the test unless r is a success reply.
func wantSuccess(t *testing.T, r *reply) {
	t.Helper()
	if r.has("error") {
		t.Fatalf("want a success reply, got %s", r)
	}
	if !r.has("response") {
		t.Fatalf("success reply without a response: %s", r)
	}
}

// escapeToken is the subject escaping of the contract, written out here
// so that the test does not take it from the code under test: every byte
// outside [A-Za-z0-9_-] becomes %XX in uppercase hex.
func escapeToken(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// waitReady waits until every named server is connected and its AMI
// session takes events. Asterisk (and amitest) adds a session to the event
// stream only after answering its Login, so "connected" alone does not
// promise that an event emitted next reaches the bridge; the session's own
// SuccessfulAuth event, sent once it is in the stream, does.
func (w *world) waitReady(servers ...string) {
	w.t.Helper()
	w.waitConnected(servers...)
	for _, name := range servers {
		w.waitEvent(0, "ami."+name+".event.SuccessfulAuth")
	}
}

// waitEvent waits for an event on subject, at or after index from of the
// event inbox.
func (w *world) waitEvent(from int, subject string) (int, *nats.Msg) {
	w.t.Helper()
	return w.events.waitFor(w.t, from, eventTimeout, "an event on "+subject, func(m *nats.Msg) bool {
		return m.Subject == subject
	})
}

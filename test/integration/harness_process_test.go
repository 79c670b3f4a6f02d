package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The configuration file, with the keys of the issue. Durations are
// strings such as "200ms".
type bridgeConfig struct {
	NATS            natsConfig     `yaml:"nats"`
	Servers         []serverConfig `yaml:"servers"`
	Log             logConfig      `yaml:"log"`
	JetStream       *jetStreamConf `yaml:"jetstream,omitempty"`
	HA              *haConf        `yaml:"ha,omitempty"`
	ShutdownTimeout string         `yaml:"shutdown_timeout,omitempty"`
	MemoryLimit     string         `yaml:"memory_limit,omitempty"`

	extraEnv []string // NAME=value entries added to the process environment
	// docYAML is a config block of the docs, its addresses replaced:
	// writeConfig lays its keys over the ones above, so that the daemon's
	// loader reads every key the page shows.
	docYAML string
}

type natsConfig struct {
	URL      string          `yaml:"url"`
	Prefix   string          `yaml:"prefix,omitempty"`
	User     string          `yaml:"user,omitempty"`
	Password string          `yaml:"password,omitempty"`
	Embedded *embeddedConfig `yaml:"embedded,omitempty"`
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
	MaxReplyEntries  int            `yaml:"max_reply_entries,omitempty"`
	MaxReplyBytes    int            `yaml:"max_reply_bytes,omitempty"`
	ActionSessions   int            `yaml:"action_sessions,omitempty"`

	env []string // NAME=value entries the process needs for this server
}

type eventsConfig struct {
	Include []string `yaml:"include,omitempty"`
	Exclude []string `yaml:"exclude,omitempty"`
}

type actionsConfig struct {
	Allow          []string `yaml:"allow,omitempty"`
	Deny           []string `yaml:"deny,omitempty"`
	GenericSubject *bool    `yaml:"generic_subject,omitempty"`
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
	Replicas   int    `yaml:"replicas,omitempty"`
}

type haConf struct {
	Enabled  bool   `yaml:"enabled"`
	LeaseTTL string `yaml:"lease_ttl,omitempty"`
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
	if cfg.docYAML != "" {
		var base, doc map[string]any
		if err := yaml.Unmarshal(data, &base); err != nil {
			w.t.Fatal(err)
		}
		if err := yaml.Unmarshal([]byte(cfg.docYAML), &doc); err != nil {
			w.t.Fatalf("the docs config block is not YAML: %v\n%s", err, cfg.docYAML)
		}
		if data, err = yaml.Marshal(overlay(base, doc)); err != nil {
			w.t.Fatal(err)
		}
	}
	path := filepath.Join(w.dir, fmt.Sprintf("ami-bridge-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path
}

// overlay lays top's keys over base's, merging nested maps; any other
// value of top, a list included, replaces base's.
func overlay(base, top map[string]any) map[string]any {
	for k, v := range top {
		if tm, ok := v.(map[string]any); ok {
			if bm, ok := base[k].(map[string]any); ok {
				base[k] = overlay(bm, tm)
				continue
			}
		}
		base[k] = v
	}
	return base
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

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The AMI account of every fake PBX (amitest's default user).
const (
	amiUser   = "admin"
	amiSecret = "s3cret!"
	secretEnv = "AMILOAD_SECRET"
)

// buildDaemon builds ./cmd/ami-bridge of the repository into dir.
func buildDaemon(repo, dir string) (string, error) {
	bin := filepath.Join(dir, "ami-bridge")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ami-bridge")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build ami-bridge: %v\n%s", err, out)
	}
	return bin, nil
}

// daemon is a running ami-bridge with its embedded NATS server listening
// on natsURL, and with JetStream its operations listener (/metrics) on
// metricsURL.
type daemon struct {
	cmd        *exec.Cmd
	natsURL    string
	metricsURL string
	logPath    string
	exited     chan struct{} // closed once the process has ended
}

// startDaemon runs bin bridging the PBXes at addrs, named pbx1, pbx2, ...,
// with its embedded NATS server on a free local port; with jetStream, the
// events also go into a stream of that server, and /metrics is served
// for the send-to-ack latency. With state, the live call state is on too
// (state.enabled; the embedded server then runs JetStream).
func startDaemon(bin, dir string, addrs []string, jetStream, state bool) (*daemon, error) {
	// A port freePort found free can be taken, before the daemon binds it,
	// as the local port of one of the many connections a run makes: the
	// daemon then exits at start, and starts again on other ports.
	for attempt := 1; ; attempt++ {
		d, err := startDaemonOnce(bin, dir, addrs, jetStream, state)
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			return d, err
		}
	}
}

// errPortTaken is a daemon that exited at start because a port it was
// given was taken.
var errPortTaken = errors.New("a port was taken")

func startDaemonOnce(bin, dir string, addrs []string, jetStream, state bool) (*daemon, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// Each start its own name, hence its own store: a daemon with state
	// must not find the bucket an earlier one left (it would close the
	// calls in progress there, and publish their records).
	name := fmt.Sprintf("ami-bridge-%d-%d", daemonSeq.Add(1), len(addrs))
	embedded := map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", port)}
	extra := map[string]any{}
	var metricsURL string
	if jetStream {
		name += "-js"
		embedded["store_dir"] = filepath.Join(dir, name+"-store")
		hport, err := freePort()
		if err != nil {
			return nil, err
		}
		extra["jetstream"] = map[string]any{"enabled": true}
		extra["http"] = map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", hport)}
		metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", hport)
	}
	if state {
		name += "-state"
		embedded["store_dir"] = filepath.Join(dir, name+"-store")
		extra["state"] = map[string]any{"enabled": true}
	}
	type server struct {
		Name      string `json:"name"`
		URL       string `json:"url"`
		SecretEnv string `json:"secret_env"`
		Actions   any    `json:"actions,omitempty"`
		Sessions  int    `json:"action_sessions,omitempty"`
	}
	servers := make([]server, len(addrs))
	for i, a := range addrs {
		servers[i] = server{Name: pbxName(i), URL: amiUser + "@" + a, SecretEnv: secretEnv, Sessions: actionSessions}
		if idleLogoff > 0 {
			servers[i].Actions = map[string]any{"generic_subject": true, "idle_logoff": idleLogoff.String()}
		}
	}
	// JSON is YAML, which the daemon reads.
	extra["nats"] = map[string]any{"embedded": embedded}
	extra["servers"] = servers
	extra["log"] = map[string]any{"level": "warn", "format": "json"}
	cfg, err := json.MarshalIndent(extra, "", "  ")
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, "--config", cfgPath)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AMI_BRIDGE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, secretEnv+"="+amiSecret)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemon{cmd: cmd, natsURL: fmt.Sprintf("nats://127.0.0.1:%d", port), metricsURL: metricsURL, logPath: logf.Name(), exited: make(chan struct{})}
	go func() { // the daemon's one Wait; ends when the process does
		cmd.Wait()
		close(d.exited)
	}()
	// The NATS port answers once the daemon is up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return d, nil
		}
		select {
		case <-d.exited:
			log, _ := os.ReadFile(d.logPath)
			if bytes.Contains(log, []byte("address already in use")) {
				return nil, fmt.Errorf("%w: %s", errPortTaken, lastLines(log, 3))
			}
			return nil, fmt.Errorf("ami-bridge exited at start (%s): %s", cmd.ProcessState, lastLines(log, 5))
		default:
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("ami-bridge's NATS port did not open in 30 s (log: %s)", d.logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// daemonSeq numbers the daemons a run starts.
var daemonSeq atomic.Int64

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// stop asks the daemon to exit (SIGTERM) and kills it if it has not within
// 20 s.
func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

func pbxName(i int) string { return fmt.Sprintf("pbx%d", i+1) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

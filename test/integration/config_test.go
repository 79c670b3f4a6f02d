package integration

import (
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// listenCounting returns a local address that counts the connections it
// accepts, and closes them.
func listenCounting(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), &n
}

// TestConfig_InvalidStopsBeforeConnecting gives the bridge a file with
// several mistakes: it must exit non-zero with one message naming every
// problem and no secret, having connected to neither NATS nor a PBX.
func TestConfig_InvalidStopsBeforeConnecting(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	addr, accepted := listenCounting(t)
	secret := w.newSecret("cfg")
	good := w.serverAt("good", addr, secret, viaURL)
	badName := w.serverAt("bad name", addr, secret, viaURL)
	badAuth := w.serverAt("badauth", addr, secret, viaURL)
	badAuth.Auth = "sha1"
	noUnit := w.serverAt("nounit", addr, secret, viaURL)
	noUnit.ActionTimeout = "10" // a duration needs a unit
	missingEnv := w.serverAt("noenv", addr, secret, viaEnv)
	missingEnv.env = nil // the variable secret_env names is not set
	cfg := w.config(good, badName, badAuth, noUnit, missingEnv)
	cfg.Log.Level = "loud"
	clientsBefore := w.ns.NumClients()

	b := w.startBridge(cfg)
	code := b.wait(exitTimeout)
	out := string(b.log.Bytes())
	if code == 0 {
		t.Fatalf("exit code 0 for an invalid configuration:\n%s", out)
	}
	// Each problem, named by its key.
	for _, want := range []string{"servers[1]", "servers[2]", "servers[3]", "servers[4]", "IT_AMI_SECRET_NOENV", "log.level"} {
		if !strings.Contains(out, want) {
			t.Errorf("the error does not name the problem %q:\n%s", want, out)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the PBX address got %d connections from an invalid configuration", n)
	}
	if n := w.ns.NumClients(); n != clientsBefore {
		t.Errorf("NATS has %d clients, had %d: the bridge connected with an invalid configuration", n, clientsBefore)
	}
	if w.status.len() != 0 {
		t.Errorf("a status was published by an invalid configuration")
	}
}

// TestConfig_LayersFileEnvFlags checks the order of the three layers:
// the file names a NATS server where nothing listens and the prefix
// "file"; AMI_BRIDGE_NATS__URL overrides the URL, AMI_BRIDGE_NATS__PREFIX
// the prefix, and --prefix overrides that again; AMI_BRIDGE_SERVERS gives
// the whole servers list, since "__" cannot address list items.
func TestConfig_LayersFileEnvFlags(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	p := w.startPBX("layered", amitest.Config{Profile: amitest.Asterisk22})
	statuses := w.collect("flagged.*.status")

	fileCfg := w.config(w.serverAt("from-file", deadAddr(t), w.newSecret("file"), viaURL))
	fileCfg.NATS.URL = "nats://" + deadAddr(t)
	fileCfg.NATS.Prefix = "file"
	path := w.writeConfig(fileCfg)

	envServers := `[{"name":"layered","url":"` + amiUser + `@` + p.Addr() + `","secret_env":"IT_LAYERED_SECRET","reconnect":{"min":"20ms","max":"200ms"}}]`
	env := append(processEnv(),
		"AMI_BRIDGE_NATS__URL="+w.ns.ClientURL(),
		"AMI_BRIDGE_NATS__PREFIX=env",
		"AMI_BRIDGE_SERVERS="+envServers,
		"IT_LAYERED_SECRET="+p.secret,
	)
	w.runBridge(env, "--config", path, "--prefix", "flagged")
	statuses.waitFor(t, 0, readyTimeout, "flagged.layered.status connected", func(m *nats.Msg) bool {
		s, err := parseStatus(m)
		return err == nil && m.Subject == "flagged.layered.status" && s.State == "connected"
	})
	r, err := w.nc.Request("flagged.layered.action", []byte(`{"Action":"Ping"}`), replyTimeout)
	if err != nil {
		t.Fatalf("request on the flag's prefix: %v", err)
	}
	if !strings.Contains(string(r.Data), `"Ping":"Pong"`) {
		t.Errorf("reply %s", r.Data)
	}
	for _, m := range statuses.snapshot() {
		if !strings.HasPrefix(m.Subject, "flagged.layered.") {
			t.Errorf("status on %s: the file's servers list should have been replaced", m.Subject)
		}
	}
}

// TestConfig_MemoryLimit runs the daemon with memory_limit at its
// default and with a size: its ready line gives the limit the Go runtime
// runs under, auto's 73 MiB for one PBX, or GOMEMLIMIT's when the process
// has that variable, whatever memory_limit says.
func TestConfig_MemoryLimit(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	var env []string
	for _, kv := range processEnv() {
		if !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			env = append(env, kv)
		}
	}
	tests := []struct {
		name, memoryLimit, gomemlimit, want string
	}{
		{"auto", "", "", `"memory_limit":76546048,"memory_limit_source":"auto"`},
		{"gomemlimit", "256MiB", "100MiB", `"memory_limit":104857600,"memory_limit_source":"GOMEMLIMIT"`},
	}
	for _, tt := range tests {
		cfg := w.config(w.serverAt(tt.name, deadAddr(t), w.newSecret(tt.name), viaURL))
		cfg.MemoryLimit = tt.memoryLimit
		procEnv := env
		if tt.gomemlimit != "" {
			procEnv = append(slices.Clip(env), "GOMEMLIMIT="+tt.gomemlimit)
		}
		b := w.runBridge(procEnv, "--config", w.writeConfig(cfg))
		b.log.waitFor(t, `"message":"ready"`, readyTimeout, b.done)
		for _, line := range strings.Split(string(b.log.Bytes()), "\n") {
			if strings.Contains(line, `"message":"ready"`) && !strings.Contains(line, tt.want) {
				t.Errorf("%s: the ready line lacks %s:\n%s", tt.name, tt.want, line)
			}
		}
	}
}

// TestVersion_Prints runs "ami-bridge version": one line, exit 0.
func TestVersion_Prints(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(bridgeBin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("ami-bridge version: %v\n%s", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || lines[0] == "" {
		t.Errorf("ami-bridge version printed %q, want one line", out)
	}
}

// Two bridges on one host with embedded JetStream on the same store_dir:
// nats-server takes no lock, and the second opened the first one's live
// stream files. The second must stop with a clear error and leave the
// first running. Both run docs/deployments.md's single-node config, and
// the page's nats commands run against the first.
func TestEmbeddedStore_SecondBridgeOnTheSameStoreDirRefused(t *testing.T) {
	t.Parallel()
	w := newWorldNoEvents(t, natsOptions{})
	p := w.startPBX("store", amitest.Config{})
	store := t.TempDir()
	blocks := docBlocks(t, docPage("deployments.md"), "## 1. Single node")
	if len(blocks) < 2 {
		t.Fatal(`docs/deployments.md: "## 1. Single node" needs the config block and the command block`)
	}
	embedded := func(listen string) bridgeConfig {
		cfg := w.config(w.serverFor("store", p, viaURL))
		cfg.NATS = natsConfig{}
		cfg.docYAML = replaceAll(t, blocks[0], "127.0.0.1:4222", listen, "/var/lib/ami-bridge", store)
		return cfg
	}
	listen := deadAddr(t)
	first := w.startBridge(embedded(listen))
	first.log.waitFor(t, `"message":"ready"`, readyTimeout, first.done)
	singleNodeCommands(t, w, p, "nats://"+listen, blocks[1])

	second := w.startBridge(embedded(deadAddr(t)))
	code := second.wait(exitTimeout)
	out := string(second.log.Bytes())
	if code == 0 {
		t.Fatalf("the second bridge on store_dir %s exited 0:\n%s", store, out)
	}
	for _, want := range []string{"nats.embedded.store_dir " + store, "in use by another process", "store_dir each"} {
		if !strings.Contains(out, want) {
			t.Errorf("the error lacks %q:\n%s", want, out)
		}
	}
	if first.exited() {
		t.Fatal("the first bridge exited")
	}
}

// singleNodeCommands runs the nats commands of docs/deployments.md's
// single node against the bridge's embedded server at url, once the
// stream holds more events than the consumer reads.
func singleNodeCommands(t *testing.T, w *world, p *pbx, url, block string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The session takes events once its login events are stored.
	waitStreamMsgs(t, js, "AMI_EVENTS", loginEvents, storeStall)
	const emitted = 12
	for i := range emitted {
		p.emit("ItStored", "Index", strconv.Itoa(i))
	}
	waitStreamMsgs(t, js, "AMI_EVENTS", loginEvents+emitted, storeStall)
	c := newCLI(w)
	c.server = url
	cmds := readmeCommands(t, block, nil)
	for _, words := range cmds {
		if words[0] != "nats" || len(words) < 3 {
			t.Fatalf("docs/deployments.md: %q is not a nats command", words)
		}
		out := c.run(t, words[1:]...)
		switch words[1] + " " + words[2] {
		case "stream info":
			var n int // more than the test sent: Asterisk's own events count too
			if m := regexp.MustCompile(`Messages: (\d+)\n`).FindStringSubmatch(out); m != nil {
				n, _ = strconv.Atoi(m[1])
			}
			if !strings.Contains(out, "Replicas: 1\n") || n < loginEvents+emitted {
				t.Errorf("%q:\n%s", words, out)
			}
		case "consumer add":
			if !strings.Contains(out, "Pull Mode: true") {
				t.Errorf("%q:\n%s", words, out)
			}
		case "consumer next":
			if n := strings.Count(out, "Acknowledged message"); n != 10 {
				t.Errorf("%q: %d messages acknowledged, want 10:\n%s", words, n, out)
			}
		default:
			t.Errorf("docs/deployments.md: no check for %q", words)
		}
	}
	if len(cmds) != 3 {
		t.Errorf("docs/deployments.md: %d single-node commands, want stream info, consumer add and consumer next", len(cmds))
	}
}

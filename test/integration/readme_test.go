package integration

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// The tests of this file follow README.md's "Using it with a real
// Asterisk" as a newcomer would, with its own text, and the pages of docs/
// it leads to: they read the manager.conf, config and command blocks from
// the README, docs/contract.md and docs/asterisk.md and run them against a
// fake Asterisk, changing only the addresses.

// replaceAll replaces each old (a docs placeholder address) by its new
// in s, failing the test when the block no longer holds it.
func replaceAll(t *testing.T, s string, oldNew ...string) string {
	t.Helper()
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("the docs block no longer holds %q:\n%s", oldNew[i], s)
		}
		s = strings.ReplaceAll(s, oldNew[i], oldNew[i+1])
	}
	return s
}

// managerUser returns the AMI user of the README's manager.conf block
// (the section after [general]), its secret and its write classes.
func managerUser(t *testing.T) (user, secret string, write []string) {
	t.Helper()
	blocks := readmeBlocks(t, "### manager.conf")
	if len(blocks) == 0 {
		t.Fatal(`README.md: no block in "### manager.conf"`)
	}
	section := ""
	for _, line := range strings.Split(blocks[0], "\n") {
		line, _, _ = strings.Cut(line, ";")
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if section != "general" {
				user = section
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "general" {
			continue
		}
		switch strings.TrimSpace(k) {
		case "secret":
			secret = strings.TrimSpace(v)
		case "write":
			for _, c := range strings.Split(v, ",") {
				write = append(write, strings.TrimSpace(c))
			}
		}
	}
	if user == "" || secret == "" {
		t.Fatalf("README.md manager.conf: no user with a secret:\n%s", blocks[0])
	}
	return user, secret, write
}

// readmeCommands returns the command lines of a README block as words,
// without the comment lines.
func readmeCommands(t *testing.T, block string, vars map[string]string) [][]string {
	t.Helper()
	var out [][]string
	for _, line := range strings.Split(block, "\n") {
		if words := shellWords(t, line, vars); len(words) > 0 {
			out = append(out, words)
		}
	}
	return out
}

// startREADMEBridge runs the README's "Config and run" command with its
// config.yaml, the PBX and NATS addresses replaced by p's and w's.
func startREADMEBridge(t *testing.T, w *world, p *pbx) *bridgeProc {
	t.Helper()
	blocks := readmeBlocks(t, "### Config and run")
	if len(blocks) < 2 {
		t.Fatal(`README.md: "### Config and run" needs the config block and the command block`)
	}
	cfg := replaceAll(t, blocks[0], "10.0.0.5:5038", p.Addr(), "nats://127.0.0.1:4222", w.ns.ClientURL())
	path := filepath.Join(w.dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmds := readmeCommands(t, blocks[1], nil)
	if len(cmds) != 1 {
		t.Fatalf("README.md: %d commands in the run block, want the one that runs the bridge", len(cmds))
	}
	words := cmds[0]
	var env []string
	for len(words) > 0 && strings.Contains(words[0], "=") {
		env, words = append(env, words[0]), words[1:]
	}
	if len(words) != 3 || words[0] != "ami-bridge" || words[1] != "--config" || words[2] != "config.yaml" {
		t.Fatalf("README.md: the run command is %q, want ami-bridge --config config.yaml", words)
	}
	return w.runBridge(append(processEnv(), env...), "--config", path)
}

// TestREADME_RealAsteriskWalkthrough is "Using it with a real Asterisk":
// the manager.conf user, the config and its run command, then every nats
// CLI command of the README's "Events, actions and status" and of
// docs/contract.md's "With the nats CLI", verbatim, against the bridge.
func TestREADME_RealAsteriskWalkthrough(t *testing.T) {
	t.Parallel()
	user, secret, _ := managerUser(t)
	w := newWorld(t, natsOptions{})
	p := w.startPBX("pbx1", amitest.Config{Profile: amitest.Asterisk22, Channels: 3,
		Users: map[string]amitest.User{user: {Secret: secret, Write: true}}})
	b := startREADMEBridge(t, w, p)
	w.waitReady("pbx1")

	c := newCLI(w)
	for _, doc := range []struct{ name, heading string }{
		{"README.md", "### Events, actions and status"},
		{"docs/contract.md", "## With the nats CLI"},
	} {
		blocks := docBlocks(t, filepath.Join("..", "..", doc.name), doc.heading)
		if len(blocks) == 0 {
			t.Fatalf("%s: no block in %q", doc.name, doc.heading)
		}
		ran := map[string]int{}
		for _, words := range readmeCommands(t, blocks[0], nil) {
			if words[0] != "nats" || len(words) < 3 {
				t.Fatalf("%s: %q is not a nats command", doc.name, words)
			}
			ran[words[1]]++
			switch words[1] {
			case "sub":
				readmeSub(t, w, c, p, words[2])
			case "req":
				readmeReq(t, w, c, words)
			case "micro":
				if out := c.run(t, words[1:]...); !strings.Contains(out, "ami-bridge") || words[2] == "stats" && !strings.Contains(out, "pbx1") {
					t.Errorf("%q:\n%s", words, out)
				}
			default:
				t.Errorf("%s: no check for %q", doc.name, words)
			}
		}
		if ran["sub"] == 0 || ran["req"] == 0 {
			t.Errorf("%s nats commands run: %v", doc.name, ran)
		}
		if doc.name != "README.md" && ran["micro"] == 0 {
			t.Errorf("%s nats commands run: %v, want micro too", doc.name, ran)
		}
	}
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// readmeSub runs "nats sub SUBJECT" for one message and makes the PBX
// send what it waits for: a Hangup event, or a new status by a restart.
func readmeSub(t *testing.T, w *world, c *cli, p *pbx, subject string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	trigger := "ami.pbx1.event.Hangup" // what the PBX will send
	if strings.HasSuffix(subject, ".status") {
		trigger = "ami.pbx1.status"
	}
	name := "readme-sub-" + rand.Text()
	cmd, stdout, stderr := c.command(ctx, "--connection-name", name, "sub", subject, "--count", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The server has no notification for a new subscription: poll.
	for deadline := time.Now().Add(15 * time.Second); !subscribed(t, w.ns, name, subject); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nats sub %s did not subscribe", subject)
		}
	}
	if trigger == "ami.pbx1.status" {
		from := w.status.len()
		p.restart()
		// A status published before the bridge saw every session drop
		// still says connected: wait for the drop, then for the return.
		i, _ := w.waitState("pbx1", from, readyTimeout, "disconnected", "connecting")
		w.waitState("pbx1", i+1, readyTimeout, "connected")
	} else {
		p.emit("Hangup", "Channel", "PJSIP/100-00000001", "Cause", "16")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nats sub %s: %v\nstdout:\n%s\nstderr:\n%s", subject, err, stdout, stderr)
	}
	if !strings.Contains(stdout.String(), `Received on "ami.pbx1.`) {
		t.Errorf("nats sub %s:\n%s", subject, stdout)
	}
}

// subscribed reports whether the connection named name is subscribed to
// subject on ns.
func subscribed(t *testing.T, ns *server.Server, name, subject string) bool {
	cz, err := ns.Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(cz.Conns, func(ci *server.ConnInfo) bool {
		return ci.Name == name && slices.Contains(ci.Subs, subject)
	})
}

// readmeReq runs a "nats req" command and checks that every reply is the
// bridge's, without an error; an Originate's ActionID must come back on
// its OriginateResponse event, and in the reply with Ami-Wait.
func readmeReq(t *testing.T, w *world, c *cli, words []string) {
	t.Helper()
	from := w.events.len()
	out := c.run(t, append(words[1:], "--raw")...)
	lines := jsonLines(out)
	if len(lines) == 0 {
		t.Fatalf("%q: no JSON reply:\n%s", words, out)
	}
	var req map[string]any
	if words[3] != "" || !strings.Contains(words[2], ".action.") { // a per-action subject takes an empty body
		if err := json.Unmarshal([]byte(words[3]), &req); err != nil {
			t.Fatalf("%q: the request is not JSON: %v", words, err)
		}
	}
	streamed := slices.Contains(words, "Ami-Stream:true")
	var output strings.Builder // a streamed Command's output, from its parts
	for _, l := range lines {
		var r struct {
			Server string          `json:"server"`
			Error  json.RawMessage `json:"error"`
			Output *string         `json:"output"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if streamed && r.Server == "" && r.Error == nil && r.Output != nil {
			output.WriteString(*r.Output)
			continue
		}
		if r.Error != nil || (r.Server != "pbx1" && !strings.Contains(l, `"Event"`)) {
			t.Errorf("%q: reply %s", words, l)
		}
	}
	if streamed && req["Action"] == "Command" {
		// amitest's canned "core show help" lists every CLI command.
		if out := output.String(); strings.Count(out, "\n") < 100 || !strings.Contains(out, "core show version") {
			t.Errorf("%q: the streamed parts' output is not the whole help:\n%s", words, out)
		}
	}
	action, _ := req["Action"].(string)
	if _, named, ok := strings.Cut(words[2], ".action."); ok {
		action = named
	}
	if action != "Originate" {
		return
	}
	id, _ := req["ActionID"].(string)
	if id == "" {
		t.Fatalf("the Originate has no ActionID: %s", words[3])
	}
	if slices.Contains(words, "Ami-Wait:OriginateResponse") {
		// The reply carries the call's outcome, with the ActionID.
		var r struct {
			Events []map[string]any `json:"events"`
		}
		if err := json.Unmarshal([]byte(lines[0]), &r); err != nil || len(r.Events) != 1 ||
			r.Events[0]["Event"] != "OriginateResponse" || r.Events[0]["ActionID"] != id || r.Events[0]["Response"] != "Success" {
			t.Errorf("%q: the reply does not carry the OriginateResponse: %s", words, lines[0])
		}
	}
	w.events.waitFor(t, from, eventTimeout, "OriginateResponse with ActionID "+id, func(m *nats.Msg) bool {
		f, err := parseFields(m.Data)
		return err == nil && m.Subject == "ami.pbx1.event.OriginateResponse" && f.value("ActionID") == id
	})
}

// TestDocs_AsteriskTLS runs the TLS config of docs/asterisk.md against a
// fake Asterisk with a self-signed certificate, given by tls.ca_file as
// the page says.
func TestDocs_AsteriskTLS(t *testing.T) {
	t.Parallel()
	cert, _, err := amitest.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, natsOptions{})
	p := w.startPBX("pbx1", amitest.Config{Profile: amitest.Asterisk22,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	caFile := filepath.Join(w.dir, "pbx1-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	blocks := docBlocks(t, docPage("asterisk.md"), "## TLS")
	if len(blocks) == 0 {
		t.Fatal(`docs/asterisk.md: no block in "## TLS"`)
	}
	cfg := replaceAll(t, blocks[0], "bridge@pbx1.example.com:5039", amiUser+"@"+p.Addr(), "/etc/ami-bridge/pbx1-ca.pem", caFile)
	path := filepath.Join(w.dir, "tls.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(processEnv(), "PBX1_SECRET="+p.secret, "AMI_BRIDGE_NATS__URL="+w.ns.ClientURL())
	b := w.runBridge(env, "--config", path)
	w.waitReady("pbx1")
	wantSuccess(t, w.request("pbx1", `{"Action":"Ping"}`))
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// TestREADME_ManagerConfWriteCoversTheAllowedActions checks the README's
// manager.conf against its config: every action of actions.allow has one
// of its classes in write (as Asterisk 22's ListCommands gives them), and
// write grants no class that none of them needs.
func TestREADME_ManagerConfWriteCoversTheAllowedActions(t *testing.T) {
	classes := map[string][]string{ // Asterisk 22 ListCommands; nil: none needed
		"Ping": nil, "Command": {"command"}, "CoreShowChannels": {"system", "reporting"},
		"CoreStatus": {"system", "reporting"}, "Status": {"system", "call", "reporting"},
		"Originate": {"originate"}, "Hangup": {"system", "call"}, "Getvar": {"call", "reporting"},
		"Setvar": {"call"},
	}
	_, _, write := managerUser(t)
	blocks := readmeBlocks(t, "### Config and run")
	var cfg struct {
		Servers []struct {
			Actions struct{ Allow []string } `yaml:"actions"`
		} `yaml:"servers"`
	}
	if err := yaml.Unmarshal([]byte(blocks[0]), &cfg); err != nil || len(cfg.Servers) == 0 {
		t.Fatalf("README.md config: %v", err)
	}
	used := map[string]bool{}
	for _, a := range cfg.Servers[0].Actions.Allow {
		need, ok := classes[a]
		if !ok {
			t.Errorf("no class known for %s: add it to this test from ListCommands", a)
			continue
		}
		if need == nil {
			continue
		}
		granted := false
		for _, c := range need {
			if slices.Contains(write, c) {
				granted, used[c] = true, true
			}
		}
		if !granted {
			t.Errorf("README.md: manager.conf write=%v lets no class of %s (%v) through", write, a, need)
		}
	}
	for _, c := range write {
		if !used[c] {
			t.Errorf("README.md: manager.conf write grants %q, which no allowed action needs", c)
		}
	}
}

// TestREADME_DemoSampleMatchesOutput runs the demo and compares its output
// with the README's sample: the header and suggested commands line for
// line (with the demo's port), and every feed line of the sample, times
// Uniqueid epochs and the published count of a status aside, among the
// real ones.
func TestREADME_DemoSampleMatchesOutput(t *testing.T) {
	t.Parallel()
	blocks := readmeBlocks(t, "## The demo")
	if len(blocks) == 0 {
		t.Fatal(`README.md: no sample in "## The demo"`)
	}
	head, feed, ok := strings.Cut(blocks[0], "\nLive feed")
	if !ok {
		t.Fatalf("README.md: the demo sample has no live feed:\n%s", blocks[0])
	}
	w := newWorld(t, natsOptions{})
	b := w.runBridge(processEnv(), "demo", "--listen", "127.0.0.1:0")
	// The first call's events, and the status after it, are in the sample.
	b.log.waitFor(t, "status  connected asterisk=", readyTimeout, b.done)
	b.log.waitFor(t, "Hangup             Channel=Local/burst@test-00000000;1", eventTimeout, b.done)
	if code := b.terminate(); code != 0 {
		t.Errorf("demo exit code %d after SIGTERM, want 0", code)
	}
	out := string(b.log.Bytes())
	url := regexp.MustCompile(`nats://127\.0\.0\.1:\d+`).FindString(out)
	// The metrics listener takes 7038, or a free port when a parallel
	// test holds it.
	metricsURL := regexp.MustCompile(`http://127\.0\.0\.1:\d+/metrics`)
	got := metricsURL.ReplaceAllString(strings.ReplaceAll(out, url, "nats://127.0.0.1:4222"), "http://127.0.0.1:7038/metrics")
	if !strings.HasPrefix(got, head+"\nLive feed") {
		t.Errorf("the demo's header differs from the README's sample:\n--- README\n%s\n--- demo\n%s", head, got[:min(len(got), len(head)+40)])
	}
	clock := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} `)
	uniqueid := regexp.MustCompile(`Uniqueid=\d+\.`)
	published := regexp.MustCompile(`published=\d+`) // when a status goes out depends on timing
	// Whether an action session is up before CoreSettings has brought the
	// version depends on timing too.
	version := regexp.MustCompile(` asterisk=\S+`)
	// How many SuccessfulAuth events the event session sees before the
	// first call depends on when the action sessions log in.
	seq := regexp.MustCompile(`#\d+ +`)
	norm := func(l string) string {
		l = uniqueid.ReplaceAllString(clock.ReplaceAllString(l, "T "), "Uniqueid=N.")
		l = version.ReplaceAllString(l, "")
		return seq.ReplaceAllString(published.ReplaceAllString(l, "published=N"), "#N ")
	}
	real := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		real[norm(l)] = true
	}
	lines := strings.Split(feed, "\n")[1:] // after the "Live feed" line
	for _, l := range lines {
		if l == "..." || l == "" {
			continue
		}
		if !real[norm(l)] {
			t.Errorf("README.md demo sample line not in the demo's output:\n%s", l)
		}
	}
}

package integration

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// perActionHeading is the section of securityDoc with the per-action
// recipe's commands.
const perActionHeading = "### Per-action permissions"

// originates counts the Originate actions the PBX read, whatever their
// case, as Asterisk matches them.
var originates = regexp.MustCompile(`(?im)^action:[ \t]*originate\r?$`)

// TestPermissions_PerActionRecipe runs the per-action users of
// docs/security.md with the bridge's generic subject off: the commands
// the page says work succeed, the ones it says fail fail as it says (NATS
// refuses them, or the bridge answers 400), the case-bypass attempts
// included, and the PBX reads the dialer's Originate only.
func TestPermissions_PerActionRecipe(t *testing.T) {
	t.Parallel()
	w, pass := recipeWorld(t, false, nil)
	p := w.startPBX("pbx1", amitest.Config{Profile: amitest.Asterisk22, Channels: 4, RecordReceived: true})
	sc := w.serverFor("pbx1", p, viaURL)
	off := false
	sc.Actions = &actionsConfig{GenericSubject: &off}
	cfg := w.config(sc)
	cfg.extraEnv = recipeBridgeLogin(t, pass)
	b := w.startBridge(cfg)
	w.waitReady("pbx1")

	blocks := docBlocks(t, securityDoc, perActionHeading)
	if len(blocks) < 2 {
		t.Fatalf("docs/security.md: %q needs a block of commands that work and one of commands that fail", perActionHeading)
	}
	vars := map[string]string{"DIALER_PASS": pass["dialer"], "DASHBOARD_PASS": pass["dashboard"], "SUPERVISOR_PASS": pass["supervisor"]}
	c := newCLI(w)
	runDocSuccesses(t, c, blocks[0], vars)
	if n := len(originates.FindAll(p.Received(), -1)); n != 1 {
		t.Fatalf("the PBX read %d Originate after the dialer's, want 1", n)
	}

	refused := 0
	for _, line := range strings.Split(strings.TrimSpace(blocks[1]), "\n") {
		_, comment, _ := strings.Cut(line, "  # ")
		words := shellWords(t, line, vars)
		if len(words) == 0 || words[0] != "nats" {
			t.Fatalf("docs/security.md: %q is not a nats command", line)
		}
		// The CLI waits out its timeout after NATS refused the request.
		out, err := c.output(append([]string{"--timeout", "2s"}, words[1:]...)...)
		switch {
		case strings.HasPrefix(comment, "NATS:"):
			// The server drops the request and tells the CLI.
			if !strings.Contains(strings.ToLower(out), "permissions violation") {
				t.Errorf("%s: exit %v, want NATS's permissions violation:\n%s", line, err, out)
			}
		case strings.HasPrefix(comment, "bridge: 400"):
			if err != nil || !strings.Contains(out, `"code":400`) {
				t.Errorf("%s: exit %v, want the bridge's 400:\n%s", line, err, out)
			}
		default:
			t.Fatalf("docs/security.md: %q does not say how it fails (# NATS: … or # bridge: 400)", line)
		}
		refused++
	}
	if refused < 6 {
		t.Errorf("docs/security.md: %d refused commands, want the case-bypass attempts among them", refused)
	}

	// More attempts than the page shows, by the supervisor, whose NATS
	// allow is ami.*.action.*: a blank in the subject, every case.
	sup := []string{"--user", "supervisor", "--password", pass["supervisor"], "--inbox-prefix", inboxOf("supervisor")}
	for _, subject := range []string{"ami.pbx1.action.oRIGINATE", "ami.pbx1.action.Originate ", "ami.pbx1.action. Originate", "ami.pbx1.action.Originate\t"} {
		out, err := c.output(append(sup, "--timeout", "2s", "req", subject, `{"Channel":"Local/100@default","Application":"Echo"}`)...)
		if err == nil && !strings.Contains(out, `"code":400`) && !strings.Contains(out, "ermission") {
			t.Errorf("req %q ran:\n%s", subject, out)
		}
	}
	// The operator may publish to the generic subject, which is off.
	op := []string{"--user", "operator", "--password", pass["operator"], "--inbox-prefix", inboxOf("operator")}
	if out, err := c.output(append(op, "req", "ami.pbx1.action", `{"Action":"Originate","Channel":"Local/100@default","Application":"Echo"}`)...); !strings.Contains(strings.ToLower(out), "no responders") {
		t.Errorf("the generic subject answered with generic_subject: false (exit %v):\n%s", err, out)
	}
	// A last request the PBX answers: it read all before it.
	c.run(t, append(sup, "req", "ami.pbx1.action.Ping", "")...)
	if n := len(originates.FindAll(p.Received(), -1)); n != 1 {
		t.Errorf("the PBX read %d Originate in all, want the dialer's only", n)
	}

	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if out := b.log.Bytes(); strings.Contains(strings.ToLower(string(out)), "permissions violation") {
		t.Errorf("the bridge hit a permissions violation:\n%s", truncate(out, 8192))
	}
}

// output runs the CLI to its end and returns its output, standard and
// error, and its exit error.
func (c *cli) output(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd, stdout, stderr := c.command(ctx, args...)
	err := cmd.Run()
	return stdout.String() + stderr.String(), err
}

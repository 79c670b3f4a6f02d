package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// TestDocs_CallState runs docs/callstate.md: the daemon with the page's
// state config and a call in progress (Linkedid 1733600000.12, the one
// the page reads), then the page's nats commands verbatim: the watch
// shows the call, the list and the get have its key and value, and the
// subscription gets its record once the call ends.
func TestDocs_CallState(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{jetStream: true})
	p := w.startPBX("pbx1", amitest.Config{Profile: amitest.Asterisk22})
	cfg := w.config(w.serverFor("pbx1", p, viaURL))
	yamls := docBlocks(t, docPage("callstate.md"), "## Turn it on")
	if len(yamls) != 1 {
		t.Fatalf(`docs/callstate.md: want one config block in "## Turn it on", got %d`, len(yamls))
	}
	cfg.docYAML = yamls[0]
	b := w.startBridge(cfg)
	w.waitReady("pbx1")
	// The fake PBX's lists do not have the channels the raw events below
	// make (real Asterisk's would): emitted before the reconciliation,
	// they would be removed by it as gone.
	b.log.waitFor(t, "state reconciled with the PBX's lists", readyTimeout, b.done)

	const linkedid = "1733600000.12"
	p.emit("Newchannel", "Privilege", "call,all", "Channel", "PJSIP/100-0000000c", "ChannelState", "0", "ChannelStateDesc", "Down",
		"CallerIDNum", "100", "CallerIDName", "Alice", "Uniqueid", linkedid, "Linkedid", linkedid)
	p.emit("Newchannel", "Privilege", "call,all", "Channel", "PJSIP/200-0000000d", "ChannelState", "0", "ChannelStateDesc", "Down",
		"CallerIDNum", "200", "Uniqueid", "1733600000.13", "Linkedid", linkedid)

	blocks := docBlocks(t, docPage("callstate.md"), "## With the nats CLI")
	if len(blocks) != 1 {
		t.Fatalf(`docs/callstate.md: want one command block in "## With the nats CLI", got %d`, len(blocks))
	}
	lines := strings.Split(strings.TrimSpace(blocks[0]), "\n")
	if len(lines) != 5 {
		t.Fatalf("docs/callstate.md: want the 5 commands the test knows, got:\n%s", blocks[0])
	}
	c := newCLI(w)
	words := func(line string) []string {
		ws := shellWords(t, line, nil)
		if len(ws) == 0 || ws[0] != "nats" {
			t.Fatalf("docs/callstate.md: %q is not a nats command", line)
		}
		return ws[1:]
	}
	key := "pbx1.calls.1733600000=2E12"

	// The watch runs until stopped: it must show the call in progress.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch := startCLI(t, c, ctx, words(lines[0]))
	watch.out.waitFor(t, key, eventTimeout, watch.done)
	watch.cmd.Process.Kill()
	<-watch.done

	if out := c.run(t, words(lines[1])...); !strings.Contains(out, key) || !strings.Contains(out, "pbx1.channels.1733600000=2E13") {
		t.Errorf("%s:\n%s", lines[1], out)
	}
	if out := c.run(t, words(lines[2])...); !strings.Contains(out, `"linkedid":"`+linkedid+`"`) || !strings.Contains(out, `"number":"100"`) {
		t.Errorf("%s:\n%s", lines[2], out)
	}

	// The caller waits in the queue the fake PBX has (support): the
	// queue's value lists it.
	p.emit("QueueCallerJoin", "Privilege", "agent,all", "Channel", "PJSIP/100-0000000c", "Uniqueid", linkedid, "Linkedid", linkedid,
		"Queue", "support", "Position", "1", "Count", "1")
	waitKV(t, ctx, w.nc, "AMI_STATE", "pbx1.queues.support", `"uniqueid":"`+linkedid+`"`)
	if out := c.run(t, words(lines[3])...); !strings.Contains(out, `"queue":"support"`) || !strings.Contains(out, `"callers":[{"uniqueid":"`+linkedid+`"`) {
		t.Errorf("%s:\n%s", lines[3], out)
	}

	sub := startCLI(t, c, ctx, words(lines[4]))
	waitForSubscription(t, w.ns, "ami.pbx1.call.>")
	p.emit("Hangup", "Privilege", "call,all", "Channel", "PJSIP/200-0000000d", "Uniqueid", "1733600000.13", "Linkedid", linkedid, "Cause", "16")
	p.emit("Hangup", "Privilege", "call,all", "Channel", "PJSIP/100-0000000c", "Uniqueid", linkedid, "Linkedid", linkedid, "Cause", "16")
	<-sub.done
	if sub.err != nil {
		t.Fatalf("%s: %v\n%s", lines[4], sub.err, sub.out.Bytes())
	}
	if out := string(sub.out.Bytes()); !strings.Contains(out, "ami.pbx1.call.1733600000%2E12") || !strings.Contains(out, `"end_seen":true`) {
		t.Errorf("%s:\n%s", lines[4], out)
	}
	if code := b.terminate(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// cliProc is a nats CLI command running in the background.
type cliProc struct {
	cmd  *exec.Cmd
	out  *logLines // stdout and stderr
	done chan struct{}
	err  error // of Wait, once done is closed
}

// startCLI starts the nats CLI with args; the test waits for its end
// (done), killing it first if it does not end by itself.
func startCLI(t *testing.T, c *cli, ctx context.Context, args []string) *cliProc {
	t.Helper()
	cmd, _, _ := c.command(ctx, args...)
	p := &cliProc{cmd: cmd, out: newLogLines(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // the process's waiter, the test's: done tells its end
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// waitKV watches key of bucket until its value holds want.
func waitKV(t *testing.T, ctx context.Context, nc *nats.Conn, bucket, key, want string) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatalf("bucket %s: %v", bucket, err)
	}
	watch, err := kv.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	for {
		select {
		case e := <-watch.Updates():
			if e != nil && strings.Contains(string(e.Value()), want) {
				return
			}
		case <-ctx.Done():
			t.Fatalf("%s %s never held %s", bucket, key, want)
		}
	}
}

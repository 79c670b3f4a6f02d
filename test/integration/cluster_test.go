package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// The cluster chaos runs: about 2,000 events/s from one PBX; the full one
// stops a node for 10 s as issue 8 asks, the short one for 2 s.
var (
	clusterFull  = chaosLoad{callsPerSecond: 91, duration: 25 * time.Second, cutAt: 5 * time.Second, cut: 10 * time.Second}
	clusterShort = chaosLoad{callsPerSecond: 91, duration: 5 * time.Second, cutAt: 1500 * time.Millisecond, cut: 2 * time.Second}
)

// natsCluster is three clustered in-process nats-servers with JetStream.
type natsCluster struct {
	nodes []*natsNode
}

// The docs/deployments.md section of the cluster, whose blocks are, in
// order: a node's nats-server config, the bridge's config and the nats
// commands.
const clusterHeading = "## 2. A 3-node cluster"

// startCluster starts three nodes n1, n2 and n3, each with the node
// config of docs/deployments.md (n1's, named for each), its addresses
// and store replaced.
func startCluster(t *testing.T, conf string) *natsCluster {
	t.Helper()
	const size = 3
	type ports struct{ client, cluster int }
	all := make([]ports, size)
	var names []string
	for i := range all {
		all[i] = ports{freePort(t), freePort(t)}
		names = append(names, fmt.Sprintf("nats-route://n%d:6222", i+1), fmt.Sprintf("nats-route://127.0.0.1:%d", all[i].cluster))
	}
	dir := t.TempDir()
	c := &natsCluster{}
	for i, p := range all {
		path := filepath.Join(dir, fmt.Sprintf("n%d.conf", i+1))
		node := replaceAll(t, conf, append(names, "server_name: n1", fmt.Sprintf("server_name: n%d", i+1),
			"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", p.client), "0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", p.cluster),
			"/var/lib/nats", t.TempDir())...)
		if err := os.WriteFile(path, []byte(node), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("docs/deployments.md's node config: %v", err)
		}
		c.nodes = append(c.nodes, startNode(t, opts))
	}
	return c
}

func (c *natsCluster) urls() string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.url())
	}
	return strings.Join(out, ",")
}

// clientOf returns the node where a client named name is connected, or
// nil.
func (c *natsCluster) clientOf(name string) *natsNode {
	for _, n := range c.nodes {
		if n.ns == nil {
			continue
		}
		cz, err := n.ns.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == name {
				return n
			}
		}
	}
	return nil
}

func (c *natsCluster) byName(name string) *natsNode {
	for _, n := range c.nodes {
		if n.opts.ServerName == name {
			return n
		}
	}
	return nil
}

// newClusterWorld is a world on the cluster c: the test's client reaches
// any node, and the event inbox holds only SuccessfulAuth, enough to know
// each AMI session takes events.
func newClusterWorld(t *testing.T, c *natsCluster) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), ns: c.nodes[0].ns}
	nc, err := nats.Connect(c.urls(), nats.Name("integration-test"), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	w.nc = nc
	w.status = w.collect("ami.*.status")
	w.events = w.collect("ami.*.event.SuccessfulAuth")
	t.Cleanup(w.checkStatusesHoldNoSecret)
	waitJetStream(t, nc)
	return w
}

// waitJetStream waits until the cluster's JetStream has a meta leader and
// answers.
func waitJetStream(t *testing.T, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream of the cluster not ready after %v: %v", readyTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestChaos_ClusterNodeStops runs the bridge against three clustered
// nats-servers with jetstream.replicas 3 and about 2,000 events/s from an
// amitest PBX, and stops one node for a while under that load, then
// starts it again. Then the R3 stream must hold every call event amitest
// sent, each once, with no gap in Ami-Seq and no Nats-Msg-Id twice.
//
// Which node stops is AMI_CHAOS_VICTIM: "follower" (neither the stream
// leader nor the bridge's server), "leader" (the stream leader) or
// "bridge" (the server the bridge is connected to). The default run stops
// the stream leader for 2 s: its publishes in flight are lost, and new
// ones meet "no responders" until a new leader is elected, so the
// publisher must resend from the first one not acknowledged, in order
// (without that, the stream held events out of Ami-Seq order).
// AMI_CHAOS=1 stops the bridge's server for 10 s.
func TestChaos_ClusterNodeStops(t *testing.T) {
	load, kind := clusterShort, "leader"
	if chaosFull() {
		load, kind = clusterFull, "bridge"
	}
	if v := os.Getenv("AMI_CHAOS_VICTIM"); v != "" {
		kind = v
	}
	blocks := docBlocks(t, docPage("deployments.md"), clusterHeading)
	if len(blocks) < 3 {
		t.Fatalf("docs/deployments.md: %q needs the node config, the bridge's config and the commands", clusterHeading)
	}
	c := startCluster(t, blocks[0])
	w := newClusterWorld(t, c)
	p := w.startPBX("c1", amitest.Config{Profile: amitest.Asterisk22})
	cfg := w.config(w.serverFor("c1", p, viaURL))
	cfg.Log.Level = "info"
	cfg.JetStream = &jetStreamConf{Stream: "IT_CLUSTER"}
	var urls []string
	for i, n := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats://n%d:4222", i+1), n.url())
	}
	cfg.docYAML = replaceAll(t, blocks[1], urls...) // nats.url, jetstream.enabled and replicas
	b := w.startBridge(cfg)
	w.waitReady("c1")
	b.log.waitFor(t, `"topology":"external","stream":"IT_CLUSTER","replicas":3`, readyTimeout, b.done)

	js, err := jetstream.New(w.nc)
	if err != nil {
		t.Fatal(err)
	}
	info := streamWithLeader(t, js, "IT_CLUSTER")
	if info.Config.Replicas != 3 {
		t.Fatalf("the bridge created the stream with %d replicas, want 3", info.Config.Replicas)
	}
	victim := c.pick(t, kind, info.Cluster.Leader)

	gen := p.StartCalls(context.Background(), load.callsPerSecond, load.calls())
	begin := time.Now()
	// The schedule is the test's own clock: nothing to wait on.
	time.Sleep(load.cutAt)
	victim.stop()
	t.Logf("%.1fs: stopped %s (%s; stream leader %s)", time.Since(begin).Seconds(), victim.opts.ServerName, kind, info.Cluster.Leader)
	time.Sleep(load.cut)
	victim.start()
	t.Logf("%.1fs: restarted %s", time.Since(begin).Seconds(), victim.opts.ServerName)
	if err := gen.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("call generator: %v", err)
	}
	_, sent, _ := gen.Count()
	t.Logf("%.1fs: the PBX sent %d call events", time.Since(begin).Seconds(), sent)

	waitStreamMsgs(t, js, "IT_CLUSTER", uint64(sent+loginEvents), storeStall)
	st := tallyStream(t, js, "IT_CLUSTER")
	st.checkIDs(t)
	st.checkReordered(t, "c1", sent, bridgeReordered(b.log.Bytes()))
	t.Log(finalStatus(w, b, "c1"))

	// The page's commands create the stream themselves, on the subjects
	// of the bridge's: that one goes first.
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	if err := js.DeleteStream(ctx, "IT_CLUSTER"); err != nil {
		t.Fatal(err)
	}
	clusterCommands(t, w, blocks[2])
}

// clusterCommands runs the nats commands of docs/deployments.md's cluster
// (lines joined where they end in a backslash) against the cluster.
func clusterCommands(t *testing.T, w *world, block string) {
	t.Helper()
	c := newCLI(w)
	cmds := readmeCommands(t, strings.ReplaceAll(block, "\\\n", " "), nil)
	for _, words := range cmds {
		if words[0] != "nats" || len(words) < 3 {
			t.Fatalf("docs/deployments.md: %q is not a nats command", words)
		}
		if words[1] == "stream" && words[2] == "edit" {
			// "an existing R1 stream": the one added above, made R1.
			js, err := jetstream.New(w.nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
			s, err := js.Stream(ctx, words[3])
			if err == nil {
				cfg := s.CachedInfo().Config
				cfg.Replicas = 1
				_, err = js.UpdateStream(ctx, cfg)
			}
			cancel()
			if err != nil {
				t.Fatalf("make %s R1: %v", words[3], err)
			}
		}
		out := c.run(t, words[1:]...)
		switch words[1] + " " + words[2] {
		case "account info":
			if !strings.Contains(out, "Connected Cluster: ami\n") || !strings.Contains(out, "JetStream Account Information") {
				t.Errorf("%q:\n%s", words, out)
			}
		case "stream add", "stream edit":
			if !strings.Contains(out, "Replicas: 3") {
				t.Errorf("%q:\n%s", words, out)
			}
		case "stream info":
			if !strings.Contains(out, "Leader: ") || strings.Count(out, "current") != 2 {
				t.Errorf("%q: not a leader and two current replicas:\n%s", words, out)
			}
		default:
			t.Errorf("docs/deployments.md: no check for %q", words)
		}
	}
}

// streamWithLeader returns the info of stream once it has a leader: a
// stream just created may not have elected one yet.
func streamWithLeader(t *testing.T, js jetstream.JetStream, stream string) *jetstream.StreamInfo {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := js.Stream(ctx, stream)
		cancel()
		if err == nil {
			if info := s.CachedInfo(); info.Cluster != nil && info.Cluster.Leader != "" {
				return info
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s has no leader after %v (last error %v)", stream, readyTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pick returns the node to stop: kind is "bridge", "leader" or "follower".
func (c *natsCluster) pick(t *testing.T, kind, leader string) *natsNode {
	t.Helper()
	bridgeNode := c.clientOf("ami-bridge")
	if bridgeNode == nil {
		t.Fatal("no node has the bridge's connection")
	}
	switch kind {
	case "bridge":
		return bridgeNode
	case "leader":
		if n := c.byName(leader); n != nil {
			return n
		}
		t.Fatalf("no node is the stream leader %q", leader)
	case "follower":
		for _, n := range c.nodes {
			if n != bridgeNode && n.opts.ServerName != leader {
				return n
			}
		}
	default:
		t.Fatalf("AMI_CHAOS_VICTIM=%q: want bridge, leader or follower", kind)
	}
	return nil
}

package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// The configuration of the embedded server: nats.embedded.
type embeddedConfig struct {
	Listen string `yaml:"listen"`
}

// The sites chaos runs: two sites of about 1,000 events/s each; the full
// one cuts the hub off for 30 s as issue 8 asks, the short one for 3 s.
// The cut is the link's: a hub that restarts instead comes back to its
// sources only after nats-server's retry backoff (10 s, 20 s, …).
var (
	sitesFull  = chaosLoad{callsPerSecond: 45, duration: 45 * time.Second, cutAt: 5 * time.Second, cut: 30 * time.Second}
	sitesShort = chaosLoad{callsPerSecond: 45, duration: 6 * time.Second, cutAt: 1500 * time.Millisecond, cut: 3 * time.Second}
)

// hubStream is the hub's stream that sources every site's; siteStream is
// the stream each site's bridge creates in its own domain.
const (
	hubStream  = "AMI_ALL"
	siteStream = "AMI_EVENTS"
)

// site is one PBX site: its PBX, its bridge with the embedded server as
// a leaf node of the hub, and a core NATS subscriber on that server.
type site struct {
	name, domain string // the PBX's name, the site's JetStream domain
	pbx          *pbx
	bridge       *bridgeProc
	local        *liveTally // the subscriber at the site, on ami.*.event.>
	gen          *amitest.Calls
}

// The docs/deployments.md section of the hub and sites, whose blocks are,
// in order: hub.conf, the site's config, ami-all.json and the commands.
const sitesHeading = "## 3. Hub and sites with leaf nodes"

// startSite starts the site of domain, which docs/deployments.md calls
// paris, with the page's site config: its embedded server a leaf node of
// the hub's leafnode port, its PBX <domain>-pbx1.
func (w *world) startSite(domain, hubAddr, leafPass string, blocks []string) *site {
	w.t.Helper()
	s := &site{name: domain + "-pbx1", domain: domain, local: newLiveTally()}
	s.pbx = w.startPBX(s.name, amitest.Config{Profile: amitest.Asterisk22})
	listen := deadAddr(w.t)
	cfg := w.config()
	cfg.docYAML = replaceAll(w.t, blocks[1], "paris", domain, "127.0.0.1:4222", listen,
		"/var/lib/ami-bridge", w.t.TempDir(), "hub.example.com:7422", hubAddr,
		`password: ""`, `password: "`+leafPass+`"`, "tcp://"+amiUser+"@10.1.0.5:5038", "tcp://"+amiUser+"@"+s.pbx.Addr())
	cfg.extraEnv = []string{"PBX1_SECRET=" + s.pbx.secret}
	s.bridge = w.startBridge(cfg)
	s.bridge.log.waitFor(w.t, `"topology":"leafnode","jetstream_domain":"`+s.domain+`","leafnode_remotes":1`, readyTimeout, s.bridge.done)
	s.bridge.log.waitFor(w.t, `"leafnode connected"`, readyTimeout, s.bridge.done)

	nc, err := nats.Connect("nats://"+listen, nats.Name("site-subscriber"))
	if err != nil {
		w.t.Fatalf("connect to site %s: %v", domain, err)
	}
	w.t.Cleanup(nc.Close)
	sub, err := nc.Subscribe("ami.*.event.>", s.local.add)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		w.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		w.t.Fatal(err)
	}
	// The session takes events once its login events are in the site's
	// stream, in the site's own domain.
	js, err := jetstream.New(nc)
	if err != nil {
		w.t.Fatal(err)
	}
	waitStreamMsgs(w.t, js, siteStream, loginEvents, storeStall)
	return s
}

// liveTally follows the events a core NATS subscriber receives: each
// Ami-Seq one more than the one before, from the first it sees on.
type liveTally struct {
	mu      sync.Mutex
	events  int64
	last    uint64
	problem string
	changed chan struct{} // closed and replaced on every event
}

func newLiveTally() *liveTally { return &liveTally{changed: make(chan struct{})} }

func (l *liveTally) add(m *nats.Msg) {
	seq, err := strconv.ParseUint(m.Header.Get("Ami-Seq"), 10, 64)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.problem != "":
	case err != nil:
		l.problem = fmt.Sprintf("%s: Ami-Seq %q", m.Subject, m.Header.Get("Ami-Seq"))
	case l.last != 0 && seq != l.last+1:
		l.problem = fmt.Sprintf("%s: Ami-Seq %d after %d", m.Subject, seq, l.last)
	}
	l.events++
	l.last = seq
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitSeq waits until the subscriber has seen Ami-Seq want, and fails on
// any gap it saw.
func (l *liveTally) waitSeq(t *testing.T, site string, want uint64) {
	t.Helper()
	for {
		l.mu.Lock()
		last, problem, changed := l.last, l.problem, l.changed
		l.mu.Unlock()
		if problem != "" {
			t.Errorf("site %s subscriber: %s", site, problem)
			return
		}
		if last >= want {
			return
		}
		select {
		case <-changed:
		case <-time.After(eventTimeout):
			t.Errorf("site %s subscriber: Ami-Seq %d, want %d, and no event for %v", site, last, want, eventTimeout)
			return
		}
	}
}

// localEvents returns how many events the site's subscriber has seen.
func (s *site) localEvents() int64 {
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	return s.local.events
}

// TestChaos_SitesBufferThroughWANCut runs two sites, each a bridge whose
// embedded server is a leaf node of a hub in its own JetStream domain,
// with its own PBX and its own stream. The hub holds one stream that
// sources both sites' streams across domains. The hub's nats-server
// config, the sites' bridge config, the hub stream's JSON file and the
// nats commands are docs/deployments.md's, verbatim but for addresses.
// Under load the WAN link between the sites and the hub (a loopback
// proxy) is cut, then comes back on the same address. Meanwhile a core NATS subscriber at each site
// keeps receiving its site's events. In the end the hub's stream holds
// every call event both PBXes sent, each once, in Ami-Seq order per PBX.
//
// The short version (default) cuts the link for 3 s; AMI_CHAOS=1 for
// 30 s.
func TestChaos_SitesBufferThroughWANCut(t *testing.T) {
	load := sitesShort
	if chaosFull() {
		load = sitesFull
	}
	w := &world{t: t, dir: t.TempDir()}
	leafPass := w.newSecret("leaf")
	blocks := docBlocks(t, docPage("deployments.md"), sitesHeading)
	if len(blocks) < 4 {
		t.Fatalf("docs/deployments.md: %q needs hub.conf, the site's config, ami-all.json and the commands", sitesHeading)
	}
	// The hub runs the page's hub.conf, its addresses and store replaced;
	// nats-server reads $LEAF_PASSWORD from the environment.
	t.Setenv("LEAF_PASSWORD", leafPass)
	hubConf := filepath.Join(w.dir, "hub.conf")
	clientPort, leafPort := freePort(t), freePort(t)
	if err := os.WriteFile(hubConf, []byte(replaceAll(t, blocks[0], "0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", clientPort),
		"0.0.0.0:7422", fmt.Sprintf("127.0.0.1:%d", leafPort), "/var/lib/nats", t.TempDir())), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(hubConf)
	if err != nil {
		t.Fatalf("docs/deployments.md's hub.conf: %v", err)
	}
	hub := startNode(t, opts)
	w.ns = hub.ns
	nc, err := nats.Connect(hub.url(), nats.Name("integration-test"), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w.nc = nc
	w.status = w.collect("ami.*.status")
	t.Cleanup(w.checkStatusesHoldNoSecret)

	wan := startWANLink(t, fmt.Sprintf("127.0.0.1:%d", leafPort))
	sites := []*site{w.startSite("paris", wan.addr, leafPass, blocks), w.startSite("lyon", wan.addr, leafPass, blocks)}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	// The hub's stream, created with the page's file and command: sources
	// only, no subjects of its own, or it would store what crosses the
	// leaf links besides what it sources.
	hubConfig := filepath.Join(w.dir, "ami-all.json")
	if err := os.WriteFile(hubConfig, []byte(blocks[2]), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCLI(w)
	cmds := sitesCommands(t, blocks[3], hubConfig)
	if len(cmds) == 0 || !slices.Equal(cmds[0][len(cmds[0])-4:], []string{"add", hubStream, "--config", hubConfig}) {
		t.Fatalf("docs/deployments.md: the first command does not create %s from ami-all.json: %q", hubStream, cmds)
	}
	c.run(t, cmds[0][1:]...)
	if s, err := js.Stream(ctx, hubStream); err != nil || len(s.CachedInfo().Config.Sources) != len(sites) {
		t.Fatalf("the hub's stream after nats stream add: %v", err)
	}

	begin := time.Now()
	for _, s := range sites {
		s.gen = s.pbx.StartCalls(context.Background(), load.callsPerSecond, load.calls())
	}
	time.Sleep(load.cutAt)
	wan.cut()
	t.Logf("%.1fs: the WAN link to the hub is cut", time.Since(begin).Seconds())
	before := make([]int64, len(sites))
	for i, s := range sites {
		before[i] = s.localEvents()
		s.bridge.log.waitFor(t, `"leafnode disconnected"`, readyTimeout, s.bridge.done)
	}
	time.Sleep(load.cut)
	for i, s := range sites {
		if got := s.localEvents(); got <= before[i] {
			t.Errorf("site %s: its subscriber got no event during the cut (%d before, %d after)", s.name, before[i], got)
		} else {
			t.Logf("site %s: %d events reached the site's subscriber during the cut", s.name, got-before[i])
		}
	}
	wan.up()
	t.Logf("%.1fs: the WAN link is back", time.Since(begin).Seconds())

	var want uint64
	sent := map[string]int64{}
	for _, s := range sites {
		if err := s.gen.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("site %s: call generator: %v", s.name, err)
		}
		_, n, _ := s.gen.Count()
		sent[s.name] = n
		want += uint64(n + loginEvents)
	}
	t.Logf("%.1fs: the PBXes sent %v call events", time.Since(begin).Seconds(), sent)
	waitStreamMsgs(t, js, hubStream, want, sourceStall)
	t.Logf("%.1fs: the hub's stream holds them", time.Since(begin).Seconds())
	st := tallyStream(t, js, hubStream)
	st.checkIDs(t)
	for _, s := range sites {
		st.check(t, s.name, sent[s.name])
		s.local.waitSeq(t, s.name, uint64(sent[s.name]+loginEvents))
	}
	for _, words := range cmds[1:] {
		out := c.run(t, words[1:]...)
		switch {
		case slices.Contains(words, "info") && slices.Contains(words, siteStream):
			if !strings.Contains(out, "Subjects: ami.*.event.>") {
				t.Errorf("%q:\n%s", words, out)
			}
		case slices.Contains(words, "info") && slices.Contains(words, hubStream):
			if n := strings.Count(out, "Stream Name: "+siteStream); n != len(sites) {
				t.Errorf("%q: %d sources, want %d:\n%s", words, n, len(sites), out)
			}
		case slices.Contains(words, "edit"):
			if !strings.Contains(out, "Stream "+hubStream+" was updated") {
				t.Errorf("%q:\n%s", words, out)
			}
		default:
			t.Errorf("docs/deployments.md: no check for %q", words)
		}
	}
}

// sitesCommands returns the nats commands of the hub and sites (lines
// joined where they end in a backslash), with the path of the hub's
// stream file for ami-all.json. "--server hub.example.com" is left out:
// the test's CLI gives the hub's address itself, and the CLI refuses a
// second --server.
func sitesCommands(t *testing.T, block, hubConfig string) [][]string {
	t.Helper()
	cmds := readmeCommands(t, strings.ReplaceAll(block, "\\\n", " "), nil)
	for i, words := range cmds {
		if words[0] != "nats" {
			t.Fatalf("docs/deployments.md: %q is not a nats command", words)
		}
		if j := slices.Index(words, "--server"); j >= 0 {
			if j+1 == len(words) || words[j+1] != "hub.example.com" {
				t.Fatalf("docs/deployments.md: %q names a server other than the hub", words)
			}
			words = slices.Delete(words, j, j+2)
		}
		for k, word := range words {
			if word == "ami-all.json" {
				words[k] = hubConfig
			}
		}
		cmds[i] = words
	}
	return cmds
}

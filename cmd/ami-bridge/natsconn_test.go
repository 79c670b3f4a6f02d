package main

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// leafConfig is a site whose embedded server is a leaf node of the hub
// at hubURL.
func leafConfig(hubURL string, jetStream bool) *config.Config {
	cfg := config.Default()
	cfg.NATS.Embedded.Listen = ""
	cfg.NATS.Embedded.StoreDir = ""
	cfg.JetStream.Enabled = jetStream
	if jetStream {
		cfg.NATS.Embedded.Domain = "paris"
	}
	cfg.NATS.Embedded.Leafnodes.Remotes = []config.LeafRemote{{
		URL: config.NATSURL(hubURL), User: "site", Password: "Leaf-Pass-1",
	}}
	return &cfg
}

func TestEmbeddedFromConfig_Leafnode(t *testing.T) {
	o, err := embeddedFromConfig(leafConfig("nats-leaf://hub:7422, nats-leaf://hub2:7422", true))
	if err != nil {
		t.Fatal(err)
	}
	if o.Domain != "paris" || len(o.Leafnodes) != 1 || len(o.Leafnodes[0].URLs) != 2 {
		t.Fatalf("embedded options %+v", o)
	}
	u := o.Leafnodes[0].URLs[1]
	if pass, _ := u.User.Password(); u.Host != "hub2:7422" || u.User.Username() != "site" || pass != "Leaf-Pass-1" {
		t.Errorf("leafnode URL %s does not carry the credentials", u.Redacted())
	}
	// A site's stream must not take the other sites' events.
	if !slices.Equal(o.Leafnodes[0].DenyImports, []string{"ami.*.event.>"}) {
		t.Errorf("deny imports %q with JetStream, want the event subjects", o.Leafnodes[0].DenyImports)
	}
	if embeddedServerName(o.Domain) != "ami-bridge-paris" {
		t.Errorf("server name %q", embeddedServerName(o.Domain))
	}

	o, err = embeddedFromConfig(leafConfig("nats-leaf://hub:7422", false))
	if err != nil {
		t.Fatal(err)
	}
	if o.Leafnodes[0].DenyImports != nil {
		t.Errorf("deny imports %q without JetStream, want none", o.Leafnodes[0].DenyImports)
	}
}

// The leaf's deny follows nats.prefix: a site with its own prefix keeps
// its own events, not the default prefix's.
func TestEmbeddedFromConfig_LeafDenyFollowsThePrefix(t *testing.T) {
	cfg := leafConfig("nats-leaf://hub:7422", true)
	cfg.NATS.Prefix = "pbxs"
	o, err := embeddedFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Leafnodes[0].DenyImports, []string{"pbxs.*.event.>"}) {
		t.Errorf("deny imports %q with prefix pbxs, want pbxs.*.event.>", o.Leafnodes[0].DenyImports)
	}
}

// TestStartEmbedded_LeafnodeOfAHub: the embedded server links to a hub
// that requires the leafnode user, in its own JetStream domain, and
// watchLeafnodes logs the link as it comes and goes.
func TestStartEmbedded_LeafnodeOfAHub(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leafPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	hub := natstest.Start(t, natstest.Options{Configure: func(o *server.Options) {
		o.LeafNode = server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort, Username: "site", Password: "Leaf-Pass-1"}
	}})
	hubURL := "nats-leaf://127.0.0.1:" + strconv.Itoa(leafPort)

	cfg := leafConfig(hubURL, true)
	o, err := embeddedFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o.StoreDir = t.TempDir()
	logs := newOutput()
	log := zerolog.New(logs)
	ns, err := startEmbedded(o, log)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if d := ns.JetStreamConfig().Domain; d != "paris" {
		t.Errorf("JetStream domain %q, want paris", d)
	}
	st := &natsStack{ns: ns}
	st.watchLeafnodes(1, log)
	topology := st.topology(cfg)
	logs.waitFor(t, "leafnode connected", contains(`"leafnodes_connected":1,"leafnode_remotes":1,"message":"leafnode connected"`))
	wantTopology(t, topology(), "paris", 1)
	hub.Shutdown()
	logs.waitFor(t, "leafnode disconnected", contains(`"leafnodes_connected":0,"leafnode_remotes":1,"message":"leafnode disconnected"`))
	wantTopology(t, topology(), "paris", 0)
	st.stopServer(log)
	if got := logs.String(); strings.Contains(got, "Leaf-Pass-1") {
		t.Errorf("the log holds the leafnode password:\n%s", got)
	}
}

// wantTopology checks what run gives the bridge as Options.Topology for a
// leaf node with one remote.
func wantTopology(t *testing.T, got subjects.Topology, domain string, connected int) {
	t.Helper()
	if got.NATS != "leafnode" || got.Domain != domain || got.Leafnodes == nil ||
		*got.Leafnodes != (subjects.Leafnodes{Remotes: 1, Connected: connected}) {
		t.Errorf("topology = %+v (leafnodes %+v), want leafnode in domain %s with %d of 1 connected", got, got.Leafnodes, domain, connected)
	}
}

// TestStartEmbedded_MaxPending: the embedded server runs with
// nats.embedded.max_pending, 8 MiB by default, not nats-server's 64 MiB.
func TestStartEmbedded_MaxPending(t *testing.T) {
	for _, maxPending := range []int{config.DefaultEmbeddedMaxPending, 16 << 20} {
		cfg := config.Default()
		cfg.NATS.Embedded.Listen = ""
		cfg.NATS.Embedded.MaxPending = maxPending
		o, err := embeddedFromConfig(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := startEmbedded(o, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		v, err := ns.Varz(nil)
		ns.Shutdown()
		if err != nil {
			t.Fatal(err)
		}
		if v.MaxPending != int64(maxPending) {
			t.Errorf("nats.embedded.max_pending %d: the server runs with %d", maxPending, v.MaxPending)
		}
	}
}

// TestEmbedded_ServiceUser: with nats.service, the embedded server knows
// both users; the main one may do all, the service one receives the
// requests and $SRV requests and may publish to requesters' inboxes
// only, so micro's answers cannot reach a lease key, an event, a status
// or the bridge's own inboxes.
func TestEmbedded_ServiceUser(t *testing.T) {
	cfg := config.Default()
	cfg.NATS.Embedded.Listen = ""
	cfg.NATS.User, cfg.NATS.Password = "bridge", "Main-Pass-1"
	cfg.NATS.Service = config.NATSService{User: "bridge-service", Password: "Svc-Pass-2"}
	cfg.NATS.ReplyPrefixes = []string{"crm_inbox"}
	o, err := embeddedFromConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := startEmbedded(o, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := &natsStack{ns: ns}
	if err := st.connect(ctx, &cfg, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	defer st.closeConns()
	if st.svc == nil || len(st.conns()) != 2 || st.conns()[0] != st.svc {
		t.Fatal("no service connection, or not drained first")
	}
	refused := []string{"$KV.ami_bridge_leases.pbx1", "$JS.API.STREAM.PURGE.AMI_EVENTS", "ami.pbx1.event.Hangup", "ami.pbx1.status", subjects.InboxPrefix + ".x"}
	allowed := []string{"_INBOX.crm.x", "crm_inbox.y"}
	seen := make(chan *nats.Msg, 16)
	for _, s := range append(slices.Clone(refused), allowed...) {
		if _, err := st.nc.ChanSubscribe(s, seen); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ami.*.action", "ami.*.action.*", "$SRV.>"} {
		if _, err := st.svc.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range append(slices.Clone(refused), allowed...) {
		if err := st.svc.Publish(s, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.svc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The service connection's publishes are handled in order: once the
	// allowed ones arrived, the refused ones would have.
	var got []string
	for range allowed {
		select {
		case m := <-seen:
			got = append(got, m.Subject)
		case <-ctx.Done():
			t.Fatalf("the service user could not publish to %v", allowed)
		}
	}
	if err := st.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for len(seen) > 0 {
		got = append(got, (<-seen).Subject)
	}
	if !slices.Equal(got, allowed) {
		t.Errorf("the service user published to %v, want only %v", got, allowed)
	}
}

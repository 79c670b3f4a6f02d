package bridge

import (
	"github.com/ami-bridge/ami-bridge/subjects"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// world is the usual setup of a test: a NATS server with a connection for
// the bridge (nc) and one for the test (cc), a PBX, a watch on the status
// of pbx1 (w) and, unless withoutBridge, a bridge (b) serving the PBX as
// pbx1, whose logs are checked for the secret at the end of the test.
type world struct {
	t       testing.TB
	ns      *server.Server
	nc, cc  *nats.Conn
	pbx     *amitest.Server
	w       *statusWatch
	watches map[string]*statusWatch // of the servers named by watching
	events  *nats.Subscription      // every event; nil without withEvents
	b       *Bridge
	logs    *syncBuffer
}

type worldConfig struct {
	nats     natsOptions
	pbx      amitest.Config
	server   func(*ServerConfig)
	servers  func(*world) []ServerConfig
	opts     Options
	watching []string
	events   bool
	svcConn  bool
	noBridge bool
}

// A worldOption changes what newWorld sets up.
type worldOption func(*worldConfig)

// withNATS sets the NATS server's options.
func withNATS(o natsOptions) worldOption { return func(c *worldConfig) { c.nats = o } }

// withPBX sets the PBX's configuration.
func withPBX(cfg amitest.Config) worldOption { return func(c *worldConfig) { c.pbx = cfg } }

// withServer changes the bridge's entry of pbx1.
func withServer(f func(*ServerConfig)) worldOption { return func(c *worldConfig) { c.server = f } }

// withServers gives the bridge's entries instead of pbx1 alone; they may
// name PBXes the test started itself.
func withServers(f func(*world) []ServerConfig) worldOption {
	return func(c *worldConfig) { c.servers = f }
}

// withOptions sets the bridge's options; the watches and the event
// subscription follow their Prefix.
func withOptions(o Options) worldOption { return func(c *worldConfig) { c.opts = o } }

// watching watches the status of these servers too, from before the
// bridge starts; watch returns them.
func watching(servers ...string) worldOption {
	return func(c *worldConfig) { c.watching = append(c.watching, servers...) }
}

// withEvents subscribes to every event before the bridge starts.
func withEvents() worldOption { return func(c *worldConfig) { c.events = true } }

// withServiceConn gives the bridge a service connection of its own
// (Options.ServiceConn), so that the main one stamps arrivals.
func withServiceConn() worldOption { return func(c *worldConfig) { c.svcConn = true } }

// withoutBridge leaves the bridge to the test.
func withoutBridge() worldOption { return func(c *worldConfig) { c.noBridge = true } }

func newWorld(t testing.TB, opts ...worldOption) *world {
	t.Helper()
	var c worldConfig
	for _, o := range opts {
		o(&c)
	}
	prefix := c.opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	ns := startNATS(t, c.nats)
	w := &world{t: t, ns: ns, nc: connect(t, ns), cc: connect(t, ns), pbx: startPBX(t, c.pbx), watches: map[string]*statusWatch{}}
	w.w = watchStatus(t, w.cc, prefix, "pbx1")
	for _, name := range c.watching {
		w.watches[name] = watchStatus(t, w.cc, prefix, name)
	}
	if c.events {
		w.events = eventSub(t, w.cc, prefix)
	}
	if c.noBridge {
		return w
	}
	var servers []ServerConfig
	if c.servers != nil {
		servers = c.servers(w)
	} else {
		sc := fastServer("pbx1", w.pbx)
		if c.server != nil {
			c.server(&sc)
		}
		servers = []ServerConfig{sc}
	}
	if c.svcConn {
		c.opts.ServiceConn = connect(t, ns)
	}
	w.b, w.logs = startBridge(t, w.nc, servers, c.opts)
	return w
}

// watch returns the status watch of server, which watching named.
func (w *world) watch(server string) *statusWatch {
	w.t.Helper()
	sw := w.watches[server]
	if sw == nil {
		w.t.Fatalf("no watch on %s: name it in watching", server)
	}
	return sw
}

// up waits until pbx1 is connected with every AMI session logged in at
// the PBX, so that an event emitted next reaches the bridge.
func (w *world) up() subjects.PBXStatus {
	w.t.Helper()
	st := w.w.waitState(subjects.StateConnected)
	waitSessions(w.t, w.pbx, perPBX)
	return st
}

// twoEntries serves the world's PBX under two names, pbx1 and pbx2, as
// two PBXes.
func twoEntries(w *world) []ServerConfig {
	return []ServerConfig{fastServer("pbx1", w.pbx), fastServer("pbx2", w.pbx)}
}

// unstarted returns a bridge made by New and never started, with one
// entry pbx1 that nothing dials: for the tests that drive its parts (the
// reader's accept, the publisher) by hand.
func unstarted(t testing.TB, nc *nats.Conn, opts Options) *Bridge {
	t.Helper()
	b, err := New(nc, []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

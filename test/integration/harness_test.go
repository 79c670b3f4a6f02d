package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
)

// Bounds on every wait. They are generous because the machine running the
// tests may be busy (and the binary may run under the race detector); a
// passing run takes a small fraction of them.
const (
	readyTimeout = 20 * time.Second // the bridge connected to its PBXes
	replyTimeout = 15 * time.Second // one action reply
	eventTimeout = 15 * time.Second // events to arrive
	exitTimeout  = 20 * time.Second // the process to exit after SIGTERM
)

// The AMI user every PBX of the tests has; its secret differs per PBX.
const amiUser = "bridge"

// natsOptions configure the embedded NATS server of one test.
type natsOptions struct {
	maxPayload int32 // 0: nats-server's default (1 MiB)
	jetStream  bool
	user, pass string // client authentication, when set
	// users, when set, are the server's users, and user, pass only
	// authenticate the test's client (as one of them).
	users []*server.User
	// inboxPrefix, when set, is the client's inbox prefix
	// (nats.CustomInboxPrefix), as a user of docs/security.md has.
	inboxPrefix string
}

// world is what one test runs against: an embedded NATS server, a client
// connection with collectors on the status and event subjects (subscribed
// before any bridge starts, so nothing is missed), the PBXes and the bridge
// processes. Every secret it hands out is checked, at the end of the
// test, to appear in no log, reply or status.
type world struct {
	t        *testing.T
	ns       *server.Server
	natsOpts natsOptions
	nc       *nats.Conn
	dir      string

	status *inbox // every message on ami.*.status
	events *inbox // every message on ami.*.event.>; nil from newWorldNoEvents

	mu      sync.Mutex
	secrets []string
}

func newWorld(t *testing.T, o natsOptions) *world {
	t.Helper()
	w := newWorldNoEvents(t, o)
	w.events = w.collect("ami.*.event.>")
	return w
}

// newWorldNoEvents is newWorld without the event inbox, whose memory
// grows with every event: for a test that counts events in its own
// subscriber instead.
func newWorldNoEvents(t *testing.T, o natsOptions) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), natsOpts: o}
	w.ns = startNATS(t, o)
	// The test's client comes back at once after a NATS restart, well
	// before the bridge (nats.go's default wait is 2 s), so that its
	// subscriptions are in place when the bridge flushes what it held.
	opts := []nats.Option{nats.Name("integration-test"), nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond)}
	if o.user != "" {
		opts = append(opts, nats.UserInfo(o.user, o.pass))
		w.addSecret(o.pass)
	}
	if o.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.inboxPrefix))
	}
	nc, err := nats.Connect(w.ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect to the embedded NATS server: %v", err)
	}
	t.Cleanup(nc.Close)
	w.nc = nc
	w.status = w.collect("ami.*.status")
	t.Cleanup(w.checkStatusesHoldNoSecret)
	return w
}

// restartNATS shuts the NATS server down and returns a function that
// starts a new one on the same port.
func (w *world) restartNATS() (start func()) {
	w.t.Helper()
	port := w.ns.Addr().(*net.TCPAddr).Port
	natstest.Stop(w.ns)
	return func() {
		w.t.Helper()
		w.ns = startNATSOn(w.t, w.natsOpts, port)
	}
}

// startNATS starts an in-process nats-server on a random local port.
func startNATS(t testing.TB, o natsOptions) *server.Server {
	t.Helper()
	return startNATSOn(t, o, 0)
}

func startNATSOn(t testing.TB, o natsOptions, port int) *server.Server {
	t.Helper()
	opts := natstest.Options{Port: port, JetStream: o.jetStream, MaxPayload: o.maxPayload, Username: o.user, Password: o.pass}
	if o.users != nil {
		opts.Username, opts.Password = "", ""
		opts.Users = o.users
	}
	return natstest.Start(t, opts)
}

func (w *world) addSecret(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.secrets = append(w.secrets, s)
}

// secretForms returns every secret of the world as written and in the
// encodings a URL or a log could give it.
func (w *world) secretForms() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, s := range w.secrets {
		out = append(out, s, url.QueryEscape(s), url.PathEscape(s), strings.ReplaceAll(url.QueryEscape(s), "+", "%20"))
	}
	return out
}

// leakedSecret returns the first secret form found in b, or "".
func (w *world) leakedSecret(b []byte) string {
	for _, s := range w.secretForms() {
		if bytes.Contains(b, []byte(s)) {
			return s
		}
	}
	return ""
}

func (w *world) checkStatusesHoldNoSecret() {
	for _, m := range w.status.snapshot() {
		if s := w.leakedSecret(m.Data); s != "" {
			w.t.Errorf("status on %s holds the secret %q: %s", m.Subject, s, m.Data)
		}
	}
}

// newSecret returns a fresh AMI secret that the test will look for in
// logs, replies and statuses.
func (w *world) newSecret(tag string) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		w.t.Fatal(err)
	}
	s := "sec-" + tag + "-" + hex.EncodeToString(b[:])
	w.addSecret(s)
	return s
}

// pbx is a fake Asterisk with one AMI user, amiUser.
type pbx struct {
	*amitest.Server
	name   string
	secret string
	cfg    amitest.Config
	t      *testing.T
}

// startPBX starts an amitest PBX whose user amiUser has a fresh secret.
func (w *world) startPBX(name string, cfg amitest.Config) *pbx {
	w.t.Helper()
	p := &pbx{name: name, secret: w.newSecret(name), t: w.t}
	if cfg.Users == nil {
		cfg.Users = map[string]amitest.User{amiUser: {Secret: p.secret, Write: true}}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	p.cfg = cfg
	p.start()
	return p
}

func (p *pbx) start() {
	p.t.Helper()
	s, err := amitest.Start(p.cfg)
	if err != nil {
		p.t.Fatalf("amitest PBX %s: %v", p.name, err)
	}
	// Restarts come back on the same port.
	p.cfg.Addr = s.Addr()
	p.Server = s
	p.t.Cleanup(func() { s.Close() })
}

// restart closes the PBX, dropping every session and the listener, and
// starts a new one on the same port, as a restarted Asterisk would.
func (p *pbx) restart() {
	p.t.Helper()
	if err := p.Close(); err != nil {
		p.t.Fatalf("close PBX %s: %v", p.name, err)
	}
	p.start()
}

// emit sends an event from the PBX: "Event: name" then the key, value
// pairs.
func (p *pbx) emit(name string, kv ...string) {
	m := amiproto.NewMessage(amiproto.Field{Key: "Event", Value: name})
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	p.Emit(m)
}

// deadAddr returns a local address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// silentAddr returns a local address that accepts connections and never
// says a word: a PBX hung before its banner.
func silentAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

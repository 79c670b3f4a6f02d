package integration

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ami-bridge/ami-bridge/internal/natstest"
)

// The chaos tests (cluster_test.go, sites_test.go) stop NATS servers under
// load and then read the stream to its end. By default they run a short
// version; AMI_CHAOS=1 runs the one of issue 8 (a node down 10 s, a hub
// cut off 30 s):
//
//	AMI_CHAOS=1 go test -race -count=1 -run TestChaos -v ./test/integration/
func chaosFull() bool { return os.Getenv("AMI_CHAOS") == "1" }

// loginEvents is the least number of login events a bridge's event
// session publishes besides the calls: FullyBooted with its Login answer and
// its own SuccessfulAuth (the action sessions' logins may add more).
const loginEvents = 2

// storeStall bounds how long a stream may stop growing before its events
// are counted as they are: more than the bridge's 5 s ack timeout.
const storeStall = 15 * time.Second

// sourceStall is storeStall for a stream that sources others: after a
// failed attempt nats-server retries a source 10 s later, then 20 s…, at
// most 2 min later.
const sourceStall = 150 * time.Second

// chaosLoad is the schedule of one chaos run.
type chaosLoad struct {
	callsPerSecond float64       // per PBX
	duration       time.Duration // of the load
	cutAt          time.Duration // from the start of the load
	cut            time.Duration // how long the server stays down
}

func (l chaosLoad) calls() int { return int(l.callsPerSecond * l.duration.Seconds()) }

// freePort returns a loopback port where nothing listens now, for a server
// that must come back on the same port.
func freePort(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(deadAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// natsNode is an in-process nats-server that stops and starts again on
// the same ports and store, as a restarted server would.
type natsNode struct {
	t    *testing.T
	opts *server.Options // ports fixed, never RANDOM_PORT
	ns   *server.Server  // nil while stopped
}

// startNode starts a node with opts; the end of the test stops it.
func startNode(t *testing.T, opts *server.Options) *natsNode {
	t.Helper()
	n := &natsNode{t: t, opts: opts}
	n.start()
	return n
}

func (n *natsNode) start() {
	n.t.Helper()
	n.ns = natstest.Run(n.t, n.opts.Clone())
}

func (n *natsNode) stop() {
	if n.ns == nil {
		return
	}
	natstest.Stop(n.ns)
	n.ns = nil
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// finalStatus stops the bridge with SIGTERM and returns its last status
// of server, published at or after index mark of the status inbox, as a
// few counters for the report.
func finalStatus(w *world, b *bridgeProc, server string) string {
	w.t.Helper()
	mark := w.status.len()
	if code := b.terminate(); code != 0 {
		w.t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	_, st := w.waitState(server, mark, eventTimeout, "stopped")
	return fmt.Sprintf("%s final status: last_seq %v, events_published %v, events_dropped %v, js_failures %v",
		server, st.raw["last_seq"], st.raw["events_published"], st.raw["events_dropped"], st.raw["js_failures"])
}

// wanLink is a TCP proxy on loopback between the sites and the hub's
// leafnode port: cut drops every connection and refuses new ones, up
// lets them through again on the same address, as a WAN link would;
// silence keeps the connections open but lets no byte through, as a
// server that lost power or a link that dropped without a word would.
type wanLink struct {
	t      *testing.T
	addr   string // where the sites connect
	target string // the hub's leafnode address

	silent atomic.Bool // bytes read are dropped, not forwarded

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns []net.Conn
	wg    sync.WaitGroup // the accept loop and the pipes
}

// startWANLink starts a link to target, up; the end of the test cuts it.
func startWANLink(t *testing.T, target string) *wanLink {
	t.Helper()
	l := &wanLink{t: t, addr: deadAddr(t), target: target}
	l.up()
	t.Cleanup(l.cut)
	return l
}

func (l *wanLink) up() {
	l.t.Helper()
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		l.t.Fatalf("WAN link on %s: %v", l.addr, err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	// Owned by the link: cut closes the listener and waits for it.
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.accept(ln)
	}()
}

func (l *wanLink) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.ln != ln { // cut meanwhile
			l.mu.Unlock()
			c.Close()
			u.Close()
			continue
		}
		l.conns = append(l.conns, c, u)
		// Owned by the link: cut closes both ends and waits for them.
		l.wg.Add(2)
		l.mu.Unlock()
		go l.pipe(u, c)
		go l.pipe(c, u)
	}
}

func (l *wanLink) pipe(dst, src net.Conn) {
	defer l.wg.Done()
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.silent.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// silence stops every byte through the link, both ways, without closing
// a connection.
func (l *wanLink) silence() { l.silent.Store(true) }

// connections returns how many connections the link has carried since
// it last came up.
func (l *wanLink) connections() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns) / 2
}

// cut drops the link: the listener and every connection through it.
func (l *wanLink) cut() {
	l.mu.Lock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
	l.mu.Unlock()
	l.wg.Wait()
}

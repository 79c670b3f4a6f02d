package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// waitStreamMsgs waits until stream holds want messages, or has not grown
// for stall, and returns how many it holds. The servers store
// asynchronously (acks, sourcing), so polling is the only way to know.
func waitStreamMsgs(t *testing.T, js jetstream.JetStream, stream string, want uint64, stall time.Duration) uint64 {
	t.Helper()
	var last uint64
	grew := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := js.Stream(ctx, stream)
		var n uint64
		if err == nil {
			n = s.CachedInfo().State.Msgs
		}
		cancel()
		if n >= want {
			return n
		}
		if n != last {
			last, grew = n, time.Now()
		}
		if time.Since(grew) > stall {
			t.Errorf("stream %s holds %d messages and has not grown for %v, want %d (last error %v)", stream, n, stall, want, err)
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pbxTally is what a stream holds of one PBX's events.
type pbxTally struct {
	events     int             // stored messages
	callEvents int64           // of them, events of calls
	sessions   int             // FullyBooted events: logins of the event session
	seen       map[uint64]bool // Ami-Seq values stored
	last       uint64          // the highest Ami-Seq
	dups       int             // an Ami-Seq stored again
	backwards  int             // an Ami-Seq below the one before it
}

// gaps is how many Ami-Seq values below the last are missing.
func (p *pbxTally) gaps() uint64 { return p.last - uint64(len(p.seen)) }

// streamTally is what a stream holds, per PBX.
type streamTally struct {
	msgs   int
	pbx    map[string]*pbxTally
	ids    map[string]bool
	dupIDs int // a Nats-Msg-Id stored again
	bad    []string
}

// readStream reads every message of stream, in stream order, and tallies
// the events of each PBX.
func readStream(t *testing.T, js jetstream.JetStream, stream string) *streamTally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	total := int(s.CachedInfo().State.Msgs)
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	st := &streamTally{pbx: map[string]*pbxTally{}, ids: map[string]bool{}}
	// A cluster that just lost a node may answer "no responders" while
	// it settles; the ordered consumer then starts again where it was.
	for failed := 0; st.msgs < total; {
		n := st.msgs
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err == nil {
			for m := range batch.Messages() {
				st.add(m.Headers())
			}
			err = batch.Error()
		}
		if err == nil && st.msgs > n {
			continue
		}
		if failed++; failed > 10 {
			t.Fatalf("read %s after %d of %d messages: %v", stream, st.msgs, total, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return st
}

func (st *streamTally) add(h nats.Header) {
	st.msgs++
	id := h.Get("Nats-Msg-Id")
	if st.ids[id] {
		st.dupIDs++
	}
	st.ids[id] = true
	name := h.Get("Ami-Server")
	p := st.pbx[name]
	if p == nil {
		p = &pbxTally{seen: map[uint64]bool{}}
		st.pbx[name] = p
	}
	p.events++
	seq, err := strconv.ParseUint(h.Get("Ami-Seq"), 10, 64)
	if err != nil {
		if len(st.bad) < 10 {
			st.bad = append(st.bad, fmt.Sprintf("%s: Ami-Seq %q", name, h.Get("Ami-Seq")))
		}
		return
	}
	switch {
	case p.seen[seq]:
		p.dups++
	case seq < p.last:
		p.backwards++
	}
	p.seen[seq] = true
	p.last = max(p.last, seq)
	switch h.Get("Ami-Event") {
	case "FullyBooted": // once per login of the event session
		p.sessions++
	case "SuccessfulAuth": // one per login of any session the PBX sees, action sessions too
	default:
		p.callEvents++
	}
}

// check compares what the stream holds of pbx with the call events its
// amitest generator sent, and reports the counts either way.
func (st *streamTally) check(t *testing.T, pbx string, sent int64) {
	t.Helper()
	p := st.pbx[pbx]
	if p == nil {
		p = &pbxTally{seen: map[uint64]bool{}}
	}
	line := fmt.Sprintf("%s: sent %d call events, stored %d (%d events in all, last Ami-Seq %d), %d gaps, %d duplicate Ami-Seq, %d out of order",
		pbx, sent, p.callEvents, p.events, p.last, p.gaps(), p.dups, p.backwards)
	if p.callEvents != sent || p.gaps() != 0 || p.dups != 0 || p.backwards != 0 || p.sessions != 1 {
		t.Errorf("%s; %d AMI sessions", line, p.sessions)
		return
	}
	t.Log(line)
}

// checkIDs fails on any Nats-Msg-Id stored twice or a malformed event.
func (st *streamTally) checkIDs(t *testing.T) {
	t.Helper()
	if st.dupIDs != 0 {
		t.Errorf("%d of %d messages repeat a Nats-Msg-Id", st.dupIDs, st.msgs)
	}
	for _, b := range st.bad {
		t.Errorf("malformed event: %s", b)
	}
}

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

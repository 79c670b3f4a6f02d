package bridge

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

func TestSession_FullBufferDropsCountedWithSeqGap(t *testing.T) {
	b, err := New(&nats.Conn{Opts: nats.Options{InboxPrefix: subjects.InboxPrefix}}, []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}, Options{EventBuffer: 4})
	if err != nil {
		t.Fatal(err)
	}
	s := b.pbxes[0]
	for i := 1; i <= 10; i++ {
		s.accept(userEvent("x", i))
	}
	if got := s.dropped.Load(); got != 6 {
		t.Errorf("dropped %d, want 6", got)
	}
	if got := s.lastSeq.Load(); got != 10 {
		t.Errorf("last seq %d, want 10: dropped events keep their number, so consumers see the gap", got)
	}
	got, _ := s.ring.readAfter(0, make([]ringEntry, 0, 10))
	if g := seqs(got); len(g) != 4 || g[0] != 1 || g[3] != 4 {
		t.Fatalf("buffered seqs %v, want 1 to 4", g)
	}
	s.ring.ack(4) // as the publisher does once they are published
	s.accept(userEvent("x", 11))
	if got, _ = s.ring.readAfter(4, got[:0]); len(got) != 1 || got[0].seq != 11 {
		t.Fatalf("after the drops, seqs %v, want [11]", seqs(got))
	}

	if got := s.dropped.Load(); got != 6 {
		t.Errorf("dropped %d, want 6", got)
	}
}

func TestBackoff(t *testing.T) {
	bo := backoff{min: 100 * time.Millisecond, max: time.Second}
	prevStep := time.Duration(0)
	for range 10 {
		d := bo.next()
		if d < bo.min || d > bo.max {
			t.Fatalf("backoff %v outside [%v, %v]", d, bo.min, bo.max)
		}
		if d < bo.cur*3/4 || d > bo.cur {
			t.Fatalf("backoff %v: jitter beyond a quarter of %v", d, bo.cur)
		}
		if bo.cur < prevStep {
			t.Fatalf("step shrank from %v to %v", prevStep, bo.cur)
		}
		prevStep = bo.cur
	}
	if bo.cur != bo.max {
		t.Fatalf("step %v after 10 attempts, want the max", bo.cur)
	}
	bo.reset()
	if d := bo.next(); d != bo.min {
		t.Fatalf("after reset %v, want min", d)
	}
	bo.toMax()
	if d := bo.next(); d < bo.max*3/4 {
		t.Fatalf("after a failed login %v, want about the max", d)
	}
}

func TestServerDefaults_SecretOverridesTheURLsAsItIs(t *testing.T) {
	const secret = "p@ss:w/rd %41+ é"
	_, ep, err := withServerDefaults(ServerConfig{Name: "x", URL: "tls://admin:old@pbx.example:5039", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Secret != secret || ep.User != "admin" || !ep.TLS || ep.Addr != "pbx.example:5039" {
		t.Fatalf("endpoint: %+v", ep)
	}
}

func TestBridge_MD5LoginKeepaliveAndPeriodicStatus(t *testing.T) {
	tw := newWorld(t, withServer(func(sc *ServerConfig) {
		sc.Auth = "md5"
		sc.PingInterval = 50 * time.Millisecond
	}), withOptions(Options{StatusInterval: 20 * time.Millisecond}))
	tw.w.waitState(subjects.StateConnected)
	pbx, w := tw.pbx, tw.w

	// Unchanged state is published again at every interval.
	for range 3 {
		if st := w.next(); st.State != subjects.StateConnected {
			t.Fatalf("periodic status %+v", st)
		}
	}
	// A PBX that stops answering is found out by every session's
	// keepalive, each session on its own.
	pbx.HalfOpen()
	w.waitState(subjects.StateDisconnected)
	for deadline := time.Now().Add(waitTime); ; {
		st := w.next()
		if allUp(st) && st.Reconnects == 1 && reconnectedOnce(st) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every session back after one reconnect: %+v", st)
		}
	}
}

// reconnectedOnce reports whether every session of st reconnected once.
func reconnectedOnce(st subjects.PBXStatus) bool {
	for _, ss := range st.Sessions {
		if ss.Reconnects != 1 {
			return false
		}
	}
	return true
}

func TestBridge_StartTwiceAndShutdownWithoutStart(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	nc := connect(t, ns)
	b, err := New(nc, []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1:1"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := b.Start(ctx); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}
}

func TestBridge_NATSOutageBuffersThenCountsDrops(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	port := ns.Addr().(*net.TCPAddr).Port
	disconnected, reconnected := make(chan struct{}, 1), make(chan struct{}, 1)
	// A reconnect buffer of one byte: the bridge's own buffer must take
	// the events while NATS is away.
	nc, err := nats.Connect(ns.ClientURL(), nats.CustomInboxPrefix(subjects.InboxPrefix), nats.ReconnectBufSize(1), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { disconnected <- struct{}{} }),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pbx := startPBX(t, amitest.Config{})
	sc := fastServer("pbx1", pbx)
	sc.EventsInclude = []string{"UserEvent"}
	const buffer = 16
	b, _ := startBridge(t, nc, []ServerConfig{sc}, Options{EventBuffer: buffer})
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.State == subjects.StateConnected })
	waitSessions(t, pbx, perPBX)

	ns.Shutdown()
	<-disconnected
	const n = 100
	for i := 1; i <= n; i++ {
		pbx.Emit(userEvent("outage", i))
	}
	// Reading goes on while NATS is away: every event gets its number.
	waitFor(t, func() Stats { return b.Stats()[0] }, func(s Stats) bool { return s.EventsReceived-s.EventsFiltered == n })
	st := b.Status()[0]
	if st.EventsDropped == 0 || st.EventsDropped > n-buffer {
		t.Fatalf("dropped %d of %d with a buffer of %d", st.EventsDropped, n, buffer)
	}

	ns2 := startNATS(t, natsOptions{port: port})
	<-reconnected
	st = waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.EventsPublished+st.EventsDropped == n })
	if st.EventsPublished < buffer {
		t.Errorf("only %d events published after the outage; the buffer held %d", st.EventsPublished, buffer)
	}
	cc := connect(t, ns2)
	sub := eventSub(t, cc, "ami")
	pbx.Emit(userEvent("back", n+1))
	m, err := sub.NextMsg(waitTime)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(subjects.HeaderSeq) != "101" {
		t.Errorf("after the outage Ami-Seq %s, want 101", m.Header.Get(subjects.HeaderSeq))
	}
}

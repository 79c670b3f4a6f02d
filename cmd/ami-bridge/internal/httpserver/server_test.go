package httpserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// fakeBridge returns stats set by the test; while block is set, Stats
// waits for it to be cleared, as a bridge with a lock held would.
type fakeBridge struct {
	mu    sync.Mutex
	stats []bridge.Stats
	block chan struct{}
}

func (f *fakeBridge) Stats() []bridge.Stats {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bridge.Stats(nil), f.stats...)
}

func (f *fakeBridge) set(stats ...bridge.Stats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats = stats
}

type fakeConn struct {
	mu     sync.Mutex
	status nats.Status
}

func (c *fakeConn) Status() nats.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}
func (c *fakeConn) Stats() nats.Statistics { return nats.Statistics{} }
func (c *fakeConn) set(s nats.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status = s
}

func start(t *testing.T, o Options) *Server {
	t.Helper()
	o.Addr = "127.0.0.1:0"
	s, err := Start(o, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

func get(t *testing.T, s *Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(s.URL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func want(t *testing.T, s *Server, path string, code int, substr string) {
	t.Helper()
	got, body := get(t, s, path)
	if got != code || !strings.Contains(body, substr) {
		t.Errorf("GET %s: %d %q, want %d with %q", path, got, body, code, substr)
	}
}

func up(name string) bridge.Stats {
	return bridge.Stats{Server: name, State: subjects.StateConnected, Up: true}
}

func down(name string) bridge.Stats {
	return bridge.Stats{Server: name, State: subjects.StateDisconnected}
}

func TestServer_BeforeAttach(t *testing.T) {
	s := start(t, Options{})
	want(t, s, "/healthz", 200, "starting")
	want(t, s, "/readyz", 503, "waiting for NATS")
	want(t, s, "/metrics", 200, "go_goroutines")
	if code, _ := get(t, s, "/nothing"); code != 404 {
		t.Errorf("GET /nothing: %d, want 404", code)
	}
}

func TestReadyz_AllOrAny(t *testing.T) {
	for _, all := range []bool{true, false} {
		s := start(t, Options{ReadyAll: all})
		b, nc := &fakeBridge{}, &fakeConn{status: nats.CONNECTED}
		s.Attach(b, nc)

		b.set(up("pbx1"), up("pbx2"))
		want(t, s, "/readyz", 200, "ready\nnats connected\npbx1 connected\npbx2 connected\n")

		b.set(up("pbx1"), down("pbx2"))
		if all {
			want(t, s, "/readyz", 503, "not ready\nnats connected\npbx1 connected\npbx2 disconnected\n")
		} else {
			want(t, s, "/readyz", 200, "pbx2 disconnected")
		}

		b.set(down("pbx1"), down("pbx2"))
		want(t, s, "/readyz", 503, "not ready")

		b.set(up("pbx1"), up("pbx2"))
		nc.set(nats.RECONNECTING)
		want(t, s, "/readyz", 503, "nats reconnecting")
		want(t, s, "/healthz", 200, "ok") // NATS down is not a liveness failure
	}
}

func TestHealthz_StuckBridge(t *testing.T) {
	s := start(t, Options{SnapshotTimeout: 20 * time.Millisecond})
	b, nc := &fakeBridge{block: make(chan struct{})}, &fakeConn{status: nats.CONNECTED}
	b.set(up("pbx1"))
	s.Attach(b, nc)
	want(t, s, "/healthz", 503, "no stats snapshot")
	want(t, s, "/readyz", 503, "not ready")
	want(t, s, "/healthz", 503, "no stats snapshot") // a second probe shares the stuck snapshot
	b.mu.Lock()
	close(b.block)
	b.block = nil
	b.mu.Unlock()
	want(t, s, "/healthz", 200, "ok")
}

// /healthz fails once a publisher has sat still with events waiting
// and NATS connected for StallAfter, and recovers when it moves.
func TestHealthz_StalledPublisher(t *testing.T) {
	s := start(t, Options{StallAfter: time.Microsecond})
	b, nc := &fakeBridge{}, &fakeConn{status: nats.CONNECTED}
	waiting := bridge.Stats{Server: "pbx1", EventsPublished: 10, BufferEvents: 5}
	b.set(waiting)
	s.Attach(b, nc)
	want(t, s, "/healthz", 200, "ok") // the first look starts the window
	want(t, s, "/healthz", 503, "pbx1: the publisher has not moved")
	waiting.EventsPublished++
	b.set(waiting)
	want(t, s, "/healthz", 200, "ok")
}

func TestLiveness_StalledPublisher(t *testing.T) {
	l := newLiveness(time.Minute, time.Second)
	t0 := time.Now()
	waiting := bridge.Stats{Server: "pbx1", EventsPublished: 10, BufferEvents: 5}
	check := func(st bridge.Stats, connected bool, at time.Duration) []string {
		return l.stalled([]bridge.Stats{st}, connected, t0.Add(at))
	}
	if got := check(waiting, true, 0); got != nil {
		t.Fatalf("first look: %q", got)
	}
	if got := check(waiting, true, 59*time.Second); got != nil {
		t.Fatalf("within the window: %q", got)
	}
	if got := check(waiting, true, 61*time.Second); len(got) != 1 || !strings.Contains(got[0], "pbx1: the publisher has not moved for 1m1s with 5 events waiting") {
		t.Fatalf("past the window: %q", got)
	}
	moved := waiting
	moved.EventsDropped = 1
	if got := check(moved, true, 62*time.Second); got != nil {
		t.Fatalf("after moving: %q", got)
	}
	// While NATS is away the publisher may wait: the window starts over.
	if got := check(moved, false, 200*time.Second); got != nil {
		t.Fatalf("NATS down: %q", got)
	}
	if got := check(moved, true, 230*time.Second); got != nil {
		t.Fatalf("30 s after NATS came back: %q", got)
	}
	empty := moved
	empty.BufferEvents = 0
	if got := check(empty, true, 500*time.Second); got != nil {
		t.Fatalf("nothing waiting: %q", got)
	}
}

func TestServer_URLShowsLoopbackForWildcard(t *testing.T) {
	s, err := Start(Options{Addr: "0.0.0.0:0"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Errorf("URL %s", s.URL())
	}
}

// waitTime bounds the waits for what must happen; things take
// milliseconds.
const waitTime = 5 * time.Second

// dialRaw opens a connection to s that the test writes by hand.
func dialRaw(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

const healthzRequest = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

// readOK reads a response from r, which must come within waitTime and be
// /healthz's 200.
func readOK(t *testing.T, c net.Conn, r *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTime))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "ok: starting, waiting for NATS\n" {
		t.Fatalf("GET /healthz: %d %q, %v", resp.StatusCode, body, err)
	}
}

// A client that announces a body and never sends it, or never finishes
// its header, is cut after ReadTimeout or ReadHeaderTimeout instead of
// holding its connection for good.
func TestServer_CutsSlowClients(t *testing.T) {
	const limit = 100 * time.Millisecond
	s := start(t, Options{ReadHeaderTimeout: limit, ReadTimeout: limit})
	for what, req := range map[string]string{
		"a body announced, none sent": "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
		"a header never finished":     "GET /healthz HTTP/1.1\r\nHost: x\r\n",
	} {
		c := dialRaw(t, s)
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(waitTime))
		start := time.Now()
		if _, err := io.ReadAll(c); isTimeout(err) {
			t.Errorf("%s: the server still holds the connection after %v", what, time.Since(start).Round(time.Millisecond))
		}
	}
}

// Past MaxConns open connections, a new one waits, unserved, until one
// closes; then it is served.
func TestServer_ConnectionCap(t *testing.T) {
	const maxConns = 2
	s := start(t, Options{MaxConns: maxConns})
	var held []net.Conn
	for range maxConns { // served, then kept alive: each holds a slot
		c := dialRaw(t, s)
		if _, err := io.WriteString(c, healthzRequest); err != nil {
			t.Fatal(err)
		}
		readOK(t, c, bufio.NewReader(c))
		held = append(held, c)
	}
	extra := dialRaw(t, s)
	if _, err := io.WriteString(extra, healthzRequest); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(extra)
	// What must not happen gets a short while to happen.
	extra.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if resp, err := http.ReadResponse(r, nil); err == nil {
		t.Fatalf("a connection over the cap of %d was served: %s", maxConns, resp.Status)
	} else if !isTimeout(err) {
		t.Fatal(err)
	}
	held[0].Close()
	readOK(t, extra, r)
}

// A request's header over MaxHeaderBytes (and net/http's 4 KiB of slack)
// is refused.
func TestServer_RefusesAnOversizedHeader(t *testing.T) {
	s := start(t, Options{MaxHeaderBytes: 1 << 10})
	req, err := http.NewRequest("GET", s.URL()+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Big", strings.Repeat("x", 8<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("GET /healthz with an 8 KiB header: %d, want 431", resp.StatusCode)
	}
}

package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// testSecret is every test PBX's secret; no log line may ever hold it.
const testSecret = "s3cret-Do-Not-Log!"

// waitTime bounds every wait of the tests; things normally take
// milliseconds.
const waitTime = 10 * time.Second

type natsOptions struct {
	jetStream  bool
	maxPayload int32
	port       int // 0: random
}

// startNATS runs an embedded nats-server on a random local port.
func startNATS(t testing.TB, o natsOptions) *server.Server {
	t.Helper()
	return natstest.Start(t, natstest.Options{Port: o.port, JetStream: o.jetStream, MaxPayload: o.maxPayload})
}

func connect(t testing.TB, ns *server.Server) *nats.Conn {
	t.Helper()
	// An inbox prefix of its own, as New wants of the bridge's
	// connection; the test's clients, which use the same helper, reply
	// on inboxes under _INBOX., as requesters do.
	nc, err := nats.Connect(ns.ClientURL(), nats.CustomInboxPrefix(nats.NewInbox()))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startPBX runs a fake Asterisk with the user admin / testSecret.
func startPBX(t testing.TB, cfg amitest.Config) *amitest.Server {
	t.Helper()
	if cfg.Users == nil {
		cfg.Users = map[string]amitest.User{"admin": {Secret: testSecret, Write: true}}
	}
	if cfg.AuthFailDelay == 0 {
		cfg.AuthFailDelay = -1
	}
	pbx, err := amitest.Start(cfg)
	if err != nil {
		t.Fatalf("amitest: %v", err)
	}
	t.Cleanup(func() { pbx.Close() })
	return pbx
}

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fastServer is a PBX entry with test-sized timings.
func fastServer(name string, pbx *amitest.Server) ServerConfig {
	return ServerConfig{
		Name:         name,
		URL:          pbx.URL("admin", testSecret),
		ReconnectMin: 10 * time.Millisecond,
		ReconnectMax: 50 * time.Millisecond,
	}
}

// startBridge runs a bridge whose logs are checked for the secret at the
// end of the test. It is shut down at cleanup unless the test did.
func startBridge(t testing.TB, nc *nats.Conn, servers []ServerConfig, opts Options) (*Bridge, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	// Debug, so that the secret check covers every line the bridge writes.
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := New(nc, servers, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if !b.isClosing() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTime)
			defer cancel()
			if err := b.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}
		if os.Getenv("AMI_DEBUG_LOGS") != "" && t.Failed() {
			t.Log(logs.String())
		}
		if strings.Contains(logs.String(), testSecret) {
			t.Errorf("the secret appears in the logs:\n%s", logs)
		}
	})
	return b, logs
}

// statusWatch follows the status messages of one PBX.
type statusWatch struct {
	t  testing.TB
	ch chan *nats.Msg
}

func watchStatus(t testing.TB, nc *nats.Conn, prefix, server string) *statusWatch {
	t.Helper()
	w := &statusWatch{t: t, ch: make(chan *nats.Msg, 1024)}
	sub, err := nc.ChanSubscribe(subjects.Status(prefix, server), w.ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// next returns the next status message.
func (w *statusWatch) next() subjects.PBXStatus {
	w.t.Helper()
	select {
	case m := <-w.ch:
		var st subjects.PBXStatus
		if err := json.Unmarshal(m.Data, &st); err != nil {
			w.t.Fatalf("status is not JSON: %v: %s", err, m.Data)
		}
		return st
	case <-time.After(waitTime):
		w.t.Fatal("no status message in time")
		return subjects.PBXStatus{}
	}
}

// waitState returns the first status in state, skipping the others.
func (w *statusWatch) waitState(state string) subjects.PBXStatus {
	w.t.Helper()
	deadline := time.Now().Add(waitTime)
	for time.Now().Before(deadline) {
		if st := w.next(); st.State == state {
			return st
		}
	}
	w.t.Fatalf("no status %q in time", state)
	return subjects.PBXStatus{}
}

// allUp reports whether every AMI session of st is logged in.
func allUp(st subjects.PBXStatus) bool {
	for _, ss := range st.Sessions {
		if ss.State != subjects.StateConnected {
			return false
		}
	}
	return st.State == subjects.StateConnected && len(st.Sessions) > 0
}

// waitAllUp returns the first status with every AMI session logged in.
func (w *statusWatch) waitAllUp() subjects.PBXStatus {
	w.t.Helper()
	deadline := time.Now().Add(waitTime)
	for time.Now().Before(deadline) {
		if st := w.next(); allUp(st) {
			return st
		}
	}
	w.t.Fatal("not every session up in time")
	return subjects.PBXStatus{}
}

// expectNoResponders checks that no endpoint of server is in the queue
// group.
func expectNoResponders(t testing.TB, nc *nats.Conn, server string) {
	t.Helper()
	m, err := nc.Request(subjects.Action("ami", server), []byte(`{"Action":"Ping"}`), waitTime)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("action on %s: %v, want no responders; reply %v", server, err, m)
	}
}

// request sends an action request and returns the reply.
func request(t testing.TB, nc *nats.Conn, subject, body string, hdr nats.Header) *nats.Msg {
	t.Helper()
	m, err := nc.RequestMsg(&nats.Msg{Subject: subject, Data: []byte(body), Header: hdr}, waitTime)
	if err != nil {
		t.Fatalf("request %s %s: %v", subject, body, err)
	}
	return m
}

// replyBody is the decoded reply of an action.
type replyBody struct {
	Server string `json:"server"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Response map[string]any   `json:"response"`
	Events   []map[string]any `json:"events"`
	Complete map[string]any   `json:"complete"`
	Output   *string          `json:"output"`
}

func decodeReply(t testing.TB, m *nats.Msg) (replyBody, map[string]json.RawMessage) {
	t.Helper()
	var r replyBody
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("reply is not JSON: %v: %s", err, m.Data)
	}
	if err := json.Unmarshal(m.Data, &raw); err != nil {
		t.Fatal(err)
	}
	return r, raw
}

// orderedKeys returns the keys of a JSON object in the order written.
func orderedKeys(t testing.TB, data []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", data)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// userEvent is an AMI UserEvent with a marker, for tests that count.
func userEvent(name string, n int) *amiproto.Message {
	return newEvent("UserEvent", "Privilege", "user,all", "UserEvent", name, "N", fmt.Sprint(n))
}

// newEvent returns an Event message named name with the given key, value
// pairs.
func newEvent(name string, kv ...string) *amiproto.Message {
	m := amiproto.NewMessage(amiproto.Field{Key: "Event", Value: name})
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

// perPBX is the number of AMI sessions one bridge opens per PBX: the event
// session and the action sessions.
const perPBX = 1 + DefaultActionSessions

// waitSessions waits until pbx has n logged-in sessions. amitest
// answers the Login before the session joins the event stream, as
// Asterisk does, so an event emitted right after "connected" could miss
// the bridge. Nothing signals the join: poll.
func waitSessions(t testing.TB, pbx *amitest.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTime)
	for pbx.Sessions() != n {
		if time.Now().After(deadline) {
			t.Fatalf("PBX has %d sessions, want %d", pbx.Sessions(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// heldRequest installs action on pbx, with answer as its reply (nil: none
// at all), requests it on pbx1's endpoint in the background and returns once
// the PBX has it in hand. The NATS reply arrives on the channel; nil after a
// NATS error, which fails the test.
func heldRequest(t *testing.T, cc *nats.Conn, pbx *amitest.Server, action string, answer func(*amitest.ResponseWriter)) <-chan *nats.Msg {
	t.Helper()
	arrived := make(chan struct{})
	var once sync.Once
	pbx.HandleFunc(action, func(w *amitest.ResponseWriter, r *amitest.Request) {
		once.Do(func() { close(arrived) })
		if answer != nil {
			answer(w)
		}
	})
	reply := make(chan *nats.Msg, 1)
	go func() {
		m, err := cc.Request(subjects.Action("ami", "pbx1"), []byte(`{"Action":"`+action+`"}`), waitTime)
		if err != nil {
			t.Errorf("request %s: %v", action, err)
		}
		reply <- m
	}()
	select {
	case <-arrived:
	case <-time.After(waitTime):
		t.Fatalf("%s never reached the PBX", action)
	}
	return reply
}

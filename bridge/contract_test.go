package bridge

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge/internal/callstate"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// The contract tests check real messages of a running bridge against the
// schemas of docs/asyncapi.yaml, so that the document cannot drift from
// the code: every captured event, every reply shape and error code, and
// the statuses (connected, auth_failed, disconnected, with JetStream and
// with HA). TestContract then checks that every message of the document
// was met.

// messageSchema is one message of the document: its headers' schema (nil:
// the message carries no header) and its payload's.
type messageSchema struct {
	headers, payload *jsonschema.Schema
}

// contract holds the document's messages and which of them were met.
type contract struct {
	msgs map[string]messageSchema

	mu    sync.Mutex
	met   map[string]int
	codes map[string]bool // error codes met
}

func loadContract(t *testing.T) *contract {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "docs", "asyncapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(data, &y); err != nil {
		t.Fatalf("docs/asyncapi.yaml: %v", err)
	}
	// YAML to JSON, then into the values the schema library validates.
	js, err := json.Marshal(y)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	const url = "file:///asyncapi.json"
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7) // AsyncAPI's schema format is a superset of draft 7
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	var top struct {
		AsyncAPI   string `json:"asyncapi"`
		Components struct {
			Messages map[string]map[string]any `json:"messages"`
		} `json:"components"`
	}
	if err := json.Unmarshal(js, &top); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(top.AsyncAPI, "3.") {
		t.Fatalf("asyncapi %q, want 3.x", top.AsyncAPI)
	}
	ct := &contract{msgs: map[string]messageSchema{}, met: map[string]int{}, codes: map[string]bool{}}
	for name, m := range top.Components.Messages {
		var ms messageSchema
		if ms.payload, err = c.Compile(url + "#/components/messages/" + name + "/payload"); err != nil {
			t.Fatalf("message %s: %v", name, err)
		}
		if _, ok := m["headers"]; ok {
			if ms.headers, err = c.Compile(url + "#/components/messages/" + name + "/headers"); err != nil {
				t.Fatalf("message %s headers: %v", name, err)
			}
		}
		ct.msgs[name] = ms
	}
	if len(ct.msgs) == 0 {
		t.Fatal("docs/asyncapi.yaml has no messages")
	}
	return ct
}

// check validates one NATS message as the document's message name: its
// headers (each given once) and its body, JSON except for a text message.
func (ct *contract) check(t testing.TB, name string, hdr nats.Header, body []byte, text bool) {
	t.Helper()
	ms, ok := ct.msgs[name]
	if !ok { // Errorf: check also runs on a status watch's goroutine
		t.Errorf("docs/asyncapi.yaml has no message %s", name)
		return
	}
	if ms.headers == nil {
		if len(hdr) != 0 {
			t.Errorf("%s: headers %v, the document gives none", name, hdr)
		}
	} else {
		h := map[string]any{}
		for k, vs := range hdr {
			if len(vs) != 1 {
				t.Errorf("%s: header %s given %d times", name, k, len(vs))
			}
			h[k] = vs[0]
		}
		if err := ms.headers.Validate(h); err != nil {
			t.Errorf("%s headers %v against docs/asyncapi.yaml: %#v", name, hdr, err)
		}
	}
	var v any = string(body)
	if !text {
		var err error
		if v, err = jsonschema.UnmarshalJSON(bytes.NewReader(body)); err != nil {
			t.Errorf("%s: body is not JSON: %v: %s", name, err, body)
			return
		}
	}
	if err := ms.payload.Validate(v); err != nil {
		t.Errorf("%s body against docs/asyncapi.yaml: %#v\n%s", name, err, body)
	}
	ct.mu.Lock()
	ct.met[name]++
	if code := hdr.Get(micro.ErrorCodeHeader); code != "" {
		ct.codes[code] = true
	}
	ct.mu.Unlock()
}

// checkReplyMsg validates a message on a requester's inbox: the empty
// terminator, an error, an output part, an entry event (first false) or
// the reply.
func (ct *contract) checkReplyMsg(t testing.TB, m *nats.Msg, first bool) {
	t.Helper()
	switch {
	case len(m.Data) == 0 && len(m.Header) == 0:
		ct.check(t, "StreamEnd", m.Header, m.Data, true)
	case m.Header.Get(micro.ErrorCodeHeader) != "":
		ct.check(t, "ErrorReply", m.Header, m.Data, false)
	case first:
		ct.check(t, "Reply", m.Header, m.Data, false)
	case bytes.HasPrefix(m.Data, []byte(`{"output":`)):
		ct.check(t, "OutputPart", m.Header, m.Data, false)
	default:
		ct.check(t, "StreamEvent", m.Header, m.Data, false)
	}
}

// watchStatuses checks every status published until the test ends, and
// returns those seen so far on demand.
func (ct *contract) watchStatuses(t *testing.T, nc *nats.Conn) func() []subjects.PBXStatus {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []subjects.PBXStatus
	)
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(subjects.AllStatus("ami"), ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The checker is owned by this watch: the cleanup stops it and waits
	// for it, so that it never reports after the test ended. The cleanup
	// runs after the bridges' (registered later), whose last statuses it
	// checks too.
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case m := <-ch:
				ct.check(t, "Status", m.Header, m.Data, false)
				var st subjects.PBXStatus
				if err := json.Unmarshal(m.Data, &st); err != nil {
					t.Errorf("status: %v", err)
				}
				mu.Lock()
				seen = append(seen, st)
				mu.Unlock()
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() {
		sub.Unsubscribe()
		close(done)
		<-stopped
	})
	return func() []subjects.PBXStatus {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func TestContract(t *testing.T) {
	ct := loadContract(t)
	t.Run("events", func(t *testing.T) { contractEvents(t, ct) })
	t.Run("replies", func(t *testing.T) { contractReplies(t, ct) })
	t.Run("statuses", func(t *testing.T) { contractStatuses(t, ct) })
	t.Run("ha", func(t *testing.T) { contractHA(t, ct) })
	t.Run("records", func(t *testing.T) { contractRecords(t, ct) })
	t.Run("state", func(t *testing.T) { contractStateValues(t, ct) })
	for _, name := range []string{"CallRecord", "StateChannel", "StateBridge", "StateQueue", "StateDevice", "StateCall", "StateDeleted"} {
		t.Logf("%s: %d real messages checked", name, ct.met[name])
	}
	if t.Failed() {
		return
	}
	// Every message of the document was met, and every error code.
	for name := range ct.msgs {
		if ct.met[name] == 0 {
			t.Errorf("no real message checked against %s", name)
		}
	}
	for _, code := range []string{"400", "403", "409", "413", "422", "503", "504"} {
		if !ct.codes[code] {
			t.Errorf("no error %s checked", code)
		}
	}
}

// capturedEvents returns every event of every capture, as Asterisk sent it.
func capturedEvents(t *testing.T) []*amiproto.Message {
	t.Helper()
	return captureEvents(t, "*.recv.bin*")
}

// captureEvents returns the events of the captures of every version whose
// file name matches pattern, as Asterisk sent them.
func captureEvents(t *testing.T, pattern string) []*amiproto.Message {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "amiproto", "testdata", "captures", "*", pattern))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures: %v", err)
	}
	var evs []*amiproto.Message
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		br := bufio.NewReader(bytes.NewReader(data))
		r := amiproto.NewReader(br)
		if bytes.HasPrefix(data, []byte("Asterisk Call Manager/")) {
			if _, err := r.ReadBanner(); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
		for {
			m, err := r.ReadMessage()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil { // the captures of garbage and overlong lines end so
				t.Logf("%s: read stops: %v", filepath.Base(f), err)
				break
			}
			if m.Kind() == amiproto.KindEvent {
				evs = append(evs, m)
			}
		}
	}
	return evs
}

// contractEvents emits every captured event from a fake PBX into a running
// bridge and checks each one the bridge publishes.
func contractEvents(t *testing.T, ct *contract) {
	evs := capturedEvents(t)
	r := newWorld(t, withoutBridge())
	got := make(chan *nats.Msg, len(evs)+1)
	sub, err := r.cc.ChanSubscribe(subjects.ServerEvents("ami", "pbx1"), got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	startBridge(t, r.nc, []ServerConfig{fastServer("pbx1", r.pbx)}, Options{})
	r.w.waitAllUp()
	waitSessions(t, r.pbx, perPBX)
	// A marker first: what the bridge published before it (FullyBooted at
	// login) is checked too, but is not from the captures.
	r.pbx.Emit(userEvent("contract-start", 0))
	var sent []*amiproto.Message
	for _, ev := range evs {
		b, err := amiproto.AppendMessage(nil, ev)
		if err != nil {
			t.Errorf("a captured event cannot be sent again: %v", err)
			continue
		}
		// Raw, to every session with events on: list entries have no
		// Privilege, which Emit would need.
		r.pbx.EmitRaw(b)
		sent = append(sent, ev)
	}
	t.Logf("%d captured events emitted", len(sent))
	for marked := false; !marked; {
		select {
		case m := <-got:
			ct.check(t, "Event", m.Header, m.Data, false)
			marked = bytes.Contains(m.Data, []byte(`"contract-start"`))
		case <-time.After(waitTime):
			t.Fatal("the marker event was not published")
		}
	}
	for i, ev := range sent {
		var m *nats.Msg
		select {
		case m = <-got:
		case <-time.After(waitTime):
			t.Fatalf("%d of %d events published", i, len(sent))
		}
		ct.check(t, "Event", m.Header, m.Data, false)
		if name := m.Header.Get(subjects.HeaderEvent); name != ev.EventName() || m.Subject != subjects.Event("ami", "pbx1", name) {
			t.Fatalf("event %d: %s on %s, the PBX sent %s", i, name, m.Subject, ev.EventName())
		}
	}
}

// exchange sends a request and returns every message of its answer: one,
// or with Ami-Stream: true all up to the empty terminator. Each is checked.
func (ct *contract) exchange(t *testing.T, nc *nats.Conn, server, body string, hdr nats.Header) []*nats.Msg {
	t.Helper()
	return ct.exchangeOn(t, nc, subjects.Action("ami", server), "ActionRequest", body, hdr)
}

// exchangeOn is exchange on subject, whose request is the document's
// message request.
func (ct *contract) exchangeOn(t *testing.T, nc *nats.Conn, subject, request, body string, hdr nats.Header) []*nats.Msg {
	t.Helper()
	if json.Valid([]byte(body)) { // not the 400 for a body that is not JSON
		ct.check(t, request, hdr, []byte(body), false)
	}
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: inbox, Header: hdr, Data: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	stream := hdr.Get(subjects.HeaderStream) == "true"
	var msgs []*nats.Msg
	for {
		m, err := sub.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("%s: %v after %d messages", body, err, len(msgs))
		}
		ct.checkReplyMsg(t, m, len(msgs) == 0)
		msgs = append(msgs, m)
		if !stream || len(m.Data) == 0 {
			return msgs
		}
	}
}

func contractReplies(t *testing.T, ct *contract) {
	r := newWorld(t, withPBX(amitest.Config{Channels: 3}), watching("small"), withServers(func(r *world) []ServerConfig {
		small := fastServer("small", r.pbx)
		small.MaxReplyEntries = 2
		return []ServerConfig{fastServer("pbx1", r.pbx), small}
	}))
	b := r.b
	r.w.waitAllUp()
	r.watch("small").waitAllUp()
	streamed := nats.Header{subjects.HeaderStream: {"true"}}

	codeOf := func(m *nats.Msg) string { return m.Header.Get(micro.ErrorCodeHeader) }
	tests := []struct {
		name, server, body string
		hdr                nats.Header
		want               []string // per message: the error code, "" for none, "end" for the terminator
		keys               string   // the first message's keys
	}{
		{"single", "pbx1", `{"Action":"Ping","ActionID":"mine"}`, nil, []string{""}, "server response"},
		{"collection", "pbx1", `{"Action":"CoreShowChannels"}`, nil, []string{""}, "server response events complete"},
		{"command", "pbx1", `{"action":"Command","Command":"core show version"}`, nil, []string{""}, "server response output"},
		{"streamed collection", "pbx1", `{"Action":"CoreShowChannels"}`, streamed, []string{"", "", "", "", "", "end"}, "server response"},
		{"streamed command", "pbx1", `{"Action":"Command","Command":"core show version"}`, streamed, []string{"", "", "end"}, "server response"},
		{"streamed single", "pbx1", `{"Action":"Ping"}`, streamed, []string{"", "end"}, "server response"},
		{"400", "pbx1", `not json`, nil, []string{"400"}, "server error"},
		{"400 streamed", "pbx1", `{"Action":"Ping","X":"a\r\nb"}`, streamed, []string{"400", "end"}, "server error"},
		{"403", "pbx1", `{"Action":"Login","Username":"x"}`, nil, []string{"403"}, "server error"},
		{"keyed", "pbx1", `{"Action":"Ping"}`, nats.Header{subjects.HeaderIdempotencyKey: {"contract"}}, []string{""}, "server response"},
		{"409", "pbx1", `{"Action":"Ping","ActionID":"other"}`, nats.Header{subjects.HeaderIdempotencyKey: {"contract"}}, []string{"409"}, "server error"},
		{"413", "small", `{"Action":"CoreShowChannels"}`, nil, []string{"413"}, "server error response"},
		{"413 streamed", "small", `{"Action":"CoreShowChannels"}`, streamed, []string{"", "", "", "413", "end"}, "server response"},
		{"422", "pbx1", `{"Action":"NoSuchAction"}`, nil, []string{"422"}, "server error response"},
		{"422 command", "pbx1", `{"Action":"Command","Command":"core show nothing"}`, nil, []string{"422"}, "server error response output"},
		{"named", "pbx1.action.Ping", `{"ActionID":"mine"}`, nil, []string{""}, "server response"},
		{"named streamed", "pbx1.action.CoreShowChannels", `{"Action":"CoreShowChannels"}`, streamed, []string{"", "", "", "", "", "end"}, "server response"},
		{"named 400", "pbx1.action.ping", `{}`, nil, []string{"400"}, "server error"},
		{"originate wait", "pbx1.action.Originate", `{"Channel":"Local/echo@test","Application":"Echo","ActionID":"mine"}`, nats.Header{subjects.HeaderWait: {subjects.WaitOriginateResponse}}, []string{""}, "server response events"},
		{"504", "pbx1", `{"Action":"Getvar","Variable":"X"}`, nats.Header{subjects.HeaderTimeout: {"200ms"}}, []string{"504"}, "server error"},
		{"503", "pbx1", `{"Action":"CoreStatus"}`, nil, []string{"503"}, "server error"},
	}
	for _, tc := range tests {
		switch tc.name {
		case "504":
			r.pbx.NeverAnswer("Getvar")
		case "503":
			r.pbx.ClearFaults()
			waitStatus(t, b, allUp) // the session stuck by the 504 was replaced
			r.pbx.DropDuring("CoreStatus")
		}
		var msgs []*nats.Msg
		if server, action, named := strings.Cut(tc.server, ".action."); named { // a per-action subject
			msgs = ct.exchangeOn(t, r.cc, subjects.NamedAction("ami", server, action), "NamedActionRequest", tc.body, tc.hdr)
		} else {
			msgs = ct.exchange(t, r.cc, tc.server, tc.body, tc.hdr)
		}
		var got []string
		for _, m := range msgs {
			if len(m.Data) == 0 {
				got = append(got, "end")
			} else {
				got = append(got, codeOf(m))
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: messages %q, want %q", tc.name, got, tc.want)
		}
		if keys := strings.Join(orderedKeys(t, msgs[0].Data), " "); keys != tc.keys {
			t.Errorf("%s: keys %q, want %q: %s", tc.name, keys, tc.keys, msgs[0].Data)
		}
	}
}

// contractStatuses: connected and auth_failed, then disconnected, with
// JetStream and a topology, so that every optional part appears; and a
// PBX whose action sessions are idle (actions.idle_logoff).
func contractStatuses(t *testing.T, ct *contract) {
	var seen func() []subjects.PBXStatus
	r := newWorld(t, withNATS(natsOptions{jetStream: true}), watching("bad"), withServers(func(r *world) []ServerConfig {
		seen = ct.watchStatuses(t, r.cc)
		bad := fastServer("bad", r.pbx)
		bad.URL = r.pbx.URL("admin", "Wrong-Secret-42")
		stays := fastServer("pbx1", r.pbx)
		stays.ReconnectMin, stays.ReconnectMax = time.Hour, time.Hour // a dropped session stays down
		lazy := fastServer("lazy", r.pbx)
		lazy.ActionIdleLogoff = time.Hour
		return []ServerConfig{stays, bad, lazy}
	}), withOptions(Options{
		JetStream: JetStreamOptions{Enabled: true},
		Topology: func() subjects.Topology {
			return subjects.Topology{NATS: "leafnode", Domain: "paris", Leafnodes: &subjects.Leafnodes{Remotes: 1, Connected: 1}}
		},
	}))
	pbx, w := r.pbx, r.w
	w.waitAllUp()
	r.watch("bad").waitState(subjects.StateAuthFailed)
	pbx.DropConnections()
	w.waitState(subjects.StateDisconnected)
	waitFor(t, seen, func(sts []subjects.PBXStatus) bool {
		states := map[string]bool{}
		for _, st := range sts {
			states[st.State] = true
			for _, ss := range st.Sessions {
				states["session "+ss.State] = true
			}
		}
		return states[subjects.StateConnected] && states[subjects.StateAuthFailed] && states[subjects.StateDisconnected] && states["session "+subjects.StateIdle]
	})
	if st := seen()[0]; st.Topology == nil || st.Topology.Leafnodes == nil || st.JSFailures == nil {
		t.Errorf("a status without topology, leafnodes or js_failures: %+v", st)
	}
}

// contractHA: the statuses of an active and a standby, of the standby
// once it took over, and an event with Ami-Chain.
func contractHA(t *testing.T, ct *contract) {
	ns := startNATS(t, natsOptions{jetStream: true})
	cc := connect(t, ns)
	pbx := startPBX(t, amitest.Config{})
	seen := ct.watchStatuses(t, cc)
	servers := []ServerConfig{fastServer("pbx1", pbx)}
	a, _ := startBridge(t, connect(t, ns), servers, haBridgeOptions("a", 0))
	waitStatus(t, a, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	b, _ := startBridge(t, connect(t, ns), servers, haBridgeOptions("b", 0))
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleStandby && allUp(st) })
	waitSessions(t, pbx, 2*perPBX)

	got := make(chan *nats.Msg, 4)
	sub, err := cc.ChanSubscribe(subjects.ServerEvents("ami", "pbx1"), got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := cc.Flush(); err != nil {
		t.Fatal(err)
	}
	pbx.Emit(userEvent("contract", 1))
	select {
	case m := <-got:
		if m.Header.Get(subjects.HeaderChain) == "" {
			t.Errorf("an HA event without %s: %v", subjects.HeaderChain, m.Header)
		}
		ct.check(t, "Event", m.Header, m.Data, false)
	case <-time.After(waitTime):
		t.Fatal("no event published under HA")
	}

	if err := a.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, b, func(st subjects.PBXStatus) bool {
		return st.HA.Role == subjects.RoleActive && st.HA.LastTakeover != nil
	})
	waitFor(t, seen, func(sts []subjects.PBXStatus) bool {
		var standby, takeover bool
		for _, st := range sts {
			if st.HA == nil {
				continue
			}
			standby = standby || st.HA.Role == subjects.RoleStandby
			takeover = takeover || st.HA.Self == "b" && st.HA.LastTakeover != nil
		}
		return standby && takeover
	})
}

// contractRecords checks the call records and the values of the state
// bucket (StateOptions) that the model makes of the issue-19 captures
// (a Local pair, a queue call answered by an agent, a blind transfer,
// busy, no answer; Asterisk 13 and 22) and of one call of its own, the
// last: every record, and every KV put and delete as a subscriber of the
// bucket's subjects ($KV.AMI_STATE.pbx1.>) sees them, until the deletion
// of the last call's key, the writer's last write for it.
func contractRecords(t *testing.T, ct *contract) {
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withOptions(stateOptions(true)))
	records, err := tw.cc.SubscribeSync("ami.pbx1.call.>")
	if err != nil {
		t.Fatal(err)
	}
	kv, err := tw.cc.SubscribeSync("$KV." + DefaultStateBucket + ".pbx1.>")
	if err != nil {
		t.Fatal(err)
	}
	waitSynced(t, tw.b, 1)
	for _, e := range captureEvents(t, "19?_*.recv.bin") {
		tw.pbx.Emit(e)
	}
	last := emitCall(tw.pbx, "1733600000.12")
	for {
		m, err := records.NextMsg(waitTime)
		if err != nil {
			t.Fatal(err)
		}
		ct.check(t, "CallRecord", m.Header, m.Data, false)
		if m.Subject == subjects.CallRecordSubject("ami", "pbx1", last) {
			break
		}
	}
	lastKey := "$KV." + DefaultStateBucket + "." + subjects.StateKey("pbx1", subjects.KindCalls, last)
	for {
		m, err := kv.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("the deletion of %s: %v", lastKey, err)
		}
		if len(m.Data) == 0 && m.Header.Get("KV-Operation") != "" {
			ct.check(t, "StateDeleted", m.Header, m.Data, true)
			if m.Subject == lastKey {
				break
			}
			continue
		}
		// $KV.<bucket>.<server>.<kind>.<id>
		kind := strings.Split(m.Subject, ".")[3]
		ct.check(t, stateMessage[kind], m.Header, m.Data, false)
	}
}

// stateMessage is the document's message of each kind's values.
var stateMessage = map[string]string{subjects.KindChannels: "StateChannel", subjects.KindBridges: "StateBridge",
	subjects.KindQueues: "StateQueue", subjects.KindDevices: "StateDevice", subjects.KindCalls: "StateCall"}

// contractStateValues checks every value the model gives the writer for
// the issue-19 captures, flushed after each event: the writer coalesces
// the changes of a flush interval, so the bucket sees only some of them
// (contractRecords), and a bridge that lives a few milliseconds, none.
func contractStateValues(t *testing.T, ct *contract) {
	m := callstate.New("pbx1")
	for _, e := range captureEvents(t, "19?_*.recv.bin") {
		m.Apply(e)
		m.Flush(false, func(c callstate.Change) {
			if c.Value == nil {
				return // a delete: no value
			}
			kind, _, _ := strings.Cut(c.Key, ".")
			ct.check(t, stateMessage[kind], nil, c.Value, false)
		})
	}
}

// TestContractSchemasFollowSubjects: the schemas of the state values and
// of the call record have exactly the JSON fields of their types in
// subjects, nested types included, and require those always written
// (no omitempty or omitzero): a field added in subjects without the
// document fails here even when no real value carries it yet.
func TestContractSchemasFollowSubjects(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "asyncapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]map[string]any `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	resolve := func(s map[string]any) map[string]any {
		for {
			ref, ok := s["$ref"].(string)
			if !ok {
				return s
			}
			s = doc.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")]
		}
	}
	var compare func(path string, s map[string]any, typ reflect.Type)
	compare = func(path string, s map[string]any, typ reflect.Type) {
		s = resolve(s)
		if s["type"] == "array" {
			items, _ := s["items"].(map[string]any)
			s = resolve(items)
		}
		if s["additionalProperties"] != false {
			t.Errorf("%s: additionalProperties is not false: a value with a field the document lacks would pass", path)
		}
		props, _ := s["properties"].(map[string]any)
		required := map[string]bool{}
		req, _ := s["required"].([]any)
		for _, r := range req {
			if name, ok := r.(string); ok {
				required[name] = true
			}
		}
		fields := map[string]bool{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || name == "" {
				continue
			}
			fields[name] = true
			p, ok := props[name].(map[string]any)
			if !ok {
				t.Errorf("%s: the document lacks %s (%s.%s)", path, name, typ.Name(), f.Name)
				continue
			}
			always := !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero")
			if always != required[name] {
				t.Errorf("%s.%s: required %v in the document, always written %v by %s.%s", path, name, required[name], always, typ.Name(), f.Name)
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() {
				compare(path+"."+name, p, ft)
			}
		}
		for name := range props {
			if !fields[name] {
				t.Errorf("%s: the document has %s, %s has no such field", path, name, typ.Name())
			}
		}
	}
	for name, typ := range map[string]reflect.Type{
		"StateChannel": reflect.TypeFor[subjects.StateChannel](),
		"StateBridge":  reflect.TypeFor[subjects.StateBridge](),
		"StateQueue":   reflect.TypeFor[subjects.StateQueue](),
		"StateDevice":  reflect.TypeFor[subjects.StateDevice](),
		"CallRecord":   reflect.TypeFor[subjects.CallRecord](),
	} {
		s, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("docs/asyncapi.yaml has no schema %s", name)
			continue
		}
		compare(name, s, typ)
	}
}

package bridge

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// wireActions returns, lower-cased, the action of every message the PBX
// received, read as Asterisk reads them (parseAsterisk).
func wireActions(pbx *amitest.Server) map[string]int {
	msgs, ok := parseAsterisk(pbx.Received())
	seen := map[string]int{}
	for i, m := range msgs {
		if ok[i] {
			seen[strings.ToLower(m.header("Action", true))]++
		}
	}
	return seen
}

// expectCode checks that m is an error reply with code whose message
// mentions want, in the body and the Nats-Service-Error header alike.
func expectCode(t *testing.T, m *nats.Msg, code int, want string) {
	t.Helper()
	r, _ := decodeReply(t, m)
	if got := m.Header.Get(micro.ErrorCodeHeader); got != strconv.Itoa(code) {
		t.Fatalf("Nats-Service-Error-Code %q, want %d: %s", got, code, m.Data)
	}
	if r.Error == nil || r.Error.Code != code || !strings.Contains(r.Error.Message, want) || m.Header.Get(micro.ErrorHeader) != r.Error.Message {
		t.Fatalf("reply %s, want %d mentioning %q", m.Data, code, want)
	}
}

// TestBridge_NoSpellingOfADeniedActionReachesThePBX: the findings of issue
// 20, tried as a requester would. Asterisk skips the bytes below 0x21 at the
// start of a value, so each of these would run the action after them.
func TestBridge_NoSpellingOfADeniedActionReachesThePBX(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{RecordReceived: true}),
		withServer(func(sc *ServerConfig) { sc.ActionsDeny = []string{"Originate", "Command"} }))
	r.w.waitAllUp()
	subject := subjects.Action("ami", "pbx1")
	for _, body := range []string{
		`{"Action":" Originate","Channel":"Local/100@default","Application":"Echo","Async":true}`,
		`{"Action":"\tCommand","Command":"core show version"}`,
		`{"Action":" Logoff"}`,
		`{"Action":" Events","EventMask":"on"}`,
		`{"Action":"\u0001originate","Channel":"Local/100@default","Application":"Echo"}`,
	} {
		expectCode(t, request(t, r.cc, subject, body, nil), subjects.CodeBadRequest, "is not an action name")
	}
	// The PBX still answers, and what it received is recorded.
	if m := request(t, r.cc, subject, `{"Action":"Ping"}`, nil); !strings.Contains(string(m.Data), `"Pong"`) {
		t.Fatalf("Ping: %s", m.Data)
	}
	seen := wireActions(r.pbx)
	for _, name := range []string{"originate", "command", "logoff", "events"} {
		if seen[name] > 0 {
			t.Errorf("Asterisk would have run %s %d times; it received:\n%q", name, seen[name], r.pbx.Received())
		}
	}
	if seen["ping"] == 0 {
		t.Fatalf("the recording has no Ping: %q", r.pbx.Received())
	}
}

// TestBridge_SafeDefaults: without an allow list naming them, the
// configuration actions and an Originate that needs the system class never
// reach the PBX; named, they do.
func TestBridge_SafeDefaults(t *testing.T) {
	pbx2 := startPBX(t, amitest.Config{RecordReceived: true})
	named := fastServer("pbx2", pbx2)
	named.ActionsAllow = []string{"*", "GetConfig", OriginateSystem}
	r := newWorld(t, withPBX(amitest.Config{RecordReceived: true}), watching("pbx2"), withServers(func(r *world) []ServerConfig {
		return []ServerConfig{fastServer("pbx1", r.pbx), named}
	}))
	r.w.waitAllUp()
	r.watch("pbx2").waitAllUp()
	cc, pbx1 := r.cc, r.pbx

	getConfig := `{"Action":"GetConfig","Filename":"manager.conf"}`
	system := `{"Action":"Originate","Channel":"Local/100@default","Application":"System","Data":"touch /tmp/x","Async":true}`
	dial := `{"Action":"Originate","Channel":"Local/100@default","Application":"Dial","Data":"PJSIP/200,30","Async":true}`

	expectCode(t, request(t, cc, subjects.Action("ami", "pbx1"), getConfig, nil), subjects.CodeForbidden, "name GetConfig in the allow list")
	expectCode(t, request(t, cc, subjects.Action("ami", "pbx1"), system, nil), subjects.CodeForbidden, `add "Originate/system" to the allow list`)
	if m := request(t, cc, subjects.Action("ami", "pbx1"), dial, nil); !strings.Contains(string(m.Data), "Originate successfully queued") {
		t.Fatalf("Originate of Dial: %s", m.Data)
	}
	seen := wireActions(pbx1)
	if seen["getconfig"] != 0 || seen["originate"] != 1 {
		t.Errorf("pbx1 received %v, want one Originate (Dial) and no GetConfig", seen)
	}
	if strings.Contains(string(pbx1.Received()), "System") {
		t.Errorf("the Originate of System reached pbx1:\n%q", pbx1.Received())
	}

	if m := request(t, cc, subjects.Action("ami", "pbx2"), getConfig, nil); !strings.Contains(string(m.Data), `"Category-000000":"general"`) {
		t.Fatalf("GetConfig named: %s", m.Data)
	}
	if m := request(t, cc, subjects.Action("ami", "pbx2"), system, nil); !strings.Contains(string(m.Data), "Originate successfully queued") {
		t.Fatalf("Originate of System named: %s", m.Data)
	}
	if seen := wireActions(pbx2); seen["getconfig"] != 1 || seen["originate"] != 1 {
		t.Errorf("pbx2 received %v, want one GetConfig and one Originate", seen)
	}
}

// TestBridge_OwnSecretMaskedInEveryReply: whatever the action and the
// shape of its reply, the bridge's own secret (the URL's and the one that
// overrides it) never appears in it; another AMI user's does, since only
// the bridge's is its to hide.
func TestBridge_OwnSecretMaskedInEveryReply(t *testing.T) {
	const urlSecret = "0ld-url-secret"
	r := newWorld(t, withPBX(amitest.Config{Users: map[string]amitest.User{
		"admin": {Secret: testSecret, Write: true},
		"old":   {Secret: urlSecret},
		"ops":   {Secret: "ops-pa55word"},
	}}), withServers(func(r *world) []ServerConfig {
		sc := fastServer("pbx1", r.pbx)
		sc.URL = r.pbx.URL("admin", urlSecret)
		sc.Secret = testSecret
		sc.ActionsAllow = []string{"*", "GetConfig"}
		return []ServerConfig{sc}
	}))
	r.w.waitAllUp()

	r.pbx.HandleFunc("SecretList", func(w *amitest.ResponseWriter, _ *amitest.Request) {
		w.List("Entries will follow", "SecretListComplete", []*amiproto.Message{
			newEvent("SecretEntry", "Value", "plain"),
			newEvent("SecretEntry", "Value", "secret="+testSecret, "Old", urlSecret),
		})
	})
	// Command whose output quotes the secret: CLI lines, then an error
	// whose quoted output is cut at 512 bytes right inside the secret.
	r.pbx.HandleFunc("Command", func(w *amitest.ResponseWriter, req *amitest.Request) {
		if req.Get("Command") == "fail" {
			w.Respond("Error", "Message", "Command output follows", "Output", strings.Repeat("a", 507)+testSecret)
			return
		}
		w.Respond("Success", "Message", "Command output follows", "Output", "secret = "+testSecret, "Output", "old = "+urlSecret, "Output", "done")
	})
	subject := subjects.Action("ami", "pbx1")
	stream := nats.Header{subjects.HeaderStream: {"true"}}
	check := func(what string, parts ...[]byte) {
		t.Helper()
		all := string(joinParts(parts))
		for _, sec := range []string{testSecret, urlSecret, testSecret[:5], "s3cret-Do"} {
			if strings.Contains(all, sec) {
				t.Errorf("%s: the reply holds %q:\n%s", what, sec, all)
			}
		}
		if !strings.Contains(all, secretMask) {
			t.Errorf("%s: no mask in the reply:\n%s", what, all)
		}
	}

	m := request(t, r.cc, subject, `{"Action":"GetConfig","Filename":"manager.conf"}`, nil)
	check("GetConfig", m.Data)
	for _, want := range []string{`"secret=xxxxx"`, `"secret=ops-pa55word"`, `"Category-000001":"admin"`} {
		if !strings.Contains(string(m.Data), want) {
			t.Errorf("GetConfig reply without %s: %s", want, m.Data)
		}
	}
	check("GetConfig streamed", streamParts(t, r.cc, subject, `{"Action":"GetConfig","Filename":"manager.conf"}`, stream)...)
	check("collection", request(t, r.cc, subject, `{"Action":"SecretList"}`, nil).Data)
	check("collection streamed", streamParts(t, r.cc, subject, `{"Action":"SecretList"}`, stream)...)
	check("Command output", request(t, r.cc, subject, `{"Action":"Command","Command":"show"}`, nil).Data)
	check("Command output streamed", streamParts(t, r.cc, subject, `{"Action":"Command","Command":"show"}`, stream)...)
	m = request(t, r.cc, subject, `{"Action":"Command","Command":"fail"}`, nil)
	expectCode(t, m, subjects.CodeAMIError, "aaaa")
	check("error quoting the output", m.Data, []byte(m.Header.Get(micro.ErrorHeader)))
}

// joinParts joins the parts of a reply for a search.
func joinParts(parts [][]byte) []byte {
	var all []byte
	for _, p := range parts {
		all = append(append(all, p...), '\n')
	}
	return all
}

// streamParts sends a streamed request and returns every part up to the
// empty terminator, headers included.
func streamParts(t *testing.T, nc *nats.Conn, subject, body string, hdr nats.Header) [][]byte {
	t.Helper()
	inbox := nats.NewInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: inbox, Data: []byte(body), Header: hdr}); err != nil {
		t.Fatal(err)
	}
	var parts [][]byte
	for {
		select {
		case m := <-ch:
			if len(m.Data) == 0 {
				return parts
			}
			parts = append(parts, m.Data, []byte(m.Header.Get(micro.ErrorHeader)))
		case <-time.After(waitTime):
			t.Fatalf("no terminator for %s after %d parts", body, len(parts))
			return nil
		}
	}
}

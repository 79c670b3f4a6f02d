package integration

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge"
)

// actionWorld is one bridge with the PBXes the action tests use:
//
//   - p22: Asterisk 22 with 6 channels, default policy; it swallows
//     WaitEvent, records the ItProbe actions it receives and answers
//     ItRepeat with a repeated key;
//   - p13: Asterisk 13 with 4 channels, deny DB* and orig*, a 200 ms
//     action timeout and a 300 ms cap on Ami-Timeout; it swallows
//     WaitEvent too;
//   - p22-allow: a second session on p22 that allows only Ping and core*;
//   - down: nothing listens there.
type actionWorld struct {
	*world
	p22, p13 *pbx
	probes   chan *amiproto.Message // ItProbe actions as p22 received them
}

func newActionWorld(t *testing.T) *actionWorld {
	w := &actionWorld{world: newWorld(t, natsOptions{}), probes: make(chan *amiproto.Message, 16)}
	w.p22 = w.startPBX("p22", amitest.Config{Profile: amitest.Asterisk22, Channels: 6})
	w.p13 = w.startPBX("p13", amitest.Config{Profile: amitest.Asterisk13, Channels: 4})
	w.p22.NeverAnswer("WaitEvent")
	w.p13.NeverAnswer("WaitEvent")
	w.p22.HandleFunc("ItProbe", func(rw *amitest.ResponseWriter, r *amitest.Request) {
		select {
		case w.probes <- amiproto.NewMessage(r.Fields()...):
		default:
		}
		rw.Success("Message", "probed")
	})
	w.p22.HandleFunc("ItRepeat", func(rw *amitest.ResponseWriter, _ *amitest.Request) {
		rw.Success("Variable", "a=1", "X", "y", "Variable", "b=2", "Variable", "c=3")
	})

	s13 := w.serverFor("p13", w.p13, viaFile)
	s13.Actions = &actionsConfig{Deny: []string{"DB*", "orig*"}}
	s13.MaxActionTimeout = "300ms"
	s13.ActionTimeout = "200ms"
	allow := w.serverFor("p22-allow", w.p22, viaEnv)
	allow.Actions = &actionsConfig{Allow: []string{"Ping", "core*"}}
	down := w.serverAt("down", deadAddr(t), w.newSecret("down"), viaURL)
	w.startBridge(w.config(w.serverFor("p22", w.p22, viaURL), s13, allow, down))
	w.waitReady("p22", "p13", "p22-allow")
	return w
}

// TestActions_ReplyShapes checks each kind of successful reply, and the
// errors Asterisk gives, against both Asterisk generations.
func TestActions_ReplyShapes(t *testing.T) {
	t.Parallel()
	w := newActionWorld(t)

	t.Run("SimpleResponse", func(t *testing.T) {
		r := w.request("p22", `{"Action":"Ping","ActionID":"mine-1"}`)
		wantSuccess(t, r)
		if got := strings.Join(r.keys, ","); got != "server,response" {
			t.Errorf("reply keys %s, want server,response", got)
		}
		if k := r.Response[0].Key; k != "Response" {
			t.Errorf("response starts with %q, want Response (wire order)", k)
		}
		for k, want := range map[string]string{"Response": "Success", "Ping": "Pong", "ActionID": "mine-1"} {
			if got := r.Response.value(k); got != want {
				t.Errorf("response %s = %q, want %q: %v", k, got, want, r.Response)
			}
		}
		if r.Response.value("Timestamp") == "" {
			t.Errorf("Ping response without Timestamp: %v", r.Response)
		}
	})

	t.Run("MicroServiceOneEndpointPerActionSession", func(t *testing.T) {
		// Every PBX that is up is a service instance with one endpoint per
		// logged-in action session; "down" has none, so it is in no queue
		// group.
		infos := w.serviceInfos(3)
		got := map[string]int{}
		for _, info := range infos {
			for _, ep := range info.Endpoints {
				if ep.QueueGroup != "ami-bridge" {
					t.Errorf("endpoint %s: queue group %q, want ami-bridge", ep.Subject, ep.QueueGroup)
				}
				got[ep.Subject]++
			}
		}
		for _, server := range []string{"p22", "p13", "p22-allow"} {
			if n := got["ami."+server+".action"]; n != bridge.DefaultActionSessions {
				t.Errorf("ami.%s.action: %d endpoints, want %d", server, n, bridge.DefaultActionSessions)
			}
			if n := got["ami."+server+".action.*"]; n != bridge.DefaultActionSessions {
				t.Errorf("ami.%s.action.*: %d endpoints, want %d", server, n, bridge.DefaultActionSessions)
			}
		}
		if n := got["ami.down.action"] + got["ami.down.action.*"]; n != 0 {
			t.Errorf("the down PBX has %d endpoints in the queue group", n)
		}
	})

	t.Run("RepeatedKeyInResponse", func(t *testing.T) {
		r := w.request("p22", `{"Action":"ItRepeat","ActionID":"rep"}`)
		wantSuccess(t, r)
		want := "{Response: \"Success\", ActionID: \"rep\", Variable: [\"a=1\" \"b=2\" \"c=3\"], X: \"y\"}"
		if got := r.Response.String(); got != want {
			t.Errorf("response\n got %s\nwant %s", got, want)
		}
	})

	t.Run("ActionKeyIsCaseInsensitive", func(t *testing.T) {
		r := w.request("p13", `{"action":"Ping","ActionID":"lower"}`)
		wantSuccess(t, r)
		if r.Response.value("Ping") != "Pong" || r.Response.value("ActionID") != "lower" {
			t.Errorf("response %v", r.Response)
		}
	})

	t.Run("RequestValuesOnTheWire", func(t *testing.T) {
		r := w.request("p22", `{"Action":"ItProbe","ActionID":"probe-1","S":"text","N":12.50,"B":true,"Z":null,`+
			`"Arr":["x",2,false,null],"Variable":{"B":"2","A":1,"C":null}}`)
		wantSuccess(t, r)
		if r.Response.value("ActionID") != "probe-1" {
			t.Errorf("ActionID not echoed: %v", r.Response)
		}
		var got *amiproto.Message
		select {
		case got = <-w.probes:
		case <-time.After(replyTimeout):
			t.Fatal("ItProbe never reached the PBX")
		}
		if id := got.Get("ActionID"); id == "probe-1" {
			t.Errorf("the requester's ActionID went on the wire; the bridge must use its own")
		}
		var wire []string
		for _, f := range got.Fields() {
			if !strings.EqualFold(f.Key, "ActionID") {
				wire = append(wire, f.Key+": "+f.Value)
			}
		}
		want := []string{"Action: ItProbe", "S: text", "N: 12.50", "B: true", "Arr: x", "Arr: 2", "Arr: false", "Variable: A=1", "Variable: B=2"}
		if strings.Join(wire, "|") != strings.Join(want, "|") {
			t.Errorf("on the wire:\n got %q\nwant %q", wire, want)
		}
	})

	t.Run("Collection", func(t *testing.T) {
		r := w.request("p22", `{"Action":"CoreShowChannels","ActionID":"coll-1"}`)
		wantSuccess(t, r)
		if got := strings.Join(r.keys, ","); got != "server,response,events,complete" {
			t.Errorf("reply keys %s, want server,response,events,complete", got)
		}
		if v := r.Response.value("EventList"); !strings.EqualFold(v, "start") {
			t.Errorf("response EventList = %q, want start", v)
		}
		if v := r.Response.value("ActionID"); v != "coll-1" {
			t.Errorf("response ActionID = %q, want coll-1", v)
		}
		if len(r.Events) != 6 {
			t.Fatalf("%d events, want 6", len(r.Events))
		}
		var names []string
		for i, ev := range r.Events {
			if ev.value("Event") != "CoreShowChannel" {
				t.Errorf("events[%d] is %q, want CoreShowChannel", i, ev.value("Event"))
			}
			if id, ok := ev.get("ActionID"); ok && id != "coll-1" {
				t.Errorf("events[%d] ActionID = %q, want the requester's coll-1", i, id)
			}
			names = append(names, ev.value("Channel"))
		}
		if !sort.StringsAreSorted(names) {
			t.Errorf("entries out of the PBX's order: %q", names)
		}
		c := r.Complete
		if c.value("Event") != "CoreShowChannelsComplete" || c.value("EventList") != "Complete" || c.value("ListItems") != "6" {
			t.Errorf("complete = %v", c)
		}
		if id, ok := c.get("ActionID"); ok && id != "coll-1" {
			t.Errorf("complete ActionID = %q, want coll-1", id)
		}
	})

	for _, c := range []struct {
		server, version, status string
	}{
		{"p22", "Asterisk 22.10.1 built by", "Success"}, // Output: lines
		{"p13", "Asterisk 13.38.3 built by", "Follows"}, // Response: Follows … --END COMMAND--
	} {
		t.Run("CommandOutput/"+c.server, func(t *testing.T) {
			r := w.request(c.server, `{"Action":"Command","Command":"core show version","ActionID":"cmd-`+c.server+`"}`)
			wantSuccess(t, r)
			wantOutput(t, r, c.status, "cmd-"+c.server)
			if !strings.HasPrefix(*r.Output, c.version) || strings.Count(*r.Output, "\n") > 1 {
				t.Errorf("output = %q, want one line starting %q", *r.Output, c.version)
			}

			r = w.request(c.server, `{"Action":"Command","Command":"core show help"}`)
			wantSuccess(t, r)
			wantOutput(t, r, c.status, "")
			if lines := strings.Split(*r.Output, "\n"); len(lines) < 100 || !strings.Contains(*r.Output, "core show version") {
				t.Errorf("core show help: %d lines, want the whole help", len(lines))
			}

			// Lines with colons and "!" separators, one per channel.
			r = w.request(c.server, `{"Action":"Command","Command":"core show channels concise"}`)
			wantSuccess(t, r)
			wantOutput(t, r, c.status, "")
			if got := strings.Count(*r.Output, "Local/long@test-"); got < 4 {
				t.Errorf("core show channels concise: %d channels in %q", got, *r.Output)
			}
		})
	}

	t.Run("CommandErrorKeepsOutput", func(t *testing.T) {
		// Asterisk 22 answers an unknown CLI command with Response: Error
		// and Output lines: a 422 that carries the output.
		r := w.request("p22", `{"Action":"Command","Command":"no such thing","ActionID":"bad-cmd"}`)
		wantCode(t, r, 422)
		if r.Output == nil || !strings.Contains(*r.Output, "No such command") {
			t.Errorf("422 reply without the CLI output: %s", r)
		}
		if r.Response.value("Response") != "Error" || r.Response.value("ActionID") != "bad-cmd" {
			t.Errorf("response = %v", r.Response)
		}
		// Asterisk 13 answers it with Response: Follows: a success.
		r = w.request("p13", `{"Action":"Command","Command":"no such thing"}`)
		wantSuccess(t, r)
		if r.Output == nil || !strings.Contains(*r.Output, "No such command") {
			t.Errorf("Follows reply without the CLI output: %s", r)
		}
	})

	t.Run("422UnknownAction", func(t *testing.T) {
		for _, server := range []string{"p22", "p13"} {
			r := w.request(server, `{"Action":"NoSuchAction","ActionID":"nope-1"}`)
			wantCode(t, r, 422)
			const msg = "Invalid/unknown command: NoSuchAction. Use Action: ListCommands to show available commands."
			if r.Message != msg {
				t.Errorf("%s: error message %q, want Asterisk's %q", server, r.Message, msg)
			}
			if r.Response.value("Response") != "Error" || r.Response.value("Message") != msg || r.Response.value("ActionID") != "nope-1" {
				t.Errorf("%s: response = %v", server, r.Response)
			}
			if strings.Join(r.keys, ",") != "server,error,response" {
				t.Errorf("%s: reply keys %v, want server,error,response", server, r.keys)
			}
		}
	})
}

// wantOutput checks a Command reply: the output as one string, no Output
// fields nor end marker left in it or in the response.
func wantOutput(t *testing.T, r *reply, status, actionID string) {
	t.Helper()
	if r.Output == nil {
		t.Fatalf("Command reply without output: %s", r)
	}
	if !r.has("output") || r.has("events") {
		t.Errorf("reply keys %v", r.keys)
	}
	if _, ok := r.Response.get("Output"); ok {
		t.Errorf("response still holds Output fields: %v", r.Response)
	}
	if got := r.Response.value("Response"); got != status {
		t.Errorf("response Response = %q, want %q", got, status)
	}
	if actionID != "" && r.Response.value("ActionID") != actionID {
		t.Errorf("response ActionID = %q, want %q", r.Response.value("ActionID"), actionID)
	}
	if strings.Contains(*r.Output, "--END COMMAND--") {
		t.Errorf("output holds the end marker: %q", *r.Output)
	}
	if strings.HasSuffix(*r.Output, "\n") {
		t.Errorf("output ends in a newline: %q", *r.Output)
	}
}

// TestActions_ErrorCodes checks the 400, 403, 503 and 504 replies: their
// headers, body and that nothing reaches Asterisk when the bridge
// refuses.
func TestActions_ErrorCodes(t *testing.T) {
	t.Parallel()
	w := newActionWorld(t)

	bad := []struct {
		name, body string
		hdr        []string
	}{
		{"NotJSON", `{"Action":"ItProbe"`, nil},
		{"NotAnObject", `["ItProbe"]`, nil},
		{"Empty", ``, nil},
		{"NoAction", `{"ActionID":"x","Foo":"bar"}`, nil},
		{"ActionNotString", `{"Action":["ItProbe"]}`, nil},
		{"NestedArray", `{"Action":"ItProbe","X":[["a"]]}`, nil},
		{"NestedObject", `{"Action":"ItProbe","Variable":{"A":{"B":"c"}}}`, nil},
		{"CRLFInValue", `{"Action":"ItProbe","X":"a\r\nAction: Logoff"}`, nil},
		{"LFInValue", `{"Action":"ItProbe","X":"a\nb"}`, nil},
		{"CRInValue", `{"Action":"ItProbe","X":"a\rb"}`, nil},
		{"NULInValue", `{"Action":"ItProbe","X":"a\u0000b"}`, nil},
		{"LFInArray", `{"Action":"ItProbe","X":["ok","a\nb"]}`, nil},
		{"LFInVariable", `{"Action":"ItProbe","Variable":{"A":"1\n2"}}`, nil},
		{"LFInKey", `{"Action":"ItProbe","X\nY":"1"}`, nil},
		{"LFInAction", `{"Action":"ItProbe\r\nAction: Logoff"}`, nil},
		{"BadTimeoutHeader", `{"Action":"ItProbe"}`, []string{"Ami-Timeout", "soon"}},
	}
	for _, c := range bad {
		t.Run("400/"+c.name, func(t *testing.T) {
			r := w.request("p22", c.body, c.hdr...)
			wantCode(t, r, 400)
		})
	}
	t.Run("400/NothingReachedAsterisk", func(t *testing.T) {
		// A good probe after the bad ones: it must be the first the PBX
		// saw, or a refused request leaked through.
		r := w.request("p22", `{"Action":"ItProbe","Mark":"first-good"}`)
		wantSuccess(t, r)
		select {
		case m := <-w.probes:
			if m.Get("Mark") != "first-good" {
				t.Fatalf("the PBX received a refused request: %v", m)
			}
		case <-time.After(replyTimeout):
			t.Fatal("the good probe never reached the PBX")
		}
		// Two configured servers on p22, each 1 event + the action sessions.
		if want := 2 * (1 + bridge.DefaultActionSessions); w.p22.Sessions() != want {
			t.Errorf("p22 has %d sessions, want %d (an injected Logoff?)", w.p22.Sessions(), want)
		}
	})

	forbidden := []struct {
		name, server, action string
	}{
		{"Login", "p22", "Login"},
		{"LogoffAnyCase", "p22", "LOGOFF"},
		{"Challenge", "p22", "challenge"},
		{"LoginEvenIfDenyListReplaced", "p13", "Login"},
		{"EventsByDefault", "p22", "Events"},
		{"EventsByDefaultAnyCase", "p22", "events"},
		{"DenyGlob", "p13", "DBGet"},
		{"DenyGlobAnyCase", "p13", "ORIGINATE"},
		{"NotInAllowList", "p22-allow", "Hangup"},
		{"NotInAllowListCommand", "p22-allow", "Command"},
	}
	for _, c := range forbidden {
		t.Run("403/"+c.name, func(t *testing.T) {
			r := w.request(c.server, `{"Action":"`+c.action+`","Secret":"x","ActionID":"f"}`)
			wantCode(t, r, 403)
			if r.has("response") {
				t.Errorf("403 with a response: nothing should have reached Asterisk: %s", r)
			}
		})
	}
	t.Run("403/AllowListLetsThrough", func(t *testing.T) {
		for _, action := range []string{"Ping", "coresettings", "CoreStatus"} {
			wantSuccess(t, w.request("p22-allow", `{"Action":"`+action+`"}`))
		}
		// Deny replaced the default list on p13: DB* and orig* only.
		wantSuccess(t, w.request("p13", `{"Action":"CoreSettings"}`))
	})

	t.Run("NoResponders/PBXDown", func(t *testing.T) {
		w.wantNoResponders("down")
	})

	t.Run("504/AmiTimeoutHeader", func(t *testing.T) {
		begin := time.Now()
		r := w.request("p22", `{"Action":"WaitEvent","ActionID":"slow"}`, "Ami-Timeout", "200ms")
		d := time.Since(begin)
		wantCode(t, r, 504)
		if d < 200*time.Millisecond || d > 5*time.Second {
			t.Errorf("504 after %v, want about 200ms", d)
		}
		// The session survives a timed-out action.
		wantSuccess(t, w.request("p22", `{"Action":"Ping"}`))
	})

	t.Run("504/AmiTimeoutCappedByMax", func(t *testing.T) {
		// p13 caps Ami-Timeout at 300 ms.
		begin := time.Now()
		r := w.request("p13", `{"Action":"WaitEvent"}`, "Ami-Timeout", "1h")
		d := time.Since(begin)
		wantCode(t, r, 504)
		if d > 5*time.Second {
			t.Errorf("504 after %v: Ami-Timeout must be capped by max_action_timeout (300ms)", d)
		}
	})

	t.Run("504/DefaultActionTimeout", func(t *testing.T) {
		begin := time.Now()
		r := w.request("p13", `{"Action":"WaitEvent"}`)
		d := time.Since(begin)
		wantCode(t, r, 504)
		if d < 200*time.Millisecond || d > 5*time.Second {
			t.Errorf("504 after %v, want about action_timeout (200ms)", d)
		}
	})
}

package bridge

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// pbxActionNames returns the action names pbx's ListCommands gives, as it
// spells them: what the test expects the bridge to serve.
func pbxActionNames(t *testing.T, pbx *amitest.Server) []string {
	t.Helper()
	c, err := amiproto.Dial(t.Context(), pbx.URL("admin", testSecret))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.ListCommands(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range resp.Fields() {
		if strings.Contains(f.Value, "(Priv: ") {
			names = append(names, f.Key)
		}
	}
	if len(names) < 50 {
		t.Fatalf("ListCommands of the fake lists %d actions: %v", len(names), names)
	}
	return names
}

// TestNamedAction_ServesEachListedSpelling: every action the PBX's
// ListCommands lists is served on <prefix>.<server>.action.<Action>,
// spelled as listed (IAXpeers, DBGet, not a title-cased guess), with the
// body's Action left out or the same.
func TestNamedAction_ServesEachListedSpelling(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{Channels: 3}))
	r.w.waitAllUp()
	names := pbxActionNames(t, r.pbx)
	for _, want := range []string{"IAXpeers", "DBGet", "Ping", "CoreShowChannels", "Originate"} {
		if !slices.Contains(names, want) {
			t.Fatalf("the fake's ListCommands lacks %s", want)
		}
	}

	for _, body := range []string{"", `{}`, `{"ActionID":"n-1"}`, `{"Action":"Ping","ActionID":"n-1"}`, `{"action":"Ping"}`} {
		m := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Ping"), body, nil)
		rb, _ := decodeReply(t, m)
		if rb.Error != nil || rb.Response["Ping"] != "Pong" {
			t.Fatalf("Ping with body %q: %s", body, m.Data)
		}
		if strings.Contains(body, "n-1") && rb.Response["ActionID"] != "n-1" {
			t.Errorf("Ping with body %q: ActionID not echoed: %s", body, m.Data)
		}
	}
	m := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "CoreShowChannels"), "", nil)
	if rb, _ := decodeReply(t, m); rb.Error != nil || len(rb.Events) != 3 {
		t.Fatalf("CoreShowChannels: %s", m.Data)
	}
	// A listed name that no title-casing gives: it reaches Asterisk.
	m = request(t, r.cc, subjects.NamedAction("ami", "pbx1", "IAXpeers"), "", nil)
	if rb, _ := decodeReply(t, m); rb.Error != nil && rb.Error.Code != subjects.CodeAMIError {
		t.Fatalf("IAXpeers was refused by the bridge: %s", m.Data)
	}
}

// TestNamedAction_RefusesEveryOtherSpelling: a NATS permission on
// ami.pbx1.action.Originate is case-sensitive, Asterisk is not: every
// other case of a listed name, a name not listed, and a body whose Action
// differs from the subject's, even by case, is a 400 and reaches nothing.
func TestNamedAction_RefusesEveryOtherSpelling(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{RecordReceived: true}))
	r.w.waitAllUp()
	const originate = `{"Channel":"Local/100@default","Application":"Echo","Async":true}`
	for _, tc := range []struct{ token, body, want string }{
		{"originate", originate, "use ami.pbx1.action.Originate"},
		{"ORIGINATE", originate, "use ami.pbx1.action.Originate"},
		{"OrigInate", "", "use ami.pbx1.action.Originate"},
		{"NoSuchAction", "", "lists no action"},
		{"Ping", `{"Action":"Originate","Channel":"Local/100@default","Application":"Echo"}`, "differs from the subject's"},
		{"Ping", `{"Action":"ping"}`, "differs from the subject's"},
		{"Originate", `{"Action":"originate","Channel":"Local/100@default","Application":"Echo"}`, "differs from the subject's"},
		{"Originate", `{"Action":" Originate","Channel":"Local/100@default","Application":"Echo"}`, "is not an action name"},
		{"Ping", `[]`, "must be a JSON object"},
	} {
		m := request(t, r.cc, "ami.pbx1.action."+tc.token, tc.body, nil)
		expectCode(t, m, subjects.CodeBadRequest, tc.want)
	}
	// A blank or a wildcard is no token NATS delivers to a name.
	for _, subject := range []string{"ami.pbx1.action. Originate", "ami.pbx1.action.Originate ", "ami.pbx1.action.*"} {
		m, err := r.cc.Request(subject, []byte(originate), waitTime)
		if err == nil {
			expectCode(t, m, subjects.CodeBadRequest, "")
		} else if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrBadSubject) {
			t.Errorf("%q: %v", subject, err)
		}
	}
	// The PBX still answers, and never saw an Originate.
	request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Ping"), "", nil)
	if n := wireActions(r.pbx)["originate"]; n != 0 {
		t.Errorf("the PBX received %d Originate, want none", n)
	}
}

// TestNamedAction_PolicyStillApplies: actions.deny holds on the named
// subject as on the generic one.
func TestNamedAction_PolicyStillApplies(t *testing.T) {
	r := newWorld(t, withServer(func(sc *ServerConfig) { sc.ActionsDeny = []string{"Originate"} }))
	r.w.waitAllUp()
	m := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Originate"), `{"Channel":"Local/100@default","Application":"Echo"}`, nil)
	expectCode(t, m, subjects.CodeForbidden, "")
	m = request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Login"), `{"Username":"x"}`, nil)
	expectCode(t, m, subjects.CodeForbidden, "")
}

// TestNamedAction_WithoutTheGenericSubject: with NamedActionsOnly the
// generic subject has no responders, the named ones serve, and micro's
// INFO lists the endpoints: one per action session, on
// ami.pbx1.action.*, in the queue group.
func TestNamedAction_WithoutTheGenericSubject(t *testing.T) {
	for _, only := range []bool{false, true} {
		r := newWorld(t, withServer(func(sc *ServerConfig) { sc.NamedActionsOnly = only }))
		r.w.waitAllUp()
		if only {
			expectNoResponders(t, r.cc, "pbx1")
		} else {
			request(t, r.cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil)
		}
		m := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Ping"), "", nil)
		if rb, _ := decodeReply(t, m); rb.Error != nil {
			t.Fatalf("named Ping: %s", m.Data)
		}
		m = request(t, r.cc, "$SRV.INFO."+subjects.ServiceName, "", nil)
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, e := range info.Endpoints {
			if e.QueueGroup != subjects.QueueGroup || e.Metadata["server"] != "pbx1" {
				t.Errorf("endpoint %+v", e)
			}
			count[e.Name+" "+e.Subject]++
		}
		want := map[string]int{"pbx1-by-action ami.pbx1.action.*": perPBX - 1}
		if !only {
			want["pbx1 ami.pbx1.action"] = perPBX - 1
		}
		if len(count) != len(want) || !mapsEqual(count, want) {
			t.Errorf("NamedActionsOnly %v: endpoints %v, want %v", only, count, want)
		}
	}
}

func mapsEqual(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return len(a) == len(b)
}

// TestNamedAction_BuiltInNamesWhenListCommandsFails: a PBX that refuses
// ListCommands gets the built-in spellings, and still no other case.
func TestNamedAction_BuiltInNamesWhenListCommandsFails(t *testing.T) {
	r := newWorld(t)
	r.pbx.HandleFunc("ListCommands", func(w *amitest.ResponseWriter, _ *amitest.Request) { w.Error("Permission denied") })
	r.w.waitAllUp()
	m := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Ping"), "", nil)
	if rb, _ := decodeReply(t, m); rb.Error != nil {
		t.Fatalf("named Ping: %s", m.Data)
	}
	expectCode(t, request(t, r.cc, "ami.pbx1.action.PING", "", nil), subjects.CodeBadRequest, "use ami.pbx1.action.Ping")
	if !strings.Contains(r.logs.String(), "built-in") {
		t.Errorf("the fallback was not logged:\n%s", r.logs)
	}
}

// TestBuiltInActionNames_AreTheCaptures: the built-in table is every
// name the captured Asterisk 22 and 13 list, spelled as they list it.
func TestBuiltInActionNames_AreTheCaptures(t *testing.T) {
	want := map[string]string{}
	for _, p := range []amitest.Profile{amitest.Asterisk22, amitest.Asterisk13} {
		for _, n := range pbxActionNames(t, startPBX(t, amitest.Config{Profile: p})) {
			want[strings.ToLower(n)] = n
		}
	}
	got := builtinActionNames()
	if len(got) != len(want) {
		t.Errorf("%d built-in names, want the %d of the captures", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("built-in %q = %q, want %q", k, got[k], v)
		}
	}
}

func TestNamedToken(t *testing.T) {
	for _, tc := range []struct {
		subject, token string
		ok             bool
	}{
		{"ami.pbx1.action.Ping", "Ping", true},
		{"ami.pbx1.action", "", false},
		{"ami.pbx12.action.Ping", "", false},
		{"amix.pbx1.action.Ping", "", false},
		{"ami.pbx1.actions.Ping", "", false},
	} {
		if token, ok := namedToken(tc.subject, "ami", "pbx1"); token != tc.token && ok || ok != tc.ok {
			t.Errorf("namedToken(%q) = %q, %v", tc.subject, token, ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { namedToken("ami.pbx1.action.Ping", "ami", "pbx1") }); n != 0 {
		t.Errorf("namedToken allocates %v times", n)
	}
}

// TestNamedAction_OnlyWhatTheUserMayRun: ListCommands lists only the
// actions of the AMI user's write classes (and those that need none), so
// the per-action subject of another is a 400 that never reaches Asterisk;
// the generic subject sends it, and Asterisk refuses it.
func TestNamedAction_OnlyWhatTheUserMayRun(t *testing.T) {
	r := newWorld(t, withPBX(amitest.Config{Users: map[string]amitest.User{"admin": {Secret: testSecret}}}))
	r.w.waitAllUp()
	m := request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Ping"), "", nil)
	if rb, _ := decodeReply(t, m); rb.Error != nil {
		t.Fatalf("named Ping: %s", m.Data)
	}
	expectCode(t, request(t, r.cc, subjects.NamedAction("ami", "pbx1", "Originate"), `{"Channel":"Local/1@x","Application":"Echo"}`, nil), subjects.CodeBadRequest, "lists no action")
	expectCode(t, request(t, r.cc, subjects.Action("ami", "pbx1"), `{"Action":"Originate","Channel":"Local/1@x","Application":"Echo"}`, nil), subjects.CodeAMIError, "Permission denied")
}

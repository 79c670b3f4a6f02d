package amitest_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

func TestServer_BannerPerProfile(t *testing.T) {
	for _, tc := range []struct {
		profile amitest.Profile
		banner  string
	}{
		{amitest.Asterisk22, "Asterisk Call Manager/11.0.0"},
		{amitest.Asterisk13, "Asterisk Call Manager/2.10.6"},
	} {
		t.Run(tc.profile.String(), func(t *testing.T) {
			srv := start(t, amitest.Config{Profile: tc.profile})
			if got := dial(t, srv.Addr()).banner; got != tc.banner {
				t.Errorf("banner %q, want %q", got, tc.banner)
			}
		})
	}
}

func TestLogin_PlainSendsFullyBootedAndSuccessfulAuth(t *testing.T) {
	for _, tc := range []struct {
		profile     amitest.Profile
		fullyBooted []string
	}{
		{amitest.Asterisk22, []string{"Event", "Privilege", "Uptime", "LastReload", "Status"}},
		{amitest.Asterisk13, []string{"Event", "Privilege", "Status"}},
	} {
		t.Run(tc.profile.String(), func(t *testing.T) {
			srv := start(t, amitest.Config{Profile: tc.profile})
			c := dial(t, srv.Addr())
			c.send("Login", "Username", "admin", "Secret", "s3cret!", "ActionID", "l1")
			resp := c.read()
			if want := []string{"Response", "ActionID", "Message"}; !slices.Equal(keys(resp), want) || resp.Get("Message") != "Authentication accepted" {
				t.Fatalf("login response:\n%s", resp)
			}
			fb := c.read()
			if fb.EventName() != "FullyBooted" || !slices.Equal(keys(fb), tc.fullyBooted) {
				t.Errorf("FullyBooted:\n%s", fb)
			}
			sa := c.read()
			if sa.EventName() != "SuccessfulAuth" || sa.Get("AccountID") != "admin" || !strings.HasPrefix(sa.Get("RemoteAddress"), "IPV4/TCP/127.0.0.1/") {
				t.Errorf("SuccessfulAuth:\n%s", sa)
			}
			if srv.Sessions() != 1 {
				t.Errorf("Sessions() = %d, want 1", srv.Sessions())
			}
		})
	}
}

func TestLogin_EventsOffSendsNoEvents(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	c.send("Ping", "ActionID", "p")
	if m := c.read(); m.Kind() != amiproto.KindResponse || m.ActionID() != "p" {
		t.Fatalf("want the Ping response first, got:\n%s", m)
	}
}

func TestLogin_MD5(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.send("Challenge", "AuthType", "MD5", "ActionID", "ch")
	ch := c.read()
	challenge := ch.Get("Challenge")
	if n, err := strconv.Atoi(challenge); err != nil || len(challenge) != 9 || n <= 0 {
		t.Fatalf("Challenge %q, want 9 digits", challenge)
	}
	c.send("Login", "AuthType", "MD5", "Username", "admin", "Key", md5Key(challenge, "s3cret!"), "Events", "off")
	if resp := c.read(); resp.Get("Message") != "Authentication accepted" {
		t.Fatalf("MD5 login:\n%s", resp)
	}
}

func TestLogin_FailuresWaitThenClose(t *testing.T) {
	const delay = 50 * time.Millisecond
	for _, tc := range []struct {
		name  string
		login func(c *rawClient)
	}{
		{"wrong secret", func(c *rawClient) { c.send("Login", "Username", "admin", "Secret", "nope", "ActionID", "bad") }},
		{"unknown user", func(c *rawClient) { c.send("Login", "Username", "ghost", "Secret", "s3cret!", "ActionID", "bad") }},
		{"wrong md5 key", func(c *rawClient) {
			c.send("Challenge", "AuthType", "MD5")
			c.read()
			c.send("Login", "AuthType", "MD5", "Username", "admin", "Key", md5Key("0", "s3cret!"), "ActionID", "bad")
		}},
		{"md5 without challenge", func(c *rawClient) {
			c.send("Login", "AuthType", "MD5", "Username", "admin", "Key", md5Key("", "s3cret!"), "ActionID", "bad")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := start(t, amitest.Config{AuthFailDelay: delay})
			c := dial(t, srv.Addr())
			begin := time.Now()
			tc.login(c)
			got := c.expectEOF()
			if elapsed := time.Since(begin); elapsed < delay {
				t.Errorf("answered after %v, want at least %v", elapsed, delay)
			}
			if len(got) != 1 || got[0].Name() != "Error" || got[0].Get("Message") != "Authentication failed" || got[0].ActionID() != "bad" {
				t.Fatalf("got %v", got)
			}
		})
	}
}

func TestChallenge_RejectsOtherAuthTypes(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.send("Challenge", "AuthType", "SHA1")
	if m := c.read(); m.Name() != "Error" || m.Get("Message") != "Must specify AuthType" {
		t.Fatalf("got:\n%s", m)
	}
}

func TestSession_ActionsBeforeLoginAreDenied(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	for _, action := range []string{"Ping", "Command", "NoSuchThing", "Originate"} {
		c.send(action, "ActionID", action)
		if m := c.read(); m.Get("Message") != "Permission denied" || m.ActionID() != action {
			t.Errorf("%s before login:\n%s", action, m)
		}
	}
	c.login("admin", "s3cret!", "off")
}

func TestSession_StrayBlankLinesEachGetMissingAction(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	c.writeRaw("\r\n\r\n\n")
	for i := range 3 {
		m := c.read()
		if m.Get("Message") != "Missing action in request" || m.Has("ActionID") {
			t.Fatalf("blank line %d:\n%s", i+1, m)
		}
	}
	c.writeRaw("ActionID: x\r\n\r\n")
	if m := c.read(); m.Get("Message") != "Missing action in request" || m.ActionID() != "x" {
		t.Fatalf("no Action:\n%s", m)
	}
}

func TestSession_UnknownAction(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	c.send("NoSuchThing", "ActionID", "u")
	m := c.read()
	want := "Invalid/unknown command: NoSuchThing. Use Action: ListCommands to show available commands."
	if m.Name() != "Error" || m.Get("Message") != want {
		t.Fatalf("got:\n%s", m)
	}
}

func TestSession_AuthTimeoutClosesSilently(t *testing.T) {
	srv := start(t, amitest.Config{AuthTimeout: 30 * time.Millisecond})
	c := dial(t, srv.Addr())
	if got := c.expectEOF(); len(got) != 0 {
		t.Fatalf("want EOF and nothing else, got %v", got)
	}
}

func TestPing_PongAndTimestamp(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	c.send("Ping", "ActionID", "p1")
	m := c.read()
	if !slices.Equal(keys(m), []string{"Response", "ActionID", "Ping", "Timestamp"}) || m.Get("Ping") != "Pong" {
		t.Fatalf("got:\n%s", m)
	}
	sec, frac, ok := strings.Cut(m.Get("Timestamp"), ".")
	if n, err := strconv.ParseInt(sec, 10, 64); err != nil || !ok || len(frac) != 6 || time.Since(time.Unix(n, 0)) > time.Minute {
		t.Errorf("Timestamp %q", m.Get("Timestamp"))
	}
}

func TestCommand_Asterisk22OutputLines(t *testing.T) {
	srv := start(t, amitest.Config{Channels: 2})
	c := dialLogin(t, srv)
	for _, tc := range []struct {
		command string
		status  string
		output  string
	}{
		{"core show version", "Success", "Asterisk 22.10.1 built by root @ vm on a x86_64 running Linux on 2026-11-26 04:19:55 UTC"},
		{"dialplan  show echo@test", "Success", "[ Context 'test' created by 'pbx_config' ]\n" +
			"  'echo' =>         1. Answer()                                   [extensions.conf:9]\n" +
			"                    2. Wait(2)                                    [extensions.conf:10]\n" +
			"                    3. Hangup()                                   [extensions.conf:11]\n" +
			"\n-= 1 extension (3 priorities) in 1 context. =-"},
		{"this is not a command", "Error", "No such command 'this is not a command' (type 'core show help this is' for other possible commands)"},
		{"core show", "Error", "No such command 'core show' (type 'core show help core show' for other possible commands)"},
		{"core show channels count", "Success", "2 active channels\n1 active call\n0 calls processed"},
	} {
		t.Run(tc.command, func(t *testing.T) {
			c.send("Command", "Command", tc.command, "ActionID", "c")
			m := c.read()
			if m.Name() != tc.status || m.Get("Message") != "Command output follows" || m.Fields()[1].Key != "ActionID" {
				t.Fatalf("got:\n%s", m)
			}
			if out, _ := m.Output(); out != tc.output {
				t.Errorf("output:\n%q\nwant:\n%q", out, tc.output)
			}
		})
	}
	c.send("Command", "ActionID", "none")
	if m := c.read(); m.Name() != "Error" || m.Get("Message") != "No command provided" {
		t.Fatalf("no command:\n%s", m)
	}
}

func TestCommand_Asterisk13FollowsFraming(t *testing.T) {
	srv := start(t, amitest.Config{Profile: amitest.Asterisk13})
	c := dialLogin(t, srv)
	for _, tc := range []struct {
		command string
		raw     string
	}{
		{"database get pbx UUID", "Value: db9323cf-917b-45d3-b3f5-08bde009c360\n"},
		{"core show hints", "There are no registered dialplan hints\n"},
		{"no such command here", "No such command 'no such command here' (type 'core show help no such' for other possible commands)\n"},
	} {
		t.Run(tc.command, func(t *testing.T) {
			c.send("Command", "Command", tc.command, "ActionID", "c13")
			want := "Response: Follows\r\nPrivilege: Command\r\nActionID: c13\r\n" + tc.raw + "--END COMMAND--\r\n\r\n"
			got := make([]byte, len(want))
			c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
			if _, err := readFull(c, got); err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Fatalf("got:\n%q\nwant:\n%q", got, want)
			}
		})
	}
}

func TestCommand_Asterisk13OutputWithColonsAndBlankLines(t *testing.T) {
	srv := start(t, amitest.Config{Profile: amitest.Asterisk13})
	c := dialLogin(t, srv)
	c.send("Command", "Command", "core show settings", "ActionID", "settings")
	m := c.read()
	out, ok := m.Output()
	if !ok || m.Name() != "Follows" {
		t.Fatalf("got:\n%s", m)
	}
	ls := lines(out)
	if ls[0] != "" || ls[1] != "PBX Core settings" || !slices.Contains(ls, "  Version:                     13.38.3") || strings.Count(out, "\n\n") < 2 {
		t.Errorf("output:\n%s", out)
	}
	// The message after the block parses normally.
	c.send("Ping", "ActionID", "after")
	if m := c.read(); m.ActionID() != "after" {
		t.Fatalf("after the Follows block:\n%s", m)
	}
}

func TestCoreShowChannels_ListFraming(t *testing.T) {
	const n = 20000
	srv := start(t, amitest.Config{Channels: n})
	c := dialLogin(t, srv)
	c.send("CoreShowChannels", "ActionID", "csc")
	start := c.read()
	if !slices.Equal(keys(start), []string{"Response", "ActionID", "EventList", "Message"}) || start.Get("Message") != "Channels will follow" {
		t.Fatalf("start:\n%s", start)
	}
	seen := map[string]bool{}
	for i := range n {
		m := c.read()
		if m.EventName() != "CoreShowChannel" || m.Fields()[1] != (amiproto.Field{Key: "ActionID", Value: "csc"}) {
			t.Fatalf("item %d:\n%s", i, m)
		}
		seen[m.Get("Uniqueid")] = true
		if i == 0 && (m.Get("Channel") != "Local/long@test-00000000;1" || m.ChanVariables()["FOO"] != "long0") {
			t.Errorf("first item:\n%s", m)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct Uniqueids, want %d", len(seen), n)
	}
	done := c.read()
	if done.EventName() != "CoreShowChannelsComplete" || done.Get("EventList") != "Complete" || done.Get("ListItems") != strconv.Itoa(n) {
		t.Fatalf("complete:\n%s", done)
	}
}

func TestStatus_ItemsPerProfile(t *testing.T) {
	for _, tc := range []struct {
		profile    amitest.Profile
		accountKey string
		chanVars   int
	}{
		{amitest.Asterisk22, "AccountCode", 2},
		{amitest.Asterisk13, "Accountcode", 0},
	} {
		t.Run(tc.profile.String(), func(t *testing.T) {
			srv := start(t, amitest.Config{Profile: tc.profile, Channels: 4})
			c := dialLogin(t, srv)
			c.send("Status", "Variables", "FOO,BAR,CHANNEL", "ActionID", "st")
			if m := c.read(); m.Get("Message") != "Channel status will follow" {
				t.Fatalf("start:\n%s", m)
			}
			for i := range 4 {
				m := c.read()
				last := m.Fields()[len(m.Fields())-1]
				if m.EventName() != "Status" || m.Get("Privilege") != "Call" || last != (amiproto.Field{Key: "ActionID", Value: "st"}) || !m.Has(tc.accountKey) {
					t.Fatalf("item %d:\n%s", i, m)
				}
				if got := len(m.Values("ChanVariable")); got != tc.chanVars {
					t.Errorf("item %d: %d ChanVariable lines, want %d", i, got, tc.chanVars)
				}
				vars := m.Variables()
				if vars["FOO"] != "long"+strconv.Itoa(i/2) || vars["BAR"] != "(null)" || vars["CHANNEL"] != m.Get("Channel") {
					t.Errorf("item %d variables %v", i, vars)
				}
			}
			done := c.read()
			if done.EventName() != "StatusComplete" || done.Get("ListItems") != "4" || done.Get("Items") != "4" {
				t.Fatalf("complete:\n%s", done)
			}
			c.send("Status", "Channel", "Local/none@test-ffffffff;1", "ActionID", "missing")
			if m := c.read(); m.Get("Message") != "No such channel" {
				t.Fatalf("missing channel:\n%s", m)
			}
		})
	}
}

func TestGetvarSetvarHangup(t *testing.T) {
	srv := start(t, amitest.Config{Channels: 2})
	c := dialLogin(t, srv)
	ch := "Local/long@test-00000000;1"
	steps := []struct {
		action string
		kv     []string
		want   map[string]string
	}{
		{"Getvar", []string{"Channel", ch, "Variable", "FOO"}, map[string]string{"Response": "Success", "Variable": "FOO", "Value": "long0"}},
		{"Getvar", []string{"Channel", ch, "Variable", "CHANNEL(state)"}, map[string]string{"Value": "Up"}},
		{"Setvar", []string{"Channel", ch, "Variable", "BAR", "Value", "set via AMI"}, map[string]string{"Message": "Variable Set"}},
		{"Getvar", []string{"Channel", ch, "Variable", "BAR"}, map[string]string{"Value": "set via AMI"}},
		{"Setvar", []string{"Variable", "GLOBALTEST", "Value", "g1"}, map[string]string{"Message": "Variable Set"}},
		{"Getvar", []string{"Variable", "GLOBAL(GLOBALTEST)"}, map[string]string{"Value": "g1"}},
		{"Getvar", []string{"Variable", "GLOBAL(NOTSET)"}, map[string]string{"Response": "Success", "Value": ""}},
		{"Getvar", []string{"Channel", "Local/doesnotexist@test-00000000;1", "Variable", "FOO"}, map[string]string{"Response": "Error", "Message": "No such channel"}},
		{"Hangup", []string{"Channel", ch}, map[string]string{"Message": "Channel Hungup"}},
		{"Hangup", []string{"Channel", ch}, map[string]string{"Message": "No such channel"}},
		{"Getvar", []string{"Channel", ch, "Variable", "FOO"}, map[string]string{"Message": "No such channel"}},
	}
	for i, st := range steps {
		c.send(st.action, append(st.kv, "ActionID", strconv.Itoa(i))...)
		m := c.read()
		for k, v := range st.want {
			if got, ok := m.Lookup(k); !ok || got != v {
				t.Errorf("step %d %s: %s = %q, want %q\n%s", i, st.action, k, got, v, m)
			}
		}
	}
	c.send("CoreShowChannels", "ActionID", "after-hangup")
	c.read()
	if m := c.read(); m.Get("Channel") != "Local/long@test-00000000;2" {
		t.Errorf("hung-up channel still listed:\n%s", m)
	}
}

func TestSetvar_EmitsVarSet(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "dialplan")
	c.send("Setvar", "Variable", "GLOBALTEST", "Value", "g1", "ActionID", "sv")
	if m := c.readResponse(); m.Get("Message") != "Variable Set" {
		t.Fatalf("got:\n%s", m)
	}
	ev := c.readEvent("VarSet")
	if !slices.Equal(keys(ev), []string{"Event", "Privilege", "Channel", "Uniqueid", "Variable", "Value"}) || ev.Get("Channel") != "none" {
		t.Errorf("VarSet:\n%s", ev)
	}
}

func TestUserEvent_KeepsDuplicateHeadersAndActionID(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "user")
	c.send("UserEvent", "UserEvent", "AmiCustom", "Header1", "one", "Header1", "one again", "X-With-Colon", "a: b: c", "ActionID", "uev-1")
	if m := c.read(); m.Get("Message") != "Event Sent" {
		t.Fatalf("got:\n%s", m)
	}
	ev := c.read()
	want := []amiproto.Field{
		{Key: "Event", Value: "UserEvent"}, {Key: "Privilege", Value: "user,all"}, {Key: "UserEvent", Value: "AmiCustom"},
		{Key: "Header1", Value: "one"}, {Key: "Header1", Value: "one again"}, {Key: "X-With-Colon", Value: "a: b: c"},
		{Key: "ActionID", Value: "uev-1"},
	}
	if !slices.Equal(ev.Fields(), want) {
		t.Errorf("event:\n%s", ev)
	}
}

func TestDB_PutGetDel(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	c.send("DBPut", "Family", "testfam", "Key", "k1", "Val", "val:with:colons", "ActionID", "put")
	if m := c.read(); m.Get("Message") != "Updated database successfully" {
		t.Fatalf("DBPut:\n%s", m)
	}
	c.send("DBGet", "Family", "testfam", "Key", "k1", "ActionID", "get")
	c.read()
	item := c.read()
	if item.EventName() != "DBGetResponse" || item.Get("Val") != "val:with:colons" || item.Fields()[len(item.Fields())-1].Key != "ActionID" {
		t.Fatalf("DBGetResponse:\n%s", item)
	}
	if done := c.read(); done.EventName() != "DBGetComplete" || done.Get("ListItems") != "1" {
		t.Fatalf("DBGetComplete:\n%s", done)
	}
	c.send("DBDel", "Family", "testfam", "Key", "k1")
	if m := c.read(); m.Get("Message") != "Key deleted successfully" {
		t.Fatalf("DBDel:\n%s", m)
	}
	c.send("DBGet", "Family", "testfam", "Key", "k1")
	if m := c.read(); m.Get("Message") != "Database entry not found" {
		t.Fatalf("DBGet after delete:\n%s", m)
	}
}

func TestEvents_ActionAndMasks(t *testing.T) {
	for _, tc := range []struct {
		mask       string
		answer     string
		wantEvents []string // names received from one call and one UserEvent
	}{
		{"on", "On", nil},
		{"user", "On", []string{"UserEvent"}},
		{"cdr", "On", []string{"Cdr", "Cdr"}},
		{"bogusclass", "Off", []string{}},
		{"off", "Off", []string{}},
	} {
		t.Run(tc.mask, func(t *testing.T) {
			srv := start(t, amitest.Config{})
			c := dialLogin(t, srv)
			c.send("Events", "EventMask", tc.mask, "ActionID", "ev")
			if m := c.read(); m.Get("Events") != tc.answer || m.Has("Message") {
				t.Fatalf("Events answer:\n%s", m)
			}
			srv.PlayCall(amitest.CallSpec{})
			c.send("UserEvent", "UserEvent", "Probe")
			c.send("Ping", "ActionID", "end")
			var got []string
			for {
				m := c.read()
				if m.ActionID() == "end" {
					break
				}
				if m.Kind() == amiproto.KindEvent {
					got = append(got, m.EventName())
				}
			}
			if tc.wantEvents == nil {
				if len(got) != 23 {
					t.Errorf("got %d events, want 23: %v", len(got), got)
				}
				return
			}
			if !slices.Equal(got, tc.wantEvents) {
				t.Errorf("events %v, want %v", got, tc.wantEvents)
			}
		})
	}
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	c.send("Events")
	if m := c.read(); m.Get("Message") != "Invalid event mask" {
		t.Fatalf("no mask:\n%s", m)
	}
}

func TestReadonlyUser_OnlyPrivilegeFreeActions(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("readonly", "ro", "security")
	c.send("Ping", "ActionID", "p")
	if m := c.readResponse(); m.Name() != "Success" {
		t.Fatalf("Ping:\n%s", m)
	}
	c.send("Originate", "Channel", "Local/echo@test", "ActionID", "o")
	if m := c.readResponse(); m.Get("Message") != "Permission denied" {
		t.Fatalf("Originate:\n%s", m)
	}
	ev := c.readEvent("RequestNotAllowed")
	if ev.Get("RequestType") != "Action: Originate" || ev.Get("AccountID") != "readonly" {
		t.Errorf("RequestNotAllowed:\n%s", ev)
	}
}

func TestEmit_ReachesSessionsWithEventsOn(t *testing.T) {
	srv := start(t, amitest.Config{})
	on := dial(t, srv.Addr())
	on.login("admin", "s3cret!", "on")
	off := dialLogin(t, srv)
	if srv.Sessions() != 2 {
		t.Fatalf("Sessions() = %d, want 2", srv.Sessions())
	}
	srv.Emit(amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "Custom"}, amiproto.Field{Key: "Privilege", Value: "call,all"}, amiproto.Field{Key: "X", Value: "1"}))
	if ev := on.readEvent("Custom"); ev.Get("X") != "1" {
		t.Errorf("event:\n%s", ev)
	}
	off.send("Ping", "ActionID", "p")
	if m := off.read(); m.ActionID() != "p" {
		t.Errorf("events-off session got:\n%s", m)
	}
}

func TestHandle_CustomAndOverride(t *testing.T) {
	srv := start(t, amitest.Config{})
	srv.HandleFunc("Reload", func(w *amitest.ResponseWriter, r *amitest.Request) {
		w.Success("Message", "Module Reloaded")
		w.Flush()
		ev := &amiproto.Message{}
		r.Server().Emit(ev.Add("Event", "Reload").Add("Privilege", "system,all").Add("Module", r.Get("Module")))
	})
	srv.HandleFunc("ping", func(w *amitest.ResponseWriter, r *amitest.Request) {
		w.List("Pongs will follow", "PongComplete", []*amiproto.Message{
			amiproto.NewMessage(amiproto.Field{Key: "Event", Value: "Pong"}, amiproto.Field{Key: "N", Value: "1"}),
		})
	})
	srv.Handle("CoreStatus", nil)
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "on")
	c.send("Reload", "Module", "pbx_config", "ActionID", "r")
	if m := c.readResponse(); m.Get("Message") != "Module Reloaded" || m.ActionID() != "r" {
		t.Fatalf("Reload:\n%s", m)
	}
	if ev := c.readEvent("Reload"); ev.Get("Module") != "pbx_config" {
		t.Errorf("Reload event:\n%s", ev)
	}
	c.send("Ping", "ActionID", "p")
	c.readResponse()
	if m := c.read(); m.EventName() != "Pong" || m.Fields()[1].Key != "ActionID" {
		t.Errorf("list item:\n%s", m)
	}
	if m := c.read(); m.EventName() != "PongComplete" || m.Get("ListItems") != "1" {
		t.Errorf("list complete:\n%s", m)
	}
	c.send("CoreStatus", "ActionID", "cs")
	if m := c.readResponse(); !strings.HasPrefix(m.Get("Message"), "Invalid/unknown command: CoreStatus.") {
		t.Errorf("removed action:\n%s", m)
	}
}

func TestServer_URLRoundTripsThroughParseURL(t *testing.T) {
	srv := start(t, amitest.Config{})
	for _, secret := range []string{"s3cret!", "p@ss:word/%", "sp ace"} {
		ep, err := amiproto.ParseURL(srv.URL("us:er", secret))
		if err != nil || ep.User != "us:er" || ep.Secret != secret || ep.Addr != srv.Addr() || ep.TLS {
			t.Errorf("URL(%q) parses to %+v, %v", secret, ep, err)
		}
	}
}

func TestServer_TLSSelfSigned(t *testing.T) {
	cert, _, err := amitest.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, amitest.Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if !strings.HasPrefix(srv.URL("admin", "s3cret!"), "tls://") {
		t.Fatalf("URL %q", srv.URL("admin", "s3cret!"))
	}
	conn, err := tls.Dial("tcp", srv.Addr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &rawClient{t: t, conn: conn, rd: amiproto.NewReader(conn)}
	conn.SetDeadline(time.Now().Add(ioTimeout))
	if c.banner, err = c.rd.ReadBanner(); err != nil || c.banner != "Asterisk Call Manager/11.0.0" {
		t.Fatalf("banner %q, %v", c.banner, err)
	}
	c.login("admin", "s3cret!", "security")
	if ev := c.readEvent("SuccessfulAuth"); !strings.HasPrefix(ev.Get("LocalAddress"), "IPV4/TLS/") {
		t.Errorf("SuccessfulAuth over TLS:\n%s", ev)
	}
}

func TestServer_DropConnectionsKeepsListening(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	srv.DropConnections()
	if got := c.expectEOF(); len(got) != 0 {
		t.Errorf("got %v before EOF", got)
	}
	dialLogin(t, srv)
}

func TestServer_CloseEndsSessionsAndGenerators(t *testing.T) {
	srv, err := amitest.Start(amitest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := dialLogin(t, srv)
	calls := srv.StartCalls(context.Background(), 0, 0)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := calls.Wait(); err != amitest.ErrServerClosed {
		t.Errorf("generator stopped with %v, want ErrServerClosed", err)
	}
	c.expectEOF()
	if _, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		t.Error("still listening after Close")
	}
}

// readFull reads exactly len(b) raw bytes from the socket, bypassing the
// Reader, which must have nothing buffered.
func readFull(c *rawClient, b []byte) (int, error) {
	if c.rd.Buffered() != 0 {
		c.t.Fatalf("the Reader holds %d unread bytes", c.rd.Buffered())
	}
	n := 0
	for n < len(b) {
		m, err := c.conn.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestQueueRuleAndQueues_Quirks(t *testing.T) {
	for _, tc := range []struct {
		profile amitest.Profile
		queues  string // what Action: Queues gets
	}{
		{amitest.Asterisk22, "Response: Error\r\nActionID: q\r\nMessage: Invalid/unknown command: Queues. Use Action: ListCommands to show available commands.\r\n\r\n"},
		{amitest.Asterisk13, "support has 0 calls (max unlimited) in 'ringall' strategy (0s holdtime, 4s talktime), W:0, C:1, A:0, SL:100.0% within 0s\r\n"},
	} {
		t.Run(tc.profile.String(), func(t *testing.T) {
			srv := start(t, amitest.Config{Profile: tc.profile})
			c := dialLogin(t, srv)
			c.send("QueueRule", "ActionID", "qr")
			want := "Response: Success\r\nActionID: qr\r\n\r\n\r\n"
			got := make([]byte, len(want))
			if _, err := readFull(c, got); err != nil || string(got) != want {
				t.Fatalf("QueueRule: %q, %v", got, err)
			}
			c.send("Queues", "ActionID", "q")
			got = make([]byte, len(tc.queues))
			if _, err := readFull(c, got); err != nil || string(got) != tc.queues {
				t.Fatalf("Queues: %q, %v", got, err)
			}
		})
	}
}

func TestLogf_NeverLogsSecrets(t *testing.T) {
	var mu sync.Mutex
	var logs []string
	srv := start(t, amitest.Config{
		Users: map[string]amitest.User{"admin": {Secret: "TopSecret123", Write: true}},
		Logf: func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			logs = append(logs, fmt.Sprintf(format, args...))
		},
	})
	bad := dial(t, srv.Addr())
	bad.send("Login", "Username", "admin", "Secret", "TopSecret124")
	bad.expectEOF()
	good := dial(t, srv.Addr())
	good.login("admin", "TopSecret123", "off")
	good.send("Logoff")
	good.expectEOF()
	mu.Lock()
	defer mu.Unlock()
	if len(logs) == 0 {
		t.Fatal("nothing logged")
	}
	for _, l := range logs {
		if strings.Contains(l, "TopSecret") {
			t.Errorf("log line holds a secret: %q", l)
		}
	}
}

func TestEmitRaw_SendsBytesAsTheyAre(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "on")
	c.readEvent("SuccessfulAuth")
	srv.EmitRaw([]byte("Event: Raw\r\nNo colon line\r\n\r\n"))
	m := c.read()
	if m.EventName() != "Raw" || m.Fields()[1] != (amiproto.Field{Value: "No colon line"}) {
		t.Fatalf("got %q", m.Fields())
	}
}

func TestServer_ShutdownSendsEventThenCloses(t *testing.T) {
	srv := start(t, amitest.Config{})
	on := dial(t, srv.Addr())
	on.login("admin", "s3cret!", "system")
	on.readEvent("FullyBooted")
	off := dialLogin(t, srv)
	anon := dial(t, srv.Addr())
	srv.Shutdown(false)
	got := on.expectEOF()
	if len(got) != 1 || got[0].EventName() != "Shutdown" || got[0].Get("Shutdown") != "Cleanly" || got[0].Get("Restart") != "False" {
		t.Fatalf("events-on session got %v", got)
	}
	if got := off.expectEOF(); len(got) != 0 {
		t.Errorf("events-off session got %v", got)
	}
	if got := anon.expectEOF(); len(got) != 0 {
		t.Errorf("unauthenticated session got %v", got)
	}
	dialLogin(t, srv)
}

func TestServer_RequireMD5RefusesAPlainSecretAndRecordsTheWire(t *testing.T) {
	srv := start(t, amitest.Config{RequireMD5: true, RecordReceived: true})
	c := dial(t, srv.Addr())
	c.send("Login", "Username", "admin", "Secret", "s3cret!")
	if m := c.readResponse(); m.Name() != "Error" || m.Get("Message") != "Authentication failed" {
		t.Fatalf("plain login:\n%s", m)
	}
	c.expectEOF()
	if got := string(srv.Received()); !strings.Contains(got, "Secret: s3cret!\r\n") {
		t.Fatalf("Received() = %q, want the plain login", got)
	}
	if srv.Sessions() != 0 {
		t.Fatalf("%d sessions logged in", srv.Sessions())
	}
	if start(t, amitest.Config{}).Received() != nil {
		t.Fatal("Received() records without RecordReceived")
	}
}

// TestSession_LeadingBytesBelow0x21AreSkipped: Asterisk's ast_skip_blanks
// drops every byte below 0x21 at the start of a header value, so an action
// name behind a blank, a tab or a control byte still runs.
func TestSession_LeadingBytesBelow0x21AreSkipped(t *testing.T) {
	srv := start(t, amitest.Config{})
	c := dialLogin(t, srv)
	for i, prefix := range []string{" ", "\t", "\x01 \x1f", "\v\f"} {
		id := strconv.Itoa(i)
		c.writeRaw("Action: " + prefix + "pInG\r\nActionID: " + id + "\r\n\r\n")
		if m := c.read(); m.Get("Ping") != "Pong" || m.Get("ActionID") != id {
			t.Fatalf("prefix %q: got:\n%s", prefix, m)
		}
	}
}

func TestGetConfig_ManagerConfHoldsTheUsersSecrets(t *testing.T) {
	srv := start(t, amitest.Config{Users: map[string]amitest.User{
		"admin":    {Secret: "s3cret!", Write: true},
		"readonly": {Secret: "ro"},
	}})
	c := dialLogin(t, srv)
	c.send("GetConfig", "ActionID", "g1", "Filename", "manager.conf")
	m := c.read()
	want := []amiproto.Field{
		{Key: "Response", Value: "Success"}, {Key: "ActionID", Value: "g1"},
		{Key: "Category-000000", Value: "general"},
		{Key: "Line-000000-000000", Value: "enabled=yes"},
		{Key: "Line-000000-000001", Value: "port=5038"},
		{Key: "Line-000000-000002", Value: "bindaddr=127.0.0.1"},
		{Key: "Category-000001", Value: "admin"},
		{Key: "Line-000001-000000", Value: "secret=s3cret!"},
		{Key: "Line-000001-000001", Value: "read=all"},
		{Key: "Line-000001-000002", Value: "write=all"},
		{Key: "Category-000002", Value: "readonly"},
		{Key: "Line-000002-000000", Value: "secret=ro"},
		{Key: "Line-000002-000001", Value: "read=all"},
		{Key: "Line-000002-000002", Value: "write="},
	}
	if !slices.Equal(m.Fields(), want) {
		t.Fatalf("got:\n%s", m)
	}
	c.send("GetConfig", "Filename", "manager.conf", "Category", "readonly")
	if m := c.read(); m.Get("Category-000000") != "readonly" || m.Get("Line-000000-000000") != "secret=ro" || m.Has("Category-000001") {
		t.Fatalf("one category:\n%s", m)
	}
	for file, msg := range map[string]string{"": "Filename not specified", "sip.conf": "Config file not found"} {
		c.send("GetConfig", "Filename", file)
		if m := c.read(); m.Name() != "Error" || m.Get("Message") != msg {
			t.Fatalf("Filename %q: got:\n%s", file, m)
		}
	}
}

// TestListCommands_OnlyWhatTheUserMayRun: as Asterisk's
// action_listcommands, a user without write classes sees only the
// actions that need none; one with them sees every action.
func TestListCommands_OnlyWhatTheUserMayRun(t *testing.T) {
	srv := start(t, amitest.Config{})
	for _, tc := range []struct {
		user, secret string
		originate    bool
	}{{"admin", "s3cret!", true}, {"readonly", "ro", false}} {
		c := dial(t, srv.Addr())
		c.login(tc.user, tc.secret, "off")
		c.send("ListCommands", "ActionID", "l")
		m := c.readResponse()
		if m.Get("Ping") == "" || m.Has("Originate") != tc.originate {
			t.Errorf("%s: Ping %q, Originate listed %v, want %v", tc.user, m.Get("Ping"), m.Has("Originate"), tc.originate)
		}
		for _, f := range m.Fields() {
			if f.Key != "Response" && f.Key != "ActionID" && !tc.originate && !strings.Contains(f.Value, "(Priv: <none>)") {
				t.Errorf("%s: %s listed: %s", tc.user, f.Key, f.Value)
			}
		}
	}
}

// EmitRawInline from several goroutines, mixed with EmitRaw, gives every
// event once, each emitter's in its order: an event never overtakes one
// of the same emitter that waits in the queue or is being written.
func TestEmitRawInline_KeepsEachEmittersOrder(t *testing.T) {
	const n = 3000
	srv := start(t, amitest.Config{})
	c := dial(t, srv.Addr())
	c.login("admin", "s3cret!", "on")
	c.readEvent("SuccessfulAuth")
	names := []string{"Queued", "InlineA", "InlineB", "InlineC"}
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() { // the test waits for it below
			defer wg.Done()
			emit := srv.EmitRawInline
			if name == "Queued" {
				emit = srv.EmitRaw
			}
			for i := range n {
				emit([]byte(fmt.Sprintf("Event: %s\r\nN: %d\r\n\r\n", name, i)))
			}
		}()
	}
	next := map[string]int{}
	for range len(names) * n {
		m := c.read()
		name := m.EventName()
		if got := m.Get("N"); got != strconv.Itoa(next[name]) {
			t.Fatalf("%s N %s, want %d", name, got, next[name])
		}
		next[name]++
	}
	wg.Wait()
	for _, name := range names {
		if next[name] != n {
			t.Fatalf("got %v", next)
		}
	}
}

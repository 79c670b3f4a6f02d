package bridge

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// twoUsersNATS runs a nats-server whose users split the bridge's work as
// Options.ServiceConn does: "main" may publish events and statuses but
// not subscribe to requests; "svc" may subscribe to requests and $SRV
// but publish only to inboxes other than main's; "client" may do all.
// A step on the wrong connection is refused by NATS.
func twoUsersNATS(t *testing.T) *server.Server {
	t.Helper()
	users := []*server.User{
		{Username: "main", Password: "main-pass", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"ami.*.event.>", "ami.*.status"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.main.>", "ami.*.action", "ami.*.action.*"}},
		}},
		{Username: "svc", Password: "svc-pass", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"_INBOX.>"}, Deny: []string{"_INBOX.main.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"ami.*.action", "ami.*.action.*", "$SRV.>"}},
		}},
		{Username: "client", Password: "client-pass"},
	}
	return natstest.Start(t, natstest.Options{Users: users})
}

// connectAs connects as user, with an inbox prefix of _INBOX.<user>, and
// collects the asynchronous errors NATS reports (permissions violations).
func connectAs(t *testing.T, ns *server.Server, user string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 64)
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(user, user+"-pass"), nats.CustomInboxPrefix("_INBOX."+user),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// TestServiceConn_EndpointsOnServiceEventsOnMain runs a bridge with a
// service connection under users that allow each step on one connection
// only: requests are answered (only svc may subscribe to them), events
// and statuses arrive (only main may publish them), $SRV answers on an
// inbox, and $SRV aimed at an event subject or at main's inbox publishes
// nothing. Neither connection hits a permissions violation of its own.
func TestServiceConn_EndpointsOnServiceEventsOnMain(t *testing.T) {
	ns := twoUsersNATS(t)
	mainNC, mainErrs := connectAs(t, ns, "main")
	svcNC, svcErrs := connectAs(t, ns, "svc")
	cc, _ := connectAs(t, ns, "client")
	pbx := startPBX(t, amitest.Config{})
	w := watchStatus(t, cc, "ami", "pbx1")
	events := eventSub(t, cc, "ami")
	sniff, err := cc.SubscribeSync("ami.pbx1.event.Hangup")
	if err != nil {
		t.Fatal(err)
	}
	sniffMain, err := cc.SubscribeSync("_INBOX.main.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Flush(); err != nil {
		t.Fatal(err)
	}
	sc := fastServer("pbx1", pbx)
	sc.ActionSessions = 1
	b, _ := startBridge(t, mainNC, []ServerConfig{sc}, Options{ServiceConn: svcNC})
	w.waitAllUp() // a status: published on main

	m := request(t, cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil)
	if r, _ := decodeReply(t, m); r.Error != nil || r.Response["Ping"] != "Pong" {
		t.Fatalf("Ping reply %s, want Pong", m.Data)
	}

	pbx.Emit(userEvent("through-main", 1))
	for {
		ev, err := events.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("no UserEvent: %v", err)
		}
		if strings.Contains(string(ev.Data), "through-main") {
			break
		}
	}

	// micro's $SRV handlers aimed where the service user may not publish.
	for _, subj := range []string{"$SRV.PING", "$SRV.INFO." + subjects.ServiceName, "$SRV.STATS"} {
		for _, reply := range []string{"ami.pbx1.event.Hangup", "_INBOX.main.hijack"} {
			if err := cc.PublishMsg(&nats.Msg{Subject: subj, Reply: reply}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Sent after them, answered on the client's inbox by the same
	// connection: the refused answers went out before it.
	m, err = cc.Request("$SRV.PING."+subjects.ServiceName, nil, waitTime)
	if err != nil {
		t.Fatalf("$SRV.PING: %v", err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(m.Data, &ping); err != nil || ping.Name != subjects.ServiceName {
		t.Fatalf("$SRV.PING reply %s (%v)", m.Data, err)
	}
	for _, s := range []*nats.Subscription{sniff, sniffMain} {
		if n, _, _ := s.Pending(); n != 0 {
			m, _ := s.NextMsg(0)
			t.Errorf("micro's answer reached %s: %s", m.Subject, m.Data)
		}
	}
	// The six answers were tried on the service connection, and refused.
	for range 6 {
		select {
		case err := <-svcErrs:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "Publish") {
				t.Errorf("service connection error %v, want only refused publishes", err)
			}
		case <-time.After(waitTime):
			t.Fatal("fewer than six of micro's answers were refused on the service connection")
		}
	}
	if len(mainErrs) > 0 {
		t.Errorf("the main connection hit %v", <-mainErrs)
	}
	if st := b.Stats()[0]; st.EventsPublished == 0 {
		t.Errorf("Stats: no event published")
	}
}

// TestServiceConn_RepliesNeverUnderEitherInbox: a reply subject under
// the service connection's inbox prefix is refused as one under the main
// connection's is, and New wants both prefixes custom.
func TestServiceConn_RepliesNeverUnderEitherInbox(t *testing.T) {
	r, err := newReplyRule(nil, "ami", "_INBOX.main", "_INBOX.svc")
	if err != nil {
		t.Fatal(err)
	}
	for reply, want := range map[string]bool{
		"_INBOX.main.x": false,
		"_INBOX.svc.x":  false,
		"_INBOX.crm.x":  true,
	} {
		if got := r.allows(reply); got != want {
			t.Errorf("allows(%q) = %v, want %v", reply, got, want)
		}
	}
	main := &nats.Conn{Opts: nats.Options{InboxPrefix: subjects.InboxPrefix}}
	plain := &nats.Conn{}
	sc := []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}
	if _, err := New(main, sc, Options{ServiceConn: plain}); err == nil || !strings.Contains(err.Error(), "nats.CustomInboxPrefix") {
		t.Errorf("New with a service connection on the default inbox prefix: %v, want an error", err)
	}
	if _, err := New(main, sc, Options{ServiceConn: main}); err != nil {
		t.Errorf("New with the main connection as the service one: %v", err)
	}
}

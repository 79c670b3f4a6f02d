package bridge

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

func TestCheckReplyPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix, subjectPrefix string
		why                   string // "" when allowed
	}{
		{"_INBOX", "ami", ""},
		{"_INBOX.crm", "ami", ""},
		{"crm_inbox", "ami", ""},
		{"amix", "ami", ""},        // another token than ami
		{"ami_replies", "ami", ""}, // likewise
		{"", "ami", "empty"},
		{"$", "ami", "belong to NATS"},
		{"$JS", "ami", "belong to NATS"},
		{"$JS.API", "ami", "belong to NATS"},
		{"$KV.ami_bridge_leases", "ami", "belong to NATS"},
		{"$SYS", "ami", "belong to NATS"},
		{"$SRV", "ami", "belong to NATS"},
		{"ami", "ami", "bridge's own subjects"},
		{"ami.pbx1", "ami", "bridge's own subjects"},
		{"acme", "acme.ami", "bridge's own subjects"},
		{"ami.", "ami", "empty token"},
		{".x", "ami", "empty token"},
		{"a..b", "ami", "empty token"},
		{"_INBOX.*", "ami", "wildcard"},
		{"_INBOX.>", "ami", "wildcard"},
		{"_INBOX crm", "ami", "blank"},
		{subjects.InboxPrefix, "ami", "own inbox prefix"},
		{subjects.InboxPrefix + ".x", "ami", "own inbox prefix"},
	} {
		err := checkReplyPrefix(tc.prefix, tc.subjectPrefix, subjects.InboxPrefix)
		switch {
		case tc.why == "" && err != nil:
			t.Errorf("checkReplyPrefix(%q, %q): %v, want nil", tc.prefix, tc.subjectPrefix, err)
		case tc.why != "" && (err == nil || !strings.Contains(err.Error(), tc.why)):
			t.Errorf("checkReplyPrefix(%q, %q): %v, want an error saying %q", tc.prefix, tc.subjectPrefix, err, tc.why)
		}
	}
}

func TestReplyRule_Allows(t *testing.T) {
	r, err := newReplyRule([]string{"crm_inbox"}, "ami", subjects.InboxPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for reply, want := range map[string]bool{
		"_INBOX.abc":                       true,
		"_INBOX.crm.abc.1":                 true,
		"crm_inbox.abc":                    true,
		"_INBOX":                           false, // the prefix alone is no inbox
		"_INBOX.":                          false,
		"crm_inbox":                        false,
		"crm_inboxes.abc":                  false,
		subjects.InboxPrefix + ".abc.1":    false, // the bridge's own: its JetStream acks
		"$JS.API.STREAM.PURGE.AMI_EVENTS":  false,
		"$JS.API.STREAM.DELETE.AMI_EVENTS": false,
		"$KV.ami_bridge_leases.pbx1":       false,
		"$SYS.REQ.SERVER.PING":             false,
		"$SRV.PING":                        false,
		"ami.pbx1.event.Hangup":            false,
		"ami.pbx1.status":                  false,
		"_INBOX..x":                        false,
		"_INBOX.x.":                        false,
		"_INBOX.*":                         false,
		"_INBOX.>":                         false,
		"other.subject":                    false,
		"_INBOX.x\x00":                     false,
	} {
		if got := r.allows(reply); got != want {
			t.Errorf("allows(%q) = %v, want %v", reply, got, want)
		}
	}
}

// TestNew_RefusesTheDefaultInboxPrefix: with nats.go's default inbox
// prefix, the bridge's own inboxes (JetStream acks, KV requests) look
// like any requester's, so New refuses the connection and says how to fix
// it; a reply prefix that would answer on NATS's or the bridge's own
// subjects is refused by name.
func TestNew_RefusesTheDefaultInboxPrefix(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	plain, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	sc := []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}
	if _, err := New(plain, sc, Options{}); err == nil || !strings.Contains(err.Error(), "nats.CustomInboxPrefix(subjects.InboxPrefix)") {
		t.Errorf("New with the default inbox prefix: %v, want an error naming nats.CustomInboxPrefix", err)
	}
	_, err = New(connect(t, ns), sc, Options{ReplyPrefixes: []string{"crm_inbox", "$JS.API", "ami.pbx1"}})
	if err == nil || !strings.Contains(err.Error(), `ReplyPrefixes[1]: "$JS.API"`) || !strings.Contains(err.Error(), `ReplyPrefixes[2]: "ami.pbx1"`) ||
		strings.Contains(err.Error(), "crm_inbox") {
		t.Errorf("New with reply prefixes $JS.API and ami.pbx1: %v, want both named, and only them", err)
	}
}

// TestAction_ReplyNotAnInboxIsDroppedUnanswered aims requests' replies
// where a hostile requester would: at the inbox of the bridge's own
// JetStream publish acks (read off an event, where every subscriber sees
// it), at the JetStream API to purge the event stream, at an event
// subject. None is run or answered: the PBX never sees the action, no
// answer shows on those subjects, the stream keeps its messages, and
// Stats counts each one.
func TestAction_ReplyNotAnInboxIsDroppedUnanswered(t *testing.T) {
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withPBX(amitest.Config{RecordReceived: true}), withServer(func(sc *ServerConfig) {
		sc.EventsInclude = []string{"UserEvent"}
		sc.ActionSessions = 1 // one queue: a request answered means the ones before were handled
	}), withOptions(Options{JetStream: JetStreamOptions{Enabled: true}}))
	nc, cc, pbx, b, logs := tw.nc, tw.cc, tw.pbx, tw.b, tw.logs
	waitStats(t, b, 0, func(st Stats) bool { return st.Up })
	waitSessions(t, pbx, 2)

	events, err := cc.SubscribeSync(subjects.AllEvents("ami"))
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the bridge's connection publishes on its own inboxes, and
	// on an event subject, shows here.
	sniffOwn, err := cc.SubscribeSync(nc.Opts.InboxPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	sniffEvent, err := cc.SubscribeSync("ami.pbx1.event.Hangup")
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Flush(); err != nil {
		t.Fatal(err)
	}
	const stored = 5
	for i := 1; i <= stored; i++ {
		pbx.Emit(userEvent("stored", i))
	}
	ev, err := events.NextMsg(waitTime)
	if err != nil {
		t.Fatal(err)
	}
	ackInbox := ev.Reply
	if !strings.HasPrefix(ackInbox, nc.Opts.InboxPrefix+".") {
		t.Fatalf("event reply subject %q: want the bridge's JetStream ack inbox", ackInbox)
	}
	waitStats(t, b, 0, func(st Stats) bool { return st.EventsPublished == stored })

	hijacks := []string{
		ackInbox,
		"$JS.API.STREAM.PURGE." + DefaultStream,
		"$JS.API.STREAM.DELETE." + DefaultStream,
		"ami.pbx1.event.Hangup",
		"_INBOX.>",
	}
	for i, reply := range hijacks {
		m := nats.NewMsg(subjects.Action("ami", "pbx1"))
		m.Reply = reply
		m.Data = []byte(`{"Action":"UserEvent","UserEvent":"hijack` + strings.Repeat("x", i) + `"}`)
		m.Header.Set(subjects.HeaderStream, "true") // the empty terminator is a valid purge request
		if err := cc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// Answered after the hijacks, on the one action session.
	if m := request(t, cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil); m.Header.Get(micro.ErrorCodeHeader) != "" {
		t.Fatalf("Ping after the hijacks: %s", m.Data)
	}

	if st := b.Stats()[0]; st.RepliesRefused != uint64(len(hijacks)) {
		t.Errorf("RepliesRefused = %d, want %d", st.RepliesRefused, len(hijacks))
	}
	if got := pbx.Received(); bytes.Contains(got, []byte("hijack")) {
		t.Errorf("the PBX received a hijacking request:\n%s", got)
	}
	// The bridge writes in order on one connection: an answer to a
	// hijack would have reached cc before the Ping's reply.
	for n, _, _ := sniffOwn.Pending(); n > 0; n, _, _ = sniffOwn.Pending() {
		m, err := sniffOwn.NextMsg(waitTime)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(m.Data, []byte(`"server"`)) || m.Header.Get(micro.ErrorCodeHeader) != "" || len(m.Data) == 0 {
			t.Errorf("an answer reached the bridge's own inbox %s: %q", m.Subject, m.Data)
		}
	}
	if n, _, _ := sniffEvent.Pending(); n != 0 {
		m, _ := sniffEvent.NextMsg(waitTime)
		t.Errorf("an answer was published on an event subject: %q", m.Data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	js, err := jetstream.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatalf("the stream is gone: %v", err)
	}
	if n := stream.CachedInfo().State.Msgs; n != stored {
		t.Errorf("the stream holds %d messages, want the %d stored", n, stored)
	}
	if !strings.Contains(logs.String(), "its reply subject is not an inbox") {
		t.Errorf("no warning in the log:\n%s", logs)
	}
}

// BenchmarkReplyRule_Allows is the check every request pays before
// anything else.
func BenchmarkReplyRule_Allows(b *testing.B) {
	r, err := newReplyRule([]string{"crm_inbox"}, "ami", subjects.InboxPrefix)
	if err != nil {
		b.Fatal(err)
	}
	reply := "crm_inbox.1xCwrXsWJFAaaNkhMK1n3L.7f3Jk2Lq"
	b.ReportAllocs()
	for b.Loop() {
		if !r.allows(reply) {
			b.Fatal("refused")
		}
	}
}

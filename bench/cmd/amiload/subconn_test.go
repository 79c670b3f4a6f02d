package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestSubConn_ReadsWhatNatsGoPublishes: the subscriber's own protocol
// reader gets what nats.go publishes, each on its subscription, with the
// headers, reply subjects, empty and large payloads (larger than its
// buffer), and stays connected while the server pings it.
func TestSubConn_ReadsWhatNatsGoPublishes(t *testing.T) {
	ns := startTestServer(t, &server.Options{PingInterval: 25 * time.Millisecond, MaxPingsOut: 4})
	sc, err := dialSub(ns.ClientURL(), []string{"ami.*.event.>", "rec.>"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.close()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	big := bytes.Repeat([]byte("x"), 600<<10)
	type want struct {
		sid              int
		subject, seq     string
		server, data     string
		headers, isReply bool
	}
	var wants []want
	pub := func(m *nats.Msg, w want) {
		t.Helper()
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err, nc.LastError())
		}
		wants = append(wants, w)
	}
	h := nats.Header{}
	h.Set("Ami-Server", "pbx1")
	h.Set("Ami-Seq", "41")
	h.Set("Ami-Seqx", "no")
	pub(&nats.Msg{Subject: "ami.pbx1.event.Newchannel", Header: h, Data: []byte("{}")},
		want{sid: 1, subject: "ami.pbx1.event.Newchannel", seq: "41", server: "pbx1", data: "{}", headers: true})
	pub(&nats.Msg{Subject: "rec.a", Reply: "_INBOX.x", Data: []byte(`{"end_seen":true}`)},
		want{sid: 2, subject: "rec.a", data: `{"end_seen":true}`})
	pub(&nats.Msg{Subject: "ami.pbx2.event.Hangup"}, want{sid: 1, subject: "ami.pbx2.event.Hangup"})
	pub(&nats.Msg{Subject: "ami.pbx2.event.Big", Header: h, Reply: "_INBOX.y", Data: big},
		want{sid: 1, subject: "ami.pbx2.event.Big", seq: "41", server: "pbx1", data: string(big), headers: true})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The server pings every 25 ms and cuts a client that leaves four
	// unanswered: the reader must answer them while it waits.
	got := make(chan subMsg)
	errc := make(chan error, 1)
	go func() { // the test's reader: ends at the first error, or when the test closes sc
		for {
			m, err := sc.read()
			if err != nil {
				errc <- err
				return
			}
			m.subject, m.hdr, m.data = bytes.Clone(m.subject), bytes.Clone(m.hdr), bytes.Clone(m.data)
			got <- m
		}
	}()
	next := func(i int) subMsg {
		t.Helper()
		select {
		case m := <-got:
			return m
		case err := <-errc:
			t.Fatalf("message %d: %v", i, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d never came", i)
		}
		return subMsg{}
	}
	check := func(i int, m subMsg, w want) {
		t.Helper()
		if m.sid != w.sid || string(m.subject) != w.subject || string(m.data) != w.data || (m.hdr != nil) != w.headers {
			t.Errorf("message %d: sid %d subject %q data %.20q headers %q, want %+v", i, m.sid, m.subject, m.data, m.hdr, w)
		}
		if got := string(headerValue(m.hdr, "Ami-Seq")); got != w.seq {
			t.Errorf("message %d: Ami-Seq %q, want %q", i, got, w.seq)
		}
		if got := string(serverOf(&m)); w.headers && got != w.server {
			t.Errorf("message %d: server %q, want %q", i, got, w.server)
		}
	}
	for i, w := range wants {
		check(i, next(i), w)
	}
	time.Sleep(250 * time.Millisecond) // ten pings
	last := want{sid: 1, subject: "ami.pbx1.event.Last", data: "end"}
	pub(&nats.Msg{Subject: "ami.pbx1.event.Last", Data: []byte("end")}, last)
	check(len(wants)-1, next(len(wants)-1), last)
}

// The relay's raw events carry no header: the PBX is the subject's second
// token.
func TestServerOf_RelaySubject(t *testing.T) {
	m := subMsg{subject: []byte("relay.pbx7.event.Newchannel")}
	if got := string(serverOf(&m)); got != "pbx7" {
		t.Errorf("server %q, want pbx7", got)
	}
	m.hdr = []byte("NATS/1.0\r\nAmi-Server: pbx9\r\n\r\n")
	if got := string(serverOf(&m)); got != "pbx9" {
		t.Errorf("server %q, want pbx9 from Ami-Server", got)
	}
	if got := headerValue([]byte("NATS/1.0\r\nAmi-Seqx: 1\r\n\r\n"), "Ami-Seq"); got != nil {
		t.Errorf("Ami-Seq %q found in Ami-Seqx", got)
	}
	if strings.Contains(string(headerValue(m.hdr, "NATS/1.0")), "NATS") {
		t.Error("the status line read as a header")
	}
}

// The subscriber child counts a cut by the server (as of a slow
// consumer) in slow, subscribes again, counts what comes next, and
// exits cleanly when stopped, also after its server is gone.
func TestSub_CountsACutAndSubscribesAgain(t *testing.T) {
	ns := startTestServer(t, &server.Options{})
	sub, err := startChild("sub", nil, "-nats", ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.stop()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	publish := func(from, to int) {
		t.Helper()
		for seq := from; seq <= to; seq++ {
			m := nats.NewMsg("ami.pbx1.event.Newchannel")
			m.Header.Set("Ami-Server", "pbx1")
			m.Header.Set("Ami-Seq", strconv.Itoa(seq))
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	report := func(events int64) subReport {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var rep subReport
			if err := sub.call(subRequest{Op: "report"}, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Events >= events || time.Now().After(deadline) {
				return rep
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	subConns := func() []*server.ConnInfo {
		cz, err := ns.Connz(&server.ConnzOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []*server.ConnInfo
		for _, c := range cz.Conns {
			if c.Name == "amiload-sub" && c.NumSubs > 0 {
				out = append(out, c)
			}
		}
		return out
	}

	publish(1, 3)
	if rep := report(3); rep.Events != 3 || rep.Slow != 0 {
		t.Fatalf("before the cut: %+v, want 3 events, no cut", rep)
	}
	first := subConns()
	if len(first) != 1 {
		t.Fatalf("%d subscriber connections, want 1", len(first))
	}
	if err := ns.DisconnectClientByID(first[0].Cid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for again := subConns(); len(again) != 1 || again[0].Cid == first[0].Cid; again = subConns() {
		if time.Now().After(deadline) {
			t.Fatal("the subscriber did not subscribe again after the cut")
		}
		time.Sleep(10 * time.Millisecond)
	}
	publish(4, 5)
	rep := report(5)
	if rep.Events != 5 || rep.Slow != 1 || rep.Servers["pbx1"].Gaps != 0 || rep.Servers["pbx1"].LastSeq != 5 {
		t.Fatalf("after the cut: %+v (pbx1 %+v), want 5 events, 1 cut, no gap", rep, rep.Servers["pbx1"])
	}
	ns.Shutdown() // the subscriber is then dialling again when stopped
	if err := sub.stop(); err != nil {
		t.Fatalf("the subscriber exited with %v", err)
	}
}

// startTestServer starts a nats-server with o on a free loopback port,
// shut down at the end of the test.
func startTestServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.Host, o.Port, o.NoSigs = "127.0.0.1", server.RANDOM_PORT, true
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns
}

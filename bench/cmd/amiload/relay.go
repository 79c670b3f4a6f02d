package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// relayReady is the relay child's first reply: where its embedded NATS
// server listens for the subscriber and the TCP ceiling's publisher.
type relayReady struct {
	URL string `json:"url"`
}

// relayRequest asks the relay child to publish Events raw bridge payloads
// on its in-process connection: the in-process ceiling.
type relayRequest struct {
	Events int `json:"events"`
}

// runRelay is the minimal relay of issue 22, the yardstick of the bridge's
// CPU per event: it reads AMI lines from one fake PBX, finds each event's
// name and publishes the event's raw text, unchanged and without headers,
// on relay.<name>.event.<Event>, to an embedded nats-server over an
// in-process connection, as the daemon connects to its own. Nothing else:
// no parsing into fields, no JSON, no Ami-Seq, no buffer between reading
// and publishing.
//
// The same process also publishes the ceiling over that in-process
// connection when asked, which is the fastest path into the embedded
// server the bridge itself could use.
func runRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	ami := fs.String("ami", "", "address of the fake PBX to relay (empty: none, the ceiling alone)")
	name := fs.String("name", "pbx1", "the PBX's name in the subjects")
	capture := fs.String("capture", "", "capture whose events the ceiling publishes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := loadBurst(*capture)
	if err != nil {
		return err
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true})
	if err != nil {
		return err
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("embedded nats-server not ready in 10 s")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns), nats.Name("amiload-relay"))
	if err != nil {
		return err
	}
	defer nc.Close()

	if *ami != "" {
		conn, err := net.Dial("tcp", *ami)
		if err != nil {
			return err
		}
		r := bufio.NewReaderSize(conn, 32<<10)
		if _, err := r.ReadString('\n'); err != nil { // the banner
			return fmt.Errorf("AMI banner: %w", err)
		}
		if _, err := fmt.Fprintf(conn, "Action: Login\r\nUsername: %s\r\nSecret: %s\r\n\r\n", amiUser, amiSecret); err != nil {
			return err
		}
		// The relay's goroutine is owned by runRelay: it ends when the
		// connection is closed on return, and is waited for.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			publish := func(subject string, data []byte) error { return nc.Publish(subject, data) }
			if err := relayEvents(r, *name, publish); err != nil {
				// The trial shows the loss; this says why.
				fmt.Fprintln(os.Stderr, "amiload relay:", err)
			}
		}()
		defer wg.Wait()
		defer conn.Close()
	}
	p := newRawPublisher(b, "raw-inproc")
	return serve(relayReady{URL: ns.ClientURL()}, func(line json.RawMessage) (any, error) {
		var req relayRequest
		if err := json.Unmarshal(line, &req); err != nil {
			return nil, err
		}
		return p.publish(nc, req.Events)
	})
}

// relayEvents reads AMI messages from r until it fails, and publishes each
// event's raw bytes on relay.<pbx>.event.<Event>. Messages that are not
// events (the login's response) are skipped. The subjects are built once
// per event name.
func relayEvents(r *bufio.Reader, pbx string, publish func(subject string, data []byte) error) error {
	subjs := map[string]string{}
	var msg []byte
	nameAt, nameEnd := -1, -1 // the event name in msg
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			msg = append(msg, line...) // a line longer than the buffer: the rest follows
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') { // the blank line ending a message
			if nameAt >= 0 {
				subj, ok := subjs[string(msg[nameAt:nameEnd])]
				if !ok {
					subj = subjects.Event("relay", pbx, string(msg[nameAt:nameEnd]))
					subjs[string(msg[nameAt:nameEnd])] = subj
				}
				msg = append(msg, line...)
				if err := publish(subj, msg); err != nil {
					return err
				}
			}
			msg, nameAt, nameEnd = msg[:0], -1, -1
			continue
		}
		if v, ok := bytes.CutPrefix(line, []byte("Event: ")); ok && nameAt < 0 {
			nameAt = len(msg) + len(line) - len(v)
			nameEnd = nameAt + len(bytes.TrimRight(v, "\r\n"))
		}
		msg = append(msg, line...)
	}
}

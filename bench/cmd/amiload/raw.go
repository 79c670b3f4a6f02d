package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// rawRequest asks the raw publisher to publish Events events.
type rawRequest struct {
	Events int `json:"events"`
}

// runRaw is the ceiling's publisher over TCP: it publishes what the bridge
// would publish for the burst's events, the same subjects, JSON bodies and
// headers, straight to NATS as fast as it can, as server "raw".
func runRaw(args []string) error {
	fs := flag.NewFlagSet("raw", flag.ContinueOnError)
	url := fs.String("nats", "", "NATS URL")
	capture := fs.String("capture", "", "capture whose events to publish")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := loadBurst(*capture)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*url, nats.Name("amiload-raw"), nats.Timeout(connectTimeout))
	if err != nil {
		return err
	}
	defer nc.Close()
	p := newRawPublisher(b, "raw")
	return serve(nil, func(line json.RawMessage) (any, error) {
		var req rawRequest
		if err := json.Unmarshal(line, &req); err != nil {
			return nil, err
		}
		return p.publish(nc, req.Events)
	})
}

// rawPublisher publishes the burst's events as the bridge would, as a
// server of its own name: the ceilings' publisher, over TCP (runRaw, as
// "raw") or in-process (runRelay, as "raw-inproc"). The names differ so
// that each keeps its own Ami-Seq at the subscriber.
type rawPublisher struct {
	subjs    []string
	bodies   [][]byte
	names    []string
	server   string
	seq      uint64
	idPrefix string
}

func newRawPublisher(b *burst, server string) *rawPublisher {
	p := &rawPublisher{
		subjs: make([]string, b.len()), bodies: make([][]byte, b.len()), names: make([]string, b.len()),
		server: server, idPrefix: server + ":" + strconv.FormatInt(time.Now().UnixNano(), 10) + ":",
	}
	for i, m := range b.msgs {
		p.names[i] = m.EventName()
		p.subjs[i] = subjects.Event("ami", server, p.names[i])
		p.bodies[i] = m.AppendJSON(nil)
	}
	return p
}

// publish publishes events events as fast as nc takes them, flushes, and
// returns the seconds it took.
func (p *rawPublisher) publish(nc *nats.Conn, events int) (float64, error) {
	// One message and header, rewritten per event, as the bridge's
	// publisher does: PublishMsg copies them out before it returns.
	evV, seqV, timeV, idV := []string{""}, []string{""}, []string{""}, []string{""}
	msg := &nats.Msg{Header: nats.Header{
		subjects.HeaderServer: {p.server}, subjects.HeaderEvent: evV, subjects.HeaderSeq: seqV, subjects.HeaderTime: timeV, subjects.HeaderMsgID: idV,
	}}
	start := time.Now()
	for i := range events {
		p.seq++
		k := i % len(p.subjs)
		msg.Subject, msg.Data = p.subjs[k], p.bodies[k]
		evV[0] = p.names[k]
		seqV[0] = strconv.FormatUint(p.seq, 10)
		timeV[0] = time.Now().UTC().Format(time.RFC3339Nano)
		idV[0] = p.idPrefix + seqV[0]
		if err := nc.PublishMsg(msg); err != nil {
			return 0, fmt.Errorf("publish %d: %w", i, err)
		}
	}
	if err := nc.Flush(); err != nil {
		return 0, err
	}
	return time.Since(start).Seconds(), nil
}

// connectTimeout bounds a child's NATS handshake: a daemon logging in to
// a thousand PBXes on a busy machine can take longer than nats.go's
// default 2 s to answer.
const connectTimeout = 30 * time.Second

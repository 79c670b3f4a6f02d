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

// runRaw is the ceiling's publisher: it publishes what the bridge would
// publish for the burst's events, the same subjects, JSON bodies and
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
	const server = "raw"
	subjs := make([]string, b.len())
	bodies := make([][]byte, b.len())
	names := make([]string, b.len())
	for i, m := range b.msgs {
		names[i] = m.EventName()
		subjs[i] = subjects.Event("ami", server, names[i])
		bodies[i] = m.AppendJSON(nil)
	}
	nc, err := nats.Connect(*url, nats.Name("amiload-raw"))
	if err != nil {
		return err
	}
	defer nc.Close()
	var seq uint64
	epoch := strconv.FormatInt(time.Now().UnixNano(), 10)
	return serve(nil, func(line json.RawMessage) (any, error) {
		var req rawRequest
		if err := json.Unmarshal(line, &req); err != nil {
			return nil, err
		}
		// One message and header, rewritten per event, as the bridge's
		// publisher does: PublishMsg copies them out before it returns.
		evV, seqV, timeV, idV := []string{""}, []string{""}, []string{""}, []string{""}
		msg := &nats.Msg{Header: nats.Header{
			subjects.HeaderServer: {server}, subjects.HeaderEvent: evV, subjects.HeaderSeq: seqV, subjects.HeaderTime: timeV, subjects.HeaderMsgID: idV,
		}}
		idPrefix := server + ":" + epoch + ":"
		start := time.Now()
		for i := range req.Events {
			seq++
			k := i % b.len()
			msg.Subject, msg.Data = subjs[k], bodies[k]
			evV[0] = names[k]
			seqV[0] = strconv.FormatUint(seq, 10)
			timeV[0] = time.Now().UTC().Format(time.RFC3339Nano)
			idV[0] = idPrefix + seqV[0]
			if err := nc.PublishMsg(msg); err != nil {
				return nil, fmt.Errorf("publish %d: %w", i, err)
			}
		}
		if err := nc.Flush(); err != nil {
			return nil, err
		}
		return time.Since(start).Seconds(), nil
	})
}

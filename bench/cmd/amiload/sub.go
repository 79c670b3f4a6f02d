package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// subRequest is a request to the subscriber child: "report" returns the
// counts since the last "reset", which zeroes them.
type subRequest struct {
	Op string `json:"op"`
}

// serverCount is what arrived from one PBX (Ami-Server).
type serverCount struct {
	Events  int64  `json:"events"`
	Gaps    int64  `json:"gaps"`     // Ami-Seq numbers skipped: events the bridge dropped
	Back    int64  `json:"back"`     // events whose Ami-Seq did not increase: duplicates or disorder
	LastSeq uint64 `json:"last_seq"` // kept across resets, so that a gap at a boundary counts
}

// subReport is the subscriber's counts.
type subReport struct {
	Servers map[string]*serverCount `json:"servers"`
	Events  int64                   `json:"events"`
	First   int64                   `json:"first"` // unix ns of the first event since the reset
	Last    int64                   `json:"last"`  // and of the latest
	Slow    int64                   `json:"slow"`  // slow-consumer errors: NATS dropped events for this subscriber
}

// runSub is the subscriber child: it counts the events on the event
// subjects per PBX and checks each PBX's Ami-Seq.
func runSub(args []string) error {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	url := fs.String("nats", "", "NATS URL")
	subject := fs.String("subject", "ami.*.event.>", "subject to count")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var slow atomic.Int64
	nc, err := nats.Connect(*url, nats.Name("amiload-sub"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			slow.Add(1)
		}
	}))
	if err != nil {
		return err
	}
	defer nc.Close()
	var mu sync.Mutex
	rep := subReport{Servers: map[string]*serverCount{}}
	sub, err := nc.Subscribe(*subject, func(m *nats.Msg) {
		now := time.Now().UnixNano()
		server := m.Header.Get(subjects.HeaderServer)
		seq, _ := strconv.ParseUint(m.Header.Get(subjects.HeaderSeq), 10, 64)
		mu.Lock()
		defer mu.Unlock()
		c := rep.Servers[server]
		if c == nil {
			c = &serverCount{}
			rep.Servers[server] = c
		}
		switch {
		case c.LastSeq == 0:
			// The first event seen from this PBX: those before it (its
			// login's) went out before this subscriber was there.
			c.LastSeq = seq
		case seq > c.LastSeq:
			c.Gaps += int64(seq - c.LastSeq - 1)
			c.LastSeq = seq
		default:
			c.Back++
		}
		c.Events++
		rep.Events++
		if rep.First == 0 {
			rep.First = now
		}
		rep.Last = now
	})
	if err != nil {
		return err
	}
	// The subscriber must not be the bottleneck: no client-side bound on
	// what waits for the handler.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	return serve(nil, func(line json.RawMessage) (any, error) {
		var req subRequest
		if err := json.Unmarshal(line, &req); err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		switch req.Op {
		case "report":
			rep.Slow = slow.Load()
			return rep, nil
		case "reset":
			for _, c := range rep.Servers {
				c.Events, c.Gaps, c.Back = 0, 0, 0
			}
			rep.Events, rep.First, rep.Last = 0, 0, 0
			slow.Store(0)
			return nil, nil
		}
		return nil, fmt.Errorf("unknown op %q", req.Op)
	})
}

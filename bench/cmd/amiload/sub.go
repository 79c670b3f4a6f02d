package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// subRequest is a request to the subscriber child: "report" returns the
// counts since the last "reset", which zeroes them; "latency" returns the
// latency percentiles since the last reset (a sort: asked for once per
// trial, not in settle's polling).
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
	Slow    int64                   `json:"slow"`  // times the server cut this subscriber (a slow consumer): events lost meanwhile
	// With -records: the call records that arrived, and those of them
	// closed without their end seen (end_seen false).
	Records       int64 `json:"records"`
	RecordsUnseen int64 `json:"records_unseen"`
}

// latencyReport is, over the events that carried Ami-Time since the last
// reset, the time from the bridge reading each event to this subscriber
// having it, in nanoseconds.
type latencyReport struct {
	N   int   `json:"n"`
	P50 int64 `json:"p50"`
	P99 int64 `json:"p99"`
	Max int64 `json:"max"`
}

// percentiles sorts lat and reads its median, 99th percentile and maximum.
func percentiles(lat []int64) latencyReport {
	if len(lat) == 0 {
		return latencyReport{}
	}
	slices.Sort(lat)
	at := func(q float64) int64 { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	return latencyReport{N: len(lat), P50: at(0.50), P99: at(0.99), Max: lat[len(lat)-1]}
}

// serverOf names the PBX a message came from: its Ami-Server header, or
// for the relay, which sets no header, the subject's second token
// (relay.<pbx>.event.<name>).
func serverOf(m *subMsg) []byte {
	if s := headerValue(m.hdr, subjects.HeaderServer); len(s) > 0 {
		return s
	}
	_, rest, _ := bytes.Cut(m.subject, []byte("."))
	s, _, _ := bytes.Cut(rest, []byte("."))
	return s
}

// runSub is the subscriber child: it counts the events on the event
// subjects, per PBX, with their Ami-Seq gaps and latencies, over its own
// NATS connection (subConn).
func runSub(args []string) error {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	url := fs.String("nats", "", "NATS URL")
	subject := fs.String("subject", "ami.*.event.>", "comma-separated subjects to count")
	records := fs.String("records", "", "subject of the call records to count apart from the events (none when empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	subjs := strings.Split(*subject, ",")
	recordsSID := 0
	if *records != "" {
		subjs = append(subjs, *records)
		recordsSID = len(subjs)
	}
	first, err := dialSub(*url, subjs, connectTimeout)
	if err != nil {
		return err
	}
	var t tally
	t.reset()
	var slow atomic.Int64
	stop := make(chan struct{})
	var conn atomic.Pointer[subConn] // the reader's current connection, closed to stop it
	conn.Store(first)
	// The reader is runSub's: it ends when serve returns (stop, then the
	// connection closed), and is waited for.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := first
		for {
			m, err := c.read()
			if err == nil {
				if m.sid == recordsSID {
					t.observeRecord(m.data)
				} else {
					t.observe(&m, time.Now())
				}
				continue
			}
			c.close()
			select {
			case <-stop:
				return
			default:
			}
			// The server cut this subscriber (a slow consumer): count it,
			// and subscribe again; what was lost meanwhile shows as lost.
			slow.Add(1)
			for {
				if next, err := dialSub(*url, subjs, connectTimeout); err == nil {
					c = next
					break
				}
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
			conn.Store(c)
			select {
			case <-stop: // stopped while dialling: the stopper may have closed the old one
				c.close()
				return
			default:
			}
		}
	}()
	defer wg.Wait()
	defer func() {
		close(stop)
		conn.Load().close()
	}()
	return serve(nil, func(line json.RawMessage) (any, error) {
		var req subRequest
		if err := json.Unmarshal(line, &req); err != nil {
			return nil, err
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		switch req.Op {
		case "report":
			// Encoded here, under the lock: the map is the reader's.
			t.rep.Slow = slow.Load()
			b, err := json.Marshal(t.rep)
			return json.RawMessage(b), err
		case "reset":
			t.reset()
			slow.Store(0)
			return nil, nil
		case "latency":
			return percentiles(slices.Clone(t.lat)), nil
		}
		return nil, fmt.Errorf("unknown op %q", req.Op)
	})
}

// tally is the subscriber's counts, kept by observe for every message.
type tally struct {
	mu  sync.Mutex
	rep subReport
	lat []int64 // ns from Ami-Time to arrival, since the last reset
}

// reset zeroes the counts, keeping each PBX's last Ami-Seq so that a gap
// across the boundary still counts. The caller holds mu, or is alone.
func (t *tally) reset() {
	if t.rep.Servers == nil {
		t.rep.Servers = map[string]*serverCount{}
	}
	for _, c := range t.rep.Servers {
		c.Events, c.Gaps, c.Back = 0, 0, 0
	}
	t.rep.Events, t.rep.First, t.rep.Last = 0, 0, 0
	t.rep.Records, t.rep.RecordsUnseen = 0, 0
	t.lat = t.lat[:0]
}

// observe counts m, which arrived at now: per PBX, its Ami-Seq against
// the last, and its latency from Ami-Time.
func (t *tally) observe(m *subMsg, now time.Time) {
	server := serverOf(m)
	var seq uint64
	if v := headerValue(m.hdr, subjects.HeaderSeq); v != nil {
		seq, _ = strconv.ParseUint(string(v), 10, 64)
	}
	var at time.Time
	if v := headerValue(m.hdr, subjects.HeaderTime); v != nil {
		at, _ = time.Parse(time.RFC3339Nano, string(v))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !at.IsZero() {
		t.lat = append(t.lat, now.Sub(at).Nanoseconds())
	}
	c := t.rep.Servers[string(server)]
	if c == nil {
		c = &serverCount{}
		t.rep.Servers[string(server)] = c
	}
	switch {
	case seq == 0: // no Ami-Seq: the relay's raw events
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
	t.rep.Events++
	if t.rep.First == 0 {
		t.rep.First = now.UnixNano()
	}
	t.rep.Last = now.UnixNano()
}

// observeRecord counts one call record (subjects.CallRecord), and those
// closed without their end seen.
func (t *tally) observeRecord(data []byte) {
	var r struct {
		EndSeen bool `json:"end_seen"`
	}
	bad := json.Unmarshal(data, &r) != nil
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rep.Records++
	if bad || !r.EndSeen {
		t.rep.RecordsUnseen++
	}
}

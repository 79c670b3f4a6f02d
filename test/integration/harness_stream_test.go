package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// waitStreamMsgs waits until stream holds want messages, or has not grown
// for stall, and returns how many it holds. The servers store
// asynchronously (acks, sourcing), so polling is the only way to know.
func waitStreamMsgs(t *testing.T, js jetstream.JetStream, stream string, want uint64, stall time.Duration) uint64 {
	t.Helper()
	var last uint64
	grew := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := js.Stream(ctx, stream)
		var n uint64
		if err == nil {
			n = s.CachedInfo().State.Msgs
		}
		cancel()
		if n >= want {
			return n
		}
		if n != last {
			last, grew = n, time.Now()
		}
		if time.Since(grew) > stall {
			t.Errorf("stream %s holds %d messages and has not grown for %v, want %d (last error %v)", stream, n, stall, want, err)
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pbxTally is what a stream holds of one PBX's events.
type pbxTally struct {
	events     int             // stored messages
	callEvents int64           // of them, events of calls
	sessions   int             // FullyBooted events: logins of the event session
	seen       map[uint64]bool // Ami-Seq values stored
	last       uint64          // the highest Ami-Seq
	dups       int             // an Ami-Seq stored again
	backwards  int             // an Ami-Seq below the one before it
}

// gaps is how many Ami-Seq values below the last are missing.
func (p *pbxTally) gaps() uint64 { return p.last - uint64(len(p.seen)) }

// streamTally is what a stream holds, per PBX.
type streamTally struct {
	msgs   int
	pbx    map[string]*pbxTally
	ids    map[string]bool
	dupIDs int // a Nats-Msg-Id stored again
	bad    []string
}

// tallyStream reads every message of stream, in stream order, and
// tallies the events of each PBX.
func tallyStream(t *testing.T, js jetstream.JetStream, stream string) *streamTally {
	t.Helper()
	st := &streamTally{pbx: map[string]*pbxTally{}, ids: map[string]bool{}}
	readStream(t, js, stream, 2*time.Minute, func(m jetstream.Msg) { st.add(m.Headers()) })
	return st
}

// readStream calls each with every message stream holds when it begins,
// in stream order, within timeout. A cluster that just lost a node may
// answer "no responders" while it settles; the ordered consumer then
// starts again where it was.
func readStream(t *testing.T, js jetstream.JetStream, stream string, timeout time.Duration, each func(jetstream.Msg)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	total := int(s.CachedInfo().State.Msgs)
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	read := 0
	for failed := 0; read < total; {
		n := read
		batch, err := cons.Fetch(min(1000, total-read), jetstream.FetchMaxWait(5*time.Second))
		if err == nil {
			for m := range batch.Messages() {
				each(m)
				read++
			}
			err = batch.Error()
		}
		if err == nil && read > n {
			continue
		}
		if failed++; failed > 10 || ctx.Err() != nil {
			t.Fatalf("read %s after %d of %d messages: %v", stream, read, total, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (st *streamTally) add(h nats.Header) {
	st.msgs++
	id := h.Get("Nats-Msg-Id")
	if st.ids[id] {
		st.dupIDs++
	}
	st.ids[id] = true
	name := h.Get("Ami-Server")
	p := st.pbx[name]
	if p == nil {
		p = &pbxTally{seen: map[uint64]bool{}}
		st.pbx[name] = p
	}
	p.events++
	seq, err := strconv.ParseUint(h.Get("Ami-Seq"), 10, 64)
	if err != nil {
		if len(st.bad) < 10 {
			st.bad = append(st.bad, fmt.Sprintf("%s: Ami-Seq %q", name, h.Get("Ami-Seq")))
		}
		return
	}
	switch {
	case p.seen[seq]:
		p.dups++
	case seq < p.last:
		p.backwards++
	}
	p.seen[seq] = true
	p.last = max(p.last, seq)
	switch h.Get("Ami-Event") {
	case "FullyBooted": // once per login of the event session
		p.sessions++
	case "SuccessfulAuth": // one per login of any session the PBX sees, action sessions too
	default:
		p.callEvents++
	}
}

// check compares what the stream holds of pbx with the call events its
// amitest generator sent, and reports the counts either way.
func (st *streamTally) check(t *testing.T, pbx string, sent int64) {
	t.Helper()
	st.checkReordered(t, pbx, sent, 0)
}

// checkReordered is check, allowing up to reordered events stored out of
// Ami-Seq order: those the bridge said it resent after JetStream had
// stored a later one (bridgeReordered).
func (st *streamTally) checkReordered(t *testing.T, pbx string, sent int64, reordered int) {
	t.Helper()
	p := st.pbx[pbx]
	if p == nil {
		p = &pbxTally{seen: map[uint64]bool{}}
	}
	line := fmt.Sprintf("%s: sent %d call events, stored %d (%d events in all, last Ami-Seq %d), %d gaps, %d duplicate Ami-Seq, %d out of order (%d reported by the bridge)",
		pbx, sent, p.callEvents, p.events, p.last, p.gaps(), p.dups, p.backwards, reordered)
	if p.callEvents != sent || p.gaps() != 0 || p.dups != 0 || p.backwards > reordered || p.sessions != 1 {
		t.Errorf("%s; %d AMI sessions", line, p.sessions)
		return
	}
	t.Log(line)
}

// checkIDs fails on any Nats-Msg-Id stored twice or a malformed event.
func (st *streamTally) checkIDs(t *testing.T) {
	t.Helper()
	if st.dupIDs != 0 {
		t.Errorf("%d of %d messages repeat a Nats-Msg-Id", st.dupIDs, st.msgs)
	}
	for _, b := range st.bad {
		t.Errorf("malformed event: %s", b)
	}
}

// bridgeReordered returns how many events a bridge's log says it sent
// again after JetStream had stored a later one: the events a stream
// leader lost in flight while its successor stored the next (see
// docs/deployments.md). Only those may be stored out of Ami-Seq order.
func bridgeReordered(log []byte) int {
	n := 0
	reordered := false
	for _, line := range bytes.Split(log, []byte("\n")) {
		var e struct {
			Message string `json:"message"`
			Resent  int    `json:"resent"`
		}
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		switch {
		case strings.Contains(e.Message, "out of Ami-Seq order"):
			reordered = true
		case reordered && strings.HasPrefix(e.Message, "JetStream did not acknowledge an event"):
			n += e.Resent
			reordered = false
		}
	}
	return n
}

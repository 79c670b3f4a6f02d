package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// pbxRequest is a request to the pbx child.
type pbxRequest struct {
	Op     string  `json:"op"`     // "wait": until every PBX has a session; "send": play events; "replay": a capture at its recorded timing
	Rate   float64 `json:"rate"`   // send: events per second per PBX; 0: as fast as the sessions take them
	Events int     `json:"events"` // send: events per PBX
	Replay string  `json:"replay"` // replay: the capture, with or without .recv.bin
	Speed  float64 `json:"speed"`  // replay: time runs this many times faster than recorded (0: 1)
	// Relabel: send gives each pass over the capture its own Uniqueids
	// and Linkedids (one PBX only: the bytes are rewritten in place).
	Relabel bool `json:"relabel"`
}

// sendReport is what the pbx child sent, per PBX, and how well it kept
// the pace.
type sendReport struct {
	Sent    []int   `json:"sent"`    // events queued per PBX
	Start   int64   `json:"start"`   // unix ns when sending began
	Seconds float64 `json:"seconds"` // from the first event to the last, slowest PBX
	MaxLag  float64 `json:"max_lag"` // seconds behind the schedule at worst
	Dropped int     `json:"dropped"` // PBXes whose session the fake Asterisk cut (writetimeout)
	// AMI connections the fake PBXes accepted, in all, before and after the
	// send: a session cut during a trial and opened again shows only here.
	AcceptedBefore int64 `json:"accepted_before"`
	Accepted       int64 `json:"accepted"`
}

// accepted counts the AMI connections the pbx child's PBXes accepted.
var accepted atomic.Int64

// runPBX is the pbx child: n fake Asterisks, each replaying the burst to
// its session when told.
func runPBX(args []string) error {
	fs := flag.NewFlagSet("pbx", flag.ContinueOnError)
	n := fs.Int("n", 1, "number of PBXes")
	capture := fs.String("capture", "", "capture to replay")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := loadBurst(*capture)
	if err != nil {
		return err
	}
	servers := make([]*amitest.Server, *n)
	addrs := make([]string, *n)
	// The accept loops are owned by runPBX: they end when their listeners
	// close on return, and are waited for.
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range servers {
		// Asterisk's writetimeout: a session that stops reading for
		// 100 ms is cut, and what was queued for it is lost.
		srv, err := amitest.Start(amitest.Config{WriteTimeout: 100 * time.Millisecond})
		if err != nil {
			return err
		}
		defer srv.Close()
		// A listener of our own, to count the connections: a cut session
		// that the bridge opens again shows as one more.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				srv.ServeConn(c)
			}
		}()
		servers[i], addrs[i] = srv, ln.Addr().String()
	}
	return serve(addrs, func(line json.RawMessage) (any, error) {
		var req pbxRequest
		if err := json.Unmarshal(line, &req); err != nil {
			return nil, err
		}
		switch req.Op {
		case "wait":
			return nil, waitSessions(servers, time.Minute)
		case "send":
			src := spanner(b)
			if req.Relabel {
				if len(servers) != 1 {
					return nil, fmt.Errorf("relabel needs one PBX, not %d", len(servers))
				}
				src = newRelabel(b)
			}
			if req.Rate > 0 {
				rep := sendReport{Start: time.Now().UnixNano(), AcceptedBefore: accepted.Load()}
				emits := make([]func([]byte), len(servers))
				for i, srv := range servers {
					emits[i] = srv.EmitRawInline
				}
				rep.Sent, rep.Seconds, rep.MaxLag = paceAll(emits, src, req.Rate, req.Events)
				for _, srv := range servers {
					if srv.Sessions() == 0 {
						rep.Dropped++
					}
				}
				rep.Accepted = accepted.Load()
				return rep, nil
			}
			return sendAll(servers, func(srv *amitest.Server) (int, float64, float64) {
				return flood(srv, src, req.Events)
			}), nil
		case "replay":
			batches, err := loadTimed(req.Replay)
			if err != nil {
				return nil, err
			}
			return sendAll(servers, func(srv *amitest.Server) (int, float64, float64) {
				return replay(srv, batches, max(req.Speed, 0.001))
			}), nil
		}
		return nil, fmt.Errorf("unknown op %q", req.Op)
	})
}

func waitSessions(servers []*amitest.Server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i, srv := range servers {
		for srv.Sessions() < 1 {
			if time.Now().After(deadline) {
				return fmt.Errorf("PBX %d has no session after %v", i, timeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// sendAll plays events on every PBX at once, each paced on its own by
// play, and waits for the last. Its goroutines end before it returns.
func sendAll(servers []*amitest.Server, play func(*amitest.Server) (sent int, secs, lag float64)) sendReport {
	rep := sendReport{Sent: make([]int, len(servers)), Start: time.Now().UnixNano(), AcceptedBefore: accepted.Load()}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent, secs, lag := play(srv)
			mu.Lock()
			defer mu.Unlock()
			rep.Sent[i] = sent
			rep.Seconds = max(rep.Seconds, secs)
			rep.MaxLag = max(rep.MaxLag, lag)
			if srv.Sessions() == 0 {
				rep.Dropped++
			}
		}()
	}
	wg.Wait()
	rep.Accepted = accepted.Load()
	return rep
}

// paceTick is how often the pacer wakes at most, to emit what is due:
// every event on its own would cost the fake PBXes more CPU than the
// bridge, on the same cores.
const paceTick = time.Millisecond

// paceAll emits events of the burst, looping over it, at rate per second
// on every PBX, from one goroutine: it wakes when the next event of any
// PBX is due, at most once per paceTick, and emits to each PBX, in one
// piece, every event of it that is due. A PBX thus gets at 1,000 events/s
// and below each event in its own write, at 12,000/s twelve per write, as
// a PBX writes what it has when its session's thread runs. The pacer
// writes to the socket itself when nothing waits for the session
// (amitest's EmitRawInline), else the session's writer goroutine does:
// the same writes, without a wake-up of that goroutine per event. A
// session that stops reading holds the pacer up to its WriteTimeout
// (100 ms), then is cut; the lag shows it. One goroutine per PBX, each
// sleeping until its next event, and the writer woken per event, cost the
// fake PBXes two wake-ups per event on the cores the bridge needs: 500
// PBXes at 300/s took as much CPU as the bridge.
//
// PBX i of n runs i/n of an event's interval behind PBX 0: real PBXes are
// not in step, and PBXes in step would send each event of the schedule
// all at once. maxLag is how late, at worst, an event left after its
// time: a pacer that cannot keep the pace shows it there.
func paceAll(emits []func([]byte), b spanner, rate float64, events int) (sent []int, secs, maxLag float64) {
	n := len(emits)
	sent = make([]int, n)
	offs := make([]float64, n) // PBX i's event k is due at offs[i] + k/rate seconds
	for i := range offs {
		offs[i] = float64(i) / float64(n) / rate
	}
	start := time.Now()
	left := n
	for left > 0 {
		woke := time.Since(start)
		elapsed := woke.Seconds()
		next := math.Inf(1) // when the next event not yet due is due
		for i, done := range sent {
			if done >= events {
				continue
			}
			due := min(events, int(math.Floor((elapsed-offs[i])*rate))+1)
			if due > done {
				maxLag = max(maxLag, elapsed-(offs[i]+float64(done)/rate))
				b.span(done, due-done, emits[i])
				done = due
				sent[i] = done
				if done == events {
					left--
					secs = time.Since(start).Seconds()
					continue
				}
			}
			next = min(next, offs[i]+float64(done)/rate)
		}
		if left > 0 {
			at := max(time.Duration(next*float64(time.Second)), woke+paceTick)
			if d := at - time.Since(start); d > 0 {
				time.Sleep(d)
			}
		}
	}
	return sent, secs, maxLag
}

// flood emits events of the burst, looping over it, 256 at a time as
// fast as the session's queue takes them (amitest blocks while 4 MiB
// wait for a session).
func flood(srv *amitest.Server, b spanner, events int) (sent int, secs, maxLag float64) {
	start := time.Now()
	emit := func(p []byte) { srv.EmitRaw(p) }
	for sent < events {
		n := min(256, events-sent)
		b.span(sent, n, emit)
		sent += n
	}
	return sent, time.Since(start).Seconds(), 0
}

// timedBatch is the events a recorded session's socket read completed, at
// the read's time.
type timedBatch struct {
	At     time.Duration // since the session's connect
	Bytes  []byte        // the events, back to back, in their wire form
	Events int
}

// loadTimed reads a capture's events with the time each one arrived in
// full: the time of the socket read (NAME.chunks.jsonl) that held its
// last byte. The login's own events and every response are left out, as
// in loadBurst.
func loadTimed(path string) ([]timedBatch, error) {
	c, err := amitest.LoadCapture(path)
	if err != nil {
		return nil, err
	}
	if c.Chunks == nil {
		return nil, fmt.Errorf("%s: no .chunks.jsonl, so no recorded timing to replay", path)
	}
	var out []timedBatch
	var pending []byte
	banner := true
	for _, ch := range c.Chunks {
		if ch.Dir != "recv" {
			continue
		}
		pending = append(pending, ch.Data...)
		if banner {
			_, rest, ok := bytes.Cut(pending, []byte("\r\n"))
			if !ok {
				continue
			}
			pending, banner = rest, false
		}
		batch := timedBatch{At: time.Duration(ch.T * float64(time.Second))}
		for {
			i := bytes.Index(pending, []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			packet := pending[:i+4]
			if burstEvent(packet) {
				batch.Bytes = append(batch.Bytes, packet...)
				batch.Events++
			}
			pending = pending[i+4:]
		}
		if batch.Events > 0 {
			out = append(out, batch)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no events", path)
	}
	return out, nil
}

// replay emits batches at their recorded times, speed times faster.
func replay(srv *amitest.Server, batches []timedBatch, speed float64) (sent int, secs, maxLag float64) {
	start := time.Now()
	for _, b := range batches {
		due := time.Duration(float64(b.At-batches[0].At) / speed)
		if d := due - time.Since(start); d > 0 {
			time.Sleep(d)
		}
		maxLag = max(maxLag, (time.Since(start) - due).Seconds())
		srv.EmitRaw(b.Bytes)
		sent += b.Events
	}
	return sent, time.Since(start).Seconds(), maxLag
}

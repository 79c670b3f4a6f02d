package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// pbxRequest is a request to the pbx child.
type pbxRequest struct {
	Op     string  `json:"op"`     // "wait": until every PBX has a session; "send": play events
	Rate   float64 `json:"rate"`   // send: events per second per PBX; 0: as fast as the sessions take them
	Events int     `json:"events"` // send: events per PBX
}

// sendReport is what the pbx child sent, per PBX, and how well it kept
// the pace.
type sendReport struct {
	Sent    []int   `json:"sent"`    // events queued per PBX
	Seconds float64 `json:"seconds"` // from the first event to the last, slowest PBX
	MaxLag  float64 `json:"max_lag"` // seconds behind the schedule at worst
	Dropped int     `json:"dropped"` // PBXes whose session the fake Asterisk cut (writetimeout)
}

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
	for i := range servers {
		// Asterisk's writetimeout: a session that stops reading for
		// 100 ms is cut, and what was queued for it is lost.
		srv, err := amitest.Start(amitest.Config{WriteTimeout: 100 * time.Millisecond})
		if err != nil {
			return err
		}
		defer srv.Close()
		servers[i], addrs[i] = srv, srv.Addr()
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
			return sendAll(servers, b, req.Rate, req.Events), nil
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

// sendAll plays events on every PBX at once, each paced on its own, and
// waits for the last. Its goroutines end before it returns.
func sendAll(servers []*amitest.Server, b *burst, rate float64, events int) sendReport {
	rep := sendReport{Sent: make([]int, len(servers))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent, secs, lag := pace(srv, b, rate, events)
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
	return rep
}

// paceTick is how often a paced PBX wakes to emit what is due: every
// event on its own would cost the fake PBX more CPU than the bridge, on
// the same cores.
const paceTick = time.Millisecond

// pace emits events of the burst, looping over it, at rate per second:
// each time it wakes it emits, in one piece, every event that is due. An
// unpaced run emits 256 at a time as fast as the session's queue takes
// them (amitest blocks while 4 MiB wait for a session).
func pace(srv *amitest.Server, b *burst, rate float64, events int) (sent int, secs, maxLag float64) {
	start := time.Now()
	emit := func(p []byte) { srv.EmitRaw(p) }
	tick := max(1, int(rate*paceTick.Seconds()))
	for sent < events {
		n := 256
		if rate > 0 {
			elapsed := time.Since(start).Seconds()
			due := int(elapsed*rate) + 1
			if want := min(sent+tick, events); due < want {
				time.Sleep(time.Duration((float64(want-1)/rate - elapsed) * float64(time.Second)))
				continue
			}
			n = due - sent
			maxLag = max(maxLag, elapsed-float64(sent)/rate)
		}
		n = min(n, events-sent)
		b.span(sent, n, emit)
		sent += n
	}
	return sent, time.Since(start).Seconds(), maxLag
}

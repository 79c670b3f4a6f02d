package httpserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/metrics"
)

// healthz answers 200 while the process is alive and its bridge is not
// stuck: the bridge hands out a stats snapshot in time (its locks are not
// held for good), and no PBX's publisher sits still with events waiting
// while NATS is connected. NATS or a PBX being down is readiness, not
// liveness: a restart would not fix it and would lose the buffer.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	t := s.target.Load()
	if t == nil {
		writeText(w, http.StatusOK, "ok: starting, waiting for NATS\n")
		return
	}
	stats, ok := s.health.snapshot(t.b)
	if !ok {
		writeText(w, http.StatusServiceUnavailable, fmt.Sprintf("unhealthy: the bridge gave no stats snapshot within %v: a lock is held for good\n", s.opts.SnapshotTimeout))
		return
	}
	if stalled := s.health.stalled(stats, t.nc.Status() == nats.CONNECTED, time.Now()); len(stalled) > 0 {
		writeText(w, http.StatusServiceUnavailable, "unhealthy:\n"+strings.Join(stalled, "\n")+"\n")
		return
	}
	writeText(w, http.StatusOK, "ok\n")
}

// readyz answers 200 when NATS is connected and the PBX sessions are up:
// every one, or with ReadyAll unset at least one. A PBX counts as up by
// Stats.Up, which holds for an HA standby too.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	t := s.target.Load()
	if t == nil {
		writeText(w, http.StatusServiceUnavailable, "not ready: waiting for NATS\n")
		return
	}
	var b strings.Builder
	status := t.nc.Status()
	ready := status == nats.CONNECTED
	fmt.Fprintf(&b, "nats %s\n", strings.ToLower(status.String()))
	stats, ok := s.health.snapshot(t.b)
	if !ok {
		writeText(w, http.StatusServiceUnavailable, "not ready: no stats snapshot in time\n")
		return
	}
	up := 0
	for _, st := range stats {
		if st.Up {
			up++
		}
		fmt.Fprintf(&b, "%s %s\n", st.Server, st.State)
	}
	if s.opts.ReadyAll {
		ready = ready && up == len(stats)
	} else {
		ready = ready && up > 0
	}
	if ready {
		writeText(w, http.StatusOK, "ready\n"+b.String())
		return
	}
	writeText(w, http.StatusServiceUnavailable, "not ready\n"+b.String())
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// liveness takes stats snapshots with a deadline and follows each
// publisher's progress from one check to the next.
type liveness struct {
	stallAfter, timeout time.Duration

	mu       sync.Mutex
	pending  *pendingSnapshot // the snapshot in progress, shared by concurrent checks
	progress map[string]progress
	wg       sync.WaitGroup // snapshot goroutines
}

type pendingSnapshot struct {
	done  chan struct{}
	stats []bridge.Stats
}

// progress is a publisher's output count and since when it has not moved
// with events waiting.
type progress struct {
	out   uint64
	since time.Time
}

func newLiveness(stallAfter, timeout time.Duration) *liveness {
	return &liveness{stallAfter: stallAfter, timeout: timeout, progress: map[string]progress{}}
}

// snapshot returns b.Stats(), or false when it takes longer than the
// timeout. A snapshot still in progress is shared, not started again, so
// a stuck bridge costs one goroutine, not one per probe.
func (l *liveness) snapshot(b metrics.Bridge) ([]bridge.Stats, bool) {
	l.mu.Lock()
	p := l.pending
	if p == nil {
		p = &pendingSnapshot{done: make(chan struct{})}
		l.pending = p
		l.wg.Add(1)
		// Owned by the liveness: Server.Close waits for it, up to its
		// context, since a bridge that is stuck for good never returns.
		go func() {
			defer l.wg.Done()
			p.stats = b.Stats()
			l.mu.Lock()
			l.pending = nil
			l.mu.Unlock()
			close(p.done)
		}()
	}
	l.mu.Unlock()
	t := time.NewTimer(l.timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.stats, true
	case <-t.C:
		return nil, false
	}
}

// stalled records stats taken at now and returns a line for each PBX
// whose publisher has not moved for stallAfter while events waited and
// NATS was connected.
func (l *liveness) stalled(stats []bridge.Stats, natsConnected bool, now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, st := range stats {
		n := st.EventsPublished + st.EventsDropped + st.JSFailures
		p, seen := l.progress[st.Server]
		if !seen || !natsConnected || st.BufferEvents == 0 || n != p.out {
			l.progress[st.Server] = progress{out: n, since: now}
			continue
		}
		if d := now.Sub(p.since); d >= l.stallAfter {
			out = append(out, fmt.Sprintf("%s: the publisher has not moved for %v with %d events waiting and NATS connected", st.Server, d.Round(time.Second), st.BufferEvents))
		}
	}
	return out
}

// wait waits for the snapshot goroutine, if any, until ctx ends.
func (l *liveness) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

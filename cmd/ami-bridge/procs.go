package main

import (
	"context"
	"runtime"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// The daemon runs its goroutines on one P (GOMAXPROCS=1) while it uses
// little CPU, and on the runtime's default above that.
//
// At a real PBX's pace the cost of an event is mostly wake-ups, not work:
// each hand-off between goroutines (the AMI reader, the publisher,
// nats.go's flusher, the embedded server's reader and writer) readies a
// goroutine, and while a P is idle the runtime wakes a second thread to
// run it, which spins looking for work before it sleeps again. On one P
// the hand-offs stay on the thread that makes them. amiload's pace mode
// at 12,000 events/s, the daemon on one P against two, 7 interleaved
// pairs on the shared 2-core machine (bench/README.md, issue 22): 14.0-21.8
// µs of CPU per event against 18.9-35.4 (median ratio 0.76), 0.20-0.35
// threads scheduled in per event against 0.43-0.80. Past procsUp of a
// core the daemon takes every P, so a flood, a large fan-in or a busy
// embedded server is not held to one.
//
// One P is one thread to the kernel: when other processes want the cores
// (Asterisk in a burst on the same host), it gets one thread's share, and
// every goroutine waits while that thread does. In those pairs one P
// gave a p99 of 248-299 ms from reading an event to a subscriber having
// it in 3 of 7 (load averages 6.6-12.6), two Ps at most 17 ms. So a
// goroutine that waited over procsLate to run once ready (the runtime's
// /sched/latencies) counts as a busy interval too.
const (
	procsInterval  = 100 * time.Millisecond
	procsUp        = 0.7 // share of a core over one interval above which every P is used
	procsDown      = 0.35
	procsDownAfter = 20 // intervals in a row under procsDown before going back to one P (2 s)
	procsLate      = time.Millisecond
)

// procsPolicy decides the number of Ps from the CPU the process used.
type procsPolicy struct {
	max   int // the runtime's default
	cur   int
	quiet int // intervals in a row under procsDown
}

// next returns the Ps for the next interval, given the share of one core
// the process used over the last one and how many goroutines waited over
// procsLate to run.
func (p *procsPolicy) next(share float64, late uint64) int {
	switch {
	case share > procsUp || late > 0:
		p.cur, p.quiet = p.max, 0
	case share < procsDown:
		if p.quiet++; p.quiet >= procsDownAfter {
			p.cur = 1
		}
	default:
		p.quiet = 0
	}
	return p.cur
}

// adaptProcs starts adapting GOMAXPROCS to the process's CPU use, unless
// the environment sets GOMAXPROCS (which then wins, as the runtime applied
// it at start), the runtime has one P anyway, or the platform does not
// give the process's CPU time. The returned stop ends the adapting, waits
// for its goroutine and gives the runtime back its default; the caller
// owns that goroutine and calls stop once.
func adaptProcs(environ []string, log zerolog.Logger) (stop func()) {
	n := runtime.GOMAXPROCS(0)
	if getenv(environ, "GOMAXPROCS") != "" || n <= 1 {
		return func() {}
	}
	if _, ok := processCPU(); !ok {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sched := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
		runProcs(ctx, &procsPolicy{max: n, cur: n}, procsInterval,
			func() time.Duration { d, _ := processCPU(); return d },
			func() uint64 { return lateRuns(sched) }, log)
	}()
	return func() {
		cancel()
		wg.Wait()
		runtime.SetDefaultGOMAXPROCS()
	}
}

// runProcs samples the process's CPU time, cpu, and the count of late
// runs, late (see lateRuns), every interval and sets GOMAXPROCS as p
// decides, until ctx ends.
func runProcs(ctx context.Context, p *procsPolicy, interval time.Duration, cpu func() time.Duration, late func() uint64, log zerolog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := cpu()
	at := time.Now()
	lastLate := late()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used := cpu()
			share := float64(used-last) / float64(now.Sub(at))
			last, at = used, now
			nLate := late()
			before := p.cur
			if n := p.next(share, nLate-lastLate); n != before {
				if n == p.max {
					// The runtime's default again, with its automatic
					// updates (a cgroup's quota that changes).
					runtime.SetDefaultGOMAXPROCS()
					p.max = runtime.GOMAXPROCS(0)
					p.cur = p.max
				} else {
					runtime.GOMAXPROCS(n)
				}
				log.Debug().Int("gomaxprocs", p.cur).Float64("cpu_share", share).Uint64("late_runs", nLate-lastLate).Msg("GOMAXPROCS adapted")
			}
			lastLate = nLate
		}
	}
}

// lateRuns returns how many times, since the process started, a goroutine
// waited procsLate or more to run once it was ready, from the runtime's
// histogram in s (one /sched/latencies:seconds sample).
func lateRuns(s []metrics.Sample) uint64 {
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := s[0].Value.Float64Histogram()
	var n uint64
	for i, c := range h.Counts {
		if h.Buckets[i] >= procsLate.Seconds() { // the bucket's lower bound
			n += c
		}
	}
	return n
}

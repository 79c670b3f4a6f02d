package main

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestProcsPolicy: every P as soon as one interval is busy, or had a
// goroutine late to run; one P only after procsDownAfter quiet intervals
// in a row; a middling interval starts the count again.
func TestProcsPolicy(t *testing.T) {
	p := &procsPolicy{max: 4, cur: 4}
	for i := 1; i < procsDownAfter; i++ {
		if got := p.next(0.1, 0); got != 4 {
			t.Fatalf("after %d quiet intervals: %d Ps, want 4", i, got)
		}
	}
	if got := p.next(0.5, 0); got != 4 { // middling: the count restarts
		t.Fatalf("middling interval: %d Ps, want 4", got)
	}
	for i := 1; i < procsDownAfter; i++ {
		p.next(0.1, 0)
	}
	if got := p.next(0.1, 0); got != 1 {
		t.Fatalf("after %d quiet intervals: %d Ps, want 1", procsDownAfter, got)
	}
	if got := p.next(0.5, 0); got != 1 {
		t.Fatalf("middling interval on one P: %d Ps, want 1", got)
	}
	if got := p.next(procsUp+0.05, 0); got != 4 {
		t.Fatalf("busy interval: %d Ps, want 4", got)
	}
	if got := p.next(0.1, 0); got != 4 {
		t.Fatalf("one quiet interval after a busy one: %d Ps, want 4", got)
	}
	for range procsDownAfter {
		p.next(0.1, 0)
	}
	if got := p.next(0.1, 1); got != 4 {
		t.Fatalf("a goroutine late to run on one P: %d Ps, want 4", got)
	}
}

// TestRunProcs: the loop sets GOMAXPROCS from the CPU it is given: one P
// while nothing is used, every P again as soon as a full core is. (The
// late runs are the policy's, tested above; the real ones depend on the
// machine's load.)
func TestRunProcs(t *testing.T) {
	n := runtime.GOMAXPROCS(0)
	if n < 2 {
		t.Skip("one CPU: nothing to adapt")
	}
	defer runtime.SetDefaultGOMAXPROCS()
	var used atomic.Int64 // the CPU time the fake process has used
	busy := atomic.Bool{}
	cpu := func() time.Duration {
		if busy.Load() {
			return time.Duration(used.Add(int64(time.Second))) // far more than a core
		}
		return time.Duration(used.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runProcs(ctx, &procsPolicy{max: n, cur: n}, time.Millisecond, cpu, func() uint64 { return 0 }, zerolog.Nop())
	}()
	defer func() { cancel(); wg.Wait() }()
	waitProcs(t, 1)
	busy.Store(true)
	waitProcs(t, n)
}

// waitProcs polls GOMAXPROCS until it is want: the runtime has no event
// for a change of it.
func waitProcs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.GOMAXPROCS(0) != want {
		if time.Now().After(deadline) {
			t.Fatalf("GOMAXPROCS is %d after 10 s, want %d", runtime.GOMAXPROCS(0), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAdaptProcs_EnvironmentWins: with GOMAXPROCS in the environment the
// daemon leaves the runtime's number of Ps alone.
func TestAdaptProcs_EnvironmentWins(t *testing.T) {
	// What the runtime would have applied from GOMAXPROCS=3: not its
	// default, which adapting would bring back.
	defer runtime.SetDefaultGOMAXPROCS()
	runtime.GOMAXPROCS(3)
	stop := adaptProcs([]string{"GOMAXPROCS=3"}, zerolog.Nop())
	stop()
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("GOMAXPROCS %d, want 3 as the environment set it", got)
	}
}

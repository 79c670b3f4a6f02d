package bridge

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

var lastStack uint64

// idleHeap is the heap and goroutine stacks in use after a collection.
func idleHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	lastStack = ms.StackInuse
	return ms.HeapAlloc + ms.StackInuse
}

// measureIdle starts a bridge of n PBX entries on one fake PBX, each with
// sc's settings, waits until the PBX has want sessions per entry logged
// in, and returns the memory the bridge and the fake PBX's side of its
// sessions added, per entry.
func measureIdle(t *testing.T, n, want int, set func(*ServerConfig)) float64 {
	t.Helper()
	if os.Getenv("AMI_IDLE_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 256
	}
	w := newWorld(t, withoutBridge())
	// A fake PBX each, as in production: on a shared one every login's
	// SuccessfulAuth would reach every event session.
	pbxes := make([]*amitest.Server, n)
	for i := range pbxes {
		pbxes[i] = startPBX(t, amitest.Config{})
	}
	before := idleHeap()
	s0 := lastStack
	g0 := runtime.NumGoroutine()
	servers := make([]ServerConfig, n)
	for i := range servers {
		servers[i] = fastServer(fmt.Sprintf("pbx%d", i+1), pbxes[i])
		if set != nil {
			set(&servers[i])
		}
	}
	b, _ := startBridge(t, w.nc, servers, Options{})
	for _, pbx := range pbxes {
		waitSessions(t, pbx, want)
	}
	// Up: the event session logged in and the action endpoints registered.
	deadline := time.Now().Add(waitTime)
	for _, st := range b.Stats() {
		for !st.Up {
			if time.Now().After(deadline) {
				t.Fatalf("%s not up in time: %+v", st.Server, st)
			}
			time.Sleep(time.Millisecond)
			st = b.Stats()[indexOf(b, st.Server)]
		}
	}
	after := idleHeap()
	t.Logf("%.1f KiB of stacks per PBX", float64(lastStack-s0)/float64(n)/1024)
	t.Logf("%.1f goroutines per PBX (bridge and fake PBX)", float64(runtime.NumGoroutine()-g0)/float64(n))
	if f := os.Getenv("AMI_IDLE_HEAP_PROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		if err := pprof.WriteHeapProfile(out); err != nil {
			t.Fatal(err)
		}
		g, _ := os.Create(f + ".goroutine")
		pprof.Lookup("goroutine").WriteTo(g, 1)
		g.Close()
	}
	return float64(after-before) / float64(n)
}

// indexOf is the place of server in b.Stats().
func indexOf(b *Bridge, server string) int {
	for i, st := range b.Stats() {
		if st.Server == server {
			return i
		}
	}
	return -1
}

// maxIdleKiB bounds an idle PBX with actions.idle_logoff and the default
// two action sessions, and maxFanInKiB one with actions.idle_logoff and
// action_sessions: 1, the large fan-in choice (docs/operations.md, "Large
// fan-in"), whose target is issue 22's 64 KiB; each counts its AMI
// session's fake-PBX side too. Measured: 62 and 52 KiB, against 160 KiB
// with the action sessions logged in (176 and 112 KiB before the PBXes on
// demand shared one micro service instance and an idle AMI session kept
// its writer and keepalive goroutines).
const (
	maxIdleKiB  = 72
	maxFanInKiB = 64
)

// An idle PBX whose action sessions log in on demand costs at most
// maxIdleKiB, and at most half of one whose sessions stay logged in;
// with one action session, at most maxFanInKiB: heap and goroutine
// stacks over idlePBXes PBXes (run as AMI_IDLE_HEAP_PROFILE=FILE for
// their heap and goroutine profiles), counting the fake PBX's side of the
// sessions too. No timing is asserted.
func TestOnDemand_IdleMemory(t *testing.T) {
	const idlePBXes = 100
	always := measureIdle(t, idlePBXes, perPBX, nil)
	onDemand := measureIdle(t, idlePBXes, 1, func(sc *ServerConfig) { sc.ActionIdleLogoff = time.Hour })
	fanIn := measureIdle(t, idlePBXes, 1, func(sc *ServerConfig) { sc.ActionIdleLogoff, sc.ActionSessions = time.Hour, 1 })
	t.Logf("per idle PBX, bridge and fake PBX side: %.1f KiB with the action sessions logged in, %.1f KiB with actions.idle_logoff, %.1f KiB with action_sessions: 1 too", always/1024, onDemand/1024, fanIn/1024)
	bound, fanInBound := float64(maxIdleKiB), float64(maxFanInKiB)
	if raceEnabled {
		bound, fanInBound = bound*1.5, fanInBound*1.5 // race instrumentation grows the stacks
	}
	if onDemand > bound*1024 || onDemand > always/2 {
		t.Errorf("an idle PBX with actions.idle_logoff costs %.1f KiB, want at most %.0f KiB and half the %.1f KiB with the sessions logged in", onDemand/1024, bound, always/1024)
	}
	if fanIn > fanInBound*1024 {
		t.Errorf("an idle PBX with actions.idle_logoff and action_sessions: 1 costs %.1f KiB, want at most %.0f KiB", fanIn/1024, fanInBound)
	}
}

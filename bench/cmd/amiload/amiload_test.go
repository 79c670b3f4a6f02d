package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestMain lets the test binary play the children's roles, as the command
// does: run() starts them from the running executable.
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "amiload %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke is amiload -smoke: every process and measurement of the tool
// on small trials, with what must hold at any speed: nothing lost at a
// modest paced rate and fanned in from 10 PBXes, and every event the
// flood loses counted by a gap in Ami-Seq. Loss is counted from what the
// fake PBXes sent.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the daemon and three other processes")
	}
	var out strings.Builder
	rep, err := run(smokeOptions("../../.."), &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Ceiling {
		if c.Lost() != 0 || c.Delivered == 0 {
			t.Errorf("ceiling: %d of %d raw events delivered", c.Delivered, c.Sent)
		}
	}
	if len(rep.Search) != 1 || !rep.Search[0].ok(1) {
		t.Errorf("the paced trial lost events or fell behind: %+v", rep.Search)
	}
	if len(rep.Floods) != 2 {
		t.Errorf("%d floods, want 2", len(rep.Floods))
	}
	for _, f := range rep.Floods {
		if f.Delivered == 0 || f.Back != 0 || (f.Cut == 0 && f.Gaps != f.Lost()) {
			t.Errorf("flood: lost %d, Ami-Seq gaps %d, out of order %d, sessions cut %d: every loss must show as a gap", f.Lost(), f.Gaps, f.Back, f.Cut)
		}
	}
	if rep.FanIn == nil || !rep.FanIn.ok(rep.FanPBX) {
		t.Errorf("fan-in lost events or has Ami-Seq gaps: %+v", rep.FanIn)
	}
	if rep.IdleRSS <= rep.IdleBase {
		t.Errorf("idle PBXes: VmRSS %d KiB, not above the one-PBX %d KiB", rep.IdleRSS, rep.IdleBase)
	}
}

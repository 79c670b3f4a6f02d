package main

import "testing"

// The zero-loss search starts at the highest ceiling of the run, not at
// the daemon's own first ceiling, which a fresh daemon often reads low:
// started there, the search passed its first trial and stopped.
func TestSearchStart_HighestCeiling(t *testing.T) {
	rep := &report{Ceiling: []trial{{Rcvd: 229_000}}}
	if got := rep.SearchStart(); got != 229_000 {
		t.Fatalf("with the daemon's ceiling alone: start %v, want 229000", got)
	}
	rep.InProc = &trial{Rcvd: 306_000}
	rep.TCPPlain = &trial{Rcvd: 345_000}
	if got := rep.SearchStart(); got != 345_000 {
		t.Fatalf("start %v, want the TCP → embedded server ceiling, 345000", got)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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

// A daemon that exits at start is reported with the end of its log (the
// wait for its port stops when it exits).
func TestStartDaemon_ExitAtStartReported(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fails")
	script := "#!/bin/sh\necho 'embedded NATS cannot listen: it broke' >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := startDaemon(bin, t.TempDir(), []string{"127.0.0.1:1"}, false, false)
	if err == nil || !strings.Contains(err.Error(), "it broke") {
		t.Fatalf("err = %v, want the daemon's log", err)
	}
}

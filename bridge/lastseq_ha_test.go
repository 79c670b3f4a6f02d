package bridge

import (
	"context"
	"testing"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// TestHA_LastSeqIsThePublishedAmiSeq: under HA the status's last_seq and
// Stats.LastSeq, which the daemon exports as ami_bridge_last_seq, are one
// number: the Ami-Seq of the last event this process published, as the
// stream holds it. The standby logs in after the active's first events,
// so its own count of the events it read stays below the PBX's Ami-Seq
// once it took over; the metric gave that count, the status the Ami-Seq.
func TestHA_LastSeqIsThePublishedAmiSeq(t *testing.T) {
	r := newQuietRig(t)
	a := r.bridge("a")
	waitStatus(t, a, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	r.call() // events b never reads
	b := r.bridge("b")
	waitStatus(t, b, func(st subjects.PBXStatus) bool {
		return st.HA.Role == subjects.RoleStandby && st.HA.Holder == "a" && allUp(st)
	})
	sent := r.emit(userEvent("lastseq", 1), userEvent("lastseq", 2))
	stored := streamUpTo(t, r.js, sent[len(sent)-1])
	checkLastSeq(t, "a, active", a, stored[len(stored)-1].seq)
	checkLastSeq(t, "b, standby", b, 0)

	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive })
	sent = r.emit(userEvent("lastseq", 3), userEvent("lastseq", 4))
	stored = streamUpTo(t, r.js, sent[len(sent)-1])
	last := stored[len(stored)-1].seq
	checkLastSeq(t, "b, active after its takeover", b, last)
	// The premise: b's own count is not the PBX's Ami-Seq, or the test
	// could not tell them apart.
	if own := b.pbxes[0].lastSeq.Load(); own >= last {
		t.Fatalf("b read %d events, the stream's last Ami-Seq is %d: want fewer read, as b logged in after the call", own, last)
	}
}

// checkLastSeq waits for b's status to give want as last_seq, then wants
// the same number in b's Stats.
func checkLastSeq(t *testing.T, who string, b *Bridge, want uint64) {
	t.Helper()
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.LastSeq == want })
	if got := b.Stats()[0].LastSeq; got != want {
		t.Errorf("%s: Stats.LastSeq (ami_bridge_last_seq) = %d, the status's last_seq and the stream's last Ami-Seq %d", who, got, want)
	}
}

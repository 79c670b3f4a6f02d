package bridge

import (
	"github.com/ami-bridge/ami-bridge/subjects"
	"testing"

	"github.com/ami-bridge/ami-bridge/bridge/internal/ha"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
)

// The active's event session drops and is back before the HA loop looks
// (a renewal was slow): the events the PBX sent in between are missing
// from this process's numbering, so it publishes nothing more and hands
// over at once, although the session is up again; nor can it take its
// lease back by its own last ack (issue 16 item 7: the events missed went
// out nowhere, under contiguous Ami-Seq, although the standby had them).
func TestHA_LoginEndedWhileActiveHandsOver(t *testing.T) {
	h, _ := activeNode(t, nil, &natstest.InterceptJS{}, 10e9)
	h.p.events.setState(subjects.StateConnected, nil)
	terms, ok := h.mayPublish()
	if !ok || h.fenced(&terms) || h.mustRelease() {
		t.Fatal("a healthy active may not publish")
	}
	h.acked(10, 52, 7)
	h.sessionEnded(12)                                // the login ended after local seq 12…
	h.p.events.setState(subjects.StateConnected, nil) // …and the next is up before the loop looks
	if _, ok := h.mayPublish(); ok {
		t.Fatal("the active may still publish after its login ended")
	}
	if !h.fenced(&terms) {
		t.Fatal("the batch under way is not fenced after the login ended")
	}
	if !h.mustRelease() {
		t.Fatal("the active does not hand over after its login ended, its session up again")
	}
	h.acked(11, 53, 8) // an ack of the old login still in flight
	h.mu.Lock()
	own := h.own
	h.mu.Unlock()
	if own.Valid || own.Seq != 53 {
		t.Fatalf("own %+v: want the last ack's Ami-Seq kept (for the limit), not valid as a proof", own)
	}
}

// An active that took over with a gap and published nothing before it
// hands the lease over leaves a limit at least below its run's first
// number, not an older ack: the next active never reuses the numbers the
// gap reported (nemesis seed 16 short: a gap 1211-66725 reported, then
// the next active numbered from 1212).
func TestHA_ReleaseKeepsTheRunsNumbers(t *testing.T) {
	h, l := activeNode(t, nil, &natstest.InterceptJS{}, 10e9)
	h.mu.Lock()
	h.seqRun, h.own = 66727, ha.Own{Seq: 1210}
	h.mu.Unlock()
	h.release(t.Context(), "test", true)
	st, err := h.bucket.Get(t.Context(), l.Key())
	if err != nil {
		t.Fatal(err)
	}
	v, err := ha.DecodeValue(st.Data)
	if err != nil || v.Limit < 66726 {
		t.Fatalf("released with %s (%v): want a limit of at least 66726", st.Data, err)
	}
}

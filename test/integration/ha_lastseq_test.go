package integration

import (
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestHA_LastSeqMetricIsTheStatus: the standby logs in after the active
// published its first events, so after it took over its own count of
// the events it read is below the PBX's Ami-Seq. Its metric
// ami_bridge_last_seq and its status's last_seq then give one number,
// the Ami-Seq of the stream's last event (the metric gave that count).
func TestHA_LastSeqMetricIsTheStatus(t *testing.T) {
	r := newHARig(t)
	a := r.start()
	r.waitHA(a, 0, "active", func(s haStatus) bool { return s.Role == "active" })
	r.calls(5) // events the standby never reads
	b := r.startWith(withHTTP(r.cfg))
	r.waitHA(b, 0, "standby behind "+a.self, func(s haStatus) bool { return s.Role == "standby" && s.Holder == a.self })
	a.signal(syscall.SIGTERM)
	if code := a.wait(exitTimeout); code != 0 {
		t.Fatalf("the active exited %d after SIGTERM, want 0", code)
	}
	from, _ := r.waitHA(b, 0, "active", func(s haStatus) bool { return s.Role == "active" })
	r.calls(5)
	stored := r.stream(len(r.ref.snapshot()))
	last := stored[len(stored)-1].seq

	// The metric reaches the stream's last Ami-Seq once the acks are in;
	// the status says the same at the latest in the one b publishes as
	// it stops.
	base := b.httpBase(t)
	metric := func() float64 { return r.w.scrape(base).value("ami_bridge_last_seq", "server=ha1") }
	deadline := time.Now().Add(eventTimeout)
	for metric() != float64(last) {
		if time.Now().After(deadline) {
			t.Fatalf("ami_bridge_last_seq = %v, the stream's last Ami-Seq %d", metric(), last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.signal(syscall.SIGTERM)
	_, m := r.w.status.waitFor(t, from, readyTimeout, b.self+": its final status", func(m *nats.Msg) bool {
		st, ok := lastSeqOf(m)
		return ok && st.HA.Self == b.self && st.State == "stopped"
	})
	if code := b.wait(exitTimeout); code != 0 {
		t.Errorf("b exited %d after SIGTERM, want 0", code)
	}
	if st, _ := lastSeqOf(m); st.LastSeq != last {
		t.Errorf("final status last_seq = %d, ami_bridge_last_seq and the stream's last Ami-Seq %d", st.LastSeq, last)
	}
}

type lastSeqStatus struct {
	State   string `json:"state"`
	LastSeq uint64 `json:"last_seq"`
	HA      *struct {
		Self string `json:"self"`
	} `json:"ha"`
}

func lastSeqOf(m *nats.Msg) (lastSeqStatus, bool) {
	var st lastSeqStatus
	return st, json.Unmarshal(m.Data, &st) == nil && st.HA != nil
}

// calls plays n calls at once and returns when the reference session has
// read every event they made.
func (r *haRig) calls(n int) {
	r.w.t.Helper()
	before := len(r.ref.snapshot())
	gen := r.pbx.StartCalls(context.Background(), float64(n), n)
	if err := gen.Wait(); err != nil {
		r.w.t.Fatalf("call generator: %v", err)
	}
	_, sent, _ := gen.Count()
	deadline := time.Now().Add(eventTimeout)
	for int64(len(r.ref.snapshot())-before) < sent {
		if time.Now().After(deadline) {
			r.w.t.Fatalf("the reference session read %d of the %d events the calls made", len(r.ref.snapshot())-before, sent)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package bridge

import (
	"github.com/ami-bridge/ami-bridge/subjects"
	"sync/atomic"
	"testing"
)

// TestStatus_Topology: the status carries what Options.Topology says, read
// afresh for every status (a leaf link that drops shows at the next one),
// with the stream and the replicas Start created it with.
func TestStatus_Topology(t *testing.T) {
	var linked atomic.Int64
	linked.Store(1)
	topo := func() subjects.Topology {
		return subjects.Topology{NATS: "leafnode", Domain: "paris", Leafnodes: &subjects.Leafnodes{Remotes: 1, Connected: int(linked.Load())}}
	}
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withOptions(Options{
		JetStream: JetStreamOptions{Enabled: true},
		Topology:  topo,
	}))
	b := tw.b
	st := tw.w.waitState(subjects.StateConnected)
	want := subjects.Topology{NATS: "leafnode", Domain: "paris", Leafnodes: &subjects.Leafnodes{Remotes: 1, Connected: 1}, Stream: DefaultStream, Replicas: DefaultReplicas}
	if st.Topology == nil || !sameTopology(*st.Topology, want) {
		t.Fatalf("published status topology = %+v, want %+v", st.Topology, want)
	}

	linked.Store(0)
	want.Leafnodes.Connected = 0
	if got := b.Status()[0].Topology; got == nil || !sameTopology(*got, want) {
		t.Errorf("after the link dropped, status topology = %+v, want %+v", got, want)
	}
}

// TestStatus_NoTopology: without Options.Topology and JetStream the status
// has no topology key at all, as before the field existed.
func TestStatus_NoTopology(t *testing.T) {
	r := newWorld(t)
	b := r.b
	if st := r.w.waitState(subjects.StateConnected); st.Topology != nil {
		t.Errorf("status without a topology to tell has one: %+v", st.Topology)
	}
	if got := b.Status()[0].Topology; got != nil {
		t.Errorf("Bridge.Status() topology = %+v, want none", got)
	}
}

func sameTopology(a, b subjects.Topology) bool {
	if (a.Leafnodes == nil) != (b.Leafnodes == nil) || a.Leafnodes != nil && *a.Leafnodes != *b.Leafnodes {
		return false
	}
	a.Leafnodes, b.Leafnodes = nil, nil
	return a == b
}

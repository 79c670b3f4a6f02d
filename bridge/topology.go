package bridge

import "github.com/ami-bridge/ami-bridge/subjects"

// topology returns the current Topology, or nil when there is nothing to
// say (no Options.Topology and no JetStream). It is safe from any
// goroutine once Start returned: Options.Topology must be too.
func (ns *natsSide) topology() *subjects.Topology {
	var t subjects.Topology
	if ns.topologyFunc != nil {
		t = ns.topologyFunc()
	}
	if ns.jsOpts.Enabled {
		t.Stream, t.Replicas = ns.jsOpts.Stream, ns.streamReplicas
	}
	if t == (subjects.Topology{}) {
		return nil
	}
	return &t
}

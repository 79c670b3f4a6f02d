package bridge

// Topology says how the bridge reaches NATS and where its events are
// stored: the status carries it (Status.Topology) and the daemon logs it
// at startup, so that an operator can tell a site from a hub, and a site
// cut off from its hub, without reading the configuration.
//
// The bridge knows only its own part (Stream, Replicas). The rest comes
// from Options.Topology, which the program that set up NATS provides.
type Topology struct {
	// NATS names the layout: "embedded" (the program's in-process
	// nats-server), "leafnode" (that server as a leaf node of a hub) or
	// "external" (servers given by URL, one or a cluster). Empty when
	// Options.Topology is nil.
	NATS string `json:"nats,omitempty"`
	// Domain is the JetStream domain the stream lives in, "" for none.
	Domain string `json:"domain,omitempty"`
	// Leafnodes are the links to the hub, when NATS is "leafnode".
	Leafnodes *Leafnodes `json:"leafnodes,omitempty"`
	// Stream is the JetStream stream events go to, "" without JetStream.
	Stream string `json:"stream,omitempty"`
	// Replicas are the stream's replicas as found or created by Start
	// (an existing stream keeps its own, whatever JetStreamOptions say).
	Replicas int `json:"replicas,omitempty"`
}

// Leafnodes counts a leaf node's links to its hub: Connected below
// Remotes means a WAN cut, during which events wait in the site's stream.
type Leafnodes struct {
	Remotes   int `json:"remotes"`
	Connected int `json:"connected"`
}

// topology returns the current Topology, or nil when there is nothing to
// say (no Options.Topology and no JetStream). It is safe from any
// goroutine once Start returned: Options.Topology must be too.
func (ns *natsSide) topology() *Topology {
	var t Topology
	if ns.topologyFunc != nil {
		t = ns.topologyFunc()
	}
	if ns.jsOpts.Enabled {
		t.Stream, t.Replicas = ns.jsOpts.Stream, ns.streamReplicas
	}
	if t == (Topology{}) {
		return nil
	}
	return &t
}

// Topology returns what Status.Topology carries: the NATS layout from
// Options.Topology, and the stream with its replicas once Start found or
// created it.
func (b *Bridge) Topology() Topology {
	if t := b.ns.topology(); t != nil {
		return *t
	}
	return Topology{}
}

package subjects

import "time"

// PBXStatus is what <prefix>.<server>.status carries, as JSON. The bridge
// publishes it on every state change and at a fixed interval.
type PBXStatus struct {
	Server string `json:"server"`
	// State is the PBX's: connected when the event session and at least
	// one action session are logged in; otherwise the event session's
	// state, or when only the action sessions are down, theirs.
	State string    `json:"state"` // one of the State constants
	Since time.Time `json:"since"` // when the state was entered
	Error string    `json:"error"` // why the PBX is not connected, "" otherwise

	Banner     string `json:"banner,omitempty"`      // AMI greeting, once connected
	Version    string `json:"version,omitempty"`     // Asterisk version from CoreSettings, once known
	AMIVersion string `json:"ami_version,omitempty"` // AMI version from the banner or CoreSettings

	EventsPublished uint64 `json:"events_published"` // handed to NATS (JetStream: acknowledged)
	EventsDropped   uint64 `json:"events_dropped"`   // lost after passing the filter: the buffer full or NATS refused; each leaves a gap in Ami-Seq
	Reconnects      uint64 `json:"reconnects"`       // event sessions established after the first: events may be lost at each
	// LastSeq is the Ami-Seq of the last event this process published
	// (JetStream: that the stream acknowledged), 0 before the first; with
	// HA in the PBX's numbering, which goes on across takeovers.
	LastSeq uint64 `json:"last_seq"`
	Epoch   int64  `json:"epoch"` // epoch of Nats-Msg-Id: Ami-Seq restarts at 1 when it changes; with HA the PBX's, kept across takeovers

	// JSFailures counts events JetStream had not acknowledged when the
	// shutdown deadline passed (the bridge retries until then); present
	// only with JetStream.
	JSFailures *uint64 `json:"js_failures,omitempty"`

	// HA is this process's part in high availability, present only with
	// HA. Every process of the PBX publishes its own status on the same
	// subject; HA.Self tells them apart.
	HA *HAStatus `json:"ha,omitempty"`

	// Sessions are the PBX's AMI sessions: the event session first, then
	// the action sessions.
	Sessions []SessionStatus `json:"sessions"`

	// Topology is how NATS is laid out and where events are stored;
	// absent when the bridge knows nothing of it.
	Topology *Topology `json:"topology,omitempty"`
}

// The states of an AMI session, and of a PBX, as PBXStatus reports them.
const (
	StateConnecting   = "connecting"
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
	StateAuthFailed   = "auth_failed"
	StateStopped      = "stopped"
	// StateIdle is an action session logged off while idle
	// (ServerConfig.ActionIdleLogoff): its endpoint stays registered and
	// the next request logs it in. Only a session has it, never a PBX.
	StateIdle = "idle"
)

// SessionStatus is the state of one AMI session of a PBX.
type SessionStatus struct {
	Role       string    `json:"role"`  // RoleEvents or RoleAction
	State      string    `json:"state"` // one of the State constants
	Since      time.Time `json:"since"`
	Error      string    `json:"error"`
	Reconnects uint64    `json:"reconnects"`
}

// The roles of a PBX's AMI sessions, as SessionStatus.Role reports them.
const (
	RoleEvents = "events"
	RoleAction = "action"
)

// HAStatus is the HA part of a PBX's status.
type HAStatus struct {
	Role   string `json:"role"`   // RoleActive or RoleStandby
	Self   string `json:"self"`   // this process's holder name
	Holder string `json:"holder"` // who holds the lease, as last seen; "" when nobody
	// LastTakeover is this process's last takeover, nil before one.
	LastTakeover *Takeover `json:"last_takeover,omitempty"`
	// Gaps are the Ami-Seq ranges this process found lost at a takeover.
	Gaps []Gap `json:"gaps,omitempty"`
	// Takeovers counts the times this process became active.
	Takeovers uint64 `json:"takeovers"`
}

// The roles of a PBX with HA, as HAStatus.Role reports them.
const (
	RoleActive  = "active"
	RoleStandby = "standby"
)

// Takeover describes one time a process became active.
type Takeover struct {
	At       time.Time `json:"at"`
	From     uint64    `json:"from_seq"` // the first Ami-Seq it published
	Replayed int       `json:"replayed"` // events from its buffer published at once, the repeats included
	Matched  bool      `json:"matched"`  // the stream's last event was found in its buffer; false after a gap or for the first active
}

// Gap is a range of Ami-Seq found at a takeover that could not line up
// with the stream's last event. The old active may have published some of
// its numbers (the stream has those); the numbers the stream lacks, and
// the events read by nobody, are lost. Its last number is never used.
type Gap struct {
	From uint64    `json:"from_seq"`
	To   uint64    `json:"to_seq"` // inclusive
	At   time.Time `json:"at"`
}

// Topology says how the bridge reaches NATS and where its events are
// stored, so that an operator can tell a site from a hub, and a site cut
// off from its hub, without reading the configuration. The bridge knows
// only Stream and Replicas; the program that set up NATS provides the
// rest.
type Topology struct {
	// NATS names the layout: "embedded" (the program's in-process
	// nats-server), "leafnode" (that server as a leaf node of a hub) or
	// "external" (servers given by URL, one or a cluster). Empty when
	// unknown.
	NATS string `json:"nats,omitempty"`
	// Domain is the JetStream domain the stream lives in, "" for none.
	Domain string `json:"domain,omitempty"`
	// Leafnodes are the links to the hub, when NATS is "leafnode".
	Leafnodes *Leafnodes `json:"leafnodes,omitempty"`
	// Stream is the JetStream stream events go to, "" without JetStream.
	Stream string `json:"stream,omitempty"`
	// Replicas are the stream's replicas as the bridge found or created
	// it (an existing stream keeps its own).
	Replicas int `json:"replicas,omitempty"`
}

// Leafnodes counts a leaf node's links to its hub: Connected below
// Remotes means a WAN cut, during which events wait in the site's stream.
type Leafnodes struct {
	Remotes   int `json:"remotes"`
	Connected int `json:"connected"`
}

package bridge

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// Status is what <prefix>.<server>.status carries, as JSON. It is
// published on every state change and every StatusInterval.
type Status struct {
	Server string `json:"server"`
	// State is the PBX's: connected when the event session and at least
	// one action session are logged in; otherwise the event session's
	// state, or when only the action sessions are down, theirs.
	State string    `json:"state"` // connecting, connected, disconnected, auth_failed or stopped
	Since time.Time `json:"since"` // when the state was entered
	Error string    `json:"error"` // why the PBX is not connected, "" otherwise

	Banner     string `json:"banner,omitempty"`      // AMI greeting, once connected
	Version    string `json:"version,omitempty"`     // Asterisk version from CoreSettings, once known
	AMIVersion string `json:"ami_version,omitempty"` // AMI version from the banner or CoreSettings

	EventsPublished uint64 `json:"events_published"` // handed to NATS (JetStream: acknowledged)
	EventsDropped   uint64 `json:"events_dropped"`   // lost after passing the filter: the buffer full or NATS refused; each leaves a gap in Ami-Seq
	Reconnects      uint64 `json:"reconnects"`       // event sessions established after the first: events may be lost at each
	LastSeq         uint64 `json:"last_seq"`         // the last Ami-Seq given; with HA the last this process published and had acknowledged
	Epoch           int64  `json:"epoch"`            // epoch of Nats-Msg-Id: Ami-Seq restarts at 1 when it changes; with HA the PBX's, kept across takeovers

	// JSFailures counts events JetStream had not acknowledged when the
	// shutdown deadline passed (the bridge retries until then); present
	// only with JetStream.
	JSFailures *uint64 `json:"js_failures,omitempty"`

	// HA is this process's part in high availability, present only with
	// HAOptions.Enabled. Every process of the PBX publishes its own status
	// on the same subject; HA.Self tells them apart.
	HA *HAStatus `json:"ha,omitempty"`

	// Sessions are the PBX's AMI sessions: the event session first, then
	// the action sessions.
	Sessions []SessionStatus `json:"sessions"`

	// Topology is how NATS is laid out and where events are stored;
	// absent when the bridge knows nothing of it (see Topology).
	Topology *Topology `json:"topology,omitempty"`
}

// SessionStatus is the state of one AMI session of a PBX.
type SessionStatus struct {
	Role       string    `json:"role"` // "events" or "action"
	State      string    `json:"state"`
	Since      time.Time `json:"since"`
	Error      string    `json:"error"`
	Reconnects uint64    `json:"reconnects"`
}

func (p *pbx) status() Status {
	st := Status{Server: p.name, Sessions: make([]SessionStatus, 0, 1+len(p.actions))}
	st.Sessions = append(st.Sessions, p.events.status())
	for _, l := range p.actions {
		st.Sessions = append(st.Sessions, l.status())
	}
	p.mu.Lock()
	st.State = p.state
	st.Since = p.since.UTC()
	st.Version = p.version
	st.AMIVersion = p.amiVersion
	p.mu.Unlock()
	p.events.mu.Lock()
	st.Banner = p.events.banner
	p.events.mu.Unlock()
	if st.State != StateConnected && st.State != StateStopped {
		for _, ss := range st.Sessions {
			if ss.Error != "" {
				st.Error = ss.Role + " session: " + ss.Error
				break
			}
		}
	}
	st.EventsPublished = p.published.Load()
	st.EventsDropped = p.dropped.Load()
	st.Reconnects = st.Sessions[0].Reconnects
	st.LastSeq = p.lastSeq.Load()
	st.Epoch = p.ns.epoch
	st.Topology = p.ns.topology()
	if p.ha != nil {
		st.HA = p.ha.status()
		// The numbers of the PBX's stream, not this process's own count.
		st.Epoch, st.LastSeq = p.ha.published()
	}
	if p.ns.jsOpts.Enabled {
		n := p.jsFailures.Load()
		st.JSFailures = &n
	}
	return st
}

// publishStatus publishes a fresh snapshot. Failures are logged only: the
// status is published again at the next change or tick.
func (p *pbx) publishStatus() {
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	data, err := json.Marshal(p.status())
	if err != nil {
		p.log.Error("encode status", "error", err)
		return
	}
	err = p.ns.nc.Publish(subjects.Status(p.ns.prefix, p.name), data)
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.log.Warn("publish status", "error", err)
	}
}

package bridge

import (
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/subjects"
)

func (p *pbx) status() subjects.PBXStatus {
	st := subjects.PBXStatus{Server: p.name, Sessions: make([]subjects.SessionStatus, 0, 1+len(p.actions))}
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
	if st.State != subjects.StateConnected && st.State != subjects.StateStopped {
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
	st.Epoch, st.LastSeq = p.lastPublished()
	st.Topology = p.ns.topology()
	if p.ha != nil {
		st.HA = p.ha.status()
	}
	if p.ns.jsOpts.Enabled {
		n := p.jsFailures.Load()
		st.JSFailures = &n
	}
	return st
}

// lastPublished returns the Ami-Seq of the last event this process
// published (with JetStream: acknowledged), with the epoch of its
// Nats-Msg-Id: what the status's last_seq and epoch and Stats.LastSeq
// give. With HA they are the PBX's numbers, kept across takeovers, not
// this process's own count of the events it read.
func (p *pbx) lastPublished() (epoch int64, seq uint64) {
	if p.ha != nil {
		return p.ha.published()
	}
	return p.ns.epoch, p.stats.lastPublished.Load()
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

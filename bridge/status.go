package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// Status is what <prefix>.<server>.status carries, as JSON. It is
// published on every state change and every StatusInterval.
type Status struct {
	Server string    `json:"server"`
	State  string    `json:"state"` // connecting, connected, disconnected, auth_failed or stopped
	Since  time.Time `json:"since"` // when the state was entered
	Error  string    `json:"error"` // why the session is not connected, "" otherwise

	Banner     string `json:"banner,omitempty"`      // AMI greeting, once connected
	Version    string `json:"version,omitempty"`     // Asterisk version from CoreSettings, once known
	AMIVersion string `json:"ami_version,omitempty"` // AMI version from the banner or CoreSettings

	EventsPublished uint64 `json:"events_published"` // handed to NATS (JetStream: acknowledged)
	EventsDropped   uint64 `json:"events_dropped"`   // lost after passing the filter: a queue full or NATS refused; each leaves a gap in Ami-Seq
	Reconnects      uint64 `json:"reconnects"`       // sessions established after the first
	LastSeq         uint64 `json:"last_seq"`         // the last Ami-Seq given
	Epoch           int64  `json:"epoch"`            // process epoch of Nats-Msg-Id: Ami-Seq restarts at 1 when it changes

	// JSFailures counts events JetStream did not acknowledge; present only
	// with JetStream.
	JSFailures *uint64 `json:"js_failures,omitempty"`
}

func (s *session) status() Status {
	s.mu.Lock()
	st := Status{
		Server:     s.name,
		State:      s.state,
		Since:      s.since.UTC(),
		Error:      s.lastErr,
		Banner:     s.banner,
		Version:    s.version,
		AMIVersion: s.amiVersion,
	}
	s.mu.Unlock()
	st.EventsPublished = s.published.Load()
	st.EventsDropped = s.dropped.Load()
	st.Reconnects = s.reconnects.Load()
	st.LastSeq = s.lastSeq.Load()
	st.Epoch = s.b.epoch
	if s.b.opts.JetStream.Enabled {
		n := s.jsFailures.Load()
		st.JSFailures = &n
	}
	return st
}

// publishStatus publishes a fresh snapshot. Failures are logged only: the
// status is published again at the next change or tick.
func (s *session) publishStatus() {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	data, err := json.Marshal(s.status())
	if err != nil {
		s.log.Error().Err(err).Msg("encode status")
		return
	}
	err = s.b.nc.Publish(subjects.Status(s.b.opts.Prefix, s.name), data)
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		s.log.Warn().Err(err).Msg("publish status")
	}
}

// shutdownCtx is the context Shutdown was given, for the AMI Logoff.
func (b *Bridge) shutdownCtx() context.Context {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopCtx == nil {
		return context.Background()
	}
	return b.stopCtx
}

package config

import (
	"time"

	"github.com/ami-bridge/ami-bridge/bridge"
)

// HA makes several ami-bridge processes share each PBX: one publishes its
// events, the others stand by, reading the same events, ready to take
// over. The leases live in a JetStream KV bucket, so HA needs
// jetstream.enabled.
type HA struct {
	Enabled            bool          `koanf:"enabled"`
	Bucket             string        `koanf:"bucket"`
	LeaseTTL           time.Duration `koanf:"lease_ttl"`
	CheckpointInterval time.Duration `koanf:"checkpoint_interval"`
	// StandbyBuffer is a removed key, read only to refuse it with a
	// message that says what replaced it.
	StandbyBuffer any `koanf:"standby_buffer"`
}

// DefaultHA returns the ha section used where no layer sets a key.
func DefaultHA() HA {
	return HA{
		Bucket:             bridge.DefaultHABucket,
		LeaseTTL:           bridge.DefaultLeaseTTL,
		CheckpointInterval: bridge.DefaultCheckpointInterval,
	}
}

func (c *Config) checkHA(p *problems) {
	h := c.HA
	if h.StandbyBuffer != nil {
		// It trimmed a standby's buffer by age, so an outage longer than
		// that lost events with HA that the same process kept without.
		p.add("ha.standby_buffer: removed: a standby now keeps what event_buffer and event_buffer_bytes allow, the newest first, as the ring does without HA; delete the key")
	}
	if !h.Enabled {
		return
	}
	// The bridge checks the other keys (checkBridge).
	if c.NATS.URL == "" {
		// Each embedded server has its own bucket, so every process would
		// hold its own lease and publish; at a leaf site the hub would
		// then source every event twice.
		p.add("ha.enabled: needs nats.url: with only the embedded NATS server each bridge has its own lease bucket and every one becomes active; point every bridge of the group at the same NATS server or cluster")
	}
}

// Options returns the bridge's HA options.
func (h HA) Options() bridge.HAOptions {
	return bridge.HAOptions{
		Enabled:            h.Enabled,
		Bucket:             h.Bucket,
		LeaseTTL:           h.LeaseTTL,
		CheckpointInterval: h.CheckpointInterval,
	}
}

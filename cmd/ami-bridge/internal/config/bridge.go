package config

import (
	"fmt"
	"strings"

	"github.com/ami-bridge/ami-bridge/bridge"
)

// Bridge returns what the bridge library takes from this configuration:
// its PBXes and the options New takes, but those the daemon sets itself
// (Version, Logger, Topology, ServiceConn).
func (c *Config) Bridge() ([]bridge.ServerConfig, bridge.Options) {
	servers := make([]bridge.ServerConfig, len(c.Servers))
	for i, s := range c.Servers {
		servers[i] = bridge.ServerConfig{
			Name:             s.Name,
			URL:              s.Endpoint, // never holds the secret
			Secret:           s.Secret.Reveal(),
			Auth:             s.Auth,
			TLS:              s.ClientTLS,
			EventsInclude:    s.Events.Include,
			EventsExclude:    s.Events.Exclude,
			ActionsAllow:     s.Actions.Allow,
			ActionsDeny:      s.Actions.Deny,
			ActionTimeout:    s.ActionTimeout,
			MaxActionTimeout: s.MaxActionTimeout,
			PingInterval:     s.PingInterval,
			ActionSessions:   s.ActionSessions,
			ActionIdleLogoff: s.Actions.IdleLogoff,
			MaxReplyEntries:  s.MaxReplyEntries,
			MaxReplyBytes:    s.MaxReplyBytes,
			ReconnectMin:     s.Reconnect.Min,
			ReconnectMax:     s.Reconnect.Max,

			MaxPendingRequests: s.MaxPendingRequests,
			NamedActionsOnly:   !s.Actions.GenericSubject,
		}
	}
	return servers, bridge.Options{
		Prefix:           c.NATS.Prefix,
		ReplyPrefixes:    c.NATS.ReplyPrefixes,
		EventBuffer:      c.EventBuffer,
		EventBufferBytes: c.EventBufferBytes,
		JetStream: bridge.JetStreamOptions{
			Enabled:    c.JetStream.Enabled,
			Stream:     c.JetStream.Stream,
			MaxAge:     c.JetStream.MaxAge,
			Duplicates: c.JetStream.Duplicates,
			MaxPending: c.JetStream.MaxPending,
			Replicas:   c.JetStream.Replicas,
		},
		HA: c.HA.Options(),
		Idempotency: bridge.IdempotencyOptions{
			Window: c.Idempotency.Window,
			Bucket: c.Idempotency.Bucket,
		},
		State: bridge.StateOptions{
			Enabled:       c.State.Enabled,
			Bucket:        c.State.Bucket,
			Replicas:      c.State.Replicas,
			Records:       c.State.Records,
			FlushInterval: c.State.FlushInterval,
		},
	}
}

// checkBridge adds the problems the bridge finds in what this
// configuration gives it (bridge.Check: the bridge owns those rules),
// each under the key that set the field. The url and the secret are this
// package's to check: it reads them, from the URL, the environment or a
// file, before the bridge sees them.
func (c *Config) checkBridge(p *problems) {
	for _, pr := range bridge.Check(c.Bridge()) {
		field, index, _ := strings.Cut(pr.Field, "[")
		if index != "" {
			index = "[" + index
		}
		if pr.Server >= 0 {
			if field == "URL" {
				continue
			}
			key, ok := serverKeys[field]
			if !ok {
				key = field
			}
			p.add("%s: %s%s: %s", serverKey(pr.Server, c.Servers[pr.Server].Name), key, index, pr.Msg)
			continue
		}
		key, ok := optionKeys[field]
		if !ok {
			key = pr.Field
		}
		p.add("%s%s: %s", key, index, pr.Msg)
	}
}

// serverKey names servers[i] in a problem.
func serverKey(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("servers[%d]", i)
	}
	return fmt.Sprintf("servers[%d] (%s)", i, name)
}

// serverKeys are the keys of a servers[] entry by bridge.ServerConfig
// field.
var serverKeys = map[string]string{
	"Name":               "name",
	"Auth":               "auth",
	"TLS":                "tls",
	"EventsInclude":      "events.include",
	"EventsExclude":      "events.exclude",
	"ActionsAllow":       "actions.allow",
	"ActionsDeny":        "actions.deny",
	"ActionTimeout":      "action_timeout",
	"MaxActionTimeout":   "max_action_timeout",
	"PingInterval":       "ping_interval",
	"ReconnectMin":       "reconnect.min",
	"ReconnectMax":       "reconnect.max",
	"ActionSessions":     "action_sessions",
	"ActionIdleLogoff":   "actions.idle_logoff",
	"MaxReplyEntries":    "max_reply_entries",
	"MaxReplyBytes":      "max_reply_bytes",
	"MaxPendingRequests": "max_pending_requests",
	"NamedActionsOnly":   "actions.generic_subject",
}

// optionKeys are the keys by bridge.Options field.
var optionKeys = map[string]string{
	"":                      "servers",
	"Prefix":                "nats.prefix",
	"ReplyPrefixes":         "nats.reply_prefixes",
	"EventBuffer":           "event_buffer",
	"EventBufferBytes":      "event_buffer_bytes",
	"JetStream.Stream":      "jetstream.stream",
	"JetStream.MaxAge":      "jetstream.max_age",
	"JetStream.Duplicates":  "jetstream.duplicates",
	"JetStream.MaxPending":  "jetstream.max_pending",
	"JetStream.Replicas":    "jetstream.replicas",
	"HA.Enabled":            "ha.enabled",
	"HA.Bucket":             "ha.bucket",
	"HA.LeaseTTL":           "ha.lease_ttl",
	"HA.CheckpointInterval": "ha.checkpoint_interval",
	"Idempotency.Window":    "idempotency.window",
	"Idempotency.Bucket":    "idempotency.bucket",
	"State.Bucket":          "state.bucket",
	"State.Replicas":        "state.replicas",
	"State.FlushInterval":   "state.flush_interval",
}

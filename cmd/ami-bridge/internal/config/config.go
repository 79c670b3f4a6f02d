// Package config loads the ami-bridge configuration from three layers, each
// overriding the last: a YAML file, environment variables prefixed
// AMI_BRIDGE_ ("__" nests), and command-line flags. Load validates the
// result as a whole and reports every problem in one *Error, before
// anything connects.
package config

import (
	"crypto/tls"
	"time"

	"github.com/ami-bridge/ami-bridge/bridge"
)

// Config is the whole configuration of one ami-bridge process.
type Config struct {
	NATS            NATS          `koanf:"nats"`
	JetStream       JetStream     `koanf:"jetstream"`
	HA              HA            `koanf:"ha"`
	Idempotency     Idempotency   `koanf:"idempotency"`
	State           State         `koanf:"state"`
	Servers         []Server      `koanf:"servers"`
	Log             Log           `koanf:"log"`
	HTTP            HTTP          `koanf:"http"`
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`

	// EventBuffer and EventBufferBytes bound each PBX's event buffer, in
	// events and in bytes of AMI text: what waits while NATS is slow or
	// away (with JetStream: until acknowledged). Past either, new events
	// are dropped and counted.
	EventBuffer      int `koanf:"event_buffer"`
	EventBufferBytes int `koanf:"event_buffer_bytes"`

	// MemoryLimit is the Go runtime's soft memory limit: auto, off, or a
	// size (see memory.go).
	MemoryLimit MemoryLimit `koanf:"memory_limit"`
}

// NATS says where to publish: an external server at URL, or the embedded
// nats-server when URL is empty.
type NATS struct {
	URL          NATSURL  `koanf:"url"`
	Embedded     Embedded `koanf:"embedded"`
	Prefix       string   `koanf:"prefix"`
	User         string   `koanf:"user"`
	Password     Secret   `koanf:"password"`
	Token        Secret   `koanf:"token"`
	NkeySeedFile string   `koanf:"nkey_seed_file"`
	CredsFile    string   `koanf:"creds_file"`
	TLS          TLS      `koanf:"tls"`
	// ReplyPrefixes are the inbox prefixes, besides _INBOX, on which the
	// bridge answers action requests (bridge.Options.ReplyPrefixes).
	ReplyPrefixes []string `koanf:"reply_prefixes"`
	// Service, when set, logs in a second connection, with its own NATS
	// user, that serves the action requests and micro's $SRV requests
	// (bridge.Options.ServiceConn); see docs/security.md.
	Service NATSService `koanf:"service"`

	// ClientTLS is built from TLS by Load; nil when TLS is unset.
	ClientTLS *tls.Config `koanf:"-"`
}

// NATSService is the login of the service connection: one of
// user/password, token, nkey_seed_file, creds_file, as for NATS.
type NATSService struct {
	User         string `koanf:"user"`
	Password     Secret `koanf:"password"`
	Token        Secret `koanf:"token"`
	NkeySeedFile string `koanf:"nkey_seed_file"`
	CredsFile    string `koanf:"creds_file"`
}

// IsSet reports whether a service connection is configured.
func (s NATSService) IsSet() bool { return s != NATSService{} }

// Embedded configures the in-process nats-server used when NATS.URL is
// empty.
type Embedded struct {
	Listen   string `koanf:"listen"`    // host:port; empty: in-process clients only
	StoreDir string `koanf:"store_dir"` // JetStream storage; empty: a temporary directory

	// Domain is the JetStream domain of the embedded server: the site's
	// own, so a hub can tell its stream from every other site's.
	Domain string `koanf:"domain"`
	// Leafnodes makes the embedded server a leaf node of a hub (see
	// nats_embedded.go).
	Leafnodes Leafnodes `koanf:"leafnodes"`
	// MaxPending is nats-server's max_pending: the bytes the server
	// queues for one client before it cuts it as a slow consumer. At 75 %
	// of it the server stalls the publisher, so the bridge's bounded and
	// counted event buffer takes an overload instead of the server.
	MaxPending int `koanf:"max_pending"`
}

// TLS names the files and checks of a TLS client connection.
type TLS struct {
	CAFile             string `koanf:"ca_file"`
	CertFile           string `koanf:"cert_file"`
	KeyFile            string `koanf:"key_file"`
	InsecureSkipVerify bool   `koanf:"insecure_skip_verify"`
	ServerName         string `koanf:"server_name"`
}

func (t TLS) isSet() bool { return t != TLS{} }

// JetStream makes events go into a stream with acks.
type JetStream struct {
	Enabled    bool          `koanf:"enabled"`
	Stream     string        `koanf:"stream"`
	MaxAge     time.Duration `koanf:"max_age"`
	Duplicates time.Duration `koanf:"duplicates"`
	MaxPending int           `koanf:"max_pending"`
	Replicas   int           `koanf:"replicas"` // of the stream the bridge creates; more than 1 needs a cluster
}

// Idempotency says how long, and where with JetStream, the keys of
// requests with the Ami-Idempotency-Key header are kept
// (bridge.IdempotencyOptions).
type Idempotency struct {
	Window time.Duration `koanf:"window"`
	Bucket string        `koanf:"bucket"`
}

// State keeps each PBX's live call state in a KV bucket and publishes
// call records (bridge.StateOptions); see docs/callstate.md.
type State struct {
	Enabled       bool          `koanf:"enabled"`
	Bucket        string        `koanf:"bucket"`
	Replicas      int           `koanf:"replicas"`
	Records       bool          `koanf:"records"`
	FlushInterval time.Duration `koanf:"flush_interval"`
}

// Server is one PBX.
type Server struct {
	Name             string        `koanf:"name"`
	URL              AMIURL        `koanf:"url"`
	SecretEnv        string        `koanf:"secret_env"`
	SecretFile       string        `koanf:"secret_file"`
	Auth             string        `koanf:"auth"`
	TLS              TLS           `koanf:"tls"`
	Events           EventFilter   `koanf:"events"`
	Actions          ActionPolicy  `koanf:"actions"`
	ActionTimeout    time.Duration `koanf:"action_timeout"`
	MaxActionTimeout time.Duration `koanf:"max_action_timeout"`
	PingInterval     time.Duration `koanf:"ping_interval"`
	Reconnect        Backoff       `koanf:"reconnect"`
	// ActionSessions is how many AMI sessions carry this PBX's actions,
	// besides the one for its events: each is one more manager login.
	ActionSessions int `koanf:"action_sessions"`
	// MaxReplyEntries and MaxReplyBytes bound one list answer (a
	// Collection), streamed or not: past either the reply is a 413.
	MaxReplyEntries int `koanf:"max_reply_entries"`
	MaxReplyBytes   int `koanf:"max_reply_bytes"`
	// MaxPendingRequests bounds the requests each action session holds,
	// the running one included; more are dropped.
	MaxPendingRequests int `koanf:"max_pending_requests"`

	// Filled by Load. Endpoint is URL without its secret, in the form
	// amiproto.Dial takes; Secret comes from the URL, SecretEnv or
	// SecretFile; ClientTLS is nil when the URL is tcp:// or TLS is unset.
	Endpoint  string      `koanf:"-"`
	Secret    Secret      `koanf:"-"`
	ClientTLS *tls.Config `koanf:"-"`
}

// EventFilter selects events by name with globs.
type EventFilter struct {
	Include []string `koanf:"include"`
	Exclude []string `koanf:"exclude"`
}

// ActionPolicy selects the actions a requester may send, with
// case-insensitive globs, and the subjects they come on.
type ActionPolicy struct {
	Allow []string `koanf:"allow"`
	Deny  []string `koanf:"deny"`
	// GenericSubject serves <prefix>.<server>.action besides the
	// per-action subjects; false leaves NATS permissions on those the only
	// way in. Default true.
	GenericSubject bool `koanf:"generic_subject"`
	// IdleLogoff, above zero, logs the action sessions in on their first
	// request and off after this idle time (large fan-ins); 0 keeps them
	// logged in.
	IdleLogoff time.Duration `koanf:"idle_logoff"`
}

// Backoff bounds the delay between reconnect attempts.
type Backoff struct {
	Min time.Duration `koanf:"min"`
	Max time.Duration `koanf:"max"`
}

// Log configures the process log.
type Log struct {
	Level  string `koanf:"level"`  // trace, debug, info, warn, error
	Format string `koanf:"format"` // auto, json, console
}

// Secret is a string that never prints: fmt, zerolog's Interface and JSON
// all see "xxxxx", so a Config can be logged whole by mistake without
// leaking. Reveal returns the value.
type Secret string

const redacted = "xxxxx"

// String returns a fixed mask, or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString masks the secret for %#v too.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// MarshalText masks the secret in JSON and YAML.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

// AMIURL is a PBX address as amiproto.Dial takes it. It may hold
// user:secret, so it prints with the secret masked; use string(u) to dial.
type AMIURL string

// String returns the URL with its secret masked.
func (u AMIURL) String() string { return RedactURL(string(u)) }

// GoString masks the secret for %#v too.
func (u AMIURL) GoString() string { return `"` + u.String() + `"` }

// MarshalText masks the secret in JSON and YAML.
func (u AMIURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// NATSURL is a comma-separated list of NATS server URLs. They may hold
// user:password or a token, so it prints with those masked; use string(u)
// to connect.
type NATSURL string

// String returns the URLs with their passwords and tokens masked.
func (u NATSURL) String() string { return RedactNATSURL(string(u)) }

// GoString masks the secrets for %#v too.
func (u NATSURL) GoString() string { return `"` + u.String() + `"` }

// MarshalText masks the secrets in JSON and YAML.
func (u NATSURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// Defaults of the daemon's own keys. Those of the keys the bridge takes
// are the bridge's (bridge.Default*), declared there only.
const (
	DefaultListen       = "127.0.0.1:4222"
	DefaultAuth         = "plain"
	DefaultPingInterval = 30 * time.Second
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "auto"
	// DefaultShutdownTimeout leaves in-flight actions their default 10 s
	// and still ends before Docker's SIGKILL (stop_grace_period 20s in
	// docker-compose.yml).
	DefaultShutdownTimeout = 15 * time.Second
)

// Default returns the configuration used where no layer sets a key.
func Default() Config {
	return Config{
		NATS: NATS{
			Embedded: Embedded{Listen: DefaultListen, MaxPending: DefaultEmbeddedMaxPending},
			Prefix:   bridge.DefaultPrefix,
		},
		JetStream: JetStream{
			Stream:     bridge.DefaultStream,
			MaxAge:     bridge.DefaultStreamMaxAge,
			Duplicates: bridge.DefaultDuplicates,
			MaxPending: bridge.DefaultMaxPending,
			Replicas:   bridge.DefaultReplicas,
		},
		HA:               DefaultHA(),
		Idempotency:      Idempotency{Window: bridge.DefaultIdempotencyWindow, Bucket: bridge.DefaultIdempotencyBucket},
		State:            State{Bucket: bridge.DefaultStateBucket, Replicas: bridge.DefaultReplicas, Records: true, FlushInterval: bridge.DefaultStateFlushInterval},
		Log:              Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		HTTP:             HTTP{Ready: DefaultHTTPReady},
		ShutdownTimeout:  DefaultShutdownTimeout,
		EventBuffer:      bridge.DefaultEventBuffer,
		EventBufferBytes: bridge.DefaultEventBufferBytes,
		MemoryLimit:      DefaultMemoryLimit,
	}
}

// DefaultServer returns a PBX entry with every default set; the entries of
// servers[] are decoded over it, so a key written as 0 stays 0.
func DefaultServer() Server {
	return Server{
		Auth:               DefaultAuth,
		Actions:            ActionPolicy{GenericSubject: true},
		ActionTimeout:      bridge.DefaultActionTimeout,
		MaxActionTimeout:   bridge.DefaultMaxActionTimeout,
		PingInterval:       DefaultPingInterval,
		Reconnect:          Backoff{Min: bridge.DefaultReconnectMin, Max: bridge.DefaultReconnectMax},
		ActionSessions:     bridge.DefaultActionSessions,
		MaxReplyEntries:    bridge.DefaultMaxReplyEntries,
		MaxReplyBytes:      bridge.DefaultMaxReplyBytes,
		MaxPendingRequests: bridge.DefaultMaxPendingRequests,
	}
}

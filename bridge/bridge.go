// Package bridge connects AMI sessions to NATS: per PBX it keeps the AMI
// session up, publishes every event in order, serves actions by NATS
// request-reply as a micro service, enforces the action policy and reports
// its state.
package bridge

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// ServerConfig is one PBX. Zero durations take their defaults.
type ServerConfig struct {
	Name             string        // subject token, [A-Za-z0-9_-]+
	URL              string        // as amiproto.Dial takes it; may hold user:secret
	Secret           string        // overrides the URL's secret when set (from secret_env/secret_file)
	Auth             string        // "plain" (default) or "md5"
	TLS              *tls.Config   // for tls:// URLs
	EventsInclude    []string      // globs on the event name; empty means all
	EventsExclude    []string      // globs on the event name
	ActionsAllow     []string      // case-insensitive globs; empty means all
	ActionsDeny      []string      // case-insensitive globs; empty means the default deny list ("Events")
	ActionTimeout    time.Duration // default 10s
	MaxActionTimeout time.Duration // cap for the Ami-Timeout request header, default 5m
	PingInterval     time.Duration // 0: no keepalive
	ReconnectMin     time.Duration // default 500ms
	ReconnectMax     time.Duration // default 30s
}

// JetStreamOptions makes events go into a JetStream stream with acks.
type JetStreamOptions struct {
	Enabled    bool
	Stream     string        // default "AMI_EVENTS"
	MaxAge     time.Duration // default 24h
	Duplicates time.Duration // dedupe window, default 2m
	MaxPending int           // in-flight acks, default 4096
}

// Options apply to every PBX of a Bridge.
type Options struct {
	Prefix         string        // subject prefix, default "ami"
	EventBuffer    int           // events held per PBX while NATS is slow, default 65536
	StatusInterval time.Duration // default 30s
	JetStream      JetStreamOptions
	Version        string // service version for micro, default "0.0.0"
	Logger         zerolog.Logger
}

// Bridge runs every configured PBX against one NATS connection.
type Bridge struct{}

// New validates the configuration and returns a Bridge that has not yet
// connected anywhere.
func New(nc *nats.Conn, servers []ServerConfig, opts Options) (*Bridge, error) {
	panic("TODO")
}

// Start registers the micro service and starts one AMI session per PBX. It
// returns once the service is registered; sessions connect in the
// background.
func (b *Bridge) Start(ctx context.Context) error { panic("TODO") }

// Shutdown stops taking actions, lets in-flight ones finish until ctx ends,
// sends Logoff on every session, publishes the final status and flushes
// what is left to NATS. It does not close nc.
func (b *Bridge) Shutdown(ctx context.Context) error { panic("TODO") }

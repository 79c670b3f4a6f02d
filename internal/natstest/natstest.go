// Package natstest runs embedded nats-servers for the tests of every
// package of the module (bridge, lease, the daemon, the examples and the
// integration tests), so that each test starts NATS the same way: on
// loopback, silent, ready before it returns, stopped at the end of the
// test.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ReadyTimeout bounds the wait for a server to accept connections; it
// normally takes milliseconds.
const ReadyTimeout = 10 * time.Second

// Options are what the tests vary; Configure covers the rest.
type Options struct {
	// Port is the client port; 0: a random one. A fixed port lets a test
	// start a server again where clients expect it.
	Port int
	// JetStream enables JetStream, with its store in StoreDir, or in a
	// new temporary directory of the test when StoreDir is empty.
	JetStream bool
	StoreDir  string
	// MaxPayload; 0: nats-server's default (1 MiB).
	MaxPayload int32
	// Username and Password, when set, are the one user clients must
	// authenticate as; Users, when set, the server's users instead.
	Username, Password string
	Users              []*server.User
	// Configure, when set, changes the server's options last: for
	// leafnodes, clusters, names and whatever else one test needs.
	Configure func(*server.Options)
}

// ServerOptions returns the nats-server options o stands for. A store
// directory it makes belongs to t.
func (o Options) ServerOptions(t testing.TB) *server.Options {
	t.Helper()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		MaxPayload: o.MaxPayload,
		Username:   o.Username,
		Password:   o.Password,
		Users:      o.Users,
	}
	if o.Port != 0 {
		opts.Port = o.Port
	}
	if o.JetStream {
		opts.JetStream = true
		opts.StoreDir = o.StoreDir
		if opts.StoreDir == "" {
			opts.StoreDir = t.TempDir()
		}
	}
	if o.Configure != nil {
		o.Configure(opts)
	}
	return opts
}

// Start runs a server with o and stops it at the end of the test.
func Start(t testing.TB, o Options) *server.Server {
	t.Helper()
	return Run(t, o.ServerOptions(t))
}

// Run runs a server with opts, made silent (no log, no signal handlers),
// and stops it at the end of the test. A test that stops and starts a
// server again on the same port and store passes a Clone of the same
// options each time.
func Run(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	ns.Start()
	t.Cleanup(func() { Stop(ns) })
	if !ns.ReadyForConnections(ReadyTimeout) {
		t.Fatalf("nats-server did not get ready in %v", ReadyTimeout)
	}
	return ns
}

// Stop shuts ns down and waits until it is down; it may be called again.
func Stop(ns *server.Server) {
	ns.Shutdown()
	ns.WaitForShutdown()
}

// ConnectJS connects to ns, for the rest of the test, and returns its
// JetStream.
func ConnectJS(t testing.TB, ns *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/cmd/ami-bridge/internal/config"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a runtime failure: NATS or the bridge would not start
	exitUsage  = 2 // bad flags or an invalid configuration
)

// runCommand runs the bridge for every PBX of the configuration until ctx
// ends (SIGINT or SIGTERM), then shuts down gracefully.
func runCommand(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("ami-bridge run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	config.AddFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ami-bridge [run] --config FILE [flags]\n\n"+
			"Bridges every PBX of the configuration to NATS. Each flag overrides\n"+
			"the key in parentheses, which AMI_BRIDGE_* variables and the file also set.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ami-bridge: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}

	if !hasServers(fs, environ, stderr) {
		return exitUsage
	}
	cfg, err := config.Load(fs, environ)
	if err != nil {
		fmt.Fprintf(stderr, "ami-bridge: %v\n", err)
		return exitUsage
	}
	log := newLogger(cfg.Log, stderr)
	if err := run(ctx, cfg, environ, log); err != nil {
		log.Error().Err(err).Msg("ami-bridge failed")
		return exitFailed
	}
	return exitOK
}

// run is the life of the process once its configuration is valid;
// environ is the process's environment.
func run(ctx context.Context, cfg *config.Config, environ []string, log zerolog.Logger) error {
	log.Info().Str("version", versionString()).Int("servers", len(cfg.Servers)).Msg("starting")
	for _, s := range cfg.Servers {
		log.Info().Str("server", s.Name).Str("url", s.Endpoint).Str("auth", s.Auth).Msg("PBX configured")
	}

	ops, err := startOps(cfg.HTTP, log)
	if err != nil {
		return err
	}
	defer ops.close(log)
	st, err := startNATS(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			log.Info().Msg("stopped before NATS was reached")
			return nil
		}
		return err
	}
	defer st.stopServer(log)

	opts := bridgeOptions(cfg, log)
	opts.Topology = st.topology(cfg)
	if st.svc != nil {
		opts.ServiceConn = st.svc.Conn
	}
	servers, _ := cfg.Bridge()
	b, err := bridge.New(st.nc.Conn, servers, opts)
	if err != nil {
		st.closeConns()
		return fmt.Errorf("bridge: %w", err)
	}
	err = serveBridge(ctx, b, st.conns(), cfg, environ, log, func(ready *zerolog.Event) {
		// Subscribers that lost NATS with the bridge see every PBX's state
		// at once when it is back, not at the next interval.
		st.nc.onReconnect(b.PublishStatus)
		ops.attach(b, st.nc.Conn)
		ready = ready.Str("nats_url", st.url).Str("prefix", cfg.NATS.Prefix).Bool("nats_service_user", cfg.NATS.Service.IsSet())
		logTopology(ready, b.Status()).Msg("ready")
		<-ctx.Done()
	})
	if err != nil {
		st.closeConns()
		if ctx.Err() != nil {
			log.Info().Msg("stopped while the bridge was starting")
			return nil
		}
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

// serveBridge is the one life of a bridge for run and demo: set the
// process's memory limit for cfg (see applyMemoryLimit) before the event
// buffers fill, start b, run hold (which returns once ctx has ended),
// then shut b down and drain conns, in their order, within
// cfg.ShutdownTimeout. hold gets the
// "ready" log line with the memory limit in it, to add its own fields
// and send. ctx bounds Start's setup only: Shutdown still needs the AMI
// sessions to answer the actions in flight and log off.
func serveBridge(ctx context.Context, b *bridge.Bridge, conns []*natsConn, cfg *config.Config, environ []string, log zerolog.Logger, hold func(ready *zerolog.Event)) error {
	limit, source := applyMemoryLimit(cfg, environ)
	if err := b.Start(ctx); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	hold(logMemoryLimit(log.Info(), limit, source))
	timeout := cfg.ShutdownTimeout
	log.Info().Stringer("timeout", timeout).Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := b.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("bridge shutdown incomplete")
	}
	for _, nc := range conns {
		if err := nc.drain(sctx); err != nil {
			log.Warn().Err(err).Msg("NATS drain incomplete")
		}
	}
	return nil
}

// natsStack is the NATS side of the process: the connection and, when
// nats.url is empty, the embedded server it talks to.
type natsStack struct {
	ns  *server.Server // nil when NATS is external
	nc  *natsConn
	svc *natsConn // the service connection (nats.service); nil when unset
	url string    // for the "ready" line: the connected URL (redacted), the embedded server's client URL, or "in-process"

	stopWatch func() // stops the leafnode watcher and waits for it; nil when none runs
	unlock    func() // releases the JetStream store; nil when none is held
}

// conns are the connections in the order they are drained: the service
// connection first, which stops micro's answers and the replies once the
// bridge has stopped taking actions, then the main one, which carries
// the last events, the final status and the lease handover.
func (st *natsStack) conns() []*natsConn {
	if st.svc == nil {
		return []*natsConn{st.nc}
	}
	return []*natsConn{st.svc, st.nc}
}

// closeConns closes the connections at once, when the bridge never ran.
func (st *natsStack) closeConns() {
	for _, nc := range st.conns() {
		nc.Close()
	}
}

// topologyOf names the NATS layout of cfg for the "ready" line: the
// embedded server alone, the embedded server as a leaf node of a hub, or
// external servers (one, or a cluster: the stream's replicas tell).
func topologyOf(cfg *config.Config) string {
	switch {
	case cfg.NATS.URL != "":
		return "external"
	case len(cfg.NATS.Embedded.Leafnodes.Remotes) > 0:
		return "leafnode"
	}
	return "embedded"
}

// topology returns the bridge's Options.Topology: the layout of cfg, the
// embedded server's JetStream domain and, for a leaf node, how many of its
// links to the hub are up at the time of each call.
func (st *natsStack) topology(cfg *config.Config) func() subjects.Topology {
	kind, ns := topologyOf(cfg), st.ns
	remotes := len(cfg.NATS.Embedded.Leafnodes.Remotes)
	var domain string
	if ns != nil {
		domain = cfg.NATS.Embedded.Domain
	}
	return func() subjects.Topology {
		t := subjects.Topology{NATS: kind, Domain: domain}
		if kind == "leafnode" {
			t.Leafnodes = &subjects.Leafnodes{Remotes: remotes, Connected: ns.NumLeafNodes()}
		}
		return t
	}
}

// logTopology adds the topology the statuses carry (the same for every
// PBX) to a log line: the "ready" line says which layout runs.
func logTopology(ev *zerolog.Event, sts []subjects.PBXStatus) *zerolog.Event {
	var t subjects.Topology
	if len(sts) > 0 && sts[0].Topology != nil {
		t = *sts[0].Topology
	}
	ev = ev.Str("topology", t.NATS)
	if t.Domain != "" {
		ev = ev.Str("jetstream_domain", t.Domain)
	}
	if t.Leafnodes != nil {
		ev = ev.Int("leafnode_remotes", t.Leafnodes.Remotes).Int("leafnodes_connected", t.Leafnodes.Connected)
	}
	if t.Stream != "" {
		ev = ev.Str("stream", t.Stream).Int("replicas", t.Replicas)
	}
	return ev
}

func startNATS(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*natsStack, error) {
	st := &natsStack{}
	if cfg.NATS.URL == "" {
		eo, err := embeddedFromConfig(cfg)
		if err != nil {
			return nil, err
		}
		if eo.JetStream {
			eo.StoreDir = cmp.Or(eo.StoreDir, defaultStoreDir())
			if st.unlock, err = lockStore(eo.StoreDir); err != nil {
				return nil, err
			}
		}
		ns, err := startEmbedded(eo, log)
		if err != nil {
			st.stopServer(log)
			if errors.Is(err, ErrAddrInUse) {
				err = fmt.Errorf("%w; set nats.embedded.listen (--nats-listen) to a free address, 127.0.0.1:0 for any, or \"\" for in-process only, or nats.url to use that server", err)
			}
			return nil, err
		}
		st.ns, st.url = ns, embeddedURL(ns)
		ev := log.Info().Str("nats_url", st.url).Bool("jetstream", cfg.JetStream.Enabled)
		if cfg.JetStream.Enabled {
			ev = ev.Str("store_dir", ns.JetStreamConfig().StoreDir).Str("jetstream_domain", eo.Domain)
		}
		ev.Int("leafnode_remotes", len(eo.Leafnodes)).Msg("embedded NATS server started")
		if len(eo.Leafnodes) > 0 {
			st.watchLeafnodes(len(eo.Leafnodes), log)
		}
		if err := st.connect(ctx, cfg, log); err != nil {
			st.stopServer(log)
			return nil, err
		}
		return st, nil
	}
	if err := st.connect(ctx, cfg, log); err != nil {
		return nil, err
	}
	st.url = config.RedactNATSURL(st.nc.ConnectedUrlRedacted())
	return st, nil
}

// connect opens the main connection and the service connection, to st.ns
// when it runs, else to nats.url. The service connection logs in as
// nats.service, or as the main user when that is not set: even then it
// is a connection of its own, so that the main one can stamp the
// requests' arrivals (see bridge.Options.ServiceConn).
func (st *natsStack) connect(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	nc, err := connectNATS(ctx, cfg.NATS, mainLogin(cfg.NATS), cfg.ShutdownTimeout, st.ns, log)
	if err != nil {
		return err
	}
	svc, err := connectNATS(ctx, cfg.NATS, serviceLogin(cfg.NATS), cfg.ShutdownTimeout, st.ns, log)
	if err != nil {
		nc.Close()
		return err
	}
	st.nc, st.svc = nc, svc
	return nil
}

// watchLeafnodes logs the leafnode links of the embedded server as they
// come and go, until stopServer.
func (st *natsStack) watchLeafnodes(remotes int, log zerolog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ns := st.ns
	// Owned by st: stopServer cancels it and waits for it.
	go func() {
		defer close(done)
		watchLeafnodes(ctx, ns, remotes, log)
	}()
	st.stopWatch = func() {
		cancel()
		<-done
	}
}

func (st *natsStack) stopServer(log zerolog.Logger) {
	if st.stopWatch != nil {
		st.stopWatch()
		st.stopWatch = nil
	}
	if st.ns != nil {
		st.ns.Shutdown()
		st.ns.WaitForShutdown()
		st.ns = nil
		log.Debug().Msg("embedded NATS server stopped")
	}
	if st.unlock != nil {
		st.unlock()
		st.unlock = nil
	}
}

// bridgeOptions returns the bridge's options from cfg, with what the
// daemon sets itself.
func bridgeOptions(cfg *config.Config, log zerolog.Logger) bridge.Options {
	_, opts := cfg.Bridge()
	opts.Version = versionString()
	opts.Logger = bridgeLogger(log)
	return opts
}

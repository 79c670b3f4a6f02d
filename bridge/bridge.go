// Package bridge connects AMI sessions to NATS: per PBX it keeps its AMI
// sessions up, publishes every event in order, serves actions by NATS
// request-reply as a micro service, enforces the action policy and reports
// its state.
//
// The subjects, headers and JSON shapes it uses are the NATS contract of
// ami-bridge; the subjects package names every subject.
//
// # Sessions
//
// Asterisk runs a session's actions one at a time, on the thread that
// writes that session's events: a slow action (a synchronous Originate
// rings up to 30 s) holds back every event of its session, and the
// keepalive Ping behind it. So each PBX has one event session, which runs
// no requested action (Events on; only the bridge's own Ping and
// CoreSettings), and ServerConfig.ActionSessions action sessions (Login
// with Events: off) that carry the NATS requests. Each session has its
// own login, keepalive and reconnect. The manager.conf user therefore
// holds 1 + ActionSessions logins per bridge.
//
// # Action services
//
// Each PBX registers one micro service instance with two endpoints per
// logged-in action session, on the PBX's action subject and on its
// per-action subjects (subjects.NamedAction; see actionnames.go), in the
// queue group subjects.QueueGroup; a session's endpoint leaves when the session drops and
// returns when it is back (the instance is registered anew with the
// sessions that are up), and the instance stops when
// no session is up. A bridge whose PBX cannot serve is thus not in the queue
// group, and NATS hands the requests to a bridge that can (or answers "no
// responders" when none can). The handler answers before it returns, so
// micro's stats (requests, errors with their code, processing time) cover
// every action from request to reply; it runs one action at a time, as
// the AMI session does anyway, and concurrency comes from the several
// sessions. A request the queue group gives to a busy session waits for
// it, as it would on that AMI session.
//
// # Connections
//
// A Bridge uses one or two NATS connections, both owned by the caller,
// who drains and closes them after Shutdown (the service connection
// first). The main connection, given to New, carries what the bridge
// publishes on its own: events, statuses, JetStream (stream lookup and
// publish acks) and the HA lease bucket. Options.ServiceConn, when set,
// carries what a requester can trigger: the micro services (their action
// endpoints and micro's own $SRV.PING, INFO and STATS handlers) and every
// reply, while the main connection's side subscription stamps the
// requests' arrivals (see arrivals.go: with one connection the bridge
// cannot stamp them, and a request's deadline counts from when its
// session takes it). micro
// answers a $SRV request on whatever reply subject it names, so with one
// connection whoever may publish to $SRV.> makes the bridge publish
// micro's JSON with the main connection's permissions, on a lease key
// or the JetStream API; a service connection whose NATS user may publish
// only to inboxes closes that.
//
// # Logging
//
// Options.Logger is a *slog.Logger from the standard library, so a
// program that imports bridge takes no logging library with it and keeps
// its own: any slog.Handler works, and the ami-bridge daemon passes one
// backed by its zerolog logger (zerolog.NewSlogHandler). A nil Logger
// discards, as a library should stay silent unless asked; it is not
// slog.Default(), which would write to the program's standard log.
// The lines on the event path are rate limited and use LogAttrs, which
// allocates nothing when their level is disabled (Warn with key-value
// pairs would box the numbers first).
package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/lease"
	"github.com/ami-bridge/ami-bridge/subjects"
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
	ActionsAllow     []string      // case-insensitive globs; empty means all but the safe defaults: GetConfig, GetConfigJSON, UpdateConfig, CreateConfig and a system-class Originate pass only when named as they are (OriginateSystem for the last), never through a glob
	ActionsDeny      []string      // case-insensitive globs; Login, Logoff, Challenge, Events and Filter are refused whatever they say
	ActionTimeout    time.Duration // default 10s
	MaxActionTimeout time.Duration // cap for the Ami-Timeout request header, default 5m
	PingInterval     time.Duration // 0: no keepalive
	ReconnectMin     time.Duration // default 500ms
	ReconnectMax     time.Duration // default 30s
	ActionSessions   int           // AMI sessions that carry actions, besides the one for events; default 2
	// ActionIdleLogoff, when above zero, logs the action sessions in on
	// their first request and off once idle that long (ondemand.go);
	// 0, the default, keeps them logged in.
	ActionIdleLogoff time.Duration
	MaxReplyEntries  int // entries of one Collection, streamed or not, default DefaultMaxReplyEntries; more is a 413
	MaxReplyBytes    int // JSON bytes of one Collection's entries, default DefaultMaxReplyBytes; more is a 413
	// MaxPendingRequests bounds the requests one action session holds,
	// the running one included, default 128 (DefaultMaxPendingRequests);
	// more are dropped, unanswered, and counted in Stats.RequestsOverLimit.
	MaxPendingRequests int
	// NamedActionsOnly serves actions only on the per-action subjects,
	// <prefix>.<server>.action.<Action>, and not on the generic
	// <prefix>.<server>.action: NATS permissions on those subjects are
	// then the only way in.
	NamedActionsOnly bool
}

// JetStreamOptions makes events go into a JetStream stream with acks.
type JetStreamOptions struct {
	Enabled    bool
	Stream     string        // default "AMI_EVENTS"
	MaxAge     time.Duration // default 24h
	Duplicates time.Duration // dedupe window, default 2m
	MaxPending int           // in-flight acks, default 4096
	// Replicas of the stream when the bridge creates it, default 1; more
	// need a NATS cluster of at least that many servers. An existing
	// stream keeps its own.
	Replicas int
}

// Options apply to every PBX of a Bridge.
type Options struct {
	Prefix      string // subject prefix, default "ami"
	EventBuffer int    // events held per PBX while NATS is slow, default 65536
	// EventBufferBytes bounds the same buffer in bytes of AMI text,
	// default 32 MiB: with EventBuffer it bounds the memory a PBX's
	// events take while NATS is slow. Published events are kept for
	// replay while there is room, up to this many bytes for all PBXes
	// together.
	EventBufferBytes int
	StatusInterval   time.Duration // default 30s
	JetStream        JetStreamOptions
	HA               HAOptions // one active bridge per PBX among several; see ha.go
	Version          string    // micro service version: "v1.2.3" registers as 1.2.3, one that is no semantic version as 0.0.0-<it> ("dev": 0.0.0-dev), the raw string then in the metadata
	// Logger receives the bridge's log lines; nil discards them. Lines
	// carry the attributes server, ami (the endpoint without its
	// secret), session and error. See "Logging" in the package doc.
	Logger *slog.Logger
	// Topology, when set, tells the bridge how NATS is laid out (see
	// subjects.Topology); it is called for every status, from any goroutine.
	Topology func() subjects.Topology
	// ReplyPrefixes are inbox prefixes, as nats.CustomInboxPrefix takes
	// them, on which the bridge answers besides _INBOX.: a request whose
	// reply subject lies under none of them, or under the connection's
	// own inbox prefix, is dropped unanswered (see replyto.go).
	ReplyPrefixes []string
	// ServiceConn, when set, is the connection that serves requests: the
	// micro services (their endpoints and $SRV handlers) and every reply;
	// the main connection then stamps the requests' arrivals, so that one
	// that waited past its requester's deadline is dropped, not run. Events, statuses, JetStream and the HA
	// lease bucket stay on the connection given to New. micro answers
	// $SRV requests on any reply subject they name, which the bridge
	// cannot filter, so a ServiceConn logged in as a NATS user that may
	// publish only to inboxes keeps requesters away from the main
	// connection's permissions (see "Connections" in the package doc). nil
	// serves on the main connection. It needs an inbox prefix of its own
	// too, and the bridge neither drains nor closes it.
	ServiceConn *nats.Conn
	// Idempotency keeps the keys of requests with the
	// Ami-Idempotency-Key header; see idempotency.go.
	Idempotency IdempotencyOptions
	// State keeps each PBX's live call state in a KV bucket and publishes
	// call records; see state.go.
	State StateOptions
}

// Defaults of the zero values in ServerConfig, JetStreamOptions and Options.
const (
	DefaultPrefix           = "ami"
	DefaultEventBuffer      = 65536
	DefaultStatusInterval   = 30 * time.Second
	DefaultActionTimeout    = 10 * time.Second
	DefaultMaxActionTimeout = 5 * time.Minute
	DefaultReconnectMin     = 500 * time.Millisecond
	DefaultReconnectMax     = 30 * time.Second
	DefaultStream           = "AMI_EVENTS"
	DefaultStreamMaxAge     = 24 * time.Hour
	DefaultDuplicates       = 2 * time.Minute
	DefaultMaxPending       = 4096
	DefaultReplicas         = 1
	DefaultActionSessions   = 2
	// DefaultMaxPendingRequests: a healthy Asterisk answers a Ping in
	// about a millisecond, so 128 waiting requests clear well within the
	// default action timeout; a longer queue only holds requests that
	// would expire, and up to 128 KiB each of memory.
	DefaultMaxPendingRequests = 128
)

// The goroutines of a Bridge, each with one owner (not in Bridge's doc:
// they are how it works, not what it promises):
//
//   - per PBX, run (pbx.run): started by Start, waited for by Shutdown; it
//     ends when Shutdown cancels the run context, after the PBX's links
//     have logged off and its publisher has drained.
//   - per PBX with JetStream, the publisher (publisher.loop): started and
//     waited for by pbx.run; it ends when run closes the PBX's ring. Its
//     ack collector is started and waited for by the publisher.
//   - on core NATS, the publishers' pool (pubPool): a few workers that
//     publish every PBX's events; started by Start, stopped and waited for
//     by Shutdown after every PBX's run, which waits for its PBX's events
//     to be published once it closed the ring.
//   - per AMI session (link.run: one for events, ActionSessions for
//     actions, none for an action session on demand): started and waited
//     for by pbx.run, except the event session's, which runs on pbx.run's
//     own goroutine; it ends with the run context, after its Logoff. A
//     link's amiproto.Client owns its own reader, writer (while it has
//     something to write) and keepalive (a timer between Pings); the link
//     waits for the reader.
//   - per logged-in action session, its keepalive (pbx.actionKeepalive):
//     run on the link's goroutine by pbx.serveActions (on demand: started
//     and waited for by the login, ondemand.go); it ends when the session
//     does. It also runs the overdue check a handler asks for after an
//     action passed its deadline.
//   - with a ServiceConn, the stamper (stamper.run), which stamps every
//     PBX's request arrivals from channel subscriptions on the main
//     connection (arrivals.listen: subscribed when a PBX's service gets
//     an instance, unsubscribed when it has none): started by Start,
//     waited for by Shutdown, ends with the run context.
//   - per PBX with a logged-in action session, a micro service, on the
//     service connection, with one endpoint per session, whose
//     subscription calls the action handler
//     on that session, one request at a time: the action link joins it
//     once logged in and leaves it when the session drops or Shutdown
//     starts (actionService). The PBXes on demand share one instance
//     instead (sharedService), from the first join to Shutdown. Shutdown
//     waits for the handlers still running through the lifecycle's
//     in-flight count.
//   - with HA, per PBX, the HA loop (haNode.run) and its lease watch:
//     started and waited for by pbx.run; they end with the run context,
//     after Shutdown has handed the lease over. See ha.go.
//   - with StateOptions, per PBX, the state writer (stateNode.loop):
//     started and waited for by pbx.run; it ends after the event reader
//     and the publisher, with a last flush, when run closes its stop
//     channel. See state.go.
//   - the status ticker: started by Start, waited for by Shutdown; it
//     ends with the run context.

// Bridge runs every configured PBX against one NATS connection, or two
// (see "Connections" in the package doc).
type Bridge struct {
	ns         *natsSide
	opts       Options
	log        *slog.Logger
	pbxes      []*pbx
	life       *lifecycle
	runCtx     context.Context    // what runs: the PBXes and the status ticker
	stopRun    context.CancelFunc // ends runCtx
	stopIntake context.CancelFunc // ends the lifecycle's intake
	stopHard   context.CancelFunc // ends the lifecycle's hard context
	buffered   atomic.Int64       // bytes held by every PBX's ring

	mu      sync.Mutex
	started bool
	closing bool
	wg      sync.WaitGroup // the PBXes' run and the status ticker
}

// natsSide is the NATS end every PBX of a Bridge shares. It is fixed
// before any PBX runs.
type natsSide struct {
	nc      *nats.Conn // events, statuses, JetStream, the lease bucket
	svc     *nats.Conn // the action services and their replies: Options.ServiceConn, or nc
	prefix  string
	epoch   int64               // process epoch in Nats-Msg-Id: start time in Unix milliseconds
	js      jetstream.JetStream // nil unless JetStream is enabled; set by Start
	pool    *pubPool            // core NATS: the publishers' goroutines; set by Start
	jsOpts  JetStreamOptions
	service micro.Config  // template of the PBXes' action services
	shared  sharedService // the one instance of the PBXes whose action sessions are on demand
	replies *replyRule    // where the action services may answer
	stamper *stamper      // of the requests' arrivals, when stampsArrivals

	topologyFunc   func() subjects.Topology // Options.Topology; nil when unset
	streamReplicas int                      // of the stream Start found or created
	leases         *lease.Bucket            // with HA, when Start could open it; else each HA loop opens it
	keys           *keyStore                // of idempotent requests; its js is set by Start
	stateJS        jetstream.JetStream      // with StateOptions: of the state buckets; set by Start
}

// stampsArrivals reports whether the main connection stamps request
// arrivals: only when the requests are served on a connection of their
// own (see arrivals).
func (ns *natsSide) stampsArrivals() bool { return ns.svc != ns.nc }

// lifecycle is the Bridge's shutdown as its PBXes see it. Shutdown ends
// intake first (stop taking actions), waits for the actions in flight,
// and ends hard when its own context ends: what still waits then (an
// action, a Logoff, a NATS retry) gives up.
type lifecycle struct {
	intake   context.Context
	hard     context.Context
	mu       sync.Mutex // orders enter against Shutdown's wait
	inflight sync.WaitGroup
}

// enter counts one more action in flight, unless Shutdown started.
func (l *lifecycle) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.intake.Err() != nil {
		return false
	}
	l.inflight.Add(1)
	return true
}

// leave ends an action counted by enter.
func (l *lifecycle) leave() { l.inflight.Done() }

// New validates the configuration and returns a Bridge that has not yet
// connected anywhere. Its error names every problem found, never a secret.
func New(nc *nats.Conn, servers []ServerConfig, opts Options) (*Bridge, error) {
	var errs []error
	if nc == nil {
		errs = append(errs, errors.New("no NATS connection"))
	}
	prefixesChecked := true // by Check, against what New adds below
	for _, p := range Check(servers, opts) {
		errs = append(errs, p)
		if strings.HasPrefix(p.Field, "ReplyPrefixes") {
			prefixesChecked = false
		}
	}
	opts, _ = checkOptions(opts)
	svc := opts.ServiceConn
	if svc == nil {
		svc = nc
	}
	var replies *replyRule
	if nc != nil {
		var err error
		// Once Check found a reply prefix wrong, the same problem again
		// would only repeat it.
		if replies, err = newReplyRule(opts.ReplyPrefixes, opts.Prefix, nc.Opts.InboxPrefix, svc.Opts.InboxPrefix); err != nil && prefixesChecked {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("bridge: invalid configuration: %w", errors.Join(errs...))
	}
	version := serviceVersion(opts.Version)
	meta := map[string]string{"servers": strings.Join(names(servers), ","), "prefix": opts.Prefix}
	if version != opts.Version {
		meta["version"] = opts.Version
	}
	b := &Bridge{
		opts: opts,
		log:  opts.Logger,
		ns: &natsSide{
			nc:           nc,
			svc:          svc,
			prefix:       opts.Prefix,
			epoch:        time.Now().UnixMilli(),
			jsOpts:       opts.JetStream,
			topologyFunc: opts.Topology,
			replies:      replies,
			keys:         &keyStore{window: opts.Idempotency.Window, bucket: opts.Idempotency.Bucket},
			service: micro.Config{
				Name:        subjects.ServiceName,
				Version:     version,
				Description: "Asterisk Manager Interface actions by NATS request-reply, one endpoint per PBX",
				Metadata:    meta,
				QueueGroup:  subjects.QueueGroup,
			},
		},
		life: &lifecycle{},
	}
	b.ns.shared.log = b.log
	if nc != nil && b.ns.stampsArrivals() {
		b.ns.stamper = newStamper(nc)
	}
	b.life.intake, b.stopIntake = context.WithCancel(context.Background())
	b.life.hard, b.stopHard = context.WithCancel(context.Background())
	b.runCtx, b.stopRun = context.WithCancel(context.Background())
	for _, sc := range servers {
		p, err := newPBX(sc, b.ns, b.life, opts, &b.buffered, b.log)
		if err != nil { // checked above
			return nil, fmt.Errorf("bridge: server %s: %w", sc.Name, err)
		}
		b.pbxes = append(b.pbxes, p)
	}
	return b, nil
}

func names(servers []ServerConfig) []string {
	out := make([]string, len(servers))
	for i, sc := range servers {
		out[i] = sc.Name
	}
	return out
}

// checkOptions fills the zero values of o and returns it with the
// problems found.
func checkOptions(o Options) (Options, []Problem) {
	var ps problems
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !subjects.ValidPrefix(o.Prefix) {
		ps.add("Prefix", "%q: want dot-separated tokens without spaces, '*' or '>'", o.Prefix)
	}
	checkReplyPrefixes(&ps, o)
	if o.EventBuffer == 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	if o.EventBuffer < 0 {
		ps.add("EventBuffer", "must be positive")
	}
	if o.EventBufferBytes == 0 {
		o.EventBufferBytes = DefaultEventBufferBytes
	}
	if o.EventBufferBytes < 0 {
		ps.add("EventBufferBytes", "must be positive")
	}
	if o.StatusInterval == 0 {
		o.StatusInterval = DefaultStatusInterval
	}
	if o.StatusInterval < 0 {
		ps.add("StatusInterval", "must be positive")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	js := &o.JetStream
	if js.Stream == "" {
		js.Stream = DefaultStream
	}
	if strings.ContainsAny(js.Stream, ".*> \t\r\n/\\") {
		ps.add("JetStream.Stream", "%q: no '.', '*', '>', '/', '\\' or whitespace", js.Stream)
	}
	if js.MaxAge == 0 {
		js.MaxAge = DefaultStreamMaxAge
	}
	if js.Duplicates == 0 {
		js.Duplicates = DefaultDuplicates
	}
	if js.MaxPending == 0 {
		js.MaxPending = DefaultMaxPending
	}
	if js.Replicas == 0 {
		js.Replicas = DefaultReplicas
	}
	for _, f := range []struct {
		field string
		neg   bool
	}{{"JetStream.MaxAge", js.MaxAge < 0}, {"JetStream.Duplicates", js.Duplicates < 0}, {"JetStream.MaxPending", js.MaxPending < 0}} {
		if f.neg {
			ps.add(f.field, "must be positive")
		}
	}
	if js.Replicas < 0 || js.Replicas > maxReplicas {
		ps.add("JetStream.Replicas", "%d: want 1 to %d", js.Replicas, maxReplicas)
	}
	if js.Enabled && js.Duplicates > js.MaxAge {
		ps.add("JetStream.Duplicates", "%v is longer than max age %v", js.Duplicates, js.MaxAge)
	}
	if o.HA.Enabled && o.HA.Bucket != "" && strings.ContainsAny(o.HA.Bucket, ".*> \t\r\n/\\") {
		ps.add("HA.Bucket", "%q: no '.', '*', '>', '/', '\\' or whitespace", o.HA.Bucket)
	}
	checkIdempotency(&ps, &o.Idempotency)
	checkState(&ps, &o.State)
	ha, err := withHADefaults(o.HA, o.JetStream)
	var joined interface{ Unwrap() []error }
	switch {
	case err == nil:
	case errors.As(err, &joined):
		for _, e := range joined.Unwrap() {
			ps = append(ps, haProblem(e))
		}
	default:
		ps = append(ps, haProblem(err))
	}
	o.HA = ha
	return o, ps
}

// withServerDefaults checks sc, fills its zero values and returns the
// endpoint to dial, secret included. Nothing it returns as an error holds
// the secret.
func withServerDefaults(sc ServerConfig) (ServerConfig, amiproto.Endpoint, error) {
	sc, ep, ps := checkServer(sc)
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = errors.New(p.Field + ": " + p.Msg)
	}
	return sc, ep, errors.Join(errs...)
}

// checkServer is withServerDefaults with the problems by field, their
// Server left to the caller.
func checkServer(sc ServerConfig) (ServerConfig, amiproto.Endpoint, []Problem) {
	var ps problems
	switch {
	case sc.Name == "":
		ps.add("Name", "missing: every PBX needs one, [A-Za-z0-9_-]+")
	case !subjects.ValidServerName(sc.Name):
		ps.add("Name", "%q: want [A-Za-z0-9_-]+", sc.Name)
	}
	ep, err := amiproto.ParseURL(sc.URL)
	if err != nil {
		ps.add("URL", "%v", err)
	} else if ep.User == "" {
		ps.add("URL", "no user; the bridge must log in (user:secret@host:port, or the secret in Secret)")
	}
	if sc.Secret != "" {
		ep.Secret = sc.Secret
	}
	switch strings.ToLower(sc.Auth) {
	case "", "plain":
		sc.Auth = "plain"
	case "md5":
		sc.Auth = "md5"
	default:
		ps.add("Auth", "%q: want plain or md5", sc.Auth)
	}
	def := func(d *time.Duration, v time.Duration, field string) {
		if *d == 0 {
			*d = v
		}
		if *d < 0 {
			ps.add(field, "must be positive")
		}
	}
	def(&sc.ActionTimeout, DefaultActionTimeout, "ActionTimeout")
	def(&sc.MaxActionTimeout, DefaultMaxActionTimeout, "MaxActionTimeout")
	def(&sc.ReconnectMin, DefaultReconnectMin, "ReconnectMin")
	def(&sc.ReconnectMax, DefaultReconnectMax, "ReconnectMax")
	if sc.ActionSessions == 0 {
		sc.ActionSessions = DefaultActionSessions
	}
	if sc.ActionSessions < 1 || sc.ActionSessions > maxActionSessions {
		ps.add("ActionSessions", "%d: want 1 to %d", sc.ActionSessions, maxActionSessions)
	}
	if sc.PingInterval < 0 {
		ps.add("PingInterval", "must be 0 (off) or positive")
	}
	if sc.ActionIdleLogoff < 0 {
		ps.add("ActionIdleLogoff", "must be 0 (always logged in) or positive")
	}
	if sc.MaxReplyEntries == 0 {
		sc.MaxReplyEntries = DefaultMaxReplyEntries
	}
	if sc.MaxReplyEntries < 0 {
		ps.add("MaxReplyEntries", "must be positive")
	}
	if sc.MaxReplyBytes == 0 {
		sc.MaxReplyBytes = DefaultMaxReplyBytes
	}
	if sc.MaxReplyBytes < 0 {
		ps.add("MaxReplyBytes", "must be positive")
	}
	if sc.MaxPendingRequests == 0 {
		sc.MaxPendingRequests = DefaultMaxPendingRequests
	}
	if sc.MaxPendingRequests < 1 || sc.MaxPendingRequests > maxMaxPendingRequests {
		ps.add("MaxPendingRequests", "%d: want 1 to %d", sc.MaxPendingRequests, maxMaxPendingRequests)
	}
	if sc.ActionTimeout > sc.MaxActionTimeout {
		ps.add("MaxActionTimeout", "%v is shorter than the action timeout %v", sc.MaxActionTimeout, sc.ActionTimeout)
	}
	if sc.ReconnectMin > sc.ReconnectMax {
		ps.add("ReconnectMax", "%v is shorter than the reconnect min %v", sc.ReconnectMax, sc.ReconnectMin)
	}
	checkGlobs(&ps, sc)
	return sc, ep, ps
}

// Start starts every PBX: its AMI sessions connect in the background and
// run until Shutdown. Each action session joins the PBX's endpoint once it
// is logged in. ctx bounds the setup only: with JetStream, finding or
// creating the stream.
func (b *Bridge) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return errors.New("bridge: already started")
	}
	if b.closing {
		return errors.New("bridge: shut down")
	}
	if b.opts.JetStream.Enabled {
		if err := b.setupJetStream(ctx); err != nil {
			return err
		}
	}
	if b.opts.State.Enabled {
		if err := b.setupState(ctx); err != nil {
			return err
		}
	}
	b.started = true
	b.watchDrops()
	if b.ns.js == nil {
		// Ended by Shutdown once every PBX's run has returned, each
		// after its publisher drained.
		b.ns.pool = newPubPool()
		b.ns.pool.start()
	}
	for _, p := range b.pbxes {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			p.run(b.runCtx)
		}()
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.statusTicker(b.runCtx)
	}()
	if b.ns.stamper != nil {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.ns.stamper.run(b.runCtx)
		}()
	}
	return nil
}

// watchDrops chains onto the service connection's async error handler, before
// any action service is added, so that the bridge learns which endpoint
// subscription drops requests over its pending limit: micro's
// ErrorHandler names only the subject, and nats.go reports a run of drops
// once, so the count is read from the subscription itself. micro chains
// to this handler as it finds it; a handler set on the connection later
// replaces both.
func (b *Bridge) watchDrops() {
	nc := b.ns.svc
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil && errors.Is(err, nats.ErrSlowConsumer) {
			for _, p := range b.pbxes {
				p.service.slowConsumer(sub)
			}
		}
		if prev != nil {
			prev(c, sub, err)
		}
	})
}

func (b *Bridge) setupJetStream(ctx context.Context) error {
	o := b.opts.JetStream
	js, err := jetstream.New(b.ns.nc,
		jetstream.WithPublishAsyncMaxPending(o.MaxPending),
		jetstream.WithPublishAsyncTimeout(jsAckTimeout),
		jetstream.WithPublishAsyncErrHandler(b.jsPublishFailed))
	if err != nil {
		return fmt.Errorf("bridge: jetstream: %w", err)
	}
	want := subjects.AllEvents(b.ns.prefix)
	wants := []string{want}
	if rec := recordSubjects(b.ns.prefix, b.opts.State); rec != "" {
		wants = append(wants, rec)
	}
	replicas := o.Replicas
	stream, err := js.Stream(ctx, o.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        o.Stream,
			Description: "AMI events published by ami-bridge",
			Subjects:    wants,
			MaxAge:      o.MaxAge,
			Duplicates:  o.Duplicates,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		})
		if err != nil {
			return fmt.Errorf("bridge: create stream %s: %w", o.Stream, err)
		}
		b.log.Info("created JetStream stream", "stream", o.Stream, "subjects", wants, "replicas", o.Replicas)
	case err != nil:
		return fmt.Errorf("bridge: look up stream %s: %w", o.Stream, err)
	default:
		// An existing stream is the operator's: use it as it is, but say
		// when it will not take the events.
		cfg := stream.CachedInfo().Config
		for _, w := range wants {
			if !contains(cfg.Subjects, w) {
				b.log.Warn("existing JetStream stream does not list the event (or call record) subjects; publishes may fail",
					"stream", o.Stream, "stream_subjects", cfg.Subjects, "want", w)
			}
		}
		// Changing replicas moves data between servers: the operator's
		// call (nats stream edit --replicas), not the bridge's.
		if cfg.Replicas != o.Replicas {
			b.log.Warn("existing JetStream stream has other replicas than jetstream.replicas; it is used as it is",
				"stream", o.Stream, "replicas", cfg.Replicas, "want", o.Replicas)
		}
		b.log.Info("using existing JetStream stream", "stream", o.Stream, "replicas", cfg.Replicas)
		replicas = cfg.Replicas
	}
	b.ns.js, b.ns.streamReplicas = js, replicas
	b.ns.keys.js, b.ns.keys.replicas = js, replicas
	if b.opts.HA.Enabled {
		// Refused at start rather than retried by every PBX's HA loop: a
		// bucket with fewer replicas than the stream stays wrong until an
		// operator edits it. NATS not answering yet is retried there.
		leases, err := openLeases(ctx, b.ns, b.opts.HA)
		if errors.Is(err, lease.ErrFewReplicas) {
			return fmt.Errorf("bridge: ha.bucket: %w", err)
		}
		b.ns.leases = leases
	}
	return nil
}

// flushTimeout bounds a flush when the caller's context has no deadline,
// which nats.go requires.
const flushTimeout = 10 * time.Second

func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	return nc.FlushWithContext(ctx)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Shutdown stops taking actions (every action service leaves its queue
// group), hands over every HA lease it holds (ha.go), lets the actions in flight finish until ctx ends, logs every AMI
// session off, publishes the final status and flushes what is left to
// NATS. It does not close nc, nor Options.ServiceConn. Actions still waiting when ctx ends are
// answered 503.
func (b *Bridge) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return errors.New("bridge: shutdown already called")
	}
	b.closing = true
	started := b.started
	b.mu.Unlock()

	stopHard := context.AfterFunc(ctx, b.stopHard)
	defer stopHard()
	b.endIntake()
	if started {
		b.handover(ctx)
	}
	b.waitActions(ctx)
	b.stopRun()
	if started {
		b.wg.Wait()
		if b.ns.pool != nil {
			b.ns.pool.stop()
		}
	}
	for _, p := range b.pbxes {
		p.stopped()
	}
	var errs []error
	if b.ns.svc != b.ns.nc {
		if err := flush(ctx, b.ns.svc); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("flush the NATS service connection: %w", err))
		}
	}
	if err := flush(ctx, b.ns.nc); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, fmt.Errorf("flush NATS: %w", err))
	}
	b.stopHard()
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("deadline reached: %w", ctx.Err()))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bridge: shutdown: %w", err)
	}
	return nil
}

// handover gives up, once its publishes are acknowledged, every HA lease this
// process holds, in parallel, so that the standbys take over at once.
func (b *Bridge) handover(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range b.pbxes {
		if p.ha != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.ha.handover(ctx)
			}()
		}
	}
	wg.Wait()
}

// endIntake ends the lifecycle's intake: the action services stop and no
// action enters any more.
func (b *Bridge) endIntake() {
	b.life.mu.Lock()
	defer b.life.mu.Unlock()
	b.stopIntake()
}

// waitActions waits for the actions in flight; at ctx's end the hard
// context ends, the ones left answer 503, and it waits for their replies.
func (b *Bridge) waitActions(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		b.life.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		b.stopHard()
		<-done
	}
}

func (b *Bridge) isClosing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closing
}

// Status returns the current status of every PBX, in configuration order.
func (b *Bridge) Status() []subjects.PBXStatus {
	out := make([]subjects.PBXStatus, len(b.pbxes))
	for i, p := range b.pbxes {
		out[i] = p.status()
	}
	return out
}

// PublishStatus publishes the status of every PBX now. The bridge does so
// on every change and every StatusInterval by itself; a caller that sees
// NATS come back calls it so subscribers need not wait for the interval.
func (b *Bridge) PublishStatus() {
	for _, p := range b.pbxes {
		p.publishStatus()
	}
}

// statusTicker publishes every status each StatusInterval until ctx ends.
func (b *Bridge) statusTicker(ctx context.Context) {
	t := time.NewTicker(b.opts.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.PublishStatus()
		case <-ctx.Done():
			return
		}
	}
}

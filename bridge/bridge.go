// Package bridge connects AMI sessions to NATS: per PBX it keeps the AMI
// session up, publishes every event in order, serves actions by NATS
// request-reply as a micro service, enforces the action policy and reports
// its state.
//
// The subjects, headers and JSON shapes it uses are the NATS contract of
// ami-bridge; the subjects package names every subject.
package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/amiproto"
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
	ActionsAllow     []string      // case-insensitive globs; empty means all
	ActionsDeny      []string      // case-insensitive globs; nil means DefaultActionsDeny ("Events"), empty means none
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
	// Replicas of the stream when the bridge creates it, default 1; more
	// need a NATS cluster of at least that many servers. An existing
	// stream keeps its own.
	Replicas int
}

// Options apply to every PBX of a Bridge.
type Options struct {
	Prefix         string        // subject prefix, default "ami"
	EventBuffer    int           // events held per PBX while NATS is slow, default 65536
	StatusInterval time.Duration // default 30s
	JetStream      JetStreamOptions
	Version        string // micro service version, default "0.0.0"; one that is not SemVer registers as "0.0.0" with the raw string in the metadata
	Logger         zerolog.Logger

	// MaxInflight bounds the actions in flight per PBX, default 1024.
	// Further requests wait in the NATS subscription.
	MaxInflight int
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
	DefaultMaxInflight      = 1024
)

// MaxReplicas is the most replicas JetStream gives a stream.
const MaxReplicas = 5

// The micro service every Bridge registers.
const (
	ServiceName = "ami-bridge"
	// QueueGroup is the queue group of every action endpoint, so that
	// several bridges for the same PBXes share the requests.
	QueueGroup = "ami-bridge"
)

// Bridge runs every configured PBX against one NATS connection.
type Bridge struct {
	nc       *nats.Conn
	opts     Options
	log      zerolog.Logger
	sessions []*session
	epoch    int64 // process epoch in Nats-Msg-Id: start time in Unix milliseconds

	js jetstream.JetStream // nil unless JetStream is enabled

	mu       sync.Mutex
	started  bool
	closing  bool           // no new actions
	inflight sync.WaitGroup // actions being answered
	svc      micro.Service

	actionCtx    context.Context // ends the actions still waiting at the shutdown deadline
	cancelAction context.CancelFunc
	runCtx       context.Context // ends the sessions' connect loops
	cancelRun    context.CancelFunc
	stopCtx      context.Context // Shutdown's ctx, for the Logoff of each session
	abort        chan struct{}   // closed when Shutdown's ctx ends: stop retrying
	abortOnce    sync.Once
	wg           sync.WaitGroup // sessions and the status ticker
}

var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$`)

// New validates the configuration and returns a Bridge that has not yet
// connected anywhere. Its error names every problem found, never a secret.
func New(nc *nats.Conn, servers []ServerConfig, opts Options) (*Bridge, error) {
	var errs []error
	if nc == nil {
		errs = append(errs, errors.New("no NATS connection"))
	}
	opts, err := withOptionDefaults(opts)
	if err != nil {
		errs = append(errs, err)
	}
	if len(servers) == 0 {
		errs = append(errs, errors.New("no servers configured"))
	}
	seen := map[string]bool{}
	for i, sc := range servers {
		label := sc.Name
		if label == "" {
			label = fmt.Sprintf("#%d", i+1)
		}
		if _, _, _, err := withServerDefaults(sc); err != nil {
			errs = append(errs, fmt.Errorf("server %s: %w", label, err))
		}
		if sc.Name != "" && seen[sc.Name] {
			errs = append(errs, fmt.Errorf("server %s: name used twice", sc.Name))
		}
		seen[sc.Name] = true
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("bridge: invalid configuration: %w", errors.Join(errs...))
	}
	b := &Bridge{nc: nc, opts: opts, log: opts.Logger, epoch: time.Now().UnixMilli(), abort: make(chan struct{})}
	for _, sc := range servers {
		s, err := newSession(b, sc)
		if err != nil { // checked above
			return nil, fmt.Errorf("bridge: server %s: %w", sc.Name, err)
		}
		b.sessions = append(b.sessions, s)
	}
	b.actionCtx, b.cancelAction = context.WithCancel(context.Background())
	b.runCtx, b.cancelRun = context.WithCancel(context.Background())
	return b, nil
}

func withOptionDefaults(o Options) (Options, error) {
	var errs []error
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !subjects.ValidPrefix(o.Prefix) {
		errs = append(errs, fmt.Errorf("prefix %q: want dot-separated tokens without spaces, '*' or '>'", o.Prefix))
	}
	if o.EventBuffer == 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	if o.EventBuffer < 0 {
		errs = append(errs, errors.New("event buffer must be positive"))
	}
	if o.StatusInterval == 0 {
		o.StatusInterval = DefaultStatusInterval
	}
	if o.StatusInterval < 0 {
		errs = append(errs, errors.New("status interval must be positive"))
	}
	if o.Version == "" {
		o.Version = "0.0.0"
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.MaxInflight < 0 {
		errs = append(errs, errors.New("max in-flight actions must be positive"))
	}
	js := &o.JetStream
	if js.Stream == "" {
		js.Stream = DefaultStream
	}
	if strings.ContainsAny(js.Stream, ".*> \t\r\n/\\") {
		errs = append(errs, fmt.Errorf("jetstream stream name %q: no '.', '*', '>', '/', '\\' or whitespace", js.Stream))
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
	if js.MaxAge < 0 || js.Duplicates < 0 || js.MaxPending < 0 {
		errs = append(errs, errors.New("jetstream max age, duplicates window and max pending must be positive"))
	}
	if js.Replicas < 0 || js.Replicas > MaxReplicas {
		errs = append(errs, fmt.Errorf("jetstream replicas %d: want 1 to %d", js.Replicas, MaxReplicas))
	}
	if js.Enabled && js.Duplicates > js.MaxAge {
		errs = append(errs, fmt.Errorf("jetstream duplicates window %v is longer than max age %v", js.Duplicates, js.MaxAge))
	}
	return o, errors.Join(errs...)
}

// withServerDefaults checks sc, fills its zero values and returns the URL
// to dial, secret included. Nothing it returns as an error holds the URL.
func withServerDefaults(sc ServerConfig) (ServerConfig, string, amiproto.Endpoint, error) {
	var errs []error
	if !subjects.ValidServerName(sc.Name) {
		errs = append(errs, fmt.Errorf("name %q: want [A-Za-z0-9_-]+", sc.Name))
	}
	ep, err := amiproto.ParseURL(sc.URL)
	if err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	} else if ep.User == "" {
		errs = append(errs, errors.New("url: no user; the bridge must log in (user:secret@host:port, or the secret from secret_env/secret_file)"))
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
		errs = append(errs, fmt.Errorf("auth %q: want plain or md5", sc.Auth))
	}
	def := func(d *time.Duration, v time.Duration, name string) {
		if *d == 0 {
			*d = v
		}
		if *d < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	def(&sc.ActionTimeout, DefaultActionTimeout, "action timeout")
	def(&sc.MaxActionTimeout, DefaultMaxActionTimeout, "max action timeout")
	def(&sc.ReconnectMin, DefaultReconnectMin, "reconnect min")
	def(&sc.ReconnectMax, DefaultReconnectMax, "reconnect max")
	if sc.PingInterval < 0 {
		errs = append(errs, errors.New("ping interval must not be negative"))
	}
	if sc.ActionTimeout > sc.MaxActionTimeout {
		errs = append(errs, fmt.Errorf("action timeout %v is above max action timeout %v", sc.ActionTimeout, sc.MaxActionTimeout))
	}
	if sc.ReconnectMin > sc.ReconnectMax {
		errs = append(errs, fmt.Errorf("reconnect min %v is above reconnect max %v", sc.ReconnectMin, sc.ReconnectMax))
	}
	if err := validateGlobs(sc); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return sc, "", ep, err
	}
	return sc, ep.DialURL(), ep, nil
}

// Start registers the micro service and starts one AMI session per PBX. It
// returns once the service is registered; sessions connect in the
// background and run until Shutdown. ctx bounds the setup only: with
// JetStream, finding or creating the stream.
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
	if err := b.addService(); err != nil {
		return err
	}
	b.started = true
	for _, s := range b.sessions {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			s.run(b.runCtx)
		}()
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.statusTicker()
	}()
	// Once Start returns, requests must find the endpoints: make sure the
	// server has the subscriptions.
	if err := flush(ctx, b.nc); err != nil {
		b.log.Warn().Err(err).Msg("NATS flush after registering the service")
	}
	return nil
}

func (b *Bridge) addService() error {
	names := make([]string, len(b.sessions))
	for i, s := range b.sessions {
		names[i] = s.name
	}
	version := b.opts.Version
	meta := map[string]string{"servers": strings.Join(names, ","), "prefix": b.opts.Prefix}
	if !semver.MatchString(version) {
		meta["version"] = version
		version = "0.0.0"
	}
	svc, err := micro.AddService(b.nc, micro.Config{
		Name:        ServiceName,
		Version:     version,
		Description: "Asterisk Manager Interface actions by NATS request-reply, one endpoint per PBX",
		Metadata:    meta,
		QueueGroup:  QueueGroup,
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			b.log.Error().Str("subject", err.Subject).Str("error", err.Description).Msg("action endpoint subscription error")
		},
	})
	if err != nil {
		return fmt.Errorf("bridge: register micro service: %w", err)
	}
	for _, s := range b.sessions {
		err := svc.AddEndpoint(s.name, micro.HandlerFunc(s.handleAction),
			micro.WithEndpointSubject(subjects.Action(b.opts.Prefix, s.name)),
			micro.WithEndpointMetadata(map[string]string{"server": s.name}))
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("bridge: add endpoint for %s: %w", s.name, err)
		}
	}
	b.svc = svc
	return nil
}

func (b *Bridge) setupJetStream(ctx context.Context) error {
	o := b.opts.JetStream
	js, err := jetstream.New(b.nc,
		jetstream.WithPublishAsyncMaxPending(o.MaxPending),
		jetstream.WithPublishAsyncTimeout(jsAckTimeout))
	if err != nil {
		return fmt.Errorf("bridge: jetstream: %w", err)
	}
	want := subjects.AllEvents(b.opts.Prefix)
	stream, err := js.Stream(ctx, o.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        o.Stream,
			Description: "AMI events published by ami-bridge",
			Subjects:    []string{want},
			MaxAge:      o.MaxAge,
			Duplicates:  o.Duplicates,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		})
		if err != nil {
			return fmt.Errorf("bridge: create stream %s: %w", o.Stream, err)
		}
		b.log.Info().Str("stream", o.Stream).Str("subjects", want).Int("replicas", o.Replicas).Msg("created JetStream stream")
	case err != nil:
		return fmt.Errorf("bridge: look up stream %s: %w", o.Stream, err)
	default:
		// An existing stream is the operator's: use it as it is, but say
		// when it will not take the events.
		cfg := stream.CachedInfo().Config
		if !contains(cfg.Subjects, want) {
			b.log.Warn().Str("stream", o.Stream).Strs("stream_subjects", cfg.Subjects).Str("want", want).
				Msg("existing JetStream stream does not list the event subjects; publishes may fail")
		}
		// Changing replicas moves data between servers: the operator's
		// call (nats stream edit --replicas), not the bridge's.
		if cfg.Replicas != o.Replicas {
			b.log.Warn().Str("stream", o.Stream).Int("replicas", cfg.Replicas).Int("want", o.Replicas).
				Msg("existing JetStream stream has other replicas than jetstream.replicas; it is used as it is")
		}
		b.log.Info().Str("stream", o.Stream).Int("replicas", cfg.Replicas).Msg("using existing JetStream stream")
	}
	b.js = js
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

// Shutdown stops taking actions, lets in-flight ones finish until ctx ends,
// sends Logoff on every session, publishes the final status and flushes
// what is left to NATS. It does not close nc. Actions still waiting when
// ctx ends are answered 503.
func (b *Bridge) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return errors.New("bridge: shutdown already called")
	}
	b.closing = true
	b.stopCtx = ctx
	started, svc := b.started, b.svc
	b.mu.Unlock()

	stopAbort := context.AfterFunc(ctx, func() { b.abortOnce.Do(func() { close(b.abort) }) })
	defer stopAbort()

	var errs []error
	if svc != nil {
		// Stop drains the endpoints: requests already delivered are still
		// handled, and get 503 as closing is set.
		if err := svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop micro service: %w", err))
		}
	}
	b.waitActions(ctx)
	b.cancelRun()
	if started {
		b.wg.Wait()
	}
	for _, s := range b.sessions {
		s.setState(StateStopped, nil)
	}
	if err := flush(ctx, b.nc); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, fmt.Errorf("flush NATS: %w", err))
	}
	b.cancelAction()
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("deadline reached: %w", ctx.Err()))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bridge: shutdown: %w", err)
	}
	return nil
}

// waitActions waits for the actions in flight; at ctx's end it cancels the
// ones left, which answer 503, and waits for their replies.
func (b *Bridge) waitActions(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		b.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		b.cancelAction()
		<-done
	}
}

// beginAction counts one more action in flight, unless Shutdown started.
func (b *Bridge) beginAction() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return false
	}
	b.inflight.Add(1)
	return true
}

func (b *Bridge) isClosing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closing
}

// Status returns the current status of every PBX, in configuration order.
func (b *Bridge) Status() []Status {
	out := make([]Status, len(b.sessions))
	for i, s := range b.sessions {
		out[i] = s.status()
	}
	return out
}

// Servers returns the names of the configured PBXes, in configuration
// order.
func (b *Bridge) Servers() []string {
	out := make([]string, len(b.sessions))
	for i, s := range b.sessions {
		out[i] = s.name
	}
	return out
}

// PublishStatus publishes the status of every PBX now. The bridge does so
// on every change and every StatusInterval by itself; a caller that sees
// NATS come back calls it so subscribers need not wait for the interval.
func (b *Bridge) PublishStatus() {
	for _, s := range b.sessions {
		s.publishStatus()
	}
}

// statusTicker publishes every status each StatusInterval.
func (b *Bridge) statusTicker() {
	t := time.NewTicker(b.opts.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.PublishStatus()
		case <-b.runCtx.Done():
			return
		}
	}
}

package bridge

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// The states of a PBX session, as Status.State reports them.
const (
	StateConnecting   = "connecting"
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
	StateAuthFailed   = "auth_failed"
	StateStopped      = "stopped"
)

// dialTimeout bounds one connect-and-login attempt; Asterisk takes about a
// second to refuse a login, so this is far above any healthy dial.
const dialTimeout = 15 * time.Second

// session is one PBX: its AMI connection loop, event path, action endpoint
// and status.
type session struct {
	b        *Bridge
	cfg      ServerConfig
	name     string
	url      string // holds the secret: never log it, never put it in an error
	log      zerolog.Logger
	filter   *eventFilter
	policy   actionPolicy
	dialOpts []amiproto.Option

	client atomic.Pointer[amiproto.Client] // nil unless connected
	slots  chan struct{}                   // one per action in flight

	seq   uint64 // last Ami-Seq given; only the client's reader goroutine touches it
	queue chan queuedEvent
	pub   *publisher

	published  atomic.Uint64
	dropped    atomic.Uint64 // events that passed the filter and were lost: a queue full, or NATS refused
	jsFailures atomic.Uint64
	reconnects atomic.Uint64
	lastSeq    atomic.Uint64
	stats      sessionStats // what only Stats reads; see stats.go

	mu         sync.Mutex // guards the status fields below
	state      string
	since      time.Time
	lastErr    string
	banner     string
	version    string
	amiVersion string

	statusMu sync.Mutex // keeps status messages in the order of their snapshots

	dropLog   rateLimit
	reportLog rateLimit
}

func newSession(b *Bridge, sc ServerConfig) (*session, error) {
	sc, dial, ep, err := withServerDefaults(sc)
	if err != nil {
		return nil, err
	}
	s := &session{
		b:      b,
		cfg:    sc,
		name:   sc.Name,
		url:    dial,
		log:    b.log.With().Str("server", sc.Name).Str("ami", ep.String()).Logger(),
		filter: newEventFilter(sc.EventsInclude, sc.EventsExclude),
		policy: newActionPolicy(sc.ActionsAllow, sc.ActionsDeny),
		slots:  make(chan struct{}, b.opts.MaxInflight),
		queue:  make(chan queuedEvent, b.opts.EventBuffer),
		state:  StateConnecting,
		since:  time.Now(),
	}
	s.pub = newPublisher(s)
	s.dialOpts = []amiproto.Option{
		// Events go from the client's reader straight into the session
		// buffer: one bounded queue, no hand-off, and Ami-Seq numbers them
		// in the order they were read.
		amiproto.WithEventFunc(s.accept),
		amiproto.WithReportFunc(s.report),
	}
	if sc.Auth == "md5" {
		s.dialOpts = append(s.dialOpts, amiproto.WithMD5Auth())
	}
	if sc.TLS != nil {
		s.dialOpts = append(s.dialOpts, amiproto.WithTLSConfig(sc.TLS))
	}
	if sc.PingInterval > 0 {
		// Dead after three intervals with an unanswered Ping and no
		// byte at all from the PBX.
		s.dialOpts = append(s.dialOpts, amiproto.WithKeepalive(sc.PingInterval, 3*sc.PingInterval))
	}
	return s, nil
}

// run keeps the AMI session up until ctx ends, then logs off, publishes
// what is left and returns.
func (s *session) run(ctx context.Context) {
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		s.pub.loop()
	}()
	defer func() {
		close(s.queue)
		<-pubDone
	}()

	bo := backoff{min: s.cfg.ReconnectMin, max: s.cfg.ReconnectMax}
	everConnected := false
	for {
		s.setState(StateConnecting, nil)
		c, err := s.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if ae := (*amiproto.AuthError)(nil); errors.As(err, &ae) {
				// Retrying a wrong secret fast only fills Asterisk's
				// security log.
				bo.toMax()
				s.stats.loginFailures.Add(1)
				s.setState(StateAuthFailed, err)
			} else {
				s.setState(StateDisconnected, err)
			}
			if !sleepCtx(ctx, bo.next()) {
				return
			}
			continue
		}
		if everConnected {
			s.reconnects.Add(1)
		}
		everConnected = true
		bo.reset()
		s.connected(c)
		s.readEvents(ctx, c)
		s.client.Store(nil)
		if ctx.Err() != nil {
			return
		}
		s.setState(StateDisconnected, c.Err())
		if !sleepCtx(ctx, bo.next()) {
			return
		}
	}
}

func (s *session) dial(ctx context.Context) (*amiproto.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return amiproto.Dial(ctx, s.url, s.dialOpts...)
}

// connected makes c the session's client and asks Asterisk its version.
func (s *session) connected(c *amiproto.Client) {
	s.mu.Lock()
	s.banner = c.Banner()
	if v := amiproto.BannerVersion(s.banner); v != "" {
		s.amiVersion = v
	}
	s.mu.Unlock()
	s.client.Store(c)
	s.setState(StateConnected, nil)
	s.b.wg.Add(1)
	go func() {
		defer s.b.wg.Done()
		s.fetchVersion(c)
	}()
}

// fetchVersion reads the Asterisk version with CoreSettings; a user without
// the system read class just goes without.
func (s *session) fetchVersion(c *amiproto.Client) {
	ctx, cancel := context.WithTimeout(s.b.runCtx, s.cfg.ActionTimeout)
	defer cancel()
	resp, err := c.Request(ctx, amiproto.NewAction("CoreSettings"))
	if err != nil {
		s.log.Debug().Err(err).Msg("CoreSettings failed; the status will not carry the Asterisk version")
		return
	}
	s.mu.Lock()
	s.version = resp.Get("AsteriskVersion")
	if v := resp.Get("AMIversion"); v != "" {
		s.amiVersion = v
	}
	s.mu.Unlock()
	s.publishStatus()
}

// readEvents moves c's events into the session buffer until the connection
// ends. When ctx ends first it logs off, waiting for what is still pending
// up to the shutdown deadline; the events that arrive meanwhile are kept.
func (s *session) readEvents(ctx context.Context, c *amiproto.Client) {
	loggedOff := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(loggedOff)
		s.client.Store(nil)
		if err := c.Shutdown(s.b.shutdownCtx()); err != nil {
			s.log.Warn().Err(err).Msg("AMI logoff did not finish")
		}
	})
	// The client hands its events to accept on its reader goroutine; Done
	// is closed once that reader has stopped, so the next connection's
	// reader never overlaps with this one. The logoff above ends the
	// connection.
	<-c.Done()
	if !stop() {
		<-loggedOff
	}
}

// accept numbers an event that passes the filter and queues it for the
// publisher. It never blocks: past the buffer's bound the event is
// dropped, and counted, and the gap in Ami-Seq shows it.
func (s *session) accept(m *amiproto.Message) {
	at := time.Now()
	s.stats.eventRead(at)
	if !s.filter.pass(m.EventName()) {
		s.stats.filtered.Add(1)
		return
	}
	s.seq++
	s.lastSeq.Store(s.seq)
	select {
	case s.queue <- queuedEvent{msg: m, seq: s.seq, at: at}:
	default:
		n := s.dropped.Add(1)
		if s.dropLog.allow(time.Second) {
			s.log.Warn().Uint64("seq", s.seq).Str("event", m.EventName()).Uint64("dropped_total", n).
				Msg("event buffer full: NATS is slow or down, dropping events")
		}
	}
}

// report receives what the amiproto client survives: stray responses,
// malformed lines, messages over a limit. It runs on the client's reader
// goroutine.
func (s *session) report(err error) {
	if s.reportLog.allow(time.Second) {
		s.log.Warn().Err(err).Msg("AMI session report")
	}
}

func (s *session) setState(state string, err error) {
	s.mu.Lock()
	changed := s.state != state
	s.state = state
	s.since = time.Now()
	s.lastErr = ""
	if err != nil {
		s.lastErr = err.Error()
	}
	s.mu.Unlock()
	ev := s.log.Info()
	if err != nil {
		ev = s.log.Warn().Err(err)
	}
	if changed || err != nil {
		ev.Str("state", state).Msg("AMI session " + state)
	}
	s.publishStatus()
}

// backoff is exponential between min and max, with jitter so that many
// bridges do not knock on a restarted PBX at the same instant.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) reset() { b.cur = 0 }
func (b *backoff) toMax() { b.cur = b.max }

// next returns the wait before the next attempt: the current step less up
// to a quarter of it at random, never below min.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	d := b.cur
	if q := int64(d / 4); q > 0 {
		d -= time.Duration(rand.Int64N(q))
	}
	return max(d, b.min)
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// rateLimit lets one log line through per interval.
type rateLimit struct{ last atomic.Int64 }

func (r *rateLimit) allow(every time.Duration) bool {
	now := time.Now().UnixNano()
	last := r.last.Load()
	return now-last >= int64(every) && r.last.CompareAndSwap(last, now)
}

package bridge

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/bridge/internal/callstate"
	"github.com/ami-bridge/ami-bridge/bridge/internal/ha"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// pbx is one PBX: its event session and event path, its action sessions
// and their services, and its status.
type pbx struct {
	name   string
	cfg    ServerConfig
	ns     *natsSide
	life   *lifecycle
	log    *slog.Logger
	filter *eventFilter
	policy actionPolicy
	mask   *secretMasker // the bridge's own AMI secret, kept out of replies

	events  *link
	actions []*link
	service actionService // the action sessions' micro service; see service.go

	seq uint64 // last Ami-Seq given; only the event client's reader goroutine touches it
	// chain is, with HA, the rolling hash of the last numbered events'
	// fingerprints (Ami-Chain); only the event reader touches it.
	chain ha.Chain
	ring  *ring // the numbered events, published or waiting; see ring.go
	pub   *publisher
	ha    *haNode    // nil without HA; see ha.go
	st    *stateNode // nil without StateOptions; see state.go

	published  atomic.Uint64
	dropped    atomic.Uint64 // events that passed the filter and were lost: the ring full, or NATS refused
	jsFailures atomic.Uint64
	lastSeq    atomic.Uint64
	stats      pbxStats // what only Stats reads; see stats.go

	mu         sync.Mutex // guards the fields below
	state      string     // the PBX's state: see status
	since      time.Time
	version    string
	amiVersion string
	stopping   bool

	statusMu sync.Mutex // keeps status messages in the order of their snapshots
	stateMu  sync.Mutex // serializes linkChanged

	dropLog   rateLimit
	reportLog rateLimit
	replyLog  rateLimit // requests dropped for their reply subject
	room      roomWait  // only the event client's reader goroutine touches it
}

// urlSecret is the secret in raw's userinfo, "" if none: ServerConfig.Secret
// overrides it, and both are masked.
func urlSecret(raw string) string {
	ep, err := amiproto.ParseURL(raw)
	if err != nil {
		return ""
	}
	return ep.Secret
}

// newPBX returns a PBX; buffered is the byte count its ring shares with
// the other PBXes' (see ring).
func newPBX(sc ServerConfig, ns *natsSide, life *lifecycle, opts Options, buffered *atomic.Int64, log *slog.Logger) (*pbx, error) {
	sc, ep, err := withServerDefaults(sc)
	if err != nil {
		return nil, err
	}
	p := &pbx{
		name:   sc.Name,
		cfg:    sc,
		ns:     ns,
		life:   life,
		log:    log.With("server", sc.Name, "ami", ep.String()),
		filter: newEventFilter(sc.EventsInclude, sc.EventsExclude),
		policy: newActionPolicy(sc.ActionsAllow, sc.ActionsDeny),
		mask:   newSecretMasker(ep.Secret, urlSecret(sc.URL)),
		ring:   newRing(opts.EventBuffer, opts.EventBufferBytes, buffered, opts.HA.Enabled),
		state:  subjects.StateConnecting,
		since:  time.Now(),
	}
	p.pub = newPublisher(p)
	if opts.State.Enabled {
		p.st = newStateNode(p, opts.State)
	}
	p.service.p = p
	p.service.arrivals = newArrivals(max(4096, 8*sc.ActionSessions*sc.MaxPendingRequests), sc.MaxActionTimeout)
	if opts.HA.Enabled {
		p.ha = newHANode(p, opts.HA)
		p.pub.fence = p.ha
	}
	common := []amiproto.Option{
		amiproto.WithReportFunc(p.report),
		// An event that carries a request's ActionID (OriginateResponse)
		// arrives on the event session, not on the action session that
		// sent the request: they share the map that gives the requester's
		// ActionID back.
		amiproto.WithActionIDs(amiproto.NewActionIDs()),
	}
	if sc.Auth == "md5" {
		common = append(common, amiproto.WithMD5Auth())
	}
	if sc.TLS != nil {
		common = append(common, amiproto.WithTLSConfig(sc.TLS))
	}

	newLink := func(role, name string, extra ...amiproto.Option) *link {
		return &link{
			role:    role,
			ep:      ep,
			opts:    append(append([]amiproto.Option{}, common...), extra...),
			min:     sc.ReconnectMin,
			max:     sc.ReconnectMax,
			log:     p.log.With("session", name),
			changed: p.linkChanged,
			state:   subjects.StateConnecting,
			since:   p.since,
		}
	}
	// Events go from the client's reader straight into the PBX's ring:
	// no hand-off, and Ami-Seq numbers them in the order they were read.
	// The publisher is woken once per read of the socket (Drained), not
	// once per event.
	// Borrow: accept copies what it keeps (into the ring's chunks; the
	// state model clones what it keeps, TestCapture_BorrowedEvents), so
	// the reader's own copy of each event would be paid for nothing.
	events := []amiproto.Option{amiproto.WithEvents(amiproto.EventDelivery{Func: p.accept, Borrow: true, Drained: p.ring.notify, Shedding: p.ring.refusing, Skip: p.shed})}
	if sc.PingInterval > 0 {
		// The event session runs no requested action, so nothing but a
		// dead link holds its Ping back. Action sessions have their own
		// keepalive (actionKeepalive).
		events = append(events, amiproto.WithKeepalive(sc.PingInterval, keepaliveDeadline(sc.PingInterval)))
	}
	p.events = newLink(subjects.RoleEvents, subjects.RoleEvents, events...)
	for i := range sc.ActionSessions {
		name := subjects.RoleAction + "-" + strconv.Itoa(i+1)
		// An action session logs in with Events: off. What Asterisk sends
		// there as an event anyway is not the PBX's event stream (the event
		// session has that): it is left, and no 64k-event queue is made for
		// it, which would be most of an idle session's memory.
		p.actions = append(p.actions, newLink(subjects.RoleAction, name, amiproto.WithEvents(amiproto.EventDelivery{Mask: "off", Func: ignoreEvent})))
	}
	return p, nil
}

// run runs the PBX's sessions and publisher until ctx ends, then returns
// once every session has logged off and the publisher has drained.
func (p *pbx) run(ctx context.Context) {
	var pubDone <-chan struct{}
	if pool := p.ns.pool; pool != nil {
		// Core NATS: the Bridge's pool publishes (see pubPool).
		p.pub.startPooled(pool)
		pubDone = p.pub.drained
	} else {
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.pub.loop()
		}()
		pubDone = done
	}
	var wg sync.WaitGroup
	for _, l := range p.actions {
		if p.cfg.ActionIdleLogoff > 0 {
			wait := p.startOnDemand(ctx, l) // ondemand.go: no goroutine while idle
			defer wait()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx, func(ctx context.Context, c *amiproto.Client) { p.serveActions(ctx, l, c) })
		}()
	}
	if p.ha != nil {
		// The HA loop ends with ctx; the lease was handed over before
		// (Bridge.Shutdown), or expires.
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.ha.run(ctx)
		}()
	}
	stateDone := make(chan struct{})
	if p.st != nil {
		// The state writer is run's: it ends after the event reader, with
		// a last flush, when run closes p.st.stop.
		go func() {
			defer close(stateDone)
			p.st.loop()
		}()
	}
	// The event session runs on run's own goroutine: one goroutine less
	// per PBX (docs/operations.md, "Large fan-in").
	p.events.run(ctx, p.serveEvents)
	wg.Wait()
	// The event reader has stopped: nothing appends to the ring any more.
	p.ring.close()
	<-pubDone
	if p.st != nil {
		close(p.st.stop)
		<-stateDone
	}
}

// serveEvents runs one login of the event session.
func (p *pbx) serveEvents(ctx context.Context, c *amiproto.Client) {
	p.mu.Lock()
	if v := amiproto.BannerVersion(c.Banner()); v != "" {
		p.amiVersion = v
	}
	p.mu.Unlock()
	p.events.setState(subjects.StateConnected, nil)
	p.fetchVersion(ctx, c)
	if p.ha == nil {
		if p.st != nil {
			p.st.reconcile(ctx, c, p.asteriskVersion())
		}
		p.events.untilEnd(ctx, p.life.hard, c)
		return
	}
	// The marker sends this login's marks; it is this login's, stopped
	// and waited for before the login's end is recorded.
	mctx, stop := context.WithCancel(ctx)
	marked := make(chan struct{})
	go func() {
		defer close(marked)
		p.ha.marker(mctx, c)
	}()
	if p.st != nil {
		p.st.reconcile(ctx, c, p.asteriskVersion())
	}
	p.events.untilEnd(ctx, p.life.hard, c)
	stop()
	<-marked
	// c's reader has stopped: p.seq is the last event of this login.
	p.ha.sessionEnded(p.seq)
}

// fetchVersion reads the Asterisk version with CoreSettings; a user without
// the system read class just goes without.
func (p *pbx) fetchVersion(ctx context.Context, c *amiproto.Client) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ActionTimeout)
	defer cancel()
	resp, err := c.Request(ctx, amiproto.NewAction("CoreSettings"))
	if err != nil {
		p.log.Debug("CoreSettings failed; the status will not carry the Asterisk version", "error", err)
		return
	}
	p.mu.Lock()
	p.version = resp.Get("AsteriskVersion")
	if v := resp.Get("AMIversion"); v != "" {
		p.amiVersion = v
	}
	p.mu.Unlock()
	p.publishStatus()
}

// accept numbers an event that passes the filter and appends it to the
// ring for the publisher. m is borrowed (EventDelivery.Borrow): whatever
// outlives the call is copied. When the events the publisher has not finished
// fill the ring's bounds, it waits briefly for room (roomWait: at most
// 5 ms, once per refusal); if none comes the event is dropped, and
// counted, and the gap in Ami-Seq shows it. A dropped event costs no
// copy and, but once in dropEvery, no clock read.
func (p *pbx) accept(m *amiproto.Message) {
	if p.ha != nil && isMark(m) {
		// Not the PBX's: never numbered nor published.
		p.ha.markRead(strings.Clone(m.Get(markHeader)), p.seq) // m is borrowed
		p.stats.eventRead(time.Now())
		p.stats.filtered.Add(1)
		return
	}
	if p.st != nil {
		// Before the filter: the state needs its events whether they are
		// published or not.
		p.st.model.Apply(m)
	}
	if !p.numbers(m.EventName()) {
		p.stats.eventRead(time.Now())
		p.stats.filtered.Add(1)
		return
	}
	p.nextSeq()
	var chain uint64
	if p.ha != nil {
		chain = p.chain.Add(ha.Fingerprint(m))
	}
	at, ok := p.ring.appendNow(m, p.seq, chain)
	if !ok && p.room.wait(p.ring) {
		at, ok = p.ring.appendNow(m, p.seq, chain)
	}
	if ok {
		p.stats.eventRead(at)
		return
	}
	p.drop(m.EventName())
}

// shed is the event session's EventDelivery.Skip: while the ring refuses
// events, one that passes the filter is numbered and dropped before it is
// parsed, as accept would have dropped it after, for a fraction of the
// cost. That keeps an overloaded bridge publishing: parsing the events it
// drops would take the CPU its publisher needs. Filtered events go the
// usual way.
func (p *pbx) shed(name string) bool {
	if !p.ring.refusing() || !p.numbers(name) || (p.ha != nil && name == "UserEvent") {
		return false // a UserEvent may be a mark, which is never numbered
	}
	if p.st != nil && callstate.Uses(name) {
		return false // the state needs it, published or not
	}
	if name == originateResponse {
		return false // an Ami-Wait request may wait for it (originatewait.go)
	}
	p.nextSeq()
	if p.ha != nil {
		p.chain.Add(ha.Unknown) // unparsed: no place near it can be proven
	}
	p.drop(name)
	return true
}

// numbers reports whether the event called name gets an Ami-Seq: it
// passes the filter and, with HA, is not one of the session's own
// (sessionOnly), which would number the stream differently in each
// process.
func (p *pbx) numbers(name string) bool {
	return p.filter.pass(name) && (p.ha == nil || !sessionOnly(name))
}

// nextSeq gives the next Ami-Seq, p.seq.
func (p *pbx) nextSeq() {
	p.seq++
	p.lastSeq.Store(p.seq)
}

// drop counts the event numbered p.seq as dropped, and logs the drops at
// most once a second.
func (p *pbx) drop(name string) {
	n := p.dropped.Add(1)
	if n%dropEvery == 1 {
		now := time.Now()
		p.stats.eventRead(now)
		if p.dropLog.allowAt(now, time.Second) {
			// shed's name is a view of the reader's buffer: the clone
			// lets a handler keep the record.
			p.log.LogAttrs(context.Background(), slog.LevelWarn, "event buffer full: NATS is slow or down, dropping events",
				slog.Uint64("seq", p.seq), slog.String("event", strings.Clone(name)), slog.Uint64("dropped_total", n))
		}
	}
}

// ignoreEvent is the event handler of action sessions.
func ignoreEvent(*amiproto.Message) {}

// dropEvery is how often, in dropped events, accept reads the clock to
// log the drops and keep the last event's time.
const dropEvery = 1024

// eventsUp reports whether the event session is logged in.
func (p *pbx) eventsUp() bool { return p.events.status().State == subjects.StateConnected }

// report receives what an amiproto client survives: stray responses,
// malformed lines, messages over a limit. It runs on that client's reader
// goroutine.
func (p *pbx) report(err error) {
	if p.reportLog.allow(time.Second) {
		p.log.Warn("AMI session report", "error", err)
	}
}

// linkChanged recomputes the PBX's state after a session's change and
// publishes the status.
func (p *pbx) linkChanged() {
	// Two sessions may change at once: computing the PBX's state and
	// storing it is one step, or a call that read the sessions before
	// the other's change would store its older state last.
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	state := p.events.status().State
	if state == subjects.StateConnected {
		state = subjects.StateConnecting
		for i, l := range p.actions {
			st := l.status().State
			if st == subjects.StateConnected || st == subjects.StateIdle {
				state = subjects.StateConnected // an idle session logs in on the next request
				break
			}
			if i == 0 || st == subjects.StateAuthFailed {
				state = st
			}
		}
	}
	p.mu.Lock()
	if p.stopping {
		state = subjects.StateStopped
	}
	if state != p.state {
		p.state, p.since = state, time.Now()
	}
	p.mu.Unlock()
	p.publishStatus()
}

// stopped marks the PBX and its sessions stopped, once the sessions have
// ended, and publishes that once.
func (p *pbx) stopped() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	p.events.record(subjects.StateStopped, nil)
	for _, l := range p.actions {
		l.record(subjects.StateStopped, nil)
	}
	p.linkChanged()
}

// asteriskVersion is the version CoreSettings gave, "" if none.
func (p *pbx) asteriskVersion() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.version
}

package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// actionService is a PBX's micro service instance: one endpoint, in the
// queue group, per logged-in action session (two with the per-action
// subjects; see addEndpoint). One instance per PBX, rather
// than one per session, because each instance costs nine $SRV
// subscriptions, each with its own nats.go goroutine, on the bridge and in
// the server: about a third of an idle PBX's memory per instance.
//
// A session that logs in adds its endpoint to the running instance. micro
// cannot remove one endpoint of a running service, so when a session
// drops, a new instance is registered with the sessions still up, then the
// old one is stopped: a request is never left without an endpoint while
// one session of the PBX is up. The counters of `nats micro stats` start
// at zero with each instance.
//
// A PBX whose action sessions are on demand (ServerConfig.ActionIdleLogoff)
// has no instance of its own: its endpoints join the Bridge's shared
// instance (sharedService), since they stay registered from the first
// join to Shutdown and so never need an instance swap.
type actionService struct {
	p *pbx

	arrivals *arrivals // when requests arrived; set by newPBX

	mu       sync.Mutex // guards the fields below and serializes instance changes
	svc      micro.Service
	sessions map[*link]*actionSession // the logged-in action sessions

	dropMu    sync.Mutex                 // guards the fields below
	slowSubs  map[*nats.Subscription]int // endpoint subscriptions that dropped requests, with the count last read
	dropsGone uint64                     // drops of those since closed
}

// join adds the session ep, of link l, to the service. After Shutdown
// has stopped taking actions, it adds nothing and returns nil.
func (s *actionService) join(l *link, ep *actionSession) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions == nil {
		s.sessions = make(map[*link]*actionSession)
	}
	if s.onDemand() {
		// Outside the shared instance's lock: joins of many PBXes at
		// start do not wait on each other's flush.
		if joined, err := s.addShared(ep); !joined || err != nil {
			return err
		}
		s.sessions[l] = ep
	} else {
		s.sessions[l] = ep
		var err error
		if s.svc != nil && s.p.life.intake.Err() == nil {
			err = s.addEndpoint(s.svc, ep) // micro can add an endpoint to a running instance
		} else {
			err = s.replace()
		}
		if err != nil {
			delete(s.sessions, l)
			return err
		}
	}
	if err := flush(context.Background(), s.p.ns.svc); err != nil {
		l.log.Warn("NATS flush after registering the action service", "error", err)
	}
	return nil
}

// leave takes l's session out of the service; with none left, or once
// Shutdown has stopped taking actions, the service stops.
func (s *actionService) leave(l *link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[l]; !ok {
		return
	}
	delete(s.sessions, l)
	if s.onDemand() {
		s.leaveShared()
		return
	}
	if err := s.replace(); err != nil {
		s.p.log.Error("register the action service without a dropped session; it is left out of the queue group", "error", err)
		s.stopArrivals()
		s.stop()
	}
}

// replace registers an instance with the current sessions, then stops the
// old one. Lock held.
func (s *actionService) replace() error {
	var next micro.Service
	if len(s.sessions) > 0 && s.p.life.intake.Err() == nil {
		var err error
		if next, err = s.register(); err != nil {
			return err
		}
		if err := s.listenArrivals(); err != nil {
			_ = next.Stop()
			return fmt.Errorf("subscribe to stamp request arrivals: %w", err)
		}
	}
	if next == nil {
		s.stopArrivals()
	}
	s.stop()
	s.svc = next
	return nil
}

// listenArrivals stamps the requests' arrivals on the main connection,
// when the service has one of its own (see arrivals). Lock held.
func (s *actionService) listenArrivals() error {
	ns := s.p.ns
	if !ns.stampsArrivals() {
		return nil
	}
	return s.arrivals.listen(ns.stamper, s.endpointSubjects()...)
}

// arrival is when the request with reply subject reply reached the
// bridge: its stamp, or now when nothing stamps arrivals.
func (s *actionService) arrival(reply string, now time.Time) time.Time {
	if !s.p.ns.stampsArrivals() {
		return now // no stamp will come; a tombstone would only wait to age out
	}
	return s.arrivals.take(reply, now)
}

// stopArrivals ends the arrival stamps before the last instance stops:
// with no endpoint up, a requester must get no responders at once, not a
// timeout. Lock held.
func (s *actionService) stopArrivals() {
	if !s.p.ns.stampsArrivals() {
		return
	}
	if err := s.arrivals.stop(s.p.ns.stamper); err != nil {
		s.p.log.Warn("unsubscribe the arrival stamps", "error", err)
	}
}

// stop stops the current instance. Lock held.
func (s *actionService) stop() {
	if s.svc == nil {
		return
	}
	s.dropped() // read the drop counts while the subscriptions are open
	if err := s.svc.Stop(); err != nil {
		s.p.log.Warn("stop the action service", "error", err)
	}
	s.svc = nil
}

// register adds an instance with one endpoint per session, in the order
// of the PBX's action links. Lock held.
func (s *actionService) register() (micro.Service, error) {
	p := s.p
	cfg := p.ns.service
	cfg.Metadata = maps.Clone(cfg.Metadata)
	cfg.Metadata["server"] = p.name
	svc, err := addService(p.ns.svc, cfg, p.log)
	if err != nil {
		return nil, err
	}
	for _, l := range p.actions {
		ep, ok := s.sessions[l]
		if !ok {
			continue
		}
		if err := s.addEndpoint(svc, ep); err != nil {
			_ = svc.Stop()
			return nil, err
		}
	}
	return svc, nil
}

// addEndpoint adds the endpoints that run requests on ep's session: the
// generic one, <server> on <prefix>.<server>.action (unless
// NamedActionsOnly), and <server>-by-action on <prefix>.<server>.action.*,
// one subscription for every per-action subject. They take turns on the
// session, as Asterisk runs its actions one at a time anyway.
func (s *actionService) addEndpoint(svc micro.Service, ep *actionSession) error {
	p := s.p
	handler := micro.HandlerFunc(func(req micro.Request) {
		// The idle time starts again once the session is free; nothing
		// unless on demand (ondemand.go).
		defer ep.demand.used()
		ep.run.Lock()
		defer ep.run.Unlock()
		ep.busy.Store(true)
		defer ep.busy.Store(false)
		p.handle(req, ep)
	})
	limits := micro.WithEndpointPendingLimits(p.cfg.MaxPendingRequests, p.cfg.MaxPendingRequests*maxRequestBytes)
	if !p.cfg.NamedActionsOnly {
		err := svc.AddEndpoint(p.name, handler,
			micro.WithEndpointSubject(subjects.Action(p.ns.prefix, p.name)),
			micro.WithEndpointMetadata(map[string]string{"server": p.name}),
			limits)
		if err != nil {
			return fmt.Errorf("add endpoint: %w", err)
		}
	}
	err := svc.AddEndpoint(p.name+namedEndpointSuffix, handler,
		micro.WithEndpointSubject(subjects.NamedActions(p.ns.prefix, p.name)),
		micro.WithEndpointMetadata(map[string]string{"server": p.name, "actions": "one subject per action, spelled as the PBX's ListCommands spells it"}),
		limits)
	if err != nil {
		return fmt.Errorf("add per-action endpoint: %w", err)
	}
	return nil
}

// namedEndpointSuffix ends the name of a session's per-action endpoint.
const namedEndpointSuffix = "-by-action"

// endpointSubjects are the subjects of the PBX's endpoints.
func (s *actionService) endpointSubjects() []string {
	named := subjects.NamedActions(s.p.ns.prefix, s.p.name)
	if s.p.cfg.NamedActionsOnly {
		return []string{named}
	}
	return []string{subjects.Action(s.p.ns.prefix, s.p.name), named}
}

// maxRequestBytes is the room an endpoint's queue keeps per pending
// request: Asterisk takes no action above 128 lines of 1,024 bytes.
const maxRequestBytes = 128 << 10

// slowConsumer learns of an endpoint subscription that drops requests over
// its pending limit. nats.go reports a subscription once per run of drops,
// so the count is read from the subscription (see dropped).
func (s *actionService) slowConsumer(sub *nats.Subscription) {
	if !slices.Contains(s.endpointSubjects(), sub.Subject) || sub.Queue != subjects.QueueGroup {
		return
	}
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	if s.slowSubs == nil {
		s.slowSubs = make(map[*nats.Subscription]int)
	}
	if _, ok := s.slowSubs[sub]; !ok {
		s.slowSubs[sub] = 0
	}
	s.refreshDrops()
}

// dropped returns the requests the endpoints' pending limits dropped.
func (s *actionService) dropped() uint64 {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	return s.refreshDrops()
}

// refreshDrops reads the drop counts of the subscriptions that dropped
// requests; one closed since keeps its last count. dropMu held.
func (s *actionService) refreshDrops() uint64 {
	n := s.dropsGone
	for sub, last := range s.slowSubs {
		d, err := sub.Dropped()
		if err != nil { // closed
			s.dropsGone += uint64(last)
			n += uint64(last)
			delete(s.slowSubs, sub)
			continue
		}
		s.slowSubs[sub] = d
		n += uint64(d)
	}
	return n
}

// addService registers a micro service instance of cfg on nc, its
// subscription errors logged to log.
func addService(nc *nats.Conn, cfg micro.Config, log *slog.Logger) (micro.Service, error) {
	cfg.ErrorHandler = func(_ micro.Service, err *micro.NATSError) {
		log.Error("action endpoint subscription error", "subject", err.Subject, "error", err.Description)
	}
	svc, err := micro.AddService(nc, cfg)
	if err != nil {
		return nil, fmt.Errorf("register micro service: %w", err)
	}
	return svc, nil
}

// onDemand reports whether the PBX's endpoints are in the shared instance.
func (s *actionService) onDemand() bool { return s.p.cfg.ActionIdleLogoff > 0 }

// addShared adds ep's endpoints to the shared instance, registering it
// first if needed, and starts the PBX's arrival stamps with its first
// session, unless Shutdown stopped taking actions. s.mu held.
func (s *actionService) addShared(ep *actionSession) (joined bool, err error) {
	sh := &s.p.ns.shared
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.stopped || s.p.life.intake.Err() != nil {
		return false, nil
	}
	if sh.svc == nil {
		cfg := s.p.ns.service
		cfg.Description = "Asterisk Manager Interface actions by NATS request-reply: the endpoints of every PBX whose action sessions log in on demand"
		if sh.svc, err = addService(s.p.ns.svc, cfg, sh.log); err != nil {
			return false, err
		}
	}
	if err := s.listenArrivals(); err != nil {
		return false, fmt.Errorf("subscribe to stamp request arrivals: %w", err)
	}
	if err := s.addEndpoint(sh.svc, ep); err != nil {
		if len(s.sessions) == 0 {
			s.stopArrivals()
		}
		return false, err
	}
	return true, nil
}

// leaveShared is a session leaving the shared instance. micro cannot
// remove one endpoint of a running instance, and an on-demand session
// leaves only once Shutdown stopped taking actions (startOnDemand): then
// the PBX's arrival stamps end and the shared instance stops, for every
// PBX at once. Lock held.
func (s *actionService) leaveShared() {
	if s.p.life.intake.Err() == nil {
		s.p.log.Warn("an on-demand action session left before shutdown; its endpoints stay registered until then")
		return
	}
	s.stopArrivals()
	s.dropped() // read the drop counts while the subscriptions are open
	s.p.ns.shared.stop()
}

// sharedService is the one micro service instance of a Bridge's PBXes
// whose action sessions are on demand (ServerConfig.ActionIdleLogoff),
// with two endpoints per action session of each (addEndpoint), in the
// same queue group as the per-PBX instances. One instance for all of them
// rather than one each: an instance costs nine $SRV subscriptions, each
// with a nats.go goroutine, on the bridge and in the server, about 40 KiB
// of an idle PBX's memory (docs/operations.md, "Large fan-in"). The
// first join registers it; the first leave once Shutdown stopped taking
// actions stops it.
type sharedService struct {
	log *slog.Logger

	mu      sync.Mutex // guards the fields below; taken after an actionService's mu
	svc     micro.Service
	stopped bool
}

// stop stops the instance, once.
func (sh *sharedService) stop() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.stopped {
		return
	}
	sh.stopped = true
	if sh.svc == nil {
		return
	}
	if err := sh.svc.Stop(); err != nil {
		sh.log.Warn("stop the shared action service", "error", err)
	}
	sh.svc = nil
}

package bridge

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// actionService is a PBX's micro service instance: one endpoint, in the
// queue group, per logged-in action session. One instance per PBX, rather
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
type actionService struct {
	p *pbx

	mu       sync.Mutex // guards the fields below and serializes instance changes
	svc      micro.Service
	sessions map[*link]actionEndpoint // the logged-in action sessions
}

// actionEndpoint is what one session's endpoint runs requests on.
type actionEndpoint struct {
	c    *amiproto.Client
	busy *atomic.Bool // set while a request runs on c; see actionKeepalive
}

// join adds l's session, logged in as c, to the service. After Shutdown
// has stopped taking actions, it adds nothing and returns nil.
func (s *actionService) join(l *link, c *amiproto.Client, busy *atomic.Bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions == nil {
		s.sessions = make(map[*link]actionEndpoint)
	}
	ep := actionEndpoint{c: c, busy: busy}
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
	if err := flush(context.Background(), s.p.ns.nc); err != nil {
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
	if err := s.replace(); err != nil {
		s.p.log.Error("register the action service without a dropped session; it is left out of the queue group", "error", err)
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
	}
	s.stop()
	s.svc = next
	return nil
}

// stop stops the current instance. Lock held.
func (s *actionService) stop() {
	if s.svc == nil {
		return
	}
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
	cfg.ErrorHandler = func(_ micro.Service, err *micro.NATSError) {
		p.log.Error("action endpoint subscription error", "subject", err.Subject, "error", err.Description)
	}
	svc, err := micro.AddService(p.ns.nc, cfg)
	if err != nil {
		return nil, fmt.Errorf("register micro service: %w", err)
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

// addEndpoint adds the endpoint that runs requests on ep's session.
func (s *actionService) addEndpoint(svc micro.Service, ep actionEndpoint) error {
	p := s.p
	err := svc.AddEndpoint(p.name, micro.HandlerFunc(func(req micro.Request) {
		ep.busy.Store(true)
		defer ep.busy.Store(false)
		p.handle(req, ep.c)
	}),
		micro.WithEndpointSubject(subjects.Action(p.ns.prefix, p.name)),
		micro.WithEndpointMetadata(map[string]string{"server": p.name}))
	if err != nil {
		return fmt.Errorf("add endpoint: %w", err)
	}
	return nil
}

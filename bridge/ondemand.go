package bridge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Action sessions on demand (ServerConfig.ActionIdleLogoff): for large
// fan-ins, where most PBXes see no request for minutes, an action session
// logs in on its first request and logs off once idle for
// ActionIdleLogoff. An idle PBX then holds only its event session: the
// action sessions' sockets, goroutines and buffers are gone, on the bridge
// and on the PBX. The session's endpoints stay registered the whole time,
// so requests keep reaching the PBX's queue group, and its status shows
// the session "idle", which /readyz and the PBX's state count as up.
//
// The first request after an idle time pays for the login (one TCP
// connect and the Login round trip; see BenchmarkOnDemandFirstRequest).
// Concurrent requests to a session take turns on it (actionSession.run),
// so they make one login. A login that fails answers the request that
// asked for it with 503 and the reason, and the next request tries again.

// demand is the on-demand part of an action session.
type demand struct {
	idle time.Duration
	// timer logs the session off idle after the last request.
	timer *time.Timer
	mu    sync.Mutex // guards last
	last  time.Time  // end of the last request

	// Guarded by the session's run: this login's keepalive, stopped and
	// waited for at logoff.
	stopPing context.CancelFunc
	pingDone chan struct{}
}

// used restarts the idle time at the end of a request. A nil d (a session
// always logged in) does nothing.
func (d *demand) used() {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.last = time.Now()
	d.mu.Unlock()
	d.timer.Reset(d.idle)
}

// idleFor reports how long the session has been idle.
func (d *demand) idleFor() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return time.Since(d.last)
}

// startOnDemand starts the action session l on demand, with no goroutine
// of its own while it idles (memory is the point): its endpoints are
// registered at once and stay so until Shutdown stops taking actions;
// logins and logoffs happen under the session's run lock, in the request
// handlers (logIn) and in the idle timer's func (idleLogoff). When ctx
// ends the session is logged off if logged in; the returned func waits
// for that. run (pbx.run) owns what starts here: the join retries, only
// when a join fails, and the logoff at the end.
func (p *pbx) startOnDemand(ctx context.Context, l *link) (wait func()) {
	s := &actionSession{l: l, check: make(chan chan struct{}, 1)}
	d := &demand{idle: p.cfg.ActionIdleLogoff, last: time.Now()}
	s.demand = d
	// Logged off, nothing to time: the end of a request (used) arms the
	// timer. It is stopped at the end; a func that already started takes
	// s.run, which the logoff at the end also takes.
	d.timer = time.AfterFunc(math.MaxInt64, func() { p.idleLogoff(s) })
	joined := make(chan struct{})
	if err := p.service.join(l, s); err == nil {
		l.setState(subjects.StateIdle, nil) // the endpoints are up: the session is ready
		close(joined)
	} else {
		p.log.Error("register the action service; retried", "error", err)
		go func() { // ends with ctx at the latest; the logoff below waits for it
			defer close(joined)
			bo := backoff{min: l.min, max: l.max}
			for sleepCtx(ctx, bo.next()) {
				if err := p.service.join(l, s); err != nil {
					p.log.Error("register the action service; retried", "error", err)
					continue
				}
				l.setState(subjects.StateIdle, nil)
				return
			}
		}()
	}
	afterIntake := context.AfterFunc(p.life.intake, func() { p.service.leave(l) })
	done := make(chan struct{})
	context.AfterFunc(ctx, func() {
		defer close(done)
		<-joined
		d.timer.Stop()
		s.run.Lock()
		p.logOff(p.life.hard, s)
		s.run.Unlock()
		if afterIntake() {
			p.service.leave(l)
		}
	})
	return func() { <-done }
}

// logIn makes sure s is logged in, logging it in if it is not, within the
// request's action timeout from its arrival. run held.
func (p *pbx) logIn(s *actionSession, arrived time.Time) error {
	if s.c != nil {
		select {
		case <-s.c.Done(): // lost while idle: log in anew
			p.ended(s)
			s.l.reconnects.Add(1)
		default:
			return nil
		}
	}
	ctx, cancel := context.WithDeadline(p.life.hard, arrived.Add(min(p.cfg.ActionTimeout, dialTimeout)))
	c, err := s.l.dial(ctx)
	cancel()
	if err != nil {
		if ae := (*amiproto.AuthError)(nil); errors.As(err, &ae) {
			s.l.loginFailures.Add(1)
			s.l.setState(subjects.StateAuthFailed, err)
		} else {
			s.l.setState(subjects.StateDisconnected, withTLSHint(err))
		}
		return fmt.Errorf("PBX %s: the action session could not log in: %w", p.name, err)
	}
	s.l.mu.Lock()
	s.l.banner = c.Banner()
	s.l.mu.Unlock()
	s.c = c
	pingCtx, stop := context.WithCancel(p.life.hard)
	done := make(chan struct{})
	s.demand.stopPing, s.demand.pingDone = stop, done
	go func() { // this login's keepalive: stopped and waited for by ended
		defer close(done)
		p.actionKeepalive(pingCtx, s)
		if pingCtx.Err() == nil { // the link died, not logged off: say so until the next login
			<-c.Done()
			s.l.setState(subjects.StateIdle, s.l.takeWhy(c))
		}
	}()
	s.l.setState(subjects.StateConnected, nil)
	return nil
}

// idleLogoff is the idle timer's func: it logs s off once idle for the
// idle time. A session busy with a request is left: the request's end
// starts the idle time again.
func (p *pbx) idleLogoff(s *actionSession) {
	if !s.run.TryLock() {
		d := s.demand
		d.timer.Reset(d.idle) // a request runs; its end arms the timer too
		return
	}
	defer s.run.Unlock()
	d := s.demand
	if left := d.idle - d.idleFor(); left > 0 {
		d.timer.Reset(left)
		return
	}
	if s.c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(p.life.hard, p.cfg.ActionTimeout)
	defer cancel()
	p.logOff(ctx, s)
}

// logOff sends Logoff on s's client, if logged in, waiting for it until
// ctx ends, and records the session idle. run held.
func (p *pbx) logOff(ctx context.Context, s *actionSession) {
	if s.c == nil {
		return
	}
	c := s.c
	s.demand.stopPing()
	<-s.demand.pingDone
	if err := c.Shutdown(ctx); err != nil {
		s.l.log.Debug("AMI logoff of an idle action session did not finish", "error", err)
	}
	<-c.Done()
	s.c = nil
	s.l.setState(subjects.StateIdle, nil)
}

// ended forgets s's client, which has ended, once its keepalive has
// returned. run held.
func (p *pbx) ended(s *actionSession) {
	s.demand.stopPing()
	<-s.demand.pingDone
	s.c = nil
}

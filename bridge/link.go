package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// dialTimeout bounds one connect-and-login attempt; Asterisk takes about a
// second to refuse a login, so this is far above any healthy dial.
const dialTimeout = 15 * time.Second

// link is one AMI session of a PBX: its own login, keepalive, reconnect
// with backoff, and state.
type link struct {
	role     string
	ep       amiproto.Endpoint // holds the secret: never log it, never put it in an error
	opts     []amiproto.Option
	min, max time.Duration
	log      *slog.Logger
	changed  func() // called after every state change

	reconnects    atomic.Uint64
	loginFailures atomic.Uint64 // logins Asterisk refused

	mu      sync.Mutex // guards the fields below
	state   string
	since   time.Time
	lastErr string
	banner  string
	why     error // set by lost: why the bridge ended the client
}

// run keeps the session up until ctx ends. serve is given each logged-in
// client and returns once that client has ended (see untilEnd).
func (l *link) run(ctx context.Context, serve func(context.Context, *amiproto.Client)) {
	bo := backoff{min: l.min, max: l.max}
	everConnected := false
	for {
		l.setState(subjects.StateConnecting, nil)
		c, err := l.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if ae := (*amiproto.AuthError)(nil); errors.As(err, &ae) {
				// Retrying a wrong secret fast only fills Asterisk's
				// security log.
				bo.toMax()
				l.loginFailures.Add(1)
				l.setState(subjects.StateAuthFailed, err)
			} else {
				l.setState(subjects.StateDisconnected, withTLSHint(err))
			}
			if !sleepCtx(ctx, bo.next()) {
				return
			}
			continue
		}
		if everConnected {
			l.reconnects.Add(1)
		}
		everConnected = true
		bo.reset()
		l.mu.Lock()
		l.banner = c.Banner()
		l.mu.Unlock()
		serve(ctx, c)
		if ctx.Err() != nil {
			return
		}
		l.setState(subjects.StateDisconnected, l.takeWhy(c))
		if !sleepCtx(ctx, bo.next()) {
			return
		}
	}
}

func (l *link) dial(ctx context.Context) (*amiproto.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return amiproto.DialEndpoint(ctx, l.ep, l.opts...)
}

// untilEnd returns once c's reader has stopped. When ctx ends first it
// logs c off, waiting for c's pending requests until hard ends.
func (l *link) untilEnd(ctx, hard context.Context, c *amiproto.Client) {
	loggedOff := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(loggedOff)
		if err := c.Shutdown(hard); err != nil {
			l.log.Warn("AMI logoff did not finish", "error", err)
		}
	})
	// Done is closed once c's reader, writer and keepalive have stopped,
	// so the next connection's reader never overlaps with this one.
	<-c.Done()
	if !stop() {
		<-loggedOff
	}
}

// lost ends c, which the bridge found dead, and records why for the
// status.
func (l *link) lost(c *amiproto.Client, why error) {
	l.mu.Lock()
	l.why = why
	l.mu.Unlock()
	c.Close()
}

// takeWhy returns why c ended: what lost recorded, else c's error.
func (l *link) takeWhy(c *amiproto.Client) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	why := l.why
	l.why = nil
	if why == nil {
		why = c.Err()
	}
	return why
}

// setState records the session's state and has the PBX publish its
// status.
func (l *link) setState(state string, err error) {
	l.record(state, err)
	l.changed()
}

// record sets the session's state and logs a change.
func (l *link) record(state string, err error) {
	l.mu.Lock()
	changed := l.state != state
	l.state = state
	l.since = time.Now()
	l.lastErr = ""
	if err != nil {
		l.lastErr = err.Error()
	}
	l.mu.Unlock()
	switch {
	case err != nil:
		l.log.Warn("AMI session "+state, "error", err, "state", state)
	case changed:
		l.log.Info("AMI session "+state, "state", state)
	}
}

// status returns the session's part of the PBX status.
func (l *link) status() subjects.SessionStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return subjects.SessionStatus{
		Role:       l.role,
		State:      l.state,
		Since:      l.since.UTC(),
		Error:      l.lastErr,
		Reconnects: l.reconnects.Load(),
	}
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

func (r *rateLimit) allow(every time.Duration) bool { return r.allowAt(time.Now(), every) }

// allowAt is allow with the time already read.
func (r *rateLimit) allowAt(at time.Time, every time.Duration) bool {
	now := at.UnixNano()
	last := r.last.Load()
	return now-last >= int64(every) && r.last.CompareAndSwap(last, now)
}

// withTLSHint adds to a failed certificate check what fixes it, so that
// the status and the log say more than x509's words: a PBX's own
// (self-signed) certificate, or the CA that signed it, belongs in
// tls.ca_file; a name that differs from the URL's host in
// tls.server_name.
func withTLSHint(err error) error {
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &host):
		return fmt.Errorf("%w (set tls.server_name to a name the PBX's certificate holds)", err)
	case errors.As(err, &verify):
		return fmt.Errorf("%w (a PBX with a self-signed certificate needs it, or the CA that signed it, in tls.ca_file)", err)
	}
	return err
}

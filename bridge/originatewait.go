package bridge

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// An Originate with the header Ami-Wait: OriginateResponse answers with
// the call's outcome. It goes out with Async true, so that Asterisk
// answers "Originate successfully queued" at once and frees the action
// session; the outcome comes later as an OriginateResponse event, sent
// to every session with events on: this process's event session reads
// it, whichever process (active or standby) or session sent the
// Originate, and the ActionIDs map the sessions share hands it to the
// waiting request (amiproto.Client.RequestExpect).

// originateResponse is the event an Ami-Wait request waits for.
const originateResponse = subjects.WaitOriginateResponse

// originateWait reads the Ami-Wait header of a request for action: whether
// it waits for the OriginateResponse. It sets Async: true on an Originate
// that has no Async; one that has Async false, or another action, is a
// bad request.
func originateWait(h map[string][]string, action *amiproto.Message) (bool, error) {
	v, ok := headerValue(h, subjects.HeaderWait)
	if !ok {
		return false, nil
	}
	if !strings.EqualFold(strings.TrimSpace(v), subjects.WaitOriginateResponse) {
		return false, badRequestf("%s: %q: the one value is %s", subjects.HeaderWait, v, subjects.WaitOriginateResponse)
	}
	if !strings.EqualFold(action.Name(), "Originate") {
		return false, badRequestf("%s: %s applies to Originate only, not %q", subjects.HeaderWait, subjects.WaitOriginateResponse, action.Name())
	}
	async, has := action.Lookup("Async")
	if !has {
		action.Add("Async", "true")
		return true, nil
	}
	if !astTrue(async) {
		return false, badRequestf("%s: %s needs Async true; the Originate has Async %q", subjects.HeaderWait, subjects.WaitOriginateResponse, async)
	}
	return true, nil
}

// astTrue is Asterisk's ast_true, which reads Originate's Async.
func astTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "true", "y", "t", "1", "on":
		return true
	}
	return false
}

// executeWait sends the async Originate action and, once Asterisk has
// queued the call, waits for its OriginateResponse in a goroutine of its
// own, so that the handler returns and the session takes its next
// request. The reply is sent from there, straight to NATS (replier.late):
// micro counted the request when the handler returned, so its stats do
// not include the wait, nor a late 504; the bridge's own do.
func (p *pbx) executeWait(s *actionSession, r replier, action *amiproto.Message, deadline time.Time, timeout time.Duration, stream bool) {
	ctx, cancel := context.WithDeadline(p.life.hard, deadline)
	resp, e, err := s.c.RequestExpect(ctx, action, originateResponse)
	if err != nil {
		cancel()
		p.replyFailure(s, r, resp, err, timeout, stream)
		return
	}
	if !p.life.enter() {
		// Shutting down: wait here, as any action would; the session is
		// not taking requests any more.
		p.awaitOutcome(ctx, r, resp, e, timeout, stream)
		e.Stop()
		cancel()
		return
	}
	r.late = p.ns.svc
	// Owned by the PBX's lifecycle: counted in its in-flight actions,
	// which Shutdown waits for, and ended by the request's deadline or
	// the bridge's hard stop.
	go func() {
		defer p.life.leave()
		defer cancel()
		defer e.Stop()
		p.awaitOutcome(ctx, r, resp, e, timeout, stream)
	}()
}

// awaitOutcome answers with resp and the OriginateResponse, or with a 504
// (and resp) when ctx ends first.
func (p *pbx) awaitOutcome(ctx context.Context, r replier, resp *amiproto.Response, e *amiproto.Expect, timeout time.Duration, stream bool) {
	select {
	case ev := <-e.C:
		resp.Events = []*amiproto.Message{ev}
		body := appendReply(nil, p.name, resp, replyOptions{parts: true})
		if p.mask.inJSON(body) {
			resp = p.mask.response(resp)
			body = appendReply(body[:0], p.name, resp, replyOptions{parts: true})
		}
		p.sendWhole(r, body, int(p.ns.svc.MaxPayload()), resp)
		if stream {
			p.send(r, nil, nil) // it streams as its one message and the empty one
		}
	case <-ctx.Done():
		if p.life.hard.Err() != nil {
			p.replyError(r, subjects.CodeUnavailable, "the bridge is shutting down", resp, stream)
			return
		}
		p.replyError(r, subjects.CodeTimeout, fmt.Sprintf("PBX %s queued the call but sent no %s within %v; the call may still be placed", p.name, originateResponse, timeout), resp, stream)
	}
}

package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// streamFlushEvery is how many streamed messages go out between flushes:
// a flush waits for the server to have taken them, so a long collection
// cannot pile up in the client's buffers.
const streamFlushEvery = 1024

// actionSession is one logged-in action session, as its endpoint's
// handler and its keepalive share it.
type actionSession struct {
	l *link
	// c is the session's client. With ActionIdleLogoff it changes at each
	// login and is nil while logged off; it changes only under run.
	c      *amiproto.Client
	demand *demand     // nil unless ActionIdleLogoff; see ondemand.go
	busy   atomic.Bool // an action is running on c; see actionKeepalive
	// run is held by the endpoint handlers: the generic and the
	// per-action one, of one instance or of two while the service is
	// registered anew, take turns on c.
	run sync.Mutex
	// names are the spellings of the per-action subjects (actionnames.go),
	// nil until read; guarded by run.
	names map[string]string

	// check carries a request for an overdue check (see overdue) from the
	// handler to the keepalive; the channel in it is closed when the check
	// is over, answered or not.
	check chan chan struct{}

	mu       sync.Mutex    // guards checking: while the service is registered anew, two instances' endpoints may serve s at once
	checking chan struct{} // the check's channel while it runs
}

// serveActions runs one login of an action session: it adds the session
// to the PBX's micro service, so that the PBX's requests reach it, and
// takes it out when the session drops or Shutdown stops taking actions.
// The session's endpoint leaves the queue group then, and requests go to a
// session, or a bridge, that is up.
func (p *pbx) serveActions(ctx context.Context, l *link, c *amiproto.Client) {
	s := &actionSession{l: l, c: c, check: make(chan chan struct{}, 1)}
	if err := p.service.join(l, s); err != nil {
		p.log.Error("register the action service; the session will be retried", "error", err)
		c.Close()
		l.untilEnd(ctx, p.life.hard, c)
		return
	}
	// The endpoint is only in the queue group while the session is up and
	// the bridge takes actions.
	afterIntake := context.AfterFunc(p.life.intake, func() { p.service.leave(l) })
	l.setState(subjects.StateConnected, nil)
	// The keepalive runs on this goroutine (one goroutine less per
	// session: memory of idle PBXes). It returns when ctx ends or c ends,
	// or once it has closed c as dead; untilEnd then logs c off if ctx
	// ended, and waits for c's end.
	p.actionKeepalive(ctx, s)
	l.untilEnd(ctx, p.life.hard, c)
	if afterIntake() {
		p.service.leave(l)
	}
}

// keepaliveDeadline is how long a keepalive Ping may go unanswered: twice
// the interval, so that one late answer is not a dead link.
func keepaliveDeadline(interval time.Duration) time.Duration { return 2 * interval }

// overdueGrace bounds how long a session whose action passed its deadline
// may take to answer a Ping sent behind that action: Asterisk runs a
// session's actions one at a time, so until the overdue action ends every
// request on the session waits behind it. Nobody waits for that action
// any more; a second past the requester's deadline is grace enough, and a
// new login costs less than the requests queued behind it.
const overdueGrace = time.Second

// overdueDeadline is overdueGrace, or the keepalive's own deadline when
// that is shorter.
func overdueDeadline(interval time.Duration) time.Duration {
	if interval > 0 {
		return min(overdueGrace, keepaliveDeadline(interval))
	}
	return overdueGrace
}

// actionKeepalive pings an idle action session every PingInterval and
// ends it as lost when a Ping goes unanswered. A session busy with an
// action is not pinged: Asterisk runs a session's actions one at a time,
// so the Ping would wait behind the action and a slow action would look
// like a dead link. The action's own deadline bounds that wait: once it
// passes, the handler asks for an overdue check (see overdue), which
// runs here even while requests keep coming.
func (p *pbx) actionKeepalive(ctx context.Context, s *actionSession) {
	c := s.c // this login's; with ActionIdleLogoff the next has its own keepalive
	var tick <-chan time.Time
	if interval := p.cfg.PingInterval; interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Done():
			return
		case done := <-s.check:
			d := overdueDeadline(p.cfg.PingInterval)
			err := p.ping(ctx, c, d)
			if errors.Is(err, context.DeadlineExceeded) {
				// Out of the queue group first, then closed: the requests
				// queued here get their 503 once new ones no longer come
				// here. A request sent as an endpoint leaves can be lost
				// in NATS, and a requester that retries at once would
				// send it just then.
				if s.demand == nil { // on demand, the next request logs in anew
					p.service.leave(s.l)
				}
				s.l.lost(c, fmt.Errorf("%w: an action passed its deadline and a Ping behind it went unanswered for %v; the session is replaced", amiproto.ErrConnLost, d))
				close(done)
				return
			}
			close(done)
		case <-tick:
			if s.busy.Load() {
				continue
			}
			d := keepaliveDeadline(p.cfg.PingInterval)
			if err := p.ping(ctx, c, d); errors.Is(err, context.DeadlineExceeded) {
				s.l.lost(c, fmt.Errorf("%w: keepalive Ping unanswered for %v", amiproto.ErrConnLost, d))
				return
			}
		}
	}
}

func (p *pbx) ping(ctx context.Context, c *amiproto.Client, d time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := c.Request(pctx, amiproto.NewAction("Ping"))
	return err
}

// overdue has the keepalive check s after an action passed its deadline
// unanswered: the session may be stuck behind it. The next request on s
// waits for the check (see awaitCheck); a session that fails it is
// replaced, and the requests queued behind it get a quick 503.
func (s *actionSession) overdue() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checking != nil {
		select {
		case <-s.checking: // over; nobody waited for it
		default:
			return // one runs already
		}
	}
	done := make(chan struct{})
	select {
	case s.check <- done:
		s.checking = done
	default:
	}
}

// awaitCheck waits for the overdue check of s, if one runs, until
// deadline. It reports false when deadline passed first.
func (s *actionSession) awaitCheck(deadline time.Time) bool {
	s.mu.Lock()
	checking := s.checking
	s.mu.Unlock()
	if checking == nil {
		return true
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-checking:
	case <-s.c.Done():
	case <-t.C:
		return false
	}
	s.mu.Lock()
	if s.checking == checking {
		s.checking = nil
	}
	s.mu.Unlock()
	return true
}

// handle serves one request on s, start to end: micro counts a request's
// stats when its handler returns, and its errors from req.Error, so every
// reply, errors included, is sent from here before returning; only an
// Ami-Wait Originate's is sent later (executeWait). A slow
// action holds only this session's requests; the others are served by
// the PBX's other action sessions, and events by the event session.
//
// A request carries its requester's deadline: its arrival (see arrivals)
// plus its Ami-Timeout or the PBX's action timeout. One that waited past
// it behind a slow action is dropped, not sent: its requester has given
// up. What is left of it bounds the wait for Asterisk's answer.
func (p *pbx) handle(req micro.Request, s *actionSession) {
	reply := req.Reply()
	arrived := p.service.arrival(reply, time.Now())
	if reply != "" && !p.ns.replies.allows(reply) {
		p.refuseReply(reply)
		return
	}
	r := replier{req: req, m: p.stats.meter(arrived)}
	if !p.life.enter() {
		p.replyError(r, subjects.CodeUnavailable, "the bridge is shutting down", nil, false)
		return
	}
	defer p.life.leave()
	h := map[string][]string(req.Headers())
	stream, err := requestStream(h)
	if err != nil {
		p.replyError(r, subjects.CodeBadRequest, err.Error(), nil, false)
		return
	}
	if s.demand != nil {
		if err := p.logIn(s, arrived); err != nil { // ondemand.go
			p.replyError(r, subjects.CodeUnavailable, err.Error(), nil, stream)
			return
		}
	}
	action, err := p.namedAction(s, req.Subject(), req.Data())
	if err != nil {
		p.replyError(r, subjects.CodeBadRequest, err.Error(), nil, stream)
		return
	}
	r.m.action = action.Name()
	if why := p.policy.refuse(action); why != "" {
		p.replyError(r, subjects.CodeForbidden, why, nil, stream)
		return
	}
	timeout, err := requestTimeout(h, p.cfg.ActionTimeout, p.cfg.MaxActionTimeout)
	if err != nil {
		p.replyError(r, subjects.CodeBadRequest, err.Error(), nil, stream)
		return
	}
	wait, err := originateWait(h, action)
	if err != nil {
		p.replyError(r, subjects.CodeBadRequest, err.Error(), nil, stream)
		return
	}
	deadline := arrived.Add(timeout)
	if !s.awaitCheck(deadline) || !time.Now().Before(deadline) {
		p.stats.expired.Add(1)
		p.replyError(r, subjects.CodeTimeout, fmt.Sprintf("the request waited %v for a free session of PBX %s, past its deadline of %v; it was not sent", time.Since(arrived).Round(time.Millisecond), p.name, timeout), nil, stream)
		return
	}
	run := func(r replier) { p.execute(s, r, action, deadline, timeout, stream) }
	if wait {
		run = func(r replier) { p.executeWait(s, r, action, deadline, timeout, stream) } // originatewait.go
	}
	if key, ok := headerValue(h, subjects.HeaderIdempotencyKey); ok {
		p.idempotent(r, key, req.Data(), stream, deadline, run)
		return
	}
	run(r)
}

// maxLoggedReply bounds the reply subject quoted in the log: the
// requester chose it.
const maxLoggedReply = 128

// refuseReply drops a request whose reply subject is not an inbox, with
// no answer: any answer would go to that subject. It is counted, and
// logged at most once a second.
func (p *pbx) refuseReply(reply string) {
	n := p.stats.repliesRefused.Add(1)
	if p.replyLog.allow(time.Second) {
		if len(reply) > maxLoggedReply {
			reply = strings.ToValidUTF8(reply[:maxLoggedReply], "") + "…"
		}
		p.log.LogAttrs(context.Background(), slog.LevelWarn,
			"action request dropped unanswered: its reply subject is not an inbox (see nats.reply_prefixes)",
			slog.String("reply", reply), slog.Uint64("replies_refused_total", n))
	}
}

// execute sends action to Asterisk and answers the requester. A
// Collection is answered by a listReply while it is read (see
// collection.go), anything else once it is whole.
func (p *pbx) execute(s *actionSession, r replier, action *amiproto.Message, deadline time.Time, timeout time.Duration, stream bool) {
	ctx, cancel := context.WithDeadline(p.life.hard, deadline)
	list := listReply{p: p, r: r, stream: stream, maxPayload: int(p.ns.svc.MaxPayload()), deadline: deadline}
	resp, err := s.c.RequestEach(ctx, action, list.each)
	cancel()
	switch {
	case err == nil && list.started:
		list.finish(resp)
	case err == nil:
		p.replyOK(r, resp, stream)
	default:
		p.replyFailure(s, r, resp, err, timeout, stream)
	}
}

// replyFailure answers a request on s that failed with err.
func (p *pbx) replyFailure(s *actionSession, r replier, resp *amiproto.Response, err error, timeout time.Duration, stream bool) {
	var re *amiproto.ResponseError
	var ae *amiproto.ActionError
	switch {
	case errors.As(err, &re):
		if resp == nil {
			resp = re.Response
		}
		resp = p.mask.response(resp) // before asteriskMessage cuts the output, maybe inside the secret
		p.replyError(r, subjects.CodeAMIError, asteriskMessage(resp), resp, stream)
	case errors.As(err, &ae):
		p.replyError(r, subjects.CodeBadRequest, ae.Error(), nil, stream)
	case p.life.hard.Err() != nil:
		p.replyError(r, subjects.CodeUnavailable, "the bridge is shutting down", nil, stream)
	case errors.Is(err, context.DeadlineExceeded):
		s.overdue()
		p.replyError(r, subjects.CodeTimeout, fmt.Sprintf("no answer from PBX %s within %v", p.name, timeout), nil, stream)
	case errors.Is(err, amiproto.ErrConnLost), errors.Is(err, amiproto.ErrClosed):
		p.replyError(r, subjects.CodeUnavailable, fmt.Sprintf("the connection to PBX %s ended before the answer", p.name), nil, stream)
	default:
		p.replyError(r, subjects.CodeUnavailable, fmt.Sprintf("PBX %s: %v", p.name, err), nil, stream)
	}
}

// genericCommandMessage is the Message of every Command answer on
// Asterisk 22, failed or not: it says nothing of why one failed.
const genericCommandMessage = "Command output follows"

// maxOutputMessage bounds the output quoted in an error message.
const maxOutputMessage = 512

// asteriskMessage is the text of a "Response: Error": its Message, unless
// that is Asterisk 22's generic "Command output follows" (an unknown CLI
// command answers so, the reason being in the output); else the output;
// else a fixed text, since the error header must not be empty.
func asteriskMessage(resp *amiproto.Response) string {
	if resp == nil {
		return "Asterisk answered Response: Error"
	}
	msg := resp.Get("Message")
	if msg != "" && !strings.EqualFold(msg, genericCommandMessage) {
		return msg
	}
	if out, ok := resp.Output(); ok && strings.TrimSpace(out) != "" {
		out = strings.TrimSpace(out)
		if len(out) > maxOutputMessage {
			out = strings.ToValidUTF8(out[:maxOutputMessage], "") + "…"
		}
		return out
	}
	if msg != "" {
		return msg
	}
	return "Asterisk answered Response: Error"
}

// replyOK answers a response that is not a Collection.
func (p *pbx) replyOK(r replier, resp *amiproto.Response, stream bool) {
	maxPayload := int(p.ns.svc.MaxPayload())
	if !stream {
		body := appendReply(nil, p.name, resp, replyOptions{parts: true})
		if p.mask.inJSON(body) {
			resp = p.mask.response(resp)
			body = appendReply(body[:0], p.name, resp, replyOptions{parts: true})
		}
		p.sendWhole(r, body, maxPayload, resp)
		return
	}
	// Command output streams in parts of its own, after the envelope.
	_, output, hasOutput := splitOutput(resp.Message)
	body := appendReply(nil, p.name, resp, replyOptions{noOutput: hasOutput})
	if p.mask.inJSON(body) {
		resp = p.mask.response(resp)
		body = appendReply(body[:0], p.name, resp, replyOptions{noOutput: hasOutput})
	}
	if !p.sendPart(r, body, maxPayload) {
		return
	}
	if hasOutput && !p.streamOutput(r, p.mask.text(output), maxPayload) {
		return
	}
	p.send(r, nil, nil) // the empty terminator
}

// appendMasked appends m as JSON, its secrets masked.
func (p *pbx) appendMasked(dst []byte, m *amiproto.Message) []byte {
	n := len(dst)
	dst = m.AppendJSON(dst)
	if p.mask.inJSON(dst[n:]) {
		dst = p.mask.message(m).AppendJSON(dst[:n])
	}
	return dst
}

// sendWhole sends body, an unstreamed reply to resp, or a 413 with resp's
// response when body is over maxPayload.
func (p *pbx) sendWhole(r replier, body []byte, maxPayload int, resp *amiproto.Response) {
	if len(body) > maxPayload {
		msg := fmt.Sprintf("the reply is %d bytes, above the NATS max payload of %d; ask again with the header %s: true", len(body), maxPayload, subjects.HeaderStream)
		p.replyError(r, subjects.CodeTooLarge, msg, &amiproto.Response{Message: resp.Message}, false)
		return
	}
	p.send(r, nil, body)
}

// outputPartOverhead is the size of {"output":""} around a part's text.
const outputPartOverhead = len(`{"output":""}`)

// streamOutput sends Command output as {"output":"…"} messages, each
// within maxPayload and cut only after a newline, so that the parts'
// outputs joined in order are the output. It reports whether streaming
// may go on: one line too large alone ends it with a 413.
func (p *pbx) streamOutput(r replier, output string, maxPayload int) bool {
	var buf []byte
	for len(output) > 0 {
		n, size := 0, outputPartOverhead
		for n < len(output) {
			end := strings.IndexByte(output[n:], '\n') + 1
			if end == 0 {
				end = len(output) - n
			}
			line := output[n : n+end]
			lineSize := len(amiproto.AppendJSONString(buf[:0], line)) - 2
			if size+lineSize > maxPayload && n > 0 {
				break
			}
			n, size = n+end, size+lineSize
			if size > maxPayload {
				break // one line alone too large: sendPart answers 413
			}
		}
		buf = append(buf[:0], `{"output":`...)
		buf = amiproto.AppendJSONString(buf, output[:n])
		buf = append(buf, '}')
		if !p.sendPart(r, buf, maxPayload) {
			return false
		}
		output = output[n:]
	}
	return true
}

// sendPart sends one streamed message, or a 413 and the terminator when it
// is too large even alone. It reports whether streaming may go on.
func (p *pbx) sendPart(r replier, body []byte, maxPayload int) bool {
	if len(body) > maxPayload {
		msg := fmt.Sprintf("one part of the streamed reply is %d bytes, above the NATS max payload of %d", len(body), maxPayload)
		p.replyError(r, subjects.CodeTooLarge, msg, nil, true)
		return false
	}
	p.send(r, nil, body)
	return true
}

// replyError answers with an error: the Nats-Service-Error headers and the
// {"server","error","response"} body. A streamed request also gets the
// empty terminator, so that `nats req --wait-for-empty` ends.
func (p *pbx) replyError(r replier, code int, msg string, resp *amiproto.Response, stream bool) {
	msg = oneLine(p.mask.text(msg))
	resp = p.mask.response(resp)
	body := appendReply(nil, p.name, resp, replyOptions{code: code, message: msg})
	if resp != nil && len(body) > int(p.ns.svc.MaxPayload()) {
		body = appendReply(nil, p.name, nil, replyOptions{code: code, message: msg})
	}
	hdr := nats.Header{
		micro.ErrorHeader:     {msg},
		micro.ErrorCodeHeader: {strconv.Itoa(code)},
	}
	p.send(r, hdr, body)
	if stream {
		p.send(r, nil, nil)
	}
}

func (p *pbx) send(r replier, hdr nats.Header, body []byte) {
	if err := r.reply(hdr, body); err != nil && !errors.Is(err, nats.ErrMsgNoReply) {
		p.log.Warn("send action reply", "error", err)
	}
}

// oneLine makes msg fit a header value.
func oneLine(msg string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
}

// replier answers one request through micro, so that the service's
// stats count the errors, and through m, which counts it for Stats.
type replier struct {
	req micro.Request
	m   *actionMeter // nil: not counted
	rec *recorded    // nil: not kept; else what was sent is kept for retries (idempotency.go)
	// late, once the handler has returned (executeWait), sends the reply
	// itself: micro's request then is micro's again.
	late *nats.Conn
}

func (r replier) reply(hdr nats.Header, body []byte) error {
	if r.rec != nil {
		r.rec.record(hdr, body)
	}
	if r.m != nil {
		r.m.replied(hdr)
	}
	if r.req.Reply() == "" {
		return nats.ErrMsgNoReply
	}
	if r.late != nil {
		return r.late.PublishMsg(&nats.Msg{Subject: r.req.Reply(), Header: hdr, Data: body})
	}
	if code := hdr.Get(micro.ErrorCodeHeader); code != "" {
		return r.req.Error(code, hdr.Get(micro.ErrorHeader), body)
	}
	return r.req.Respond(body, micro.WithHeaders(micro.Headers(hdr)))
}

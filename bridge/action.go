package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// The error codes of action replies, as in HTTP.
const (
	CodeBadRequest  = 400 // not JSON, no Action, a value of the wrong type, CR/LF/NUL
	CodeForbidden   = 403 // the action policy refused it
	CodeTooLarge    = 413 // the reply exceeds the NATS max payload and no streaming was asked, or a list exceeds MaxReplyEntries or MaxReplyBytes
	CodeAMIError    = 422 // Asterisk answered "Response: Error"
	CodeUnavailable = 503 // the PBX is not connected, the connection was lost, or the bridge is stopping
	CodeTimeout     = 504 // no answer in time
)

// streamFlushEvery is how many streamed messages go out between flushes:
// a flush waits for the server to have taken them, so a long collection
// cannot pile up in the client's buffers.
const streamFlushEvery = 1024

// serveActions runs one login of an action session: it adds the session
// to the PBX's micro service, so that the PBX's requests reach it, and
// takes it out when the session drops or Shutdown stops taking actions.
// The session's endpoint leaves the queue group then, and requests go to a
// session, or a bridge, that is up.
func (p *pbx) serveActions(ctx context.Context, l *link, c *amiproto.Client) {
	busy := new(atomic.Bool) // an action is running on c
	if err := p.service.join(l, c, busy); err != nil {
		p.log.Error("register the action service; the session will be retried", "error", err)
		c.Close()
		l.untilEnd(ctx, p.life.hard, c)
		return
	}
	// The endpoint is only in the queue group while the session is up and
	// the bridge takes actions.
	afterIntake := context.AfterFunc(p.life.intake, func() { p.service.leave(l) })
	l.setState(StateConnected, nil)
	pingCtx, stopPing := context.WithCancel(ctx)
	pingDone := make(chan struct{})
	go func() { // owned here: stopped and waited for below
		defer close(pingDone)
		p.actionKeepalive(pingCtx, l, c, busy)
	}()
	l.untilEnd(ctx, p.life.hard, c)
	stopPing()
	<-pingDone
	if afterIntake() {
		p.service.leave(l)
	}
}

// keepaliveDeadline is how long a keepalive Ping may go unanswered: twice
// the interval, so that one late answer is not a dead link.
func keepaliveDeadline(interval time.Duration) time.Duration { return 2 * interval }

// actionKeepalive pings an idle action session every PingInterval and
// ends it as lost when a Ping goes unanswered. A session busy with an
// action is not pinged: Asterisk runs a session's actions one at a time,
// so the Ping would wait behind the action and a slow action would look
// like a dead link. The action's own timeout bounds that wait. After a
// 504 the action may still run in Asterisk: the next Ping waits behind it
// and, past the deadline, the session is replaced, so that requests do not
// queue behind an action nobody waits for.
func (p *pbx) actionKeepalive(ctx context.Context, l *link, c *amiproto.Client, busy *atomic.Bool) {
	interval := p.cfg.PingInterval
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Done():
			return
		case <-t.C:
		}
		if busy.Load() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, keepaliveDeadline(interval))
		_, err := c.Request(pctx, amiproto.NewAction("Ping"))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			l.lost(c, fmt.Errorf("%w: keepalive Ping unanswered for %v", amiproto.ErrConnLost, keepaliveDeadline(interval)))
			return
		}
	}
}

// handle serves one request on c, start to end: micro counts a request's
// stats when its handler returns, and its errors from req.Error, so every
// reply, errors included, is sent from here before returning. A slow
// action holds only this session's requests; the others are served by
// the PBX's other action sessions, and events by the event session.
func (p *pbx) handle(req micro.Request, c *amiproto.Client) {
	if reply := req.Reply(); reply != "" && !p.ns.replies.allows(reply) {
		p.refuseReply(reply)
		return
	}
	r := replier{req: req, m: p.stats.meter()}
	if !p.life.enter() {
		p.replyError(r, CodeUnavailable, "the bridge is shutting down", nil, false)
		return
	}
	defer p.life.leave()
	h := map[string][]string(req.Headers())
	stream, err := requestStream(h)
	if err != nil {
		p.replyError(r, CodeBadRequest, err.Error(), nil, false)
		return
	}
	action, err := decodeAction(req.Data())
	if err != nil {
		p.replyError(r, CodeBadRequest, err.Error(), nil, stream)
		return
	}
	r.m.action = action.Name()
	if why := p.policy.refuse(action); why != "" {
		p.replyError(r, CodeForbidden, why, nil, stream)
		return
	}
	timeout, err := requestTimeout(h, p.cfg.ActionTimeout, p.cfg.MaxActionTimeout)
	if err != nil {
		p.replyError(r, CodeBadRequest, err.Error(), nil, stream)
		return
	}
	p.execute(c, r, action, timeout, stream)
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
func (p *pbx) execute(c *amiproto.Client, r replier, action *amiproto.Message, timeout time.Duration, stream bool) {
	ctx, cancel := context.WithTimeout(p.life.hard, timeout)
	deadline, _ := ctx.Deadline()
	list := listReply{p: p, r: r, stream: stream, maxPayload: int(p.ns.nc.MaxPayload()), deadline: deadline}
	resp, err := c.RequestEach(ctx, action, list.each)
	cancel()
	var re *amiproto.ResponseError
	var ae *amiproto.ActionError
	switch {
	case err == nil && list.started:
		list.finish(resp)
	case err == nil:
		p.replyOK(r, resp, stream)
	case errors.As(err, &re):
		if resp == nil {
			resp = re.Response
		}
		resp = p.mask.response(resp) // before asteriskMessage cuts the output, maybe inside the secret
		p.replyError(r, CodeAMIError, asteriskMessage(resp), resp, stream)
	case errors.As(err, &ae):
		p.replyError(r, CodeBadRequest, ae.Error(), nil, stream)
	case p.life.hard.Err() != nil:
		p.replyError(r, CodeUnavailable, "the bridge is shutting down", nil, stream)
	case errors.Is(err, context.DeadlineExceeded):
		p.replyError(r, CodeTimeout, fmt.Sprintf("no answer from PBX %s within %v", p.name, timeout), nil, stream)
	case errors.Is(err, amiproto.ErrConnLost), errors.Is(err, amiproto.ErrClosed):
		p.replyError(r, CodeUnavailable, fmt.Sprintf("the connection to PBX %s ended before the answer", p.name), nil, stream)
	default:
		p.replyError(r, CodeUnavailable, fmt.Sprintf("PBX %s: %v", p.name, err), nil, stream)
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
	maxPayload := int(p.ns.nc.MaxPayload())
	if !stream {
		body := appendReply(nil, p.name, resp, replyOptions{parts: true})
		if p.mask.inJSON(body) {
			resp = p.mask.response(resp)
			body = appendReply(body[:0], p.name, resp, replyOptions{parts: true})
		}
		if len(body) > maxPayload {
			msg := fmt.Sprintf("the reply is %d bytes, above the NATS max payload of %d; ask again with the header %s: true", len(body), maxPayload, HeaderStream)
			p.replyError(r, CodeTooLarge, msg, &amiproto.Response{Message: resp.Message}, false)
			return
		}
		p.send(r, nil, body)
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
		p.replyError(r, CodeTooLarge, msg, nil, true)
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
	if resp != nil && len(body) > int(p.ns.nc.MaxPayload()) {
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
}

func (r replier) reply(hdr nats.Header, body []byte) error {
	if r.m != nil {
		r.m.replied(hdr)
	}
	if r.req.Reply() == "" {
		return nats.ErrMsgNoReply
	}
	if code := hdr.Get(micro.ErrorCodeHeader); code != "" {
		return r.req.Error(code, hdr.Get(micro.ErrorHeader), body)
	}
	return r.req.Respond(body, micro.WithHeaders(micro.Headers(hdr)))
}

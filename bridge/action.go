package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// The error codes of action replies, as in HTTP.
const (
	CodeBadRequest  = 400 // not JSON, no Action, a value of the wrong type, CR/LF/NUL
	CodeForbidden   = 403 // the action policy refused it
	CodeTooLarge    = 413 // the reply exceeds the NATS max payload and no streaming was asked
	CodeAMIError    = 422 // Asterisk answered "Response: Error"
	CodeUnavailable = 503 // the PBX is not connected, the connection was lost, or the bridge is stopping
	CodeTimeout     = 504 // no answer in time
)

// streamFlushEvery is how many streamed messages go out between flushes:
// a flush waits for the server to have taken them, so a 20,000-entry
// collection cannot pile up in the client's buffers.
const streamFlushEvery = 1024

// handleAction serves one request on the PBX's action endpoint. What can
// be refused is refused here, at once; the AMI round trip runs in its own
// goroutine, because micro calls a handler from the subscription's single
// delivery goroutine and one slow action must not hold up the others.
func (s *session) handleAction(req micro.Request) {
	now := s.stats.meter(syncReplier{req})
	if s.b.isClosing() {
		s.replyError(now, CodeUnavailable, "the bridge is shutting down", nil, false)
		return
	}
	h := map[string][]string(req.Headers())
	stream, err := requestStream(h)
	if err != nil {
		s.replyError(now, CodeBadRequest, err.Error(), nil, false)
		return
	}
	action, err := decodeAction(req.Data())
	if err != nil {
		s.replyError(now, CodeBadRequest, err.Error(), nil, stream)
		return
	}
	now.action = action.Name()
	if why := s.policy.refuse(action.Name()); why != "" {
		s.replyError(now, CodeForbidden, why, nil, stream)
		return
	}
	timeout, err := requestTimeout(h, s.cfg.ActionTimeout, s.cfg.MaxActionTimeout)
	if err != nil {
		s.replyError(now, CodeBadRequest, err.Error(), nil, stream)
		return
	}
	c := s.client.Load()
	if c == nil {
		s.replyError(now, CodeUnavailable, s.notConnected(), nil, stream)
		return
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.b.runCtx.Done():
		s.replyError(now, CodeUnavailable, "the bridge is shutting down", nil, stream)
		return
	}
	if !s.b.beginAction() {
		<-s.slots
		s.replyError(now, CodeUnavailable, "the bridge is shutting down", nil, stream)
		return
	}
	now.replier = asyncReplier{s.b.nc, req.Reply()}
	go func() {
		defer s.b.inflight.Done()
		defer func() { <-s.slots }()
		s.execute(c, now, action, timeout, stream)
	}()
}

func (s *session) notConnected() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := fmt.Sprintf("PBX %s is not connected (%s)", s.name, s.state)
	if s.lastErr != "" {
		msg += ": " + s.lastErr
	}
	return msg
}

// execute sends action to Asterisk and answers the requester.
func (s *session) execute(c *amiproto.Client, r replier, action *amiproto.Message, timeout time.Duration, stream bool) {
	ctx, cancel := context.WithTimeout(s.b.actionCtx, timeout)
	resp, err := c.Request(ctx, action)
	cancel()
	var re *amiproto.ResponseError
	var ae *amiproto.ActionError
	switch {
	case err == nil:
		s.replyOK(r, resp, stream)
	case errors.As(err, &re):
		if resp == nil {
			resp = re.Response
		}
		s.replyError(r, CodeAMIError, asteriskMessage(resp), resp, stream)
	case errors.As(err, &ae):
		s.replyError(r, CodeBadRequest, ae.Error(), nil, stream)
	case s.b.actionCtx.Err() != nil:
		s.replyError(r, CodeUnavailable, "the bridge is shutting down", nil, stream)
	case errors.Is(err, context.DeadlineExceeded):
		s.replyError(r, CodeTimeout, fmt.Sprintf("no answer from PBX %s within %v", s.name, timeout), nil, stream)
	case errors.Is(err, amiproto.ErrConnLost), errors.Is(err, amiproto.ErrClosed):
		s.replyError(r, CodeUnavailable, fmt.Sprintf("the connection to PBX %s ended before the answer", s.name), nil, stream)
	default:
		s.replyError(r, CodeUnavailable, fmt.Sprintf("PBX %s: %v", s.name, err), nil, stream)
	}
}

// asteriskMessage is the text of a "Response: Error": its Message, else
// its output (Asterisk 22 answers a bad CLI command that way), else a
// fixed text, since the error header must not be empty.
func asteriskMessage(resp *amiproto.Response) string {
	if resp != nil {
		if msg := resp.Get("Message"); msg != "" {
			return msg
		}
		if out, ok := resp.Output(); ok && out != "" {
			return out
		}
	}
	return "Asterisk answered Response: Error"
}

func (s *session) replyOK(r replier, resp *amiproto.Response, stream bool) {
	maxPayload := int(s.b.nc.MaxPayload())
	if !stream {
		body := appendReply(nil, s.name, resp, replyOptions{parts: true})
		if len(body) > maxPayload {
			msg := fmt.Sprintf("the reply is %d bytes, above the NATS max payload of %d; ask again with the header %s: true", len(body), maxPayload, HeaderStream)
			s.replyError(r, CodeTooLarge, msg, &amiproto.Response{Message: resp.Message}, false)
			return
		}
		s.send(r, nil, body)
		return
	}
	body := appendReply(nil, s.name, resp, replyOptions{})
	if !s.sendPart(r, body, maxPayload) {
		return
	}
	if resp.IsCollection() {
		var buf []byte
		for i, ev := range resp.Events {
			buf = ev.AppendJSON(buf[:0])
			if !s.sendPart(r, buf, maxPayload) {
				return
			}
			if (i+1)%streamFlushEvery == 0 {
				if err := s.b.nc.FlushTimeout(s.cfg.ActionTimeout); err != nil {
					s.log.Warn().Err(err).Msg("flush while streaming a reply")
				}
			}
		}
		if resp.Complete != nil {
			buf = resp.Complete.AppendJSON(buf[:0])
			if !s.sendPart(r, buf, maxPayload) {
				return
			}
		}
	}
	s.send(r, nil, nil) // the empty terminator
}

// sendPart sends one streamed message, or a 413 and the terminator when it
// is too large even alone. It reports whether streaming may go on.
func (s *session) sendPart(r replier, body []byte, maxPayload int) bool {
	if len(body) > maxPayload {
		msg := fmt.Sprintf("one part of the streamed reply is %d bytes, above the NATS max payload of %d", len(body), maxPayload)
		s.replyError(r, CodeTooLarge, msg, nil, true)
		return false
	}
	s.send(r, nil, body)
	return true
}

// replyError answers with an error: the Nats-Service-Error headers and the
// {"server","error","response"} body. A streamed request also gets the
// empty terminator, so that `nats req --wait-for-empty` ends.
func (s *session) replyError(r replier, code int, msg string, resp *amiproto.Response, stream bool) {
	msg = oneLine(msg)
	body := appendReply(nil, s.name, resp, replyOptions{code: code, message: msg})
	if resp != nil && len(body) > int(s.b.nc.MaxPayload()) {
		body = appendReply(nil, s.name, nil, replyOptions{code: code, message: msg})
	}
	hdr := nats.Header{
		micro.ErrorHeader:     {msg},
		micro.ErrorCodeHeader: {strconv.Itoa(code)},
	}
	s.send(r, hdr, body)
	if stream {
		s.send(r, nil, nil)
	}
}

func (s *session) send(r replier, hdr nats.Header, body []byte) {
	if err := r.reply(hdr, body); err != nil && !errors.Is(err, nats.ErrMsgNoReply) {
		s.log.Warn().Err(err).Msg("send action reply")
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

// replier sends a reply to one request.
type replier interface {
	reply(hdr nats.Header, body []byte) error
}

// syncReplier answers from inside the micro handler, through micro, so
// that the service's stats count the errors.
type syncReplier struct{ req micro.Request }

func (r syncReplier) reply(hdr nats.Header, body []byte) error {
	if r.req.Reply() == "" {
		return nats.ErrMsgNoReply
	}
	if code := hdr.Get(micro.ErrorCodeHeader); code != "" {
		return r.req.Error(code, hdr.Get(micro.ErrorHeader), body)
	}
	return r.req.Respond(body, micro.WithHeaders(micro.Headers(hdr)))
}

// asyncReplier answers after the handler returned. It publishes on the
// reply subject itself: micro's Request records errors for its stats
// without a lock once the handler is done, so it must not be used then.
type asyncReplier struct {
	nc      *nats.Conn
	subject string
}

func (r asyncReplier) reply(hdr nats.Header, body []byte) error {
	if r.subject == "" {
		return nats.ErrMsgNoReply
	}
	return r.nc.PublishMsg(&nats.Msg{Subject: r.subject, Header: hdr, Data: body})
}

package bridge

import (
	"fmt"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Defaults of ServerConfig.MaxReplyEntries and MaxReplyBytes. They leave
// room for the largest lists of real PBXes (CoreShowChannels on 5,000
// channels is about 5,000 entries and 4 MB of JSON; PJSIPShowEndpoints on
// 10,000 endpoints about 10,000 entries and 6 MB; QueueStatus of a large
// call centre some 20,000), and stop a list a requester grew on purpose
// (DBPut, then DBGetTree).
const (
	DefaultMaxReplyEntries = 100_000
	DefaultMaxReplyBytes   = 64 << 20
)

// listReply answers a Collection while amiproto reads it: its each
// method runs on the action session's reader for the leading response
// and then every entry event. Unstreamed, it builds the reply's JSON and
// holds no Message; streamed, it sends each entry as a NATS message and
// holds nothing. Past a limit it stops the list (amiproto discards the
// rest up to the complete event, so the session stays in step) and
// answers 413 naming the limit. What it holds is thus bounded by the
// limits and the NATS max payload, plus one entry, whatever the PBX sends.
type listReply struct {
	p          *pbx
	r          replier
	stream     bool
	maxPayload int
	deadline   time.Time // streamed: flushes wait no later than the action's deadline

	started bool // the leading response was read
	entries int
	bytes   int    // the entries' JSON so far
	body    []byte // unstreamed: the reply so far, open after "events":[
	part    []byte // streamed: one entry's JSON
	sent    int    // streamed: messages since the last flush

	code     int // the list was cut: the error to answer with
	message  string
	answered bool // streamed: the error and terminator are already sent
}

// each takes one message of the list; false stops the list.
func (l *listReply) each(m *amiproto.Message) bool {
	if !l.started {
		l.started = true
		return l.head(m)
	}
	l.entries++
	if l.entries > l.p.cfg.MaxReplyEntries {
		return l.cut(subjects.CodeTooLarge, fmt.Sprintf("the list has more than %d entries, the limit of PBX %s: narrow the action with its filters, or raise the server's max_reply_entries", l.p.cfg.MaxReplyEntries, l.p.name))
	}
	if !l.stream {
		n := len(l.body)
		if l.entries > 1 {
			l.body = append(l.body, ',')
		}
		l.body = l.p.appendMasked(l.body, m)
		l.bytes += len(l.body) - n
		switch {
		case l.bytes > l.p.cfg.MaxReplyBytes:
			return l.cut(subjects.CodeTooLarge, l.bytesMessage())
		case len(l.body) > l.maxPayload:
			return l.cut(subjects.CodeTooLarge, fmt.Sprintf("the reply is over %d bytes, the NATS max payload; ask again with the header %s: true", l.maxPayload, subjects.HeaderStream))
		}
		return true
	}
	l.part = l.p.appendMasked(l.part[:0], m)
	l.bytes += len(l.part)
	if l.bytes > l.p.cfg.MaxReplyBytes {
		return l.cut(subjects.CodeTooLarge, l.bytesMessage())
	}
	return l.sendPart()
}

func (l *listReply) bytesMessage() string {
	return fmt.Sprintf("the list's entries are over %d bytes of JSON, the limit of PBX %s: narrow the action with its filters, or raise the server's max_reply_bytes", l.p.cfg.MaxReplyBytes, l.p.name)
}

// head takes the leading response: streamed, it goes out as the envelope;
// unstreamed, it opens the reply.
func (l *listReply) head(m *amiproto.Message) bool {
	l.body = appendReply(l.body[:0], l.p.name, &amiproto.Response{Message: l.p.mask.message(m)}, replyOptions{})
	if l.stream {
		ok := l.p.sendPart(l.r, l.body, l.maxPayload)
		l.answered = !ok
		l.body = nil
		return ok
	}
	// {"server":…,"response":{…}} becomes {"server":…,"response":{…},"events":[
	l.body = append(l.body[:len(l.body)-1], `,"events":[`...)
	return true
}

// sendPart streams l.part, flushing every streamFlushEvery messages so
// that the entries cannot pile up in the NATS client. This is the
// backpressure of a stream: it runs on the session's reader, which waits
// for NATS (a publish at most nats.go's FlusherTimeout, a flush until the
// action's deadline) and meanwhile reads nothing more from Asterisk. Only
// this session waits, one action at a time, and never without bound. A
// part NATS refuses ends the stream at once rather than publish the rest
// in vain.
func (l *listReply) sendPart() bool {
	if len(l.part) > l.maxPayload {
		l.p.sendPart(l.r, l.part, l.maxPayload) // the 413 and the terminator
		l.answered = true
		return false
	}
	if err := l.r.reply(nil, l.part); err != nil {
		return l.cut(subjects.CodeUnavailable, fmt.Sprintf("streaming the list failed: %v", err))
	}
	if l.sent++; l.sent < streamFlushEvery {
		return true
	}
	l.sent = 0
	wait := time.Until(l.deadline)
	if wait <= 0 {
		return l.cut(subjects.CodeTimeout, fmt.Sprintf("the list from PBX %s was not streamed within the action timeout", l.p.name))
	}
	if err := l.p.ns.svc.FlushTimeout(wait); err != nil {
		return l.cut(subjects.CodeUnavailable, fmt.Sprintf("NATS did not take the streamed reply: %v", err))
	}
	return true
}

// cut stops the list with an error, answered by finish.
func (l *listReply) cut(code int, message string) bool {
	l.code, l.message = code, message
	l.body, l.part = nil, nil
	return false
}

// finish answers once RequestEach returned resp without an error.
func (l *listReply) finish(resp *amiproto.Response) {
	switch {
	case l.answered:
	case l.code != 0 && l.stream:
		l.p.replyError(l.r, l.code, l.message, nil, true)
	case l.code != 0:
		l.p.replyError(l.r, l.code, l.message, &amiproto.Response{Message: resp.Message}, false) // replyError masks
	case l.stream:
		if resp.Complete != nil {
			l.part = l.p.appendMasked(l.part[:0], resp.Complete)
			if !l.p.sendPart(l.r, l.part, l.maxPayload) {
				return
			}
		}
		l.p.send(l.r, nil, nil) // the empty terminator
	default:
		l.body = append(l.body, `],"complete":`...)
		if resp.Complete != nil {
			l.body = l.p.appendMasked(l.body, resp.Complete)
		} else {
			l.body = append(l.body, "null"...)
		}
		l.body = append(l.body, '}')
		l.p.sendWhole(l.r, l.body, l.maxPayload, resp)
	}
}

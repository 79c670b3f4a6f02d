package bridge

import (
	"strconv"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// The reply to an action is one JSON object:
//
//	{"server":…,"error":{"code":N,"message":…},"response":{…},"events":[…],"complete":{…},"output":"…"}
//
// "error" only on failure; "response" whenever Asterisk answered; "events"
// and "complete" only for a Collection, "events" alone for the event an
// Ami-Wait request waited for (see originatewait.go); "output" only for Command output,
// whose Output fields are then left out of "response". Messages are
// encoded by (*amiproto.Message).AppendJSON, as events are.

// replyOptions say which parts of a response go into a reply.
type replyOptions struct {
	code     int    // 0 for success
	message  string // error message, with code
	parts    bool   // include events and complete (not when streaming them)
	noOutput bool   // leave the Command output out (it is streamed in parts)
}

// appendReply appends the reply for resp, which may be nil, to dst.
func appendReply(dst []byte, server string, resp *amiproto.Response, o replyOptions) []byte {
	dst = append(dst, `{"server":`...)
	dst = amiproto.AppendJSONString(dst, server)
	if o.code != 0 {
		dst = append(dst, `,"error":{"code":`...)
		dst = strconv.AppendInt(dst, int64(o.code), 10)
		dst = append(dst, `,"message":`...)
		dst = amiproto.AppendJSONString(dst, o.message)
		dst = append(dst, '}')
	}
	if resp == nil || resp.Message == nil {
		return append(dst, '}')
	}
	head, output, hasOutput := splitOutput(resp.Message)
	dst = append(dst, `,"response":`...)
	dst = head.AppendJSON(dst)
	if collection := resp.IsCollection(); o.parts && (collection || len(resp.Events) > 0) {
		dst = append(dst, `,"events":[`...)
		for i, ev := range resp.Events {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = ev.AppendJSON(dst)
		}
		dst = append(dst, ']')
		if collection {
			dst = append(dst, `,"complete":`...)
			if resp.Complete != nil {
				dst = resp.Complete.AppendJSON(dst)
			} else {
				dst = append(dst, "null"...)
			}
		}
	}
	if hasOutput && !o.noOutput {
		dst = append(dst, `,"output":`...)
		dst = amiproto.AppendJSONString(dst, output)
	}
	return append(dst, '}')
}

// splitOutput returns m without its Output fields and the Command output,
// when m carries some; otherwise m itself.
func splitOutput(m *amiproto.Message) (head *amiproto.Message, output string, ok bool) {
	output, ok = m.Output()
	if !ok {
		return m, "", false
	}
	return m.Clone().Del("Output"), output, true
}

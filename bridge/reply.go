package bridge

import (
	"strconv"
	"unicode/utf8"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// The reply to an action is one JSON object:
//
//	{"server":…,"error":{"code":N,"message":…},"response":{…},"events":[…],"complete":{…},"output":"…"}
//
// "error" only on failure; "response" whenever Asterisk answered; "events"
// and "complete" only for a Collection; "output" only for Command output,
// whose Output fields are then left out of "response". Messages are
// encoded by (*amiproto.Message).AppendJSON, as events are.

// replyOptions say which parts of a response go into a reply.
type replyOptions struct {
	code    int    // 0 for success
	message string // error message, with code
	parts   bool   // include events and complete (not when streaming them)
}

// appendReply appends the reply for resp, which may be nil, to dst.
func appendReply(dst []byte, server string, resp *amiproto.Response, o replyOptions) []byte {
	dst = append(dst, `{"server":`...)
	dst = appendJSONString(dst, server)
	if o.code != 0 {
		dst = append(dst, `,"error":{"code":`...)
		dst = strconv.AppendInt(dst, int64(o.code), 10)
		dst = append(dst, `,"message":`...)
		dst = appendJSONString(dst, o.message)
		dst = append(dst, '}')
	}
	if resp == nil || resp.Message == nil {
		return append(dst, '}')
	}
	head, output, hasOutput := splitOutput(resp.Message)
	dst = append(dst, `,"response":`...)
	dst = head.AppendJSON(dst)
	if o.parts && resp.IsCollection() {
		dst = append(dst, `,"events":[`...)
		for i, ev := range resp.Events {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = ev.AppendJSON(dst)
		}
		dst = append(dst, `],"complete":`...)
		if resp.Complete != nil {
			dst = resp.Complete.AppendJSON(dst)
		} else {
			dst = append(dst, "null"...)
		}
	}
	if hasOutput {
		dst = append(dst, `,"output":`...)
		dst = appendJSONString(dst, output)
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

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does, so the reply is always valid JSON.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Package subjects names the NATS contract of ami-bridge, for the bridge
// and its consumers alike: the subjects, the headers (headers.go), the
// error codes and the reply's JSON (reply.go), and the status's JSON
// (status.go). It depends on the standard library only. Every subject has
// the form
//
//	<prefix>.<server>.event.<Event>   one AMI event
//	<prefix>.<server>.action          the action endpoint of one PBX
//	<prefix>.<server>.action.<Action> the endpoint of one action of one PBX
//	<prefix>.<server>.status          the status of one PBX
//	<prefix>.<server>.call.<Linkedid> the record of one finished call
//
// With the live state on, a JetStream KV bucket holds one key per object
// of each PBX (state.go): <server>.channels.<Uniqueid>,
// <server>.bridges.<BridgeUniqueid>, <server>.queues.<Queue>,
// <server>.devices.<Device> and <server>.calls.<Linkedid>, each token
// escaped with =XX as KV keys require.
//
// NATS gives '.', '*', '>' and whitespace a meaning inside a subject, and
// silently drops or wildcard-matches tokens that hold them. Event names come
// from Asterisk (UserEvent names come from the dialplan), so they are
// escaped: every byte outside [A-Za-z0-9_-] becomes %XX with two uppercase
// hex digits, '%' itself included, and the empty name becomes a lone "%".
// The escaping is reversible and the escape of a plain name is the name
// itself, so "ami.pbx1.event.Newchannel" reads as expected.
package subjects

import (
	"errors"
	"strings"
)

// Tokens that follow the server token.
const (
	eventToken  = "event"
	actionToken = "action"
	statusToken = "status"
)

// emptyToken stands for the empty string. A lone '%' can never come out of
// escaping a non-empty token, since '%' is always written as "%25".
const emptyToken = "%"

const upperHex = "0123456789ABCDEF"

// safe[b] is true for the bytes that stand for themselves in a token.
var safe = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['_'], t['-'] = true, true
	return t
}()

// Event returns the subject of event from server: <prefix>.<server>.event.<Event>,
// with the event name escaped.
func Event(prefix, server, event string) string {
	return string(AppendEvent(make([]byte, 0, len(prefix)+len(server)+len(event)+8), prefix, server, event))
}

// AppendEvent appends the subject Event returns to dst and returns the
// extended buffer. It allocates nothing when dst has room.
func AppendEvent(dst []byte, prefix, server, event string) []byte {
	dst = append(dst, prefix...)
	dst = append(dst, '.')
	dst = append(dst, server...)
	dst = append(dst, '.')
	dst = append(dst, eventToken...)
	dst = append(dst, '.')
	return AppendEscapedToken(dst, event)
}

// ServerEvents returns the subject that matches every event of server:
// <prefix>.<server>.event.>.
func ServerEvents(prefix, server string) string {
	return prefix + "." + server + "." + eventToken + ".>"
}

// AllEvents returns the subject that matches every event of every PBX:
// <prefix>.*.event.>. It is also the subject of the JetStream stream; a
// stream on <prefix>.> would answer action requests with its acks.
func AllEvents(prefix string) string {
	return prefix + ".*." + eventToken + ".>"
}

// Action returns the subject of server's action endpoint:
// <prefix>.<server>.action.
func Action(prefix, server string) string {
	return prefix + "." + server + "." + actionToken
}

// NamedAction returns the subject of one action of server:
// <prefix>.<server>.action.<Action>, the name escaped as an event's is.
// The bridge serves an action there under one spelling only, the one
// Asterisk's ListCommands gives, so that a NATS permission on it cannot
// be passed by another case.
func NamedAction(prefix, server, action string) string {
	return Action(prefix, server) + "." + EscapeToken(action)
}

// NamedActions returns the subject that matches every NamedAction of
// server: <prefix>.<server>.action.*; server may be "*".
func NamedActions(prefix, server string) string {
	return Action(prefix, server) + ".*"
}

// Status returns the subject of server's status: <prefix>.<server>.status.
func Status(prefix, server string) string {
	return prefix + "." + server + "." + statusToken
}

// AllStatus returns the subject that matches the status of every PBX:
// <prefix>.*.status.
func AllStatus(prefix string) string {
	return prefix + ".*." + statusToken
}

// EscapeToken returns s escaped for use as one subject token: bytes outside
// [A-Za-z0-9_-] become %XX (uppercase hex) and "" becomes "%".
func EscapeToken(s string) string {
	if s != "" && !needsEscape(s) {
		return s
	}
	return string(AppendEscapedToken(make([]byte, 0, len(s)+8), s))
}

// AppendEscapedToken appends EscapeToken(s) to dst and returns the extended
// buffer. It allocates nothing when dst has room.
func AppendEscapedToken(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, emptyToken...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if safe[c] {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', upperHex[c>>4], upperHex[c&0xF])
	}
	return dst
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if !safe[s[i]] {
			return true
		}
	}
	return false
}

// ErrBadToken is returned by UnescapeToken for a token EscapeToken cannot
// have produced.
var ErrBadToken = errors.New("subjects: malformed escaped token")

// UnescapeToken reverses EscapeToken. It accepts only what EscapeToken
// produces: safe bytes and %XX with uppercase hex for the others, so every
// name has exactly one spelling.
func UnescapeToken(tok string) (string, error) {
	if tok == emptyToken {
		return "", nil
	}
	if tok == "" {
		return "", ErrBadToken
	}
	if strings.IndexByte(tok, '%') < 0 {
		if needsEscape(tok) {
			return "", ErrBadToken
		}
		return tok, nil
	}
	b := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if safe[c] {
			b = append(b, c)
			continue
		}
		if c != '%' || i+2 >= len(tok) {
			return "", ErrBadToken
		}
		hi, ok1 := unhex(tok[i+1])
		lo, ok2 := unhex(tok[i+2])
		v := hi<<4 | lo
		if !ok1 || !ok2 || safe[v] {
			return "", ErrBadToken
		}
		b = append(b, v)
		i += 2
	}
	return string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ValidServerName reports whether name can be a server token: one or more
// of [A-Za-z0-9_-]. Server names are used as they are, never escaped, so
// that subjects stay readable and permissions can name them.
func ValidServerName(name string) bool {
	return name != "" && !needsEscape(name)
}

// ValidPrefix reports whether prefix can start every subject: one or more
// dot-separated tokens of printable ASCII other than '*' and '>', and no
// empty token, so that "<prefix>.*.event.>" matches exactly the events.
func ValidPrefix(prefix string) bool {
	if prefix == "" {
		return false
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if c <= ' ' || c >= 0x7f || c == '*' || c == '>' {
				return false
			}
		}
	}
	return true
}

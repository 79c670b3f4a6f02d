package amiproto

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrClosed is returned for requests pending or made after Close or
	// Shutdown.
	ErrClosed = errors.New("ami: client closed")
	// ErrConnLost is returned for requests pending when the connection to
	// Asterisk ended unexpectedly (EOF, reset, missed keepalive).
	ErrConnLost = errors.New("ami: connection lost")
	// ErrLineTooLong is returned by the Reader for a line longer than its
	// limit. The offending message is skipped; the next read goes on.
	ErrLineTooLong = errors.New("ami: line too long")
	// ErrMessageTooLarge is returned by the Reader for a message larger than
	// its byte or field limit. The message is skipped; the next read goes on.
	ErrMessageTooLarge = errors.New("ami: message too large")
	// ErrKeepalive is the cause given when a keepalive Ping got no answer.
	ErrKeepalive = errors.New("ami: keepalive ping unanswered")
)

// ProtocolError reports bytes that break AMI framing. Line is the 1-based
// line number in the stream where the problem was seen.
type ProtocolError struct {
	Line int
	Msg  string
	Err  error // ErrLineTooLong, ErrMessageTooLarge, or nil
}

// Error implements error.
func (e *ProtocolError) Error() string {
	return fmt.Sprintf("ami: protocol error at line %d: %s", e.Line, e.Msg)
}

// Unwrap returns the sentinel cause, if any.
func (e *ProtocolError) Unwrap() error { return e.Err }

// ActionError is returned by the Writer for an action it refuses to send:
// CR, LF or NUL in a key or value, an empty key, or a key with ':' or
// whitespace. Nothing of such an action is written.
type ActionError struct {
	Key    string // the offending key, possibly empty
	Reason string
}

// Error implements error.
func (e *ActionError) Error() string {
	return fmt.Sprintf("ami: invalid action field %q: %s", e.Key, e.Reason)
}

// ResponseError is returned when Asterisk answers "Response: Error". It
// carries the whole response, Collection parts and Output included.
type ResponseError struct {
	Action   string
	Response *Response
}

// Error implements error.
func (e *ResponseError) Error() string {
	msg := e.Response.Get("Message")
	if msg == "" {
		if out, ok := e.Response.Output(); ok {
			msg = out
		}
	}
	return fmt.Sprintf("ami: %s: %s", e.Action, msg)
}

// AuthError is returned by Dial when Asterisk refuses the login. Response is
// Asterisk's answer ("Authentication failed"); the secret is never included.
type AuthError struct {
	User     string
	Response *Message
}

// Error implements error. Asterisk gives the same answer for a wrong
// secret, an unknown user and a host its ACL refuses, so the message lists
// what to check.
func (e *AuthError) Error() string {
	return fmt.Sprintf("ami: login as %q: %s (check the secret, the permit/deny ACL of this user in manager.conf "+
		"for the address this host connects from, and the Asterisk log, with displayconnects = yes in manager.conf)",
		e.User, e.Response.Get("Message"))
}

// DialError is returned by Dial for every failure before the session is up.
// Op says which step failed: "options", "url", "connect", "tls", "banner" or "login".
type DialError struct {
	Op   string
	Addr string // host:port, never with credentials
	Err  error
}

// Error implements error. A cause that already starts with Op, as
// crypto/tls errors start with "tls: ", does not repeat it.
func (e *DialError) Error() string {
	cause := strings.TrimPrefix(e.Err.Error(), e.Op+": ")
	if e.Addr == "" {
		return fmt.Sprintf("ami: %s: %s", e.Op, cause)
	}
	return fmt.Sprintf("ami %s: %s: %s", e.Addr, e.Op, cause)
}

// Unwrap returns the underlying error.
func (e *DialError) Unwrap() error { return e.Err }

// UnmatchedError reports a message the client could not route: a response
// with no or an unknown ActionID (Asterisk sends these for stray blank lines
// and over-long lines), or a message that is neither Response nor Event
// (Asterisk 13's "Queues" raw text). The session goes on.
type UnmatchedError struct {
	Message *Message
	Reason  string
}

// Error implements error.
func (e *UnmatchedError) Error() string {
	return fmt.Sprintf("ami: %s: %.120q", e.Reason, e.Message.String())
}

// DroppedEventsError reports an event dropped because the event queue was
// full. Total counts every drop so far on the connection.
type DroppedEventsError struct {
	Event string
	Total uint64
}

// Error implements error.
func (e *DroppedEventsError) Error() string {
	return fmt.Sprintf("ami: event queue full: dropped %s (%d dropped in all)", e.Event, e.Total)
}

package amiproto

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Option configures Dial.
type Option func(*options)

type options struct {
	tls          *tls.Config
	md5          bool
	events       EventDelivery
	keepalive    time.Duration
	keepaliveTTL time.Duration
	limits       ReaderLimits
	onReport     func(error)
	dial         func(ctx context.Context, network, addr string) (net.Conn, error)
	ids          *ActionIDs // nil: the client's own
}

func defaultOptions() options {
	var d net.Dialer
	return options{dial: d.DialContext}
}

// DefaultEventQueue is the default bound of the event queue.
const DefaultEventQueue = 65536

// WithTLSConfig sets the TLS configuration for tls:// URLs. Without it the
// server name comes from the URL and system roots verify the certificate.
func WithTLSConfig(c *tls.Config) Option { return func(o *options) { o.tls = c } }

// WithMD5Auth logs in with the MD5 challenge ("Action: Challenge", then
// Login with Key = md5hex(challenge + secret)), so the secret never crosses
// the wire.
func WithMD5Auth() Option { return func(o *options) { o.md5 = true } }

// EventDelivery says which events a session asks Asterisk for at login
// and how the client hands them over. The zero value asks for every event
// and queues up to DefaultEventQueue of them for Events.
type EventDelivery struct {
	// Mask is sent as Login's Events: "" or "on" for every event, "off"
	// for none, or event classes such as "call,system".
	Mask string

	// Queue bounds the queue between the socket reader and Events,
	// default DefaultEventQueue. When it is full, further events are
	// counted in Dropped and reported, never blocking the reader:
	// Asterisk cuts a client that stops reading.
	Queue int

	// Func, when set, receives every event on the reader goroutine, in
	// order, instead of the queue, which saves a goroutine hand-off per
	// event: Events then returns nil, and Queue must be 0. Func must not
	// block: while it runs nothing is read from the socket, and Asterisk
	// drops a client that stops reading for about 100 ms. Done closes
	// once the reader has stopped, after the last call of Func.
	Func func(*Message)

	// Borrow, with Func, lends Func each event for the call only: the
	// message, and every string taken from it, are valid until Func
	// returns, after which the reader reuses their memory. A Func that
	// keeps anything clones it (Message.Clone, AppendClone,
	// strings.Clone). It saves a copy of every event into fresh memory,
	// which a consumer that copies the events it keeps anyway (into a
	// buffer of its own) pays for nothing. Responses and list entries are
	// never borrowed.
	Borrow bool

	// Drained, when set, is called on the reader goroutine each time the
	// reader has handed over every whole message it read and is about to
	// read the socket again, and once when it stops, after the last call
	// of Func. A consumer that queues what Func receives can wake its own
	// consumer there, once per read of the socket instead of once per
	// event: at 12,000 events/s Asterisk writes a dozen events at a time.
	// It must not block.
	Drained func()

	// Shedding and Skip, set together, let a consumer that sheds load
	// drop events for a fraction of their cost. Before each message the
	// reader asks Shedding, which must be cheap (an atomic load); while it
	// returns true, each event is offered by name to Skip before it is
	// parsed, and an event Skip returns true for is skipped, unparsed:
	// neither Events nor Func sees it. Events are only offered while no
	// request of the client waits for an answer, so that no response or
	// list entry is ever skipped. name is valid only during the call, and
	// neither function may block.
	Shedding func() bool
	Skip     func(name string) bool
}

// WithEvents sets which events the session asks for and how they are
// delivered; see EventDelivery.
func WithEvents(d EventDelivery) Option { return func(o *options) { o.events = d } }

// check returns why d cannot be used, or nil.
func (d EventDelivery) check() error {
	switch {
	case d.Queue < 0:
		return fmt.Errorf("event queue %d: want 0 (the default) or more", d.Queue)
	case d.Func != nil && d.Queue != 0:
		return errors.New("an event Func and an event Queue exclude each other: Func takes the events the queue would hold")
	case d.Borrow && d.Func == nil:
		return errors.New("events are borrowed only by a Func: the queue keeps them")
	case (d.Shedding == nil) != (d.Skip == nil):
		return errors.New("event Shedding and Skip go together")
	case strings.ContainsAny(d.Mask, "\r\n"):
		return errors.New("event mask: CR or LF")
	}
	return nil
}

// loginEvents is the value of Login's Events.
func (d EventDelivery) loginEvents() string { return cmp.Or(d.Mask, "on") }

// queue is the bound of the event queue.
func (d EventDelivery) queue() int { return cmp.Or(d.Queue, DefaultEventQueue) }

// WithKeepalive sends a Ping every interval, which catches half-open TCP:
// when a Ping is unanswered and nothing at all has come from the PBX for
// timeout, the connection is closed as lost (ErrKeepalive). Any bytes
// count as life, events included, so a busy session is never cut for a
// late answer. timeout 0 means DefaultKeepaliveTimeout or 3 × interval,
// whichever is longer. Keep it above the longest action the session runs:
// Asterisk sends a session nothing, Ping answers included, while one of
// its actions runs, such as a synchronous Originate that rings.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(o *options) { o.keepalive, o.keepaliveTTL = interval, timeout }
}

// DefaultKeepaliveTimeout is the least keepalive timeout when
// WithKeepalive is given 0.
const DefaultKeepaliveTimeout = 10 * time.Second

func (o *options) keepaliveTimeout() time.Duration {
	if o.keepaliveTTL > 0 {
		return o.keepaliveTTL
	}
	return max(DefaultKeepaliveTimeout, 3*o.keepalive)
}

// WithDialer makes the connection with dial instead of a net.Dialer, as
// nats.go's SetCustomDialer does: to reach the PBX through an SSH tunnel or
// a proxy, or over net.Pipe in tests. It is called with "tcp" and the
// endpoint's host:port; ending ctx must end the dial. The connection it
// returns is closed with the client. TLS, when the endpoint asks for it,
// runs on top of that connection.
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(o *options) {
		if dial != nil {
			o.dial = dial
		}
	}
}

// WithReaderLimits sets the line, message and field limits of the reader.
func WithReaderLimits(l ReaderLimits) Option { return func(o *options) { o.limits = l } }

// WithReportFunc receives what the client notices but survives: responses
// with no or an unknown ActionID, malformed lines, messages over a limit,
// and dropped events. It is called from the reader goroutine and must not
// block.
func WithReportFunc(f func(error)) Option { return func(o *options) { o.onReport = f } }

package amiproto

import (
	"context"
	"crypto/tls"
	"net"
	"time"
)

// Option configures Dial.
type Option func(*options)

type options struct {
	tls          *tls.Config
	md5          bool
	events       string // "on", "off" or an event mask; sent as Login's Events
	eventQueue   int
	keepalive    time.Duration
	keepaliveTTL time.Duration
	limits       ReaderLimits
	onReport     func(error)
	onEvent      func(*Message)
	shedding     func() bool
	skipEvent    func(name string) bool
	dial         func(ctx context.Context, network, addr string) (net.Conn, error)
	ids          *ActionIDs // nil: the client's own
}

func defaultOptions() options {
	var d net.Dialer
	return options{events: "on", eventQueue: DefaultEventQueue, dial: d.DialContext}
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

// WithEvents turns events on or off at login. It sets the same Login
// field as WithEventMask: the last of the two given wins.
func WithEvents(on bool) Option {
	return func(o *options) {
		o.events = "off"
		if on {
			o.events = "on"
		}
	}
}

// WithEventMask asks at login only for the given event classes, for
// example "call,system". The last of WithEvents and WithEventMask wins.
func WithEventMask(mask string) Option { return func(o *options) { o.events = mask } }

// WithEventQueue bounds the queue between the socket reader and Events.
// When it is full, further events are counted in Dropped and reported,
// never blocking the reader: Asterisk cuts a client that stops reading.
// Under WithEventFunc there is no queue and n is not used.
func WithEventQueue(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.eventQueue = n
		}
	}
}

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

// WithEventFunc hands every event to f on the reader goroutine, in order,
// instead of queueing it for Events. f must not block: while it runs nothing
// is read from the socket, and Asterisk drops a client that stops reading
// for about 100 ms. It suits a consumer with its own bounded buffer, and
// saves a goroutine hand-off per event. Events then returns nil; Done
// closes once the reader has stopped, after the last call of f.
func WithEventFunc(f func(*Message)) Option { return func(o *options) { o.onEvent = f } }

// WithEventSkip lets a consumer that sheds load drop events for a fraction
// of their cost. Before each message the reader asks shedding, which must
// be cheap (an atomic load); while it returns true, each event is offered
// by name to skip before it is parsed, and an event skip returns true for
// is skipped, unparsed: neither Events nor the WithEventFunc handler sees
// it. Events are only offered while no request of the client waits for an
// answer, so that no response or list entry is ever skipped; other events
// are read as usual. name is valid only during the call, and neither
// function may block.
func WithEventSkip(shedding func() bool, skip func(name string) bool) Option {
	return func(o *options) { o.shedding, o.skipEvent = shedding, skip }
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

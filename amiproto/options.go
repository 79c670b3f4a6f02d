package amiproto

import (
	"crypto/tls"
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
	ids          *ActionIDs // nil: the client's own
}

func defaultOptions() options {
	return options{events: "on", eventQueue: DefaultEventQueue}
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

// WithEvents turns events on or off at login.
func WithEvents(on bool) Option {
	return func(o *options) {
		o.events = "off"
		if on {
			o.events = "on"
		}
	}
}

// WithEventMask asks at login only for the given event classes, for
// example "call,system".
func WithEventMask(mask string) Option { return func(o *options) { o.events = mask } }

// WithEventQueue bounds the queue between the socket reader and Events.
// When it is full, further events are counted in Dropped and reported,
// never blocking the reader: Asterisk cuts a client that stops reading.
func WithEventQueue(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.eventQueue = n
		}
	}
}

// WithKeepalive sends a Ping every interval; when one is not answered
// within timeout (interval when timeout is 0) the connection is closed as
// lost, which catches half-open TCP.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(o *options) { o.keepalive, o.keepaliveTTL = interval, timeout }
}

// WithEventFunc hands every event to f on the reader goroutine, in order,
// instead of queueing it for Events. f must not block: while it runs nothing
// is read from the socket, and Asterisk drops a client that stops reading
// for about 100 ms. It suits a consumer with its own bounded buffer, and
// saves a goroutine hand-off per event. Events then delivers nothing and is
// closed once the reader has stopped, so ranging over it still waits for
// the last call of f.
func WithEventFunc(f func(*Message)) Option { return func(o *options) { o.onEvent = f } }

// WithReaderLimits sets the line, message and field limits of the reader.
func WithReaderLimits(l ReaderLimits) Option { return func(o *options) { o.limits = l } }

// WithReportFunc receives what the client notices but survives: responses
// with no or an unknown ActionID, malformed lines, messages over a limit,
// and dropped events. It is called from the reader goroutine and must not
// block.
func WithReportFunc(f func(error)) Option { return func(o *options) { o.onReport = f } }

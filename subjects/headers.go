package subjects

// Headers of every event message.
const (
	HeaderServer = "Ami-Server"  // the PBX's name
	HeaderEvent  = "Ami-Event"   // the event name, unescaped
	HeaderSeq    = "Ami-Seq"     // per PBX 1, 2, 3… for the process's life (with HA, for the PBX's, across takeovers); a gap is a lost event
	HeaderTime   = "Ami-Time"    // when the bridge read the event, RFC 3339 with nanoseconds, UTC
	HeaderMsgID  = "Nats-Msg-Id" // "<server>:<epoch>:<seq>", for JetStream dedupe
	// HeaderChain, only with HA, is a hash over the last events up to
	// this one (hex): a new active finds the stream's last event in its
	// own buffer by it. Consumers may ignore it.
	HeaderChain = "Ami-Chain"
)

// Request headers the action endpoint reads. Their names match
// case-insensitively.
const (
	// HeaderTimeout overrides the PBX's action timeout for one request: a
	// Go duration ("2s", "1500ms") or a number of seconds ("2", "0.5"). It
	// is capped at the PBX's maximum action timeout.
	HeaderTimeout = "Ami-Timeout"
	// HeaderStream asks for a streamed reply when "true": the response
	// envelope, one message per entry event, the complete event, then an
	// empty message. Command output follows the envelope (which then has
	// no "output") as {"output":"…"} messages, each cut after a newline,
	// whose outputs joined are the output. Any other reply streams as its
	// one message and the empty one; so does an error.
	HeaderStream = "Ami-Stream"
	// HeaderIdempotencyKey makes a retry safe: a request with the key of
	// an earlier one, for the same PBX and with the same body, within the
	// idempotency window, gets the earlier request's reply (waiting for it
	// while that request runs) and runs nothing. The same key with
	// another body is a CodeConflict. It cannot go with HeaderStream.
	HeaderIdempotencyKey = "Ami-Idempotency-Key"
	// HeaderWait, set to WaitOriginateResponse on an Originate, sends it
	// with Async true and answers once the call's OriginateResponse event
	// has come, within the request's timeout: the reply is a collection
	// whose one entry is that event, with the requester's ActionID. The
	// action session is free again as soon as Asterisk has queued the
	// call. No event in time is a 504; the call may still be placed.
	HeaderWait = "Ami-Wait"
)

// WaitOriginateResponse is the one value of HeaderWait.
const WaitOriginateResponse = "OriginateResponse"

// Reply headers set on an error reply, as nats.go's micro sets them
// (micro.ErrorCodeHeader and micro.ErrorHeader): the code, as decimal
// digits, and the message of Reply.Error.
const (
	HeaderErrorCode = "Nats-Service-Error-Code"
	HeaderError     = "Nats-Service-Error"
)

// The micro service every PBX with a logged-in action session registers,
// and the queue group of its action endpoints: several bridges for the
// same PBXes share the requests. $SRV.PING.ami-bridge finds them all.
const (
	ServiceName = "ami-bridge"
	QueueGroup  = "ami-bridge"
)

// InboxPrefix is the inbox prefix of the ami-bridge daemon's NATS
// connection, as nats.CustomInboxPrefix takes it: under _INBOX., so that
// a subscribe allow on _INBOX.> still covers it, and apart from every
// requester's inbox. A program that runs a bridge can use it too.
const InboxPrefix = "_INBOX.ami_bridge"

package bridge

import (
	"errors"
	"strconv"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Headers of every event message.
const (
	HeaderServer = "Ami-Server"  // the PBX's name
	HeaderEvent  = "Ami-Event"   // the event name, unescaped
	HeaderSeq    = "Ami-Seq"     // per PBX 1, 2, 3… for the process's life; a gap is a lost event
	HeaderTime   = "Ami-Time"    // when the bridge read the event, RFC 3339 with nanoseconds, UTC
	HeaderMsgID  = "Nats-Msg-Id" // "<server>:<epoch>:<seq>", for JetStream dedupe
)

// jsAckTimeout bounds the wait for one JetStream ack, so that a lost ack
// is counted as a failure instead of holding a slot forever.
const jsAckTimeout = 5 * time.Second

// retryWait is the pause before publishing again to a NATS connection
// that is reconnecting with its buffer full.
const retryWait = 50 * time.Millisecond

// maxSubjectCache bounds the event-name-to-subject cache of a publisher.
const maxSubjectCache = 4096

// queuedEvent is an event that passed the filter, numbered, waiting in the
// PBX's buffer.
type queuedEvent struct {
	msg *amiproto.Message
	seq uint64
	at  time.Time
}

// publisher takes a PBX's events from its buffer and publishes them in
// order. Its buffers are reused from event to event: on the core NATS path
// an event costs no allocation of its own beyond what nats.go makes.
type publisher struct {
	p        *pbx
	nc       *nats.Conn
	js       jetstream.JetStream
	prefix   string
	idPrefix string // "<server>:<epoch>:"

	subjects map[string]string // event name → subject
	subj     []byte
	body     []byte
	scratch  []byte // backs the per-event header values

	lastSize int // the last JSON body's size, to size the next one

	msg                     nats.Msg
	eventV, seqV, timeV, id []string // the header's value slices, rewritten per event

	acks     chan jetstream.PubAckFuture
	acksDone chan struct{}
	failLog  rateLimit
}

func newPublisher(x *pbx) *publisher {
	p := &publisher{
		p:        x,
		nc:       x.ns.nc,
		prefix:   x.ns.prefix,
		idPrefix: x.name + ":" + strconv.FormatInt(x.ns.epoch, 10) + ":",
		subjects: make(map[string]string),
		body:     make([]byte, 0, 4096),
		scratch:  make([]byte, 0, 256),
		eventV:   []string{""},
		seqV:     []string{""},
		timeV:    []string{""},
		id:       []string{""},
	}
	p.msg.Header = nats.Header{
		HeaderServer: {x.name},
		HeaderEvent:  p.eventV,
		HeaderSeq:    p.seqV,
		HeaderTime:   p.timeV,
		HeaderMsgID:  p.id,
	}
	return p
}

// loop publishes until the PBX closes its buffer, then waits for the
// JetStream acks still out.
func (p *publisher) loop() {
	p.js = p.p.ns.js
	if p.js != nil {
		p.acks = make(chan jetstream.PubAckFuture, p.p.ns.jsOpts.MaxPending)
		p.acksDone = make(chan struct{})
		go p.collectAcks()
	}
	for q := range p.p.queue {
		if p.js != nil {
			p.publishJS(q)
		} else {
			p.publishCore(q)
		}
	}
	if p.acks != nil {
		close(p.acks)
		<-p.acksDone
	}
}

// subject returns the subject of event name, from the cache when it can:
// a string built per event would be the hot path's one allocation.
func (p *publisher) subject(name string) string {
	if subj, ok := p.subjects[name]; ok {
		return subj
	}
	p.subj = subjects.AppendEvent(p.subj[:0], p.prefix, p.p.name, name)
	subj := string(p.subj)
	if len(p.subjects) < maxSubjectCache {
		p.subjects[name] = subj
	}
	return subj
}

func (p *publisher) publishCore(q queuedEvent) {
	name := q.msg.EventName()
	p.body = q.msg.AppendJSON(p.body[:0])
	p.msg.Subject = p.subject(name)
	p.msg.Data = p.body
	p.eventV[0] = name
	// The other header values are views of scratch. PublishMsg copies the
	// header into its write buffer before it returns, and the next event
	// rewrites them, so nothing reads them after they change.
	b := p.scratch[:0]
	b = strconv.AppendUint(b, q.seq, 10)
	n1 := len(b)
	b = q.at.UTC().AppendFormat(b, time.RFC3339Nano)
	n2 := len(b)
	b = append(b, p.idPrefix...)
	b = strconv.AppendUint(b, q.seq, 10)
	p.scratch = b
	p.seqV[0] = view(b[:n1])
	p.timeV[0] = view(b[n1:n2])
	p.id[0] = view(b[n2:])

	if err := p.send(&p.msg); err != nil {
		n := p.p.dropped.Add(1)
		if p.failLog.allow(time.Second) {
			p.p.log.Warn().Err(err).Uint64("seq", q.seq).Str("event", name).Uint64("dropped_total", n).
				Msg("NATS refused an event; it is counted as dropped")
		}
		return
	}
	p.p.published.Add(1)
}

// view returns b's bytes as a string without copying; see publishCore for
// why that is safe there.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// send publishes m, waiting while NATS reconnects with its own buffer
// full: the PBX's buffer then takes the events, up to its bound. It
// gives up when the shutdown deadline passes or NATS is closed.
func (p *publisher) send(m *nats.Msg) error {
	for {
		err := p.nc.PublishMsg(m)
		if err == nil || !p.retryable(err) {
			return err
		}
		t := time.NewTimer(retryWait)
		select {
		case <-p.p.life.hard.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (p *publisher) retryable(err error) bool {
	if p.nc.IsClosed() {
		return false
	}
	return errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, jetstream.ErrTooManyStalledMsgs) || p.nc.IsReconnecting()
}

// publishJS publishes with an ack. JetStream keeps the message until the
// ack, for retries, so nothing of it may be reused.
func (p *publisher) publishJS(q queuedEvent) {
	name := q.msg.EventName()
	seq := strconv.FormatUint(q.seq, 10)
	m := &nats.Msg{
		Subject: p.subject(name),
		Data:    q.msg.AppendJSON(make([]byte, 0, p.lastSize+p.lastSize/4)),
		Header: nats.Header{
			HeaderServer: {p.p.name},
			HeaderEvent:  {name},
			HeaderSeq:    {seq},
			HeaderTime:   {q.at.UTC().Format(time.RFC3339Nano)},
			HeaderMsgID:  {p.idPrefix + seq},
		},
	}
	p.lastSize = len(m.Data)
	for {
		f, err := p.js.PublishMsgAsync(m)
		if err == nil {
			p.acks <- p.p.stats.jsSent(f)
			return
		}
		if !p.retryable(err) || p.p.life.hard.Err() != nil {
			p.jsFailed(err, q.seq, name)
			return
		}
		p.p.stats.jsRetries.Add(1)
		// ErrTooManyStalledMsgs has waited already; anything else waits
		// here, but never past the shutdown deadline.
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) && !sleepCtx(p.p.life.hard, retryWait) {
			p.jsFailed(err, q.seq, name)
			return
		}
	}
}

// collectAcks counts the acks in publish order.
func (p *publisher) collectAcks() {
	defer close(p.acksDone)
	for f := range p.acks {
		select {
		case <-f.Ok():
			p.p.published.Add(1)
			p.p.stats.jsAcked(f)
		case err := <-f.Err():
			p.jsFailed(err, 0, f.Msg().Header.Get(HeaderEvent))
		case <-p.p.life.hard.Done():
			p.jsFailed(errors.New("shutdown deadline passed before the ack"), 0, f.Msg().Header.Get(HeaderEvent))
		}
	}
}

func (p *publisher) jsFailed(err error, seq uint64, event string) {
	n := p.p.jsFailures.Add(1)
	if p.failLog.allow(time.Second) {
		ev := p.p.log.Warn().Err(err).Str("event", event).Uint64("js_failures", n)
		if seq != 0 {
			ev = ev.Uint64("seq", seq)
		}
		ev.Msg("JetStream did not take an event")
	}
}

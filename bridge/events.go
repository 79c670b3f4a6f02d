package bridge

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// jsAckTimeout bounds the wait for one JetStream ack: a publish whose ack
// is lost with its connection is sent again after it.
const jsAckTimeout = 5 * time.Second

// retryWait is the first pause before publishing again after NATS
// refused or failed; it doubles up to maxRetryWait while that goes on.
const (
	retryWait    = 50 * time.Millisecond
	maxRetryWait = time.Second
)

// pubBatch is how many events the publisher takes from the ring at once:
// one lock for that many events.
const pubBatch = 256

// maxSubjectCache bounds the event-name-to-subject cache of a publisher.
const maxSubjectCache = 4096

// publisher takes a PBX's events from its ring and publishes them in
// Ami-Seq order, then moves the ring's acknowledged mark past them: on
// core NATS once they are written to the connection, with JetStream once
// the stream has acknowledged them. Its buffers are reused from event to
// event: on the core NATS path an event costs no allocation of its own
// beyond what nats.go makes.
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
	stamp    timeStamp
	batch    []ringEntry

	lastSize int // the last JSON body's size, to size the next one

	msg                     nats.Msg
	eventV, seqV, timeV, id []string // the header's value slices, rewritten per event

	// fence is all the publisher sees of HA; nil without HA.
	fence fence

	// On core NATS, the pool that runs the publisher (see pubPool), the
	// last seq published, and closed once the ring is closed and drained.
	pool    *pubPool
	done    uint64
	drained chan struct{}

	jsFailed chan struct{} // capacity 1: a JetStream publish failed; see jsPublishFailed
	failLog  rateLimit
	retryLog rateLimit
}

func newPublisher(x *pbx) *publisher {
	p := &publisher{
		p:        x,
		nc:       x.ns.nc,
		prefix:   x.ns.prefix,
		idPrefix: x.name + ":" + strconv.FormatInt(x.ns.epoch, 10) + ":",
		subjects: make(map[string]string),
		jsFailed: make(chan struct{}, 1),
		eventV:   []string{""},
		seqV:     []string{""},
		timeV:    []string{""},
		id:       []string{""},
	}
	p.msg.Header = nats.Header{
		subjects.HeaderServer: {x.name},
		subjects.HeaderEvent:  p.eventV,
		subjects.HeaderSeq:    p.seqV,
		subjects.HeaderTime:   p.timeV,
		subjects.HeaderMsgID:  p.id,
	}
	return p
}

// loop publishes until the PBX closes its ring and every event of it is
// published (with JetStream: acknowledged), or the shutdown deadline
// passes.
func (p *publisher) loop() {
	p.js = p.p.ns.js
	if p.js != nil {
		p.loopJS()
		return
	}
	r := p.p.ring
	var done uint64 // the last seq published
	for {
		n, closed := p.publishBatch(done)
		if n == 0 {
			if closed {
				return
			}
			<-r.wait()
			continue
		}
		done = n
	}
}

// publishBatch publishes on core NATS the events of the ring after seq,
// a batch of them, and acknowledges them in the ring. It returns the last
// seq published, 0 for none, and whether the ring is closed.
func (p *publisher) publishBatch(seq uint64) (uint64, bool) {
	last, closed, batch := p.publishFrom(seq, p.nextBatch())
	p.batch = batch
	return last, closed
}

// publishFrom is publishBatch into dst, an empty buffer whose capacity
// is the most it takes; it returns the buffer, holding no event, for the
// next batch. Once the ring had nothing new, p may be another
// goroutine's (the ring's reader woke it): only dst is left to touch.
func (p *publisher) publishFrom(seq uint64, dst []ringEntry) (uint64, bool, []ringEntry) {
	batch, closed := p.p.ring.readAfter(seq, dst)
	if len(batch) == 0 {
		return 0, closed, batch
	}
	for i := range batch {
		p.publishCore(&batch[i])
	}
	last := batch[len(batch)-1].seq
	p.p.ring.ack(last)
	clear(batch) // the ring may evict them: hold no text
	return last, closed, batch
}

// nextBatch returns the batch buffer, empty; see batchBuf.
func (p *publisher) nextBatch() []ringEntry { return batchBuf(p.batch) }

// batchBuf returns b emptied, or a larger buffer. It starts small, so
// that an idle PBX holds next to nothing, and doubles up to pubBatch each
// time a batch filled it.
func batchBuf(b []ringEntry) []ringEntry {
	if n := cap(b); n < pubBatch && len(b) == n {
		return make([]ringEntry, 0, max(8, 2*n))
	}
	return b[:0]
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

func (p *publisher) publishCore(e *ringEntry) {
	name := e.msg.EventName()
	p.body = e.msg.AppendJSON(p.body[:0])
	p.msg.Subject = p.subject(name)
	p.msg.Data = p.body
	p.eventV[0] = name
	// The other header values are views of scratch. PublishMsg copies the
	// header into its write buffer before it returns, and the next event
	// rewrites them, so nothing reads them after they change.
	b := p.scratch[:0]
	b = strconv.AppendUint(b, e.seq, 10)
	n1 := len(b)
	b = p.stamp.append(b, e.at)
	n2 := len(b)
	b = append(b, p.idPrefix...)
	b = strconv.AppendUint(b, e.seq, 10)
	p.scratch = b
	p.seqV[0] = view(b[:n1])
	p.timeV[0] = view(b[n1:n2])
	p.id[0] = view(b[n2:])

	if err := p.send(&p.msg); err != nil {
		n := p.p.dropped.Add(1)
		if p.failLog.allow(time.Second) {
			p.p.log.LogAttrs(context.Background(), slog.LevelWarn, "NATS refused an event; it is counted as dropped",
				slog.Any("error", err), slog.Uint64("seq", e.seq), slog.String("event", name), slog.Uint64("dropped_total", n))
		}
		return
	}
	p.p.stats.lastPublished.Store(e.seq)
	p.p.published.Add(1)
}

// view returns b's bytes as a string without copying; see publishCore for
// why that is safe there.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// send publishes m, waiting while NATS reconnects with its own buffer
// full: the PBX's ring then takes the events, up to its bounds. It
// gives up when the shutdown deadline passes or NATS is closed.
func (p *publisher) send(m *nats.Msg) error {
	for {
		err := p.nc.PublishMsg(m)
		if err == nil || !p.retryable(err) {
			return err
		}
		if !sleepCtx(p.p.life.hard, retryWait) {
			return err
		}
	}
}

func (p *publisher) retryable(err error) bool {
	if p.nc.IsClosed() {
		return false
	}
	return errors.Is(err, nats.ErrReconnectBufExceeded) || p.nc.IsReconnecting()
}

// timeStamp formats Ami-Time as time.RFC3339Nano in UTC, formatting the
// date and the clock once a second instead of once an event.
type timeStamp struct {
	sec    int64
	prefix []byte // "2006-01-02T15:04:05" of sec
}

func (s *timeStamp) append(b []byte, at int64) []byte {
	sec, ns := at/1e9, at%1e9
	if ns < 0 {
		sec, ns = sec-1, ns+1e9
	}
	if sec != s.sec || s.prefix == nil {
		s.sec = sec
		s.prefix = time.Unix(sec, 0).UTC().AppendFormat(s.prefix[:0], "2006-01-02T15:04:05")
	}
	b = append(b, s.prefix...)
	if ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' { // RFC3339Nano drops trailing zeros
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z')
}

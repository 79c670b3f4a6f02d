package bridge

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// inflight is a JetStream publish waiting for its ack.
type inflight struct {
	seq   uint64 // in the ring
	f     jetstream.PubAckFuture
	sent  time.Time
	pub   uint64 // the Ami-Seq published: seq, or with HA seq + offset
	chain uint64 // with HA, the event's Ami-Chain
}

// noRetries turns nats.go's own resend after "no responders" off: it
// resends 250 ms later, behind newer events, out of Ami-Seq order. The
// publisher resends from its ring instead, in order.
var noRetries = jetstream.WithRetryAttempts(0)

// loopJS publishes at least once, in Ami-Seq order: a window of up to
// MaxPending publishes in flight, acknowledged in order. When one fails
// (refused, no responders, its ack timed out or was lost with the
// connection), it sends nothing new, waits for every publish still in
// flight, moves the ring's mark past those acknowledged in order, and
// sends again from the first one that was not, with the same
// Nats-Msg-Id: what JetStream stored already is dropped by its dedupe
// window. The ring holds the events meanwhile; only its overflow is lost.
func (p *publisher) loopJS() {
	var (
		r       = p.p.ring
		hard    = p.p.life.hard
		limit   = p.p.ns.jsOpts.MaxPending
		window  []inflight // in seq order
		sent    uint64     // the last seq handed to JetStream
		acked   uint64     // the last seq JetStream acknowledged in order
		wait    = retryWait
		closed  bool
		pending <-chan struct{} // the ring's wake-up, while it has nothing new
		ha      = p.fence
		terms   pubTerms // with HA, as of the last batch
		gen     uint64   // with HA, the takeover terms is of
		haWake  <-chan struct{}
	)
	if ha != nil {
		haWake = ha.pubWakeup()
	}
	for {
		pending = nil
		var failed error
		allowed, limited := true, false
		if ha != nil {
			// Fencing: the lease is checked before every batch.
			terms, allowed = ha.mayPublish()
			if allowed && terms.gen != gen {
				if len(window) > 0 {
					allowed = false // the previous term's publishes settle first
				} else {
					gen = terms.gen
					p.idPrefix = p.p.name + ":" + strconv.FormatInt(terms.epoch, 10) + ":"
					// The takeover held the ring's entries above
					// after (ring.hold) for this.
					sent, acked = terms.after, terms.after
				}
			}
		}
		refused := false // a publish of this batch failed to go out
		select {
		case <-p.jsFailed:
			failed = errFailedInFlight
		default:
		}
		if failed == nil && allowed && len(window) < limit && p.nc.IsConnected() {
			var batch []ringEntry
			b := p.nextBatch()
			batch, closed = r.readAfter(sent, b[:0:min(cap(b), limit-len(window))])
			now := time.Now()
			for i := range batch {
				pub := batch[i].seq
				if ha != nil {
					// Fencing covers every message handed to NATS.
					if ha.fenced(&terms) {
						allowed = false
						break
					}
					pub = uint64(int64(pub) + terms.offset)
					if pub > terms.limit {
						limited = true
						break
					}
				}
				f, err := p.publishJS(&batch[i], pub)
				if err != nil {
					failed, refused = err, true
					break
				}
				window = append(window, inflight{seq: batch[i].seq, f: f, sent: now, pub: pub, chain: batch[i].chain})
				sent = batch[i].seq
			}
			clear(batch)
			p.batch = b[:len(batch)] // its full capacity, to grow by
			if len(batch) == 0 && !closed {
				pending = r.wait()
			}
		}
		if failed == nil && len(window) == 0 && (!allowed || limited) {
			// With HA, standing by (or waiting for a renewal's limit).
			if !p.standBy(ha, !allowed) {
				return
			}
			continue
		}
		if failed == nil && len(window) == 0 {
			if closed {
				return
			}
			if pending == nil { // NATS is reconnecting: look again shortly
				if !sleepCtx(hard, retryWait) {
					p.giveUp(errors.New("shutdown deadline passed while NATS reconnected"))
					return
				}
				continue
			}
			select {
			case <-pending:
			case <-haWake: // with HA, the role changed: look at the terms again
			case <-hard.Done():
				p.giveUp(hard.Err())
				return
			}
			continue
		}
		inOrder := true
		if failed == nil {
			select {
			case <-window[0].f.Ok():
				acked = p.jsAcked(window[0])
				window = window[1:]
				wait = retryWait
				continue
			case failed = <-window[0].f.Err():
				// Its error is read: settle the others.
				window, inOrder = window[1:], false
			case <-p.jsFailed:
				failed = errFailedInFlight
			case <-pending:
				continue
			case <-hard.Done():
				p.giveUp(hard.Err())
				return
			}
		}
		// Something failed: settle what is in flight, then resend from
		// the first publish not acknowledged in order.
		a, resent, ok := p.settle(window, acked, failed, inOrder)
		if !ok {
			p.giveUp(hard.Err())
			return
		}
		select { // what failed is settled now
		case <-p.jsFailed:
		default:
		}
		window, sent, acked = window[:0], a, a
		if refused {
			p.p.stats.jsRetries.Add(1)
		} else if !resent {
			continue
		}
		if !sleepCtx(hard, wait) {
			p.giveUp(hard.Err())
			return
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// settle waits for every publish of window and acknowledges, in order,
// those JetStream stored before the first that failed; inOrder is false
// when one before window failed already. It returns the new acknowledged
// seq and whether anything is to be sent again, or false when the
// shutdown deadline passed first.
func (p *publisher) settle(window []inflight, acked uint64, cause error, inOrder bool) (uint64, bool, bool) {
	hard := p.p.life.hard
	resent := 0
	if !inOrder {
		resent = 1 // the one that failed before window
	}
	for _, w := range window {
		select {
		case <-w.f.Ok():
			if inOrder {
				acked = p.jsAcked(w)
				continue
			}
			if p.failLog.allow(time.Second) {
				p.p.log.LogAttrs(context.Background(), slog.LevelWarn, "JetStream stored an event after one it did not: the stream holds them out of Ami-Seq order",
					slog.Uint64("seq", w.seq))
			}
		case err := <-w.f.Err():
			if inOrder {
				cause = err
			}
			inOrder = false
		case <-hard.Done():
			return acked, false, false
		}
		inOrder = false
		resent++
	}
	if resent == 0 {
		return acked, false, true
	}
	p.p.stats.jsRetries.Add(uint64(resent))
	if p.retryLog.allow(time.Second) {
		p.p.log.LogAttrs(context.Background(), slog.LevelWarn, "JetStream did not acknowledge an event: publishing again from it",
			slog.Any("error", cause), slog.Uint64("from_seq", acked+1), slog.Int("resent", resent))
	}
	return acked, true, true
}

// errFailedInFlight is the cause of a resend when a publish behind the
// oldest one in flight failed first.
var errFailedInFlight = errors.New("a JetStream publish in flight failed")

// jsPublishFailed is nats.go's handler of every failed asynchronous
// publish: it tells the PBX's publisher at once, whatever the failed
// publish's place in its window, so that it sends nothing new until it
// has settled the window and resent from the first failure. Waiting for
// the oldest publish to fail instead (an ack lost with a stopped stream
// leader takes jsAckTimeout) would let newer events be stored first, out
// of Ami-Seq order, once a new leader is up.
func (b *Bridge) jsPublishFailed(_ jetstream.JetStream, m *nats.Msg, _ error) {
	name := m.Header.Get(subjects.HeaderServer)
	for _, p := range b.pbxes {
		if p.name == name {
			select {
			case p.pub.jsFailed <- struct{}{}:
			default:
			}
			return
		}
	}
}

// jsAcked records an acknowledged publish and moves the ring's mark.
func (p *publisher) jsAcked(w inflight) uint64 {
	// The Ami-Seq first, so that whoever sees the count sees it too.
	p.p.stats.lastPublished.Store(w.pub)
	p.p.published.Add(1)
	p.p.stats.jsLatency.observe(time.Since(w.sent))
	p.p.ring.ack(w.seq)
	if p.fence != nil {
		p.fence.acked(w.seq, w.pub, w.chain)
	}
	return w.seq
}

// giveUp counts the events the stream never acknowledged, at the shutdown
// deadline.
func (p *publisher) giveUp(err error) {
	n := p.p.ring.usage().pending
	if n == 0 {
		return
	}
	total := p.p.jsFailures.Add(uint64(n))
	p.p.log.Warn("JetStream did not acknowledge these events before the shutdown deadline",
		"error", err, "events", n, "js_failures", total)
}

// publishJS sends one event as Ami-Seq pub with an ack. JetStream keeps
// the message until the ack, so nothing of it may be reused.
func (p *publisher) publishJS(e *ringEntry, pub uint64) (jetstream.PubAckFuture, error) {
	name := e.msg.EventName()
	seq := strconv.FormatUint(pub, 10)
	m := &nats.Msg{
		Subject: p.subject(name),
		Data:    e.msg.AppendJSON(make([]byte, 0, p.lastSize+p.lastSize/4)),
		Header: nats.Header{
			subjects.HeaderServer: {p.p.name},
			subjects.HeaderEvent:  {name},
			subjects.HeaderSeq:    {seq},
			subjects.HeaderTime:   {p.timeString(e.at)},
			subjects.HeaderMsgID:  {p.idPrefix + seq},
		},
	}
	if p.fence != nil {
		m.Header[subjects.HeaderChain] = []string{strconv.FormatUint(e.chain, 16)}
	}
	p.lastSize = len(m.Data)
	return p.js.PublishMsgAsync(m, noRetries)
}

// timeString returns at as Ami-Time.
func (p *publisher) timeString(at int64) string {
	p.scratch = p.stamp.append(p.scratch[:0], at)
	return string(p.scratch)
}

// fence is what the publisher sees of HA (haNode): whether, and on
// what terms, it may publish; what it may acknowledge while it stands by;
// and what it reports back.
type fence interface {
	// mayPublish is asked before each batch, fenced before each message.
	mayPublish() (pubTerms, bool)
	fenced(terms *pubTerms) bool
	// mayAck: a standby may acknowledge what its ring holds.
	mayAck() bool
	// acked reports an event published and acknowledged.
	acked(local, seq, chain uint64)
	// pubQuiet reports that the publisher stands still, nothing in flight.
	pubQuiet()
	// pubWakeup is ready when the terms may have changed.
	pubWakeup() <-chan struct{}
	// recheck is how often a publisher standing by looks again anyway.
	recheck() time.Duration
}

// standBy is the publisher's turn while it may not publish: as a standby
// (idle true) it acknowledges whatever the ring holds, unless the lease was
// lost with events unpublished (mayAck), so the ring keeps the newest
// events within its own bounds, and waits for a change of role; waiting
// for a renewal's limit, it only waits. It returns false when the ring is
// closed.
func (p *publisher) standBy(f fence, idle bool) bool {
	r := p.p.ring
	if idle {
		if n := r.newest(); n > 0 && f.mayAck() {
			r.ack(n)
		}
		f.pubQuiet()
	}
	if r.isClosed() {
		return false
	}
	t := time.NewTimer(f.recheck())
	defer t.Stop()
	select {
	case <-f.pubWakeup():
	case <-t.C:
	case <-p.p.life.hard.Done():
		return false
	}
	return true
}

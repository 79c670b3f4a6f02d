package bridge

// High availability: one process per PBX (the active, holding a lease)
// publishes its events; the others read them too and stand by. A new
// active continues from what the event stream stored last for the PBX,
// found in its own ring by its mark (a UserEvent every session reads at
// the same place), the Ami-Chain header or the stream read back.
// docs/ha.md is the design; package bridge/internal/ha holds its pure
// part.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/bridge/internal/ha"
	"github.com/ami-bridge/ami-bridge/lease"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// HAOptions make several bridges share each PBX: one publishes its
// events, the others stand by. They need JetStream for the lease bucket.
type HAOptions struct {
	Enabled bool
	// Bucket is the KV bucket of the leases, default
	// DefaultHABucket.
	Bucket string
	// LeaseTTL is how long a lease lives after its last renewal, default
	// 2s: a takeover after a crash comes within about that.
	LeaseTTL time.Duration
	// CheckpointInterval is how often the active renews its lease (and
	// the Ami-Seq limit it carries), default 100ms; at most LeaseTTL/4 so
	// that a lost renewal or two does not end the lease.
	CheckpointInterval time.Duration
	// Holder names this process in the lease, default "<hostname>:<pid>".
	Holder string
}

// Defaults of the zero values in HAOptions.
const (
	DefaultHABucket           = lease.DefaultBucket
	DefaultLeaseTTL           = lease.DefaultTTL
	DefaultCheckpointInterval = 100 * time.Millisecond
)

func withHADefaults(o HAOptions, js JetStreamOptions) (HAOptions, error) {
	if !o.Enabled {
		return o, nil
	}
	var errs []error
	if !js.Enabled {
		errs = append(errs, errors.New("ha needs jetstream enabled: the leases live in a JetStream KV bucket"))
	}
	o.Bucket = cmp.Or(o.Bucket, DefaultHABucket)
	o.LeaseTTL = cmp.Or(o.LeaseTTL, DefaultLeaseTTL)
	o.CheckpointInterval = cmp.Or(o.CheckpointInterval, DefaultCheckpointInterval)
	if o.Holder == "" {
		host, _ := os.Hostname()
		o.Holder = host + ":" + strconv.Itoa(os.Getpid())
	}
	if err := lease.CheckTTL(o.LeaseTTL); err != nil {
		errs = append(errs, fmt.Errorf("ha lease ttl %v: want whole seconds, at least 1s: the server keeps a key's TTL in whole seconds", o.LeaseTTL))
	}
	if o.CheckpointInterval <= 0 || o.CheckpointInterval > o.LeaseTTL/4 {
		errs = append(errs, fmt.Errorf("ha checkpoint interval %v: want above 0 and at most a quarter of the lease ttl %v", o.CheckpointInterval, o.LeaseTTL))
	}
	return o, errors.Join(errs...)
}

// openLeases opens the lease bucket with as many replicas as the event
// stream: leases on fewer servers than the stream would be lost, and HA
// with them, where the stream survives.
func openLeases(ctx context.Context, ns *natsSide, o HAOptions) (*lease.Bucket, error) {
	return lease.Open(ctx, ns.js, lease.Config{Bucket: o.Bucket, TTL: o.LeaseTTL, Replicas: max(ns.jsOpts.Replicas, ns.streamReplicas)})
}

// sessionOnly reports whether an event belongs to the session that reads
// it rather than to the stream every session of the user shares.
func sessionOnly(name string) bool {
	return name == "FullyBooted" || name == "SuccessfulAuth"
}

// maxGaps bounds HAStatus.Gaps: the newest are kept.
const maxGaps = 16

// haNode is one PBX's part in HA: its lease and role.
type haNode struct {
	p      *pbx
	opts   HAOptions
	bucket *lease.Bucket // set by start
	log    *slog.Logger

	wake    chan struct{} // a contention or renewal is due now
	pubWake chan struct{} // the publisher's: the role changed

	active  atomic.Bool // mirrors role for the publisher's fast check
	closing atomic.Bool // Shutdown's handover started: contend no more
	// ended is set when the event session's login ends while active: the
	// events the PBX sends until the next login are missing from this
	// process's, so it publishes nothing more and hands over, even if the
	// session is back before the HA loop looks (a slow renewal).
	ended atomic.Bool
	// keep is set when the lease is lost while active: the ring keeps
	// what was not published (no ack) until this process is active again
	// or sees another hold the lease. Set before active is cleared.
	keep atomic.Bool

	mu        sync.Mutex // guards the fields below
	lease     *lease.Lease
	holder    string
	epoch     int64
	offset    int64         // Ami-Seq published = local seq + offset
	after     uint64        // local seq the publisher starts after, for gen
	gen       uint64        // counts takeovers, for the publisher to notice one
	limit     uint64        // the highest Ami-Seq the last successful renewal allows
	boundary  uint64        // local seq of the last event of the event session's previous login
	own       ha.Own        // the last event acknowledged while active; Valid while keep holds
	quiet     chan struct{} // closed by the publisher once it stands still; see stopPublishing
	last      *subjects.Takeover
	gaps      []subjects.Gap
	takeovers uint64
	gapsTotal uint64
	seqRun    uint64 // the Value.Run this process publishes under while active

	// Marks (see docs/ha.md, "Marks"): what this process sent and read.
	remark  chan struct{} // the event session's marker: send a new mark now
	marks   uint64        // counts the marks sent, for their IDs
	pending string        // the ID of this process's last mark, until it is answered
	local   uint64        // the local seq of the last event numbered before it
	read    bool          // local is set: this process has read its own mark
	answer  *markAnswer   // the holder's answer to pending, once seen
	mark    ha.Mark       // the proven numbering of this login, once both halves are in
	markRun uint64        // the run mark belongs to
	seen    []seenMark    // the marks read in this login, newest last, for answers while active
	holderT string        // the token of the last lease writer seen by the watch
	// handedOver: the last value the watch saw was a shutdown's release
	// (Value.Final): take the lease at once.
	handedOver bool
}

// markAnswer is a holder's answer to this process's mark.
type markAnswer struct {
	seq   uint64
	epoch int64
	run   uint64
}

// seenMark is a mark read from the PBX: its ID and the local seq of the
// last event numbered before it.
type seenMark struct {
	id    string
	local uint64
}

// maxSeen bounds the marks an active answers in each lease value.
const maxSeen = 8

// The UserEvent of a mark: "UserEvent: AmiBridgeMark" and "Mark: <id>".
const (
	markEvent  = "AmiBridgeMark"
	markHeader = "Mark"
)

func newHANode(p *pbx, opts HAOptions) *haNode {
	return &haNode{p: p, opts: opts, log: p.log, wake: make(chan struct{}, 1), pubWake: make(chan struct{}, 1), remark: make(chan struct{}, 1)}
}

// kick asks the loop to look again at once.
func (h *haNode) kick() { signal(h.wake) }

// kickPub asks the publisher to look at its terms again at once.
func (h *haNode) kickPub() { signal(h.pubWake) }

func (h *haNode) pubWakeup() <-chan struct{} { return h.pubWake }

func (h *haNode) recheck() time.Duration { return h.opts.CheckpointInterval }

// signal makes c, of capacity 1, ready without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// pubTerms are what the active publishes with.
type pubTerms struct {
	offset int64  // Ami-Seq = local seq + offset
	epoch  int64  // of Nats-Msg-Id
	gen    uint64 // changes at each takeover
	after  uint64 // local seq: at a new gen, publish the entries above it
	limit  uint64 // the highest Ami-Seq the last renewal allows
	lease  *lease.Lease
}

// mayPublish reports whether this process may publish now, and on what
// terms. The publisher calls it before each batch: it holds only while
// the lease is certainly this process's.
func (h *haNode) mayPublish() (pubTerms, bool) {
	if !h.active.Load() {
		return pubTerms{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lease == nil || !h.lease.Valid() || h.ended.Load() {
		return pubTerms{}, false
	}
	return pubTerms{offset: h.offset, epoch: h.epoch, gen: h.gen, after: h.after, limit: h.limit, lease: h.lease}, true
}

// fenced reports whether the publisher must hand nothing more to NATS
// under terms: it checks before every message, so that a process frozen
// or cut off in the middle of a batch stops there. No lock: an atomic
// load or two and a monotonic clock read.
func (h *haNode) fenced(terms *pubTerms) bool {
	return !h.active.Load() || h.ended.Load() || !terms.lease.Valid()
}

// mustRelease reports whether the active must hand over: its event
// session is down, or came back after missing events.
func (h *haNode) mustRelease() bool {
	return h.active.Load() && (h.ended.Load() || !h.p.eventsUp())
}

// mayAck reports whether a publisher standing by may acknowledge what
// its ring holds: only as a standby that owes the stream nothing.
func (h *haNode) mayAck() bool {
	return !h.active.Load() && !h.keep.Load()
}

// acked records an event the publisher has published and NATS
// acknowledged: local seq, Ami-Seq as published, Ami-Chain.
func (h *haNode) acked(local, seq, chain uint64) {
	h.mu.Lock()
	// After the login ended, the ring misses what the PBX sent until the
	// next: no proof to take the lease back by (see ha.Own).
	h.own = ha.Own{Valid: !h.ended.Load(), Local: local, Seq: seq, Epoch: h.epoch, Chain: chain}
	h.mu.Unlock()
}

// value is the lease value that grants limit. h.mu is held.
func (h *haNode) value(limit uint64) ha.Value {
	v := ha.Value{Epoch: h.epoch, Limit: limit, Run: h.seqRun}
	for _, m := range h.seen {
		// Every event of this login is numbered local seq + offset: the
		// answer holds for the events after the mark whatever this
		// process published of those before it.
		v.Marks = append(v.Marks, ha.Answer{ID: m.id, Seq: uint64(int64(m.local) + h.offset)})
	}
	return v
}

// isMark reports whether m is a mark: a UserEvent AmiBridgeMark.
func isMark(m *amiproto.Message) bool {
	return m.EventName() == "UserEvent" && m.Get("UserEvent") == markEvent
}

// markRead records a mark the event session read after numbering local
// seq local. The event reader calls it.
func (h *haNode) markRead(id string, local uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, seenMark{id: id, local: local})
	if len(h.seen) > maxSeen {
		h.seen = h.seen[1:]
	}
	if id != "" && id == h.pending {
		h.local, h.read = local, true
		h.completeLocked()
	}
}

// completeLocked makes the mark valid once this process read its own
// mark and saw the holder's answer. h.mu is held.
func (h *haNode) completeLocked() {
	if !h.read || h.answer == nil {
		return
	}
	h.mark = ha.Mark{Valid: true, Local: h.local, Seq: h.answer.seq, Epoch: h.answer.epoch}
	h.markRun = h.answer.run
	h.pending, h.answer, h.read = "", nil, false
	h.log.Debug("HA: numbering proven by a mark", "local", h.mark.Local, "seq", h.mark.Seq, "epoch", h.mark.Epoch, "run", h.markRun)
}

// leaseWritten is the watch's: a holder wrote v. It takes the answer to
// this process's mark, and asks for a new mark when the numbering it
// proved ended (another run or epoch) or a new holder will never answer
// the one pending (it may have read it before its own login).
func (h *haNode) leaseWritten(token string, v ha.Value) {
	h.mu.Lock()
	defer h.mu.Unlock()
	newHolder := token != h.holderT
	h.holderT = token
	h.handedOver = v.Final
	if h.mark.Valid && (v.Epoch != h.mark.Epoch || v.Run != h.markRun) {
		h.mark = ha.Mark{}
		signal(h.remark)
	}
	if h.pending == "" {
		return
	}
	for _, a := range v.Marks {
		if a.ID == h.pending {
			h.answer = &markAnswer{seq: a.Seq, epoch: v.Epoch, run: v.Run}
			h.completeLocked()
			return
		}
	}
	if h.answer != nil && (h.answer.epoch != v.Epoch || h.answer.run != v.Run) {
		h.answer = nil
		signal(h.remark)
	} else if newHolder && h.answer == nil {
		signal(h.remark)
	}
}

// marker sends a mark through the PBX at once and whenever the HA node
// asks for one (remark), on c, the event session of one login, until ctx
// (that login) ends. serveEvents starts it and waits for it.
func (h *haNode) marker(ctx context.Context, c *amiproto.Client) {
	for {
		h.mu.Lock()
		h.marks++
		id := h.opts.Holder + "#" + strconv.FormatUint(h.marks, 10)
		h.pending, h.answer, h.read = id, nil, false
		h.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, h.p.cfg.ActionTimeout)
		_, err := c.Request(rctx, amiproto.NewAction("UserEvent", "UserEvent", markEvent, markHeader, id))
		cancel()
		if err != nil && ctx.Err() == nil && h.p.reportLog.allow(time.Second) {
			h.log.Warn("HA: cannot send a mark (UserEvent; the event login needs write class user): a standby that logged in on a quiet PBX may report a gap at its takeover", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-h.remark:
		}
	}
}

// seqBudget is how many Ami-Seq numbers past the newest event read a
// renewal lets the active publish: far more than it reads between two
// renewals, so the limit never holds a healthy active back.
const seqBudget = 1 << 16

// nextLimitLocked returns the limit the next renewal grants. h.mu is held.
func (h *haNode) nextLimitLocked() uint64 {
	return uint64(int64(h.p.lastSeq.Load())+h.offset) + seqBudget
}

// status returns the HA part of the PBX status.
func (h *haNode) status() *subjects.HAStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := &subjects.HAStatus{Role: subjects.RoleStandby, Self: h.opts.Holder, Holder: h.holder, Takeovers: h.takeovers, Gaps: append([]subjects.Gap(nil), h.gaps...)}
	if h.active.Load() {
		st.Role = subjects.RoleActive
	}
	if h.last != nil {
		t := *h.last
		st.LastTakeover = &t
	}
	return st
}

// watch wakes the loop whenever the key changes, until ctx ends; a watch
// that fails is started again after a pause.
func (h *haNode) watch(ctx context.Context) {
	for {
		err := h.bucket.Watch(ctx, h.p.name, func(st lease.State) {
			if st.Holder == "" {
				h.kick()
				return
			}
			// A key taken but not renewed yet holds no value.
			if v, err := ha.DecodeValue(st.Data); err == nil && len(st.Data) > 0 {
				h.leaseWritten(st.DataToken, v)
			}
		})
		if ctx.Err() != nil {
			return
		}
		h.log.Debug("HA lease watch ended; watching again", "error", err)
		if !sleepCtx(ctx, h.opts.CheckpointInterval*10) {
			return
		}
	}
}

// stepDown ends the active role without touching the key: the publisher
// stops at its next batch.
func (h *haNode) stepDown(why string) {
	h.mu.Lock()
	if h.active.Load() {
		h.keep.Store(true) // before active is cleared: see mayAck
	}
	was := h.active.Swap(false)
	h.lease = nil
	h.mu.Unlock()
	if was {
		h.log.Warn("HA: no longer active for this PBX", "why", why)
		h.p.publishStatus()
	}
}

// renew renews the lease with the next limit; it steps down when the
// lease is lost or no longer certainly valid.
func (h *haNode) renew(ctx context.Context) {
	h.mu.Lock()
	limit := h.nextLimitLocked()
	l, data := h.lease, h.value(limit).Encode()
	h.mu.Unlock()
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.LeaseTTL/2)
	defer cancel()
	err := l.Renew(ctx, data)
	if err == nil {
		h.mu.Lock()
		first := false
		if h.lease == l {
			first = h.limit == 0
			h.limit = max(h.limit, limit)
		}
		h.mu.Unlock()
		if first { // a new active's publisher waits for it
			h.kickPub()
		}
	}
	switch {
	case errors.Is(err, lease.ErrLost):
		h.stepDown(err.Error())
	case err != nil && !l.Valid():
		h.stepDown("lease not renewed in time: " + err.Error())
	case err != nil:
		h.log.Debug("HA lease renewal failed; retrying", "error", err)
	}
}

// release gives the key up, so that a standby takes over at once. The
// caller has stopped the publisher and waited for its acks: settled says
// they all came, and then the limit it leaves is the last Ami-Seq
// acknowledged, for a next active that cannot find it in its ring.
func (h *haNode) release(ctx context.Context, why string, settled bool) {
	h.mu.Lock()
	limit := h.nextLimitLocked()
	if settled {
		// The last Ami-Seq acknowledged, or, when this run published
		// nothing yet, the last number before it: the numbers a gap at its
		// start reported stay unused.
		limit = max(h.own.Seq, h.seqRun-1)
	}
	v := h.value(limit)
	v.Final = settled && h.closing.Load()
	l, data := h.lease, v.Encode()
	h.active.Store(false)
	h.lease = nil
	h.mu.Unlock()
	if l == nil {
		return
	}
	if err := l.Release(ctx, data); err != nil {
		h.log.Warn("HA: releasing the lease failed; a standby takes over when it expires", "error", err)
		return
	}
	h.log.Info("HA: lease released", "why", why, "value", json.RawMessage(data))
	h.p.publishStatus()
}

// run is the HA loop of one PBX: it contends for the lease while this
// process is standby with its event session up, renews it while active, and gives it up when the event session drops.
// pbx.run starts it and waits for it; it ends with ctx. Its watch
// goroutine is its own: started here, waited for before run returns.
func (h *haNode) run(ctx context.Context) {
	h.bucket = h.p.ns.leases
	for h.bucket == nil {
		b, err := openLeases(ctx, h.p.ns, h.opts)
		if err == nil {
			h.bucket = b
			break
		}
		h.log.Warn("HA: lease bucket not ready; this process stays standby", "error", err)
		if !sleepCtx(ctx, h.opts.LeaseTTL) {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.watch(ctx)
	}()
	defer wg.Wait()

	t := time.NewTicker(h.opts.CheckpointInterval)
	defer t.Stop()
	contend := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
			contend = h.contendAfter(time.Now())
		case <-t.C:
		}
		switch {
		case h.closing.Load():
		case h.mustRelease():
			h.releaseAfterAcks(ctx, "AMI event session lost")
		case h.active.Load():
			h.renew(ctx)
		case h.p.eventsUp() && time.Now().After(contend):
			// The watch calls for an attempt at once; without it, one
			// attempt per quarter TTL is enough to notice a lease that
			// expired while the watch was down.
			h.tryAcquire(ctx)
			contend = time.Now().Add(h.opts.LeaseTTL / 4)
		}
	}
}

// contendAfter returns when to try for a lease seen free at now. The
// process that read the PBX's events the longest without a break goes
// first: a later login may have missed events the old active read and
// never stored, and would report a gap the other avoids. So the wait
// shrinks from half a lease TTL for a session logged in just now to none
// for one logged in two TTLs ago or more; the process that had the last
// ack itself tries at once.
func (h *haNode) contendAfter(now time.Time) time.Time {
	h.mu.Lock()
	own, handedOver := h.own.Valid, h.handedOver
	h.mu.Unlock()
	if own || handedOver {
		return now
	}
	var age time.Duration
	if st := h.p.events.status(); st.State == subjects.StateConnected {
		age = now.Sub(st.Since)
	}
	full := 2 * h.opts.LeaseTTL
	if age >= full {
		return now
	}
	return now.Add(time.Duration(float64(h.opts.LeaseTTL/2) * float64(full-max(age, 0)) / float64(full)))
}

// tryAcquire takes the lease if it is free and becomes active.
func (h *haNode) tryAcquire(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, h.opts.LeaseTTL)
	defer cancel()
	l, err := h.bucket.Acquire(ctx, h.p.name, h.opts.Holder, nil)
	if err != nil {
		holder := ""
		if held := (*lease.HeldError)(nil); errors.As(err, &held) {
			holder = held.Holder
		} else {
			h.log.Debug("HA: acquire failed", "error", err)
		}
		if holder != "" && holder != h.opts.Holder && h.keep.Swap(false) {
			// Another process is active: it publishes from what the
			// stream stored, so what this ring kept is the standby's
			// again.
			h.log.Info("HA: another process holds the lease; the events kept since losing it are left to it", "holder", holder)
			h.kickPub()
		}
		h.mu.Lock()
		changed := h.holder != holder
		h.holder = holder
		h.mu.Unlock()
		if changed {
			h.p.publishStatus()
		}
		return
	}
	h.mu.Lock()
	h.holder = h.opts.Holder
	h.mu.Unlock()
	// What the stream holds is read once the key is ours: the old active
	// is fenced, only what it had in flight can still be stored, and that
	// carries the Nats-Msg-Ids the plan gives the same events.
	var pl ha.Decision
	st, err := h.bucket.Get(ctx, h.p.name)
	var v ha.Value
	if err == nil {
		v, err = ha.DecodeValue(st.Data)
	}
	var tail ha.Tail
	if err == nil {
		tail, err = h.readTail(ctx)
	}
	if err == nil && !h.closing.Load() { // Shutdown may have begun meanwhile
		pl = h.plan(ctx, tail, v)
	}
	if err != nil || h.closing.Load() {
		if err != nil {
			h.log.Warn("HA: cannot read where the stream stands; giving the lease back", "error", err)
		}
		if rerr := l.Release(ctx, nil); rerr != nil {
			h.log.Debug("HA: release", "error", rerr)
		}
		h.mu.Lock()
		h.holder = ""
		h.mu.Unlock()
		h.keep.Store(false)
		h.kickPub()
		return
	}
	h.mu.Lock()
	h.lease = l
	h.epoch, h.offset, h.after = pl.Epoch, pl.Offset, pl.After
	// The run goes on where this process continues the old active's
	// numbering, and starts again where it cannot.
	h.seqRun = uint64(int64(pl.After) + pl.Offset + 1)
	if pl.Matched && v.Epoch == pl.Epoch && v.Run != 0 {
		h.seqRun = v.Run
	}
	h.gen++
	h.limit = 0 // nothing until the first renewal
	h.takeovers++
	h.last = &subjects.Takeover{At: time.Now().UTC(), From: uint64(int64(pl.After) + pl.Offset + 1), Replayed: pl.Replay, Matched: pl.Matched}
	if pl.Gap != nil {
		h.gapsTotal++
		h.gaps = append(h.gaps, subjects.Gap{From: pl.Gap.From, To: pl.Gap.To, At: h.last.At})
		if len(h.gaps) > maxGaps {
			h.gaps = h.gaps[len(h.gaps)-maxGaps:]
		}
	}
	h.ended.Store(false)
	h.active.Store(true) // before keep is cleared: see mayAck
	h.keep.Store(false)
	h.mu.Unlock()
	h.kickPub()
	level, attrs := slog.LevelInfo, []any{"from_seq", h.last.From, "replayed", pl.Replay, "matched", pl.Matched, "epoch", pl.Epoch}
	if pl.Gap != nil {
		level, attrs = slog.LevelError, append(attrs, "gap_from", pl.Gap.From, "gap_to", pl.Gap.To)
	}
	h.log.Log(context.Background(), level, "HA: took over as the active bridge of this PBX", attrs...)
	h.p.publishStatus()
	h.renew(ctx) // the first limit
}

// readTail reads the last event the stream holds for this PBX.
// Direct gets may be answered by a replica that lags: an older tail only
// makes the new active send some events again under the numbers they
// have, which the stream drops.
func (h *haNode) readTail(ctx context.Context) (ha.Tail, error) {
	var t ha.Tail
	s, err := h.p.ns.js.Stream(ctx, h.p.ns.jsOpts.Stream)
	if err != nil {
		return t, fmt.Errorf("stream %s: %w", h.p.ns.jsOpts.Stream, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subjects.ServerEvents(h.p.ns.prefix, h.p.name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return t, nil
	}
	if err != nil {
		return t, fmt.Errorf("last event of %s: %w", h.p.name, err)
	}
	t, err = parseTail(m.Header, m.Data)
	t.StreamSeq = m.Sequence
	return t, err
}

// parseTail reads a stored event's place. An event without Ami-Chain was
// published without HA, under a process's own epoch: it is no place to
// continue from, as if the stream held nothing.
func parseTail(hd nats.Header, data []byte) (ha.Tail, error) {
	var t ha.Tail
	chain := hd.Get(subjects.HeaderChain)
	if chain == "" {
		return t, nil
	}
	var err error
	if t.Chain, err = strconv.ParseUint(chain, 16, 64); err != nil {
		return t, fmt.Errorf("stored %s %q: %w", subjects.HeaderChain, chain, err)
	}
	if t.Seq, err = strconv.ParseUint(hd.Get(subjects.HeaderSeq), 10, 64); err != nil {
		return t, fmt.Errorf("stored %s: %w", subjects.HeaderSeq, err)
	}
	// Nats-Msg-Id is "<server>:<epoch>:<seq>".
	id := hd.Get(subjects.HeaderMsgID)
	k := strings.LastIndexByte(id, ':')
	j := strings.LastIndexByte(id[:max(k, 0)], ':')
	if j < 0 {
		return t, fmt.Errorf("stored %s %q", subjects.HeaderMsgID, id)
	}
	if t.Epoch, err = strconv.ParseInt(id[j+1:k], 10, 64); err != nil {
		return t, fmt.Errorf("stored %s %q: %w", subjects.HeaderMsgID, id, err)
	}
	t.Found, t.Event, t.Data = true, hd.Get(subjects.HeaderEvent), data
	return t, nil
}

// plan decides where this process publishes from (ha.Plan) over its
// ring's entries since the event session's login, and holds the entries
// above that point (ring.holdFor) until the publisher has them: the plan
// runs under the ring's lock, so none can be evicted in between. The
// standby's publisher acknowledges nothing from here on (keep, and a
// wait for it to stand still), so nothing moves the mark up again before
// the publisher starts from the plan.
func (h *haNode) plan(ctx context.Context, tail ha.Tail, v ha.Value) ha.Decision {
	if !h.keep.Swap(true) {
		h.mu.Lock()
		h.own = ha.Own{} // not kept since it was acknowledged
		h.mu.Unlock()
	}
	q := make(chan struct{})
	h.mu.Lock()
	h.quiet = q
	h.mu.Unlock()
	h.kickPub()
	t := time.NewTimer(h.opts.LeaseTTL / 4)
	select {
	case <-q:
	case <-t.C:
		h.log.Warn("HA: the publisher did not stand still before the takeover's plan")
	}
	t.Stop()
	h.mu.Lock()
	boundary, own, mark := h.boundary, h.own, h.mark
	if h.markRun != v.Run || v.Run == 0 { // a mark holds only within its run
		mark = ha.Mark{}
	}
	h.mu.Unlock()
	newEpoch := max(time.Now().UnixMilli(), v.Epoch+1)
	var (
		d        ha.Decision
		back     []ha.Stored
		readBack bool
	)
	behind := time.Now().Add(h.opts.LeaseTTL / 4)
	for try := 0; ; try++ {
		in := ha.Input{Tail: tail, Own: own, Mark: mark, Back: back, Limit: v.Limit, NewEpoch: newEpoch}
		h.p.ring.holdFor(boundary, func(entries ringView) uint64 {
			in.Ring, in.Newest = entries, max(boundary, h.p.lastSeq.Load())
			d = ha.Plan(in)
			if d.Behind {
				return h.p.ring.ackSeq // unchanged: planned again below
			}
			return d.After
		})
		h.log.Debug("HA: plan", "tail_seq", tail.Seq, "tail_epoch", tail.Epoch, "mark", mark, "own", own, "boundary", boundary, "decision", d)
		if d.Behind {
			// The old active read further than this process has yet: wait
			// for the reader, a little.
			if time.Now().Before(behind) && !h.closing.Load() {
				time.Sleep(planRetryWait)
				continue
			}
			h.log.Warn("HA: this process has not read the stream's last event yet; planning without the mark")
			mark = ha.Mark{}
			continue
		}
		if d.Gap == nil || d.Matched || h.closing.Load() {
			return d
		}
		// The stream's last events may prove the place of a process that
		// read few events before the tail (ha.Overlap), and say which of
		// its entries the stream may hold.
		if !readBack && d.Replay > 0 {
			readBack = true
			var err error
			if back, err = h.readBack(ctx, tail); err != nil {
				h.log.Warn("HA: cannot read the stream back to line up", "error", err)
			}
			if back != nil {
				continue
			}
		}
		// This process's reader may not have read the tail's event yet:
		// it reads its own session, a little behind the old active's at
		// times. A gap is final only once it had a moment to.
		if try >= planRetries {
			return d
		}
		time.Sleep(planRetryWait)
	}
}

// readBackWindow is how many of the stream's messages up to its tail an
// unproven takeover reads back: the PBX's among them are what the ring's
// oldest entries are lined up with (ha.Overlap, and what the stream may
// hold of them). Beyond W entries the chain decides.
const readBackWindow = 4 * ha.W

// readBack returns the stream's events of this PBX among the last
// readBackWindow messages up to the tail, oldest first; nil when there
// are W or fewer of them while the stream holds older messages (other
// PBXes' events in between): too few to decide by.
func (h *haNode) readBack(ctx context.Context, tail ha.Tail) ([]ha.Stored, error) {
	if tail.StreamSeq == 0 {
		return nil, nil
	}
	ns, filter := h.p.ns, subjects.ServerEvents(h.p.ns.prefix, h.p.name)
	s, err := ns.js.Stream(ctx, ns.jsOpts.Stream)
	if err != nil {
		return nil, err
	}
	from := max(tail.StreamSeq, readBackWindow) - readBackWindow + 1
	var back []ha.Stored
	for seq := from; seq <= tail.StreamSeq; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		if m.Sequence > tail.StreamSeq {
			break
		}
		back = append(back, ha.Stored{Event: m.Header.Get(subjects.HeaderEvent), Data: m.Data})
		seq = m.Sequence + 1
	}
	if len(back) <= ha.W && from > s.CachedInfo().State.FirstSeq {
		return nil, nil
	}
	return back, nil
}

// A plan that finds a gap is made again planRetries times, planRetryWait
// apart.
const (
	planRetries   = 5
	planRetryWait = 20 * time.Millisecond
)

// sessionEnded records that the event session's login ended after local
// seq last: a plan never continues from an event up to it, since the
// events the PBX sent before the next login are missing after it. It is called once the session's reader has stopped.
func (h *haNode) sessionEnded(last uint64) {
	h.mu.Lock()
	h.boundary = last
	if h.active.Load() {
		h.ended.Store(true)
	}
	h.own.Valid = false // see acked
	// A mark holds for the login that read it.
	h.mark, h.pending, h.answer, h.read, h.seen = ha.Mark{}, "", nil, false, nil
	h.mu.Unlock()
	h.kick()
}

// counts returns what Stats reports of HA.
func (h *haNode) counts() (active bool, takeovers, gaps uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.active.Load(), h.takeovers, h.gapsTotal
}

// published returns the PBX's Nats-Msg-Id epoch and the last Ami-Seq
// this process published and had acknowledged, as of its last time
// active; zeros before it ever was.
func (h *haNode) published() (epoch int64, seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.epoch, h.own.Seq
}

// stopPublishing ends the active role without giving the key up: the
// publisher sends nothing new and closes the returned channel once what
// it sent is settled.
func (h *haNode) stopPublishing() <-chan struct{} {
	q := make(chan struct{})
	h.mu.Lock()
	h.quiet = q
	h.active.Store(false)
	h.mu.Unlock()
	h.kickPub()
	return q
}

// pubQuiet is the publisher's word that it stands still with nothing in
// flight.
func (h *haNode) pubQuiet() {
	h.mu.Lock()
	if h.quiet != nil {
		close(h.quiet)
		h.quiet = nil
	}
	h.mu.Unlock()
}

// releaseAfterAcks stops the publisher, waits (at most a lease TTL) for
// the acks of what it sent, and releases the lease: a standby goes on
// from the last event the stream stored, with no repeat.
func (h *haNode) releaseAfterAcks(ctx context.Context, why string) {
	if !h.active.Load() {
		return
	}
	q := h.stopPublishing()
	t := time.NewTimer(h.opts.LeaseTTL)
	defer t.Stop()
	// The lease is renewed while the acks come, so that it cannot expire
	// under publishes still in flight.
	tick := time.NewTicker(h.opts.CheckpointInterval)
	defer tick.Stop()
	settled := false
wait:
	for {
		select {
		case <-q:
			settled = true
			break wait
		case <-tick.C:
			h.renew(ctx)
		case <-t.C:
			h.log.Warn("HA: publishes still unacknowledged at the handover; the next active sends them again")
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	h.release(context.WithoutCancel(ctx), why, settled)
}

// handover is Shutdown's part: contend no more, and hand the lease over
// if this process holds it.
func (h *haNode) handover(ctx context.Context) {
	h.closing.Store(true)
	h.releaseAfterAcks(ctx, "shutdown")
}

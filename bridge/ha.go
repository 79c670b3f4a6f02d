package bridge

// High availability: two or more bridges per PBX, one publishing.
//
// With HAOptions.Enabled, every process that has a PBX in its servers logs
// its event session in and keeps reading, but only one process per PBX,
// the active, publishes that PBX's events. The others are hot standbys.
// Actions are not concerned: every process whose action sessions are up
// serves them in the queue group, as without HA.
//
// # Lease
//
// The active holds the PBX's key (its name) in a NATS KV bucket through
// package lease: Create with a per-key TTL to take it, a compare-and-set
// write with a fresh TTL to renew it, a delete at the holder's revision to
// release it. There is no consensus of our own: the bucket's stream orders
// the writes. A standby contends when it starts, at once whenever the
// key's Watch shows it deleted or expired, and every quarter lease TTL in
// case the watch missed it; it contends only while its event session is
// logged in, since an active without its AMI session has nothing to
// publish.
//
// # One stream, numbered the same everywhere
//
// Asterisk sends every session of a user the same bytes of a broadcast
// event in the same order (capture 18), except what belongs to one session:
// the FullyBooted at its own login and the SuccessfulAuth of every login
// after its own. With HA on those session events (sessionOnly) are left out
// of the stream before numbering: they take no Ami-Seq and are not
// published, so that every process sees the same numbered sequence. A
// consumer that needs logins sees them in the security log of Asterisk,
// not on NATS.
//
// Each process numbers its events with its own counter (local seq, the
// ring's Ami-Seq). The active publishes local seq + offset: zero for the
// first active ever, and for a process that took over, the offset that
// gives the event matched in its ring the Ami-Seq the old active gave it.
// The Nats-Msg-Id epoch belongs to the PBX, not to a process: the first
// active picks it (its start time), the checkpoint carries it, and every
// later active keeps it. A JetStream stream therefore deduplicates the
// events a new active publishes again.
//
// # Checkpoints
//
// The active renews its lease every CheckpointInterval (100 ms by default)
// with a checkpoint as the payload (package lease keeps the last payload
// past the key's expiry): the epoch, the last Ami-Seq it published and
// that was acknowledged, and the fingerprints of the events up to it. A
// fingerprint is the FNV-1a hash of an event's fields in wire order,
// ActionID left out: the event session of each process gives a request's
// ActionID back to its own requester (OriginateResponse), so that field
// alone differs between processes.
//
// One fingerprint would match an identical event at the wrong place, and
// so would a run of eight: Asterisk sends runs of identical events (ten
// equal DeviceStateChange in a row in capture 18). So the checkpoint
// carries the events back to the FingerprintRun-th change of fingerprint,
// run-length encoded as [fingerprint, count] pairs: the newest run's count
// says where in a run of equal events the checkpoint is, and the older
// runs reach back to events that name a channel or a call, which do not
// repeat.
//
// # Takeover
//
// A standby that acquires the key reads the last checkpoint and looks for
// its run in its ring, newest occurrence first. Found at local seq L, it
// sets offset = checkpoint seq − L and publishes from L+1: the events the
// old active published after its checkpoint go out again under the same
// Ami-Seq and Nats-Msg-Id (JetStream drops them in its dedupe window; a
// core NATS subscriber may see an Ami-Seq twice, never a gap), then the
// events it never published.
//
// A process that lost the lease and takes it back while the last
// checkpoint is still its own (written under its lease's token, and no
// other holder seen since) needs no fingerprints: nobody published since,
// since an active writes a checkpoint before it may publish. It goes on
// from its ring's acknowledged mark under its own numbers (resume).
//
// When the ring does not reach back to the checkpoint (the standby was
// down too, or logged in after it), the events between are lost. The old
// active may have published past its checkpoint, up to the checkpoint's
// limit: the highest Ami-Seq it may publish until its next renewal,
// granted with each renewal (seqBudget above its newest event) and
// enforced by its publisher. So the new active numbers its oldest
// buffered event limit+2, never reusing a number or a Nats-Msg-Id, and
// reports the gap checkpoint+1 to limit+1 in its status (Status.HA.Gaps)
// and in the ha_gaps_total metric. It never hides one.
//
// A standby's publisher acknowledges every event as the ring takes it, so
// the ring holds the newest events for a takeover, up to the ring's own
// bounds (EventBuffer, EventBufferBytes), evicting the oldest rather than
// refusing one. An active that loses its lease (NATS lost, a renewal too
// late) acknowledges nothing: its ring keeps what it has not published,
// and refuses and counts new events when full, as without HA, until it is
// active again or sees another process hold the lease. Losing the lease
// is not an ack. The events read before the event session's last login
// are never lined up with a checkpoint: the login lost what came between.
//
// Numbering agrees between processes as long as neither ring dropped an
// event between the checkpoint and the takeover (a ring drops only when
// NATS is too slow for its bounds). After a takeover, an OriginateResponse
// of a request sent through another process carries the bridge's own
// ActionID rather than the requester's.
//
// # Fencing
//
// The publisher asks mayPublish before each batch, and fenced before each
// message it hands to NATS (an atomic load and a monotonic clock read, no
// lock, no I/O). Both hold only while the lease is Valid: lease.Lease
// counts its deadline on the monotonic clock from the sending of its last
// successful renewal, less a guard, so an active that cannot renew (NATS
// lost, process frozen) stops before the server can expire its key and a
// standby take it. A message already handed to NATS when the process
// froze is the one thing fencing cannot stop; it carries the same
// Nats-Msg-Id the new active uses, so the stream drops it.
//
// # Giving the lease up
//
// The active releases the lease, with a final checkpoint, when its event
// session drops (a standby with its session up then publishes what this
// one cannot read) and on Shutdown. Shutdown's order is: stop taking
// actions; stop the publisher after its current batch and wait for its
// acks; write the final checkpoint (the last published event) and release
// the key, at which point a standby takes over with no repeat and no gap;
// then drain, log off and close NATS as without HA. A standby that gets
// SIGTERM only stops contending.
//
// # Goroutines
//
// Per PBX, the HA loop (haNode.run) is started and waited for by pbx.run
// and ends with the run context; its lease watch is started and waited
// for by the HA loop. The publisher is the PBX's own, which asks the HA
// node before each batch.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/lease"
)

// HAOptions make several bridges share each PBX: one publishes its
// events, the others stand by. They need JetStream for the lease bucket.
type HAOptions struct {
	Enabled bool
	// Bucket is the KV bucket of the leases and checkpoints, default
	// DefaultHABucket.
	Bucket string
	// LeaseTTL is how long a lease lives after its last renewal, default
	// 2s: a takeover after a crash comes within about that.
	LeaseTTL time.Duration
	// CheckpointInterval is how often the active renews with a checkpoint,
	// default 100ms; at most LeaseTTL/4 so that a lost renewal or two does
	// not end the lease.
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

// FingerprintRun is how many runs of identical events a checkpoint's
// fingerprints cover.
const FingerprintRun = 8

// The roles of a PBX with HA, as HAStatus.Role reports them.
const (
	RoleActive  = "active"
	RoleStandby = "standby"
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

// FNV-1a, 64 bits.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// fingerprint identifies an event across the sessions of one AMI user:
// its fields in order, ActionID left out (see the package notes above).
func fingerprint(m *amiproto.Message) uint64 {
	h := uint64(fnvOffset)
	for i := range m.Len() {
		f := m.Field(i)
		if len(f.Key) == len("ActionID") && equalFoldASCII(f.Key, "ActionID") {
			continue
		}
		h = fnvString(h, f.Key)
		h = fnvString(h, ":")
		h = fnvString(h, f.Value)
		h = fnvString(h, "\n")
	}
	return h
}

func equalFoldASCII(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// checkpoint is the active's payload in the lease.
type checkpoint struct {
	Epoch int64     `json:"epoch"` // of Nats-Msg-Id; the PBX keeps it across takeovers
	Seq   uint64    `json:"seq"`   // the last Ami-Seq published and acknowledged; 0 before the first
	Run   []segment `json:"run"`   // [fingerprint, count] of the events up to Seq, oldest first
	// Limit is the highest Ami-Seq the holder may publish until its next
	// renewal. A new active that cannot line up with Seq starts above it,
	// so that it never reuses a number (and Nats-Msg-Id) the old one gave.
	Limit uint64 `json:"limit"`
	Final bool   `json:"final,omitempty"`
}

// align returns the index in fps (oldest first) of the last event of the
// newest occurrence of run, or -1.
func align(fps, run []uint64) int {
	if len(run) == 0 {
		return -1
	}
	for end := len(fps) - 1; end >= len(run)-1; end-- {
		ok := true
		for k := range run {
			if fps[end-len(run)+1+k] != run[k] {
				ok = false
				break
			}
		}
		if ok {
			return end
		}
	}
	return -1
}

// segment is a run of identical events: their fingerprint and how many.
type segment = [2]uint64

// runBuf is the fingerprints of the last events acknowledged, for the
// next checkpoint: the last FingerprintRun segments.
type runBuf struct {
	segs [FingerprintRun]segment // circular
	n    int                     // how many of segs are set
	next int                     // where the next one goes
	seq  uint64                  // Ami-Seq of the newest event, as published
}

func (r *runBuf) add(seq, fp uint64) {
	r.seq = seq
	if r.n > 0 {
		if last := &r.segs[(r.next+FingerprintRun-1)%FingerprintRun]; last[0] == fp {
			last[1]++
			return
		}
	}
	r.segs[r.next] = segment{fp, 1}
	r.next = (r.next + 1) % FingerprintRun
	r.n = min(r.n+1, FingerprintRun)
}

// seed starts the buffer over with a checkpoint's run, ending at seq.
func (r *runBuf) seed(seq uint64, run []segment) {
	*r = runBuf{seq: seq}
	for _, sg := range run[max(0, len(run)-FingerprintRun):] {
		r.segs[r.next] = sg
		r.next = (r.next + 1) % FingerprintRun
		r.n++
	}
}

// run returns the segments, oldest first.
func (r *runBuf) run() []segment {
	out := make([]segment, 0, r.n)
	for i := range r.n {
		out = append(out, r.segs[(r.next-r.n+i+FingerprintRun)%FingerprintRun])
	}
	return out
}

// expand returns the fingerprints of run event by event, oldest first, or
// nil when they are more than limit (a buffer that short cannot hold
// them).
func expand(run []segment, limit int) []uint64 {
	var total uint64
	for _, sg := range run {
		total += sg[1]
	}
	if total > uint64(limit) {
		return nil
	}
	out := make([]uint64, 0, total)
	for _, sg := range run {
		for range sg[1] {
			out = append(out, sg[0])
		}
	}
	return out
}

// HAStatus is the HA part of a PBX's status.
type HAStatus struct {
	Role   string `json:"role"`   // active or standby
	Self   string `json:"self"`   // this process's holder name
	Holder string `json:"holder"` // who holds the lease, as last seen; "" when nobody
	// LastTakeover is this process's last takeover, nil before one.
	LastTakeover *Takeover `json:"last_takeover,omitempty"`
	// Gaps are the Ami-Seq ranges this process found lost at a takeover.
	Gaps []Gap `json:"gaps,omitempty"`
	// Takeovers counts the times this process became active.
	Takeovers uint64 `json:"takeovers"`
}

// Takeover describes one time a process became active.
type Takeover struct {
	At       time.Time `json:"at"`
	From     uint64    `json:"from_seq"` // the first Ami-Seq it published
	Replayed int       `json:"replayed"` // events from its buffer published at once, the repeats included
	Matched  bool      `json:"matched"`  // the checkpoint was found in its buffer; false after a gap or for the first active
}

// Gap is a range of Ami-Seq found at a takeover that could not line up
// with the last checkpoint. The old active may have published some of its
// numbers (the stream has those); the numbers the stream lacks, and the
// events read by nobody, are lost. Its last number is never used.
type Gap struct {
	From uint64    `json:"from_seq"`
	To   uint64    `json:"to_seq"` // inclusive
	At   time.Time `json:"at"`
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
	// keep is set when the lease is lost while active: the ring keeps
	// what was not published (no ack) until this process is active again
	// or sees another hold the lease. Set before active is cleared.
	keep atomic.Bool

	mu        sync.Mutex // guards the fields below
	lease     *lease.Lease
	token     string // of the last lease this process held
	holder    string
	epoch     int64
	offset    int64         // Ami-Seq published = local seq + offset
	after     uint64        // local seq the publisher starts after, for gen
	gen       uint64        // counts takeovers, for the publisher to notice one
	limit     uint64        // the highest Ami-Seq the last successful renewal allows
	boundary  uint64        // local seq of the last event of the event session's previous login
	recent    runBuf        // the fingerprints of the last events acknowledged
	quiet     chan struct{} // closed by the publisher once it stands still; see stopPublishing
	last      *Takeover
	gaps      []Gap
	takeovers uint64
	gapsTotal uint64
}

func newHANode(p *pbx, opts HAOptions) *haNode {
	return &haNode{p: p, opts: opts, log: p.log, wake: make(chan struct{}, 1), pubWake: make(chan struct{}, 1)}
}

// kick asks the loop to look again at once.
func (h *haNode) kick() { signal(h.wake) }

// kickPub asks the publisher to look at its terms again at once.
func (h *haNode) kickPub() { signal(h.pubWake) }

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
	if h.lease == nil || !h.lease.Valid() {
		return pubTerms{}, false
	}
	return pubTerms{offset: h.offset, epoch: h.epoch, gen: h.gen, after: h.after, limit: h.limit, lease: h.lease}, true
}

// fenced reports whether the publisher must hand nothing more to NATS
// under terms: it checks before every message, so that a process frozen
// or cut off in the middle of a batch stops there. No lock: an atomic
// load or two and a monotonic clock read.
func (h *haNode) fenced(terms *pubTerms) bool {
	return !h.active.Load() || !terms.lease.Valid()
}

// mayAck reports whether a publisher standing by may acknowledge what
// its ring holds: only as a standby that owes the stream nothing.
func (h *haNode) mayAck() bool {
	return !h.active.Load() && !h.keep.Load()
}

// acked records an event the publisher has published and NATS
// acknowledged, by its Ami-Seq as published.
func (h *haNode) acked(seq, fp uint64) {
	h.mu.Lock()
	h.recent.add(seq, fp)
	h.mu.Unlock()
}

// checkpointLocked returns the checkpoint of what was acknowledged, with
// the limit the renewal that writes it grants. h.mu is held.
func (h *haNode) checkpointLocked(final bool, limit uint64) []byte {
	c := checkpoint{Epoch: h.epoch, Seq: h.recent.seq, Run: h.recent.run(), Final: final, Limit: limit}
	data, _ := json.Marshal(c) // plain numbers: cannot fail
	return data
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
func (h *haNode) status() *HAStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := &HAStatus{Role: RoleStandby, Self: h.opts.Holder, Holder: h.holder, Takeovers: h.takeovers, Gaps: append([]Gap(nil), h.gaps...)}
	if h.active.Load() {
		st.Role = RoleActive
	}
	if h.last != nil {
		t := *h.last
		st.LastTakeover = &t
	}
	return st
}

// readCheckpoint decodes the last checkpoint of the PBX; nil when there
// is none.
func readCheckpoint(data []byte) (*checkpoint, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var c checkpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("ha: checkpoint: %w", err)
	}
	return &c, nil
}

// watch wakes the loop whenever the key changes, until ctx ends; a watch
// that fails is started again after a pause.
func (h *haNode) watch(ctx context.Context) {
	for {
		err := h.bucket.Watch(ctx, h.p.name, func(held bool) {
			if !held {
				h.kick()
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

// renew writes a checkpoint with the lease renewal; it steps down when
// the lease is lost or no longer certainly valid.
func (h *haNode) renew(ctx context.Context) {
	h.mu.Lock()
	limit := h.nextLimitLocked()
	l, data := h.lease, h.checkpointLocked(false, limit)
	h.mu.Unlock()
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.LeaseTTL/2)
	defer cancel()
	err := l.Renew(ctx, data)
	if err == nil {
		h.mu.Lock()
		if h.lease == l {
			h.limit = max(h.limit, limit)
		}
		h.mu.Unlock()
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

// release gives the key up with a final checkpoint of what was
// acknowledged, so that a standby takes over at once. The caller has
// stopped the publisher and waited for its acks.
func (h *haNode) release(ctx context.Context, why string) {
	h.mu.Lock()
	l, data := h.lease, h.checkpointLocked(true, h.nextLimitLocked())
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
	h.log.Info("HA: lease released", "why", why, "checkpoint", json.RawMessage(data))
	h.p.publishStatus()
}

// run is the HA loop of one PBX: it contends for the lease while this
// process is standby with its event session up, renews it with a
// checkpoint while active, and gives it up when the event session drops.
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
			contend = time.Time{}
		case <-t.C:
		}
		switch {
		case h.closing.Load():
		case h.active.Load() && !h.p.eventsUp():
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
			// Another process is active: it publishes from the last
			// checkpoint, so what this ring kept is the standby's again.
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
	// The checkpoint is read once the key is ours: nobody can write a
	// newer one any more.
	st, err := h.bucket.Get(ctx, h.p.name)
	var ck *checkpoint
	if err == nil {
		ck, err = readCheckpoint(st.Data)
	}
	if err != nil {
		h.log.Warn("HA: cannot read the last checkpoint; giving the lease back", "error", err)
		if rerr := l.Release(ctx, nil); rerr != nil {
			h.log.Debug("HA: release", "error", rerr)
		}
		return
	}
	if h.closing.Load() { // Shutdown began meanwhile
		if err := l.Release(ctx, nil); err != nil {
			h.log.Debug("HA: release", "error", err)
		}
		return
	}
	// Back after losing the lease, with the last checkpoint still its
	// own: nobody published since (an active writes its checkpoint
	// before it may publish), so this process goes on from what its
	// ring had acknowledged, with its own numbers.
	h.mu.Lock()
	own := h.keep.Load() && ck != nil && h.token != "" && st.DataToken == h.token && ck.Epoch == h.epoch
	h.mu.Unlock()
	var pl takeoverPlan
	if own {
		pl = h.resume()
	} else {
		pl = h.plan(ck)
	}
	h.mu.Lock()
	h.lease, h.holder, h.token = l, h.opts.Holder, l.Token()
	h.epoch, h.offset, h.after = pl.epoch, pl.offset, pl.after
	h.gen++
	h.limit = 0 // nothing until the first renewal
	if !own {
		h.recent = runBuf{}
		if ck != nil {
			h.recent.seed(ck.Seq, ck.Run)
		}
	}
	h.takeovers++
	h.keep.Store(false) // active again: the publisher goes on from the plan
	h.last = &Takeover{At: time.Now().UTC(), From: uint64(int64(pl.after) + pl.offset + 1), Replayed: pl.replay, Matched: pl.matched}
	if pl.gap != nil {
		h.gapsTotal++
		h.gaps = append(h.gaps, *pl.gap)
		if len(h.gaps) > maxGaps {
			h.gaps = h.gaps[len(h.gaps)-maxGaps:]
		}
	}
	h.active.Store(true)
	h.mu.Unlock()
	h.kickPub()
	level, attrs := slog.LevelInfo, []any{"from_seq", h.last.From, "replayed", pl.replay, "matched", pl.matched, "epoch", pl.epoch}
	if pl.gap != nil {
		level, attrs = slog.LevelError, append(attrs, "gap_from", pl.gap.From, "gap_to", pl.gap.To)
	}
	h.log.Log(context.Background(), level, "HA: took over as the active bridge of this PBX", attrs...)
	h.p.publishStatus()
	h.renew(ctx) // the checkpoint now carries this process's epoch
}

// takeoverPlan is where a new active starts.
type takeoverPlan struct {
	epoch   int64
	offset  int64  // Ami-Seq = local seq + offset
	after   uint64 // local seq: publish the ring's entries above it
	replay  int    // entries held above after
	matched bool
	gap     *Gap
}

// resume is the plan of a process that lost the lease and takes it back
// with nobody having held it between: it publishes from its ring's
// acknowledged mark under the same numbers. The ring kept those entries
// (keep), so nothing is replayed twice and nothing skipped.
func (h *haNode) resume() takeoverPlan {
	after := h.p.ring.acked()
	h.mu.Lock()
	defer h.mu.Unlock()
	return takeoverPlan{epoch: h.epoch, offset: h.offset, after: after, replay: h.p.ring.usage().pending, matched: true}
}

// plan lines the ring up with ck (nil for the first active ever).
func (h *haNode) plan(ck *checkpoint) takeoverPlan {
	h.mu.Lock()
	boundary := h.boundary
	h.mu.Unlock()
	seqs, fps := h.p.ring.fingerprints(boundary)
	pl := takeoverPlan{epoch: h.p.ns.epoch, after: boundary}
	if len(seqs) > 0 {
		pl.after = seqs[0] - 1
	}
	switch {
	case ck == nil:
		// The first active: its ring is the stream from its first event.
		pl.offset = 0
	case ck.Seq == 0:
		// The PBX's stream has not begun: the previous active published
		// nothing.
		pl.epoch = ck.Epoch
		pl.offset = -int64(pl.after)
	default:
		pl.epoch = ck.Epoch
		if i := align(fps, expand(ck.Run, len(fps))); i >= 0 {
			pl.after, pl.matched = seqs[i], true
			pl.offset = int64(ck.Seq) - int64(seqs[i])
			pl.replay = len(seqs) - 1 - i
			return pl
		}
		// The ring does not reach back to the checkpoint: whatever came
		// between is lost. The old active may have published up to its
		// limit; the numbers above the checkpoint up to limit+1 are the
		// gap, limit+1 is never used, and the oldest entry held becomes
		// limit+2.
		top := max(ck.Limit, ck.Seq)
		pl.offset = int64(top) + 1 - int64(pl.after)
		pl.gap = &Gap{From: ck.Seq + 1, To: top + 1, At: time.Now().UTC()}
	}
	pl.replay = len(seqs)
	return pl
}

// sessionEnded records that the event session's login ended after local
// seq last: the events up to it cannot be lined up with a checkpoint
// taken after. It is called once the session's reader has stopped.
func (h *haNode) sessionEnded(last uint64) {
	h.mu.Lock()
	h.boundary = last
	h.mu.Unlock()
	h.kick()
}

// fingerprints returns the local seqs and fingerprints of the entries
// above seq, oldest first. The hashing happens outside the ring's lock,
// which the event reader needs.
func (r *ring) fingerprints(after uint64) (seqs, fps []uint64) {
	buf := make([]ringEntry, 0, 1024)
	for {
		var closed bool
		buf, closed = r.readAfter(after, buf[:0])
		for i := range buf {
			seqs = append(seqs, buf[i].seq)
			fps = append(fps, fingerprint(&buf[i].msg))
		}
		if len(buf) < cap(buf) || closed {
			return seqs, fps
		}
		after = buf[len(buf)-1].seq
	}
}

// isClosed reports whether the ring takes no more appends.
func (r *ring) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// unack moves the acknowledged mark back to seq, so that a new active's
// replay cannot be evicted before it is published. A standby acknowledges
// everything it reads; this undoes that for what it will now publish.
func (r *ring) unack(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ackSeq = seq
	r.ackPos = r.pos(seq)
	r.unacked = 0
	for p := r.ackPos; p < r.next; p++ {
		r.unacked += r.buf[p&uint64(len(r.buf)-1)].msg.Size()
	}
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
	return h.epoch, h.recent.seq
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
// the acks of what it sent, and releases the lease with a checkpoint of
// the last event acknowledged: a standby goes on from the next one, with
// no repeat.
func (h *haNode) releaseAfterAcks(ctx context.Context, why string) {
	if !h.active.Load() {
		return
	}
	q := h.stopPublishing()
	t := time.NewTimer(h.opts.LeaseTTL)
	defer t.Stop()
	select {
	case <-q:
	case <-t.C:
		h.log.Warn("HA: publishes still unacknowledged at the handover; the next active sends them again")
	case <-ctx.Done():
	}
	h.release(context.WithoutCancel(ctx), why)
}

// handover is Shutdown's part: contend no more, and hand the lease over
// if this process holds it.
func (h *haNode) handover(ctx context.Context) {
	h.closing.Store(true)
	h.releaseAfterAcks(ctx, "shutdown")
}

// standBy is the publisher's turn while it may not publish: as a standby
// (idle true) it acknowledges whatever the ring holds, unless the lease was
// lost with events unpublished (mayAck), so the ring keeps the newest
// events within its own bounds, and waits for a change of role; waiting
// for a renewal's limit, it only waits. It returns false when the ring is
// closed.
func (p *publisher) standBy(h *haNode, idle bool) bool {
	r := p.p.ring
	if idle {
		if n := r.newest(); n > 0 && h.mayAck() {
			r.ack(n)
		}
		h.pubQuiet()
	}
	if r.isClosed() {
		return false
	}
	t := time.NewTimer(h.opts.CheckpointInterval)
	defer t.Stop()
	select {
	case <-h.pubWake:
	case <-t.C:
	case <-p.p.life.hard.Done():
		return false
	}
	return true
}

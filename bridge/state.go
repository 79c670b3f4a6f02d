package bridge

// Live call state: per PBX, a callstate.Model fed by the event reader
// and reconciled with the PBX's lists after every login of the event
// session; a writer goroutine copies its changes to a JetStream KV bucket
// and publishes the records of finished calls. docs/callstate.md is the
// reader's side.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/bridge/internal/callstate"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// StateOptions keep each PBX's live state (channels, bridges, queues,
// device states, calls in progress) in a JetStream KV bucket, and publish
// one record per finished call. They need JetStream on the NATS server,
// not JetStreamOptions: without them the records go out on core NATS.
type StateOptions struct {
	Enabled bool
	// Bucket is the KV bucket, default DefaultStateBucket; created if
	// missing, with Replicas replicas (default 1).
	Bucket   string
	Replicas int
	// Records publishes each finished call's subjects.CallRecord on
	// subjects.CallRecordSubject, with JetStream (into the event stream,
	// which then takes <prefix>.*.call.> too) when JetStreamOptions are
	// enabled.
	Records bool
	// FlushInterval is how often the writer copies the changes to the
	// bucket, default 50ms: a key that changes many times within it is
	// written once.
	FlushInterval time.Duration
}

// Defaults of the zero values in StateOptions.
const (
	DefaultStateBucket        = "AMI_STATE"
	DefaultStateFlushInterval = 50 * time.Millisecond
)

// validBucket is what the server takes as a KV bucket name (nats.go
// checks the same).
var validBucket = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// checkState fills the zero values of o and adds its problems.
func checkState(ps *problems, o *StateOptions) {
	if o.Bucket == "" {
		o.Bucket = DefaultStateBucket
	}
	if !validBucket.MatchString(o.Bucket) {
		ps.add("State.Bucket", "%q: a KV bucket name is [A-Za-z0-9_-]+", o.Bucket)
	}
	if o.Replicas == 0 {
		o.Replicas = DefaultReplicas
	}
	if o.Replicas < 0 || o.Replicas > maxReplicas {
		ps.add("State.Replicas", "%d: want 1 to %d", o.Replicas, maxReplicas)
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = DefaultStateFlushInterval
	}
	if o.FlushInterval < 0 {
		ps.add("State.FlushInterval", "must be positive")
	}
}

const (
	// maxHeldRecords bounds the finished records the writer holds: a
	// standby's (published at its takeover if the active did not), or
	// those NATS refused. Past it the oldest go, and are counted.
	maxHeldRecords = 10000
	// stateOpTimeout bounds one KV or publish round trip of the writer.
	stateOpTimeout = 2 * time.Second
	// stateMarkerTTL is how long the bucket keeps the marker of a deleted
	// key, so that deleted channels and calls do not pile up in it.
	stateMarkerTTL = time.Minute
)

// stateKinds are the kinds counted in StateStats, in a fixed order.
var stateKinds = [...]string{subjects.KindChannels, subjects.KindBridges, subjects.KindQueues, subjects.KindDevices, subjects.KindCalls}

func kindIndex(kind string) int {
	for i, k := range stateKinds {
		if k == kind {
			return i
		}
	}
	return -1
}

// stateNode is one PBX's live state and its writer.
type stateNode struct {
	p     *pbx
	opts  StateOptions
	model *callstate.Model
	log   *slog.Logger

	stop chan struct{} // closed by pbx.run once the event reader has stopped: a last flush, then the writer ends

	// synced is set by the first reconciliation: the writer writes
	// nothing before, as the model then misses what the PBX had before
	// this process logged in (and Adopt would close those calls).
	synced atomic.Bool

	refusedMu sync.Mutex
	refused   map[string]bool // list actions refused, logged once each

	reconciliations atomic.Uint64
	added, removed  [len(stateKinds)]atomic.Uint64
	closedUnseen    atomic.Uint64
	published       atomic.Uint64
	recordsLost     atomic.Uint64
	writeErrors     atomic.Uint64
	writes          atomic.Uint64

	// The writer's own: only its goroutine touches them.
	kv       jetstream.KeyValue
	ttl      bool                  // the bucket takes per-message TTLs: deletes are purges whose markers expire
	writer   bool                  // the last tick wrote: this process is the PBX's writer
	resync   bool                  // a full write is due: a write failed, or this process just became the writer
	held     []subjects.CallRecord // finished, not yet published
	errLog   rateLimit
	lastSync time.Time
}

func newStateNode(p *pbx, o StateOptions) *stateNode {
	return &stateNode{p: p, opts: o, model: callstate.New(p.name), log: p.log, stop: make(chan struct{}), refused: map[string]bool{}}
}

// reconcile runs after a login of the event session, on c: the lists
// are read on the session that carries the events, so Asterisk writes
// each list between two events, in order, and the model applies the
// events that come meanwhile as they come.
func (s *stateNode) reconcile(ctx context.Context, c *amiproto.Client, version string) {
	sy := s.model.BeginSync()
	l := &callstate.Lists{Version: version}
	l.Channels = s.list(ctx, c, amiproto.NewAction("CoreShowChannels"), subjects.KindChannels)
	if l.Bridges = s.list(ctx, c, amiproto.NewAction("BridgeList"), subjects.KindBridges); len(l.Bridges) > 0 {
		l.BridgeInfo = make(map[string][]*amiproto.Message, len(l.Bridges))
		for _, b := range l.Bridges {
			id := b.Get("BridgeUniqueid")
			if id == "" {
				continue
			}
			if entries := s.list(ctx, c, amiproto.NewAction("BridgeInfo", "BridgeUniqueid", id), "BridgeInfo"); entries != nil {
				l.BridgeInfo[id] = entries
			}
		}
	}
	l.Queues = s.list(ctx, c, amiproto.NewAction("QueueStatus"), subjects.KindQueues)
	l.Devices = s.list(ctx, c, amiproto.NewAction("DeviceStateList"), subjects.KindDevices)
	sum := s.model.EndSync(sy, l, time.Now())
	s.reconciliations.Add(1)
	for k, n := range sum.Added {
		if i := kindIndex(k); i >= 0 {
			s.added[i].Add(uint64(n))
		}
	}
	for k, n := range sum.Removed {
		if i := kindIndex(k); i >= 0 {
			s.removed[i].Add(uint64(n))
		}
	}
	s.closedUnseen.Add(uint64(sum.Closed))
	s.log.Info("state reconciled with the PBX's lists", "added", sum.Added, "removed", sum.Removed, "calls_closed", sum.Closed, "skipped", sum.Skipped)
	s.synced.Store(true)
}

// list runs one list action and returns its entries: never nil when the
// PBX answered, nil when it refused (logged once per action) or the
// session failed.
func (s *stateNode) list(ctx context.Context, c *amiproto.Client, a *amiproto.Message, kind string) []*amiproto.Message {
	ctx, cancel := context.WithTimeout(ctx, s.p.cfg.ActionTimeout)
	defer cancel()
	name := a.Get("Action")
	resp, err := c.Request(ctx, a)
	var refused *amiproto.ResponseError
	switch {
	case errors.As(err, &refused):
		s.refusedMu.Lock()
		first := !s.refused[name]
		s.refused[name] = true
		s.refusedMu.Unlock()
		if first {
			s.log.Warn("the PBX refused a list action: that part of the state is not reconciled (see docs/callstate.md for the manager.conf classes)",
				"action", name, "kind", kind, "error", err)
		}
		return nil
	case err != nil:
		s.log.Debug("list action failed; that part of the state is not reconciled at this login", "action", name, "error", err)
		return nil
	}
	if resp.Events == nil {
		return []*amiproto.Message{}
	}
	return resp.Events
}

// mayWrite reports whether this process writes the PBX's state: always
// without HA, only while active with it.
func (s *stateNode) mayWrite() bool {
	if s.p.ha == nil {
		return true
	}
	_, ok := s.p.ha.mayPublish()
	return ok
}

// loop is the writer: every FlushInterval it copies the model's changes
// to the bucket and publishes the finished calls' records, until stop is
// closed; then it flushes once more and returns.
func (s *stateNode) loop() {
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.tick()
		case <-s.stop:
			s.tick()
			return
		}
	}
}

// tick is one round of the writer.
func (s *stateNode) tick() {
	if !s.synced.Load() {
		return // nothing known yet: the model keeps its changes
	}
	if !s.mayWrite() {
		// A standby keeps the model (it may be the writer next) and the
		// finished records, which the active normally publishes.
		s.writer = false
		s.hold(s.model.Flush(false, func(callstate.Change) {}))
		return
	}
	ctx := s.p.life.hard
	if s.kv == nil {
		if err := s.open(ctx); err != nil {
			s.failed("open the state bucket", err)
			return
		}
	}
	if !s.writer {
		if err := s.takeover(ctx); err != nil {
			s.failed("read the calls in progress from the state bucket", err)
			return
		}
		s.writer, s.resync = true, true
	}
	if s.resync {
		if err := s.full(ctx); err != nil {
			s.failed("write the state", err)
			return
		}
		s.resync = false
	} else {
		var changes []callstate.Change
		recs := s.model.Flush(false, func(c callstate.Change) { changes = append(changes, c) })
		s.hold(recs)
		// A finished call's key goes once its record is published
		// (publishHeld): a crash or takeover before then publishes it
		// again rather than never.
		ending := make(map[string]bool, len(recs))
		for _, r := range recs {
			ending[strings.TrimPrefix(subjects.StateKey(s.p.name, subjects.KindCalls, r.Linkedid), s.p.name+".")] = true
		}
		for _, c := range changes {
			if c.Value == nil && ending[c.Key] {
				continue
			}
			if err := s.write(ctx, s.p.name+"."+c.Key, c.Value); err != nil {
				// What this flush did not write is written by the next
				// full write, from the model: nothing to keep meanwhile.
				s.resync = true
				s.failed("write the state", err)
				return
			}
		}
	}
	s.publishHeld(ctx)
}

func (s *stateNode) failed(what string, err error) {
	s.writeErrors.Add(1)
	if s.errLog.allow(5 * time.Second) {
		s.log.Warn("state writer: could not "+what+"; retrying", "bucket", s.opts.Bucket, "error", err)
	}
}

// hold keeps finished records until they are published, the oldest
// dropped past maxHeldRecords.
func (s *stateNode) hold(recs []subjects.CallRecord) {
	s.held = append(s.held, recs...)
	if over := len(s.held) - maxHeldRecords; over > 0 {
		s.recordsLost.Add(uint64(over))
		s.held = append(s.held[:0], s.held[over:]...)
	}
}

// open finds or creates the bucket.
func (s *stateNode) open(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, stateOpTimeout)
	defer cancel()
	js := s.p.ns.stateJS
	kv, err := js.KeyValue(ctx, s.opts.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         s.opts.Bucket,
			Description:    "live call state written by ami-bridge; see docs/callstate.md",
			History:        1,
			Storage:        jetstream.FileStorage,
			Replicas:       s.opts.Replicas,
			LimitMarkerTTL: stateMarkerTTL,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, s.opts.Bucket) // another process created it meanwhile
		}
	}
	if err != nil {
		return err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return err
	}
	s.kv, s.ttl = kv, st.LimitMarkerTTL() > 0
	return nil
}

// write puts value at key, or deletes key when value is nil.
func (s *stateNode) write(ctx context.Context, key string, value []byte) error {
	if !s.mayWrite() {
		return errNotWriter
	}
	ctx, cancel := context.WithTimeout(ctx, stateOpTimeout)
	defer cancel()
	var err error
	switch {
	case value != nil:
		_, err = s.kv.Put(ctx, key, value)
	case s.ttl:
		err = s.kv.Purge(ctx, key, jetstream.PurgeTTL(stateMarkerTTL))
	default:
		err = s.kv.Delete(ctx, key)
	}
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

var errNotWriter = errors.New("this process is no longer the PBX's writer")

// keys lists the bucket's keys of this PBX under kind ("" for all).
func (s *stateNode) keys(ctx context.Context, kind string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, stateOpTimeout)
	defer cancel()
	filter := s.p.name + ".>"
	if kind != "" {
		filter = s.p.name + "." + kind + ".>"
	}
	l, err := s.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for k := range l.Keys() {
		out[k] = true
	}
	return out, nil
}

// takeover runs when this process becomes the PBX's writer (at start,
// or an HA takeover): the calls in progress in the bucket go to the
// model (their start and parties are what the lists cannot tell), and
// the records this process holds are kept only if their call is still
// in the bucket, i.e. the last writer did not publish them.
func (s *stateNode) takeover(ctx context.Context) error {
	keys, err := s.keys(ctx, subjects.KindCalls)
	if err != nil {
		return err
	}
	held := make(map[string]bool, len(s.held))
	kept := s.held[:0]
	for _, r := range s.held {
		if keys[subjects.StateKey(s.p.name, subjects.KindCalls, r.Linkedid)] {
			kept = append(kept, r)
			held[r.Linkedid] = true
		}
	}
	s.held = kept
	var calls []subjects.CallRecord
	for k := range keys {
		_, _, id, err := subjects.ParseStateKey(k)
		if err != nil || held[id] {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, stateOpTimeout)
		e, err := s.kv.Get(gctx, k)
		cancel()
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		var c subjects.CallRecord
		if json.Unmarshal(e.Value(), &c) == nil {
			calls = append(calls, c)
		}
	}
	s.model.Adopt(calls, time.Now())
	return nil
}

// full writes every live key of the model and deletes the bucket's keys
// of this PBX the model lacks, but the calls of held records, deleted
// once published.
func (s *stateNode) full(ctx context.Context) error {
	live := map[string][]byte{}
	s.hold(s.model.Flush(true, func(c callstate.Change) {
		if c.Value != nil {
			live[s.p.name+"."+c.Key] = c.Value
		}
	}))
	stored, err := s.keys(ctx, "")
	if err != nil {
		return err
	}
	for _, r := range s.held {
		delete(stored, subjects.StateKey(s.p.name, subjects.KindCalls, r.Linkedid))
	}
	for k, v := range live {
		if err := s.write(ctx, k, v); err != nil {
			return err
		}
		delete(stored, k)
	}
	for k := range stored {
		if err := s.write(ctx, k, nil); err != nil {
			return err
		}
	}
	return nil
}

// publishHeld publishes the held records, each followed by the deletion
// of its call's key; what fails stays held for the next tick. The
// Nats-Msg-Id makes JetStream drop a record stored twice (a crash or
// handover between the publish and the deletion).
func (s *stateNode) publishHeld(ctx context.Context) {
	for len(s.held) > 0 {
		r := s.held[0]
		if s.opts.Records {
			if err := s.publish(ctx, r); err != nil {
				s.failed("publish a call record", err)
				return
			}
			s.published.Add(1)
		}
		if err := s.write(ctx, subjects.StateKey(s.p.name, subjects.KindCalls, r.Linkedid), nil); err != nil {
			s.failed("delete a finished call's key", err)
			return
		}
		s.held = s.held[1:]
	}
	s.held = nil // let the array go
}

func (s *stateNode) publish(ctx context.Context, r subjects.CallRecord) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: subjects.CallRecordSubject(s.p.ns.prefix, s.p.name, r.Linkedid), Data: data, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, s.p.name+".call."+r.Linkedid)
	if !s.mayWrite() {
		return errNotWriter
	}
	if s.p.ns.js != nil {
		ctx, cancel := context.WithTimeout(ctx, stateOpTimeout)
		defer cancel()
		_, err = s.p.ns.js.PublishMsg(ctx, m)
		return err
	}
	return s.p.ns.nc.PublishMsg(m)
}

// StateStats are the counters of a PBX's live state (StateOptions).
type StateStats struct {
	Entries         map[string]int    // live entries by kind (subjects.Kind…)
	Reconciliations uint64            // after the event session's logins
	Added, Removed  map[string]uint64 // by the reconciliations, by kind
	ClosedUnseen    uint64            // calls closed without their end seen (by a reconciliation or a takeover)
	Records         uint64            // call records published
	RecordsLost     uint64            // finished records dropped, over the bound the writer holds while NATS is away
	Writes          uint64            // KV puts and deletes done
	WriteErrors     uint64            // failed KV writes and record publishes, each retried
}

func (s *stateNode) stats() *StateStats {
	st := &StateStats{
		Entries:         s.model.Counts(),
		Reconciliations: s.reconciliations.Load(),
		Added:           map[string]uint64{},
		Removed:         map[string]uint64{},
		ClosedUnseen:    s.closedUnseen.Load(),
		Records:         s.published.Load(),
		RecordsLost:     s.recordsLost.Load(),
		Writes:          s.writes.Load(),
		WriteErrors:     s.writeErrors.Load(),
	}
	for i, k := range stateKinds {
		st.Added[k] = s.added[i].Load()
		st.Removed[k] = s.removed[i].Load()
	}
	return st
}

// setupState readies what the writers share: a JetStream context on the
// main connection (the event stream's when JetStream is on). A server
// without JetStream is refused here, since nothing would ever be written.
func (b *Bridge) setupState(ctx context.Context) error {
	js := b.ns.js
	if js == nil {
		var err error
		if js, err = jetstream.New(b.ns.nc); err != nil {
			return fmt.Errorf("bridge: state: %w", err)
		}
	}
	if _, err := js.AccountInfo(ctx); errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("bridge: state needs JetStream on the NATS server (a KV bucket): %w", err)
	}
	b.ns.stateJS = js
	return nil
}

// recordSubjects is the stream subject of the call records, or "" when
// none go into the stream.
func recordSubjects(prefix string, o StateOptions) string {
	if !o.Enabled || !o.Records {
		return ""
	}
	return strings.Join([]string{prefix, "*", "call", ">"}, ".")
}

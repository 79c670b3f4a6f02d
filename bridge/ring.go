package bridge

import (
	"bytes"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// DefaultEventBufferBytes is the default bound, in bytes of AMI text, of
// a PBX's event buffer.
const DefaultEventBufferBytes = 32 << 20

// ringMinLen is the ring's first allocation: an idle PBX holds no more.
const ringMinLen = 8

// The events' bytes are copied into chunks: one allocation for many
// events, none of them holding a pointer. A chunk starts at
// ringMinChunk and doubles up to ringMaxChunk, so an idle PBX holds
// little; a chunk is freed when the last event in it is evicted.
const (
	ringMinChunk = 1 << 10
	ringMaxChunk = 64 << 10
)

// ringEntry is one numbered event held by a ring. Its message is owned
// (copied from the Reader's shared memory into the ring's chunks) and is
// one pointer for the garbage collector: a full ring is 65,536 pointers
// into a few hundred pointer-free chunks, not a graph to scan.
type ringEntry struct {
	seq   uint64           // Ami-Seq
	at    int64            // when the bridge read it, Unix nanoseconds
	chain uint64           // with HA, its Ami-Chain (ha.Chain); else 0
	msg   amiproto.Message // owned; msg.Size() bytes
}

// Seq returns the entry's Ami-Seq.
func (e *ringEntry) Seq() uint64 { return e.seq }

// Time returns when the bridge read the event.
func (e *ringEntry) Time() time.Time { return time.Unix(0, e.at) }

// Msg returns the event. It stays valid after the ring evicts the entry.
func (e *ringEntry) Msg() *amiproto.Message { return &e.msg }

// ring is a PBX's event buffer: every numbered event, in Ami-Seq order,
// bounded in events and in bytes, and, with keep (HA), kept after it is
// published while there is room, so that a standby or a takeover can
// replay from it; without keep an event goes once acknowledged.
// Rings may share a byte count (all the PBXes of a process): while it is
// above maxBytes, an append evicts its ring's acknowledged entries first,
// so that what every ring keeps for replay takes maxBytes at most in all;
// the count never makes a ring drop an event.
//
// One writer appends (the event session's reader goroutine); readers read
// copies of entries from a seq on and move the acknowledged mark. Entries
// at or below the mark may be evicted, oldest first, to make room; entries
// above it may not: when they alone fill a bound, a new event is dropped
// (append returns false) and its Ami-Seq stays a gap. Ami-Seq may have
// gaps inside the ring (dropped events); it never goes backwards.
//
// The API, safe for concurrent use:
//
//	append(m, seq, at) bool     keep a clone of m as seq, read at at (Unix ns); false: dropped, nothing kept
//	appendNow(m, seq, chain) (t, ok)
//	                            the same, read now (t), with HA's chain; the
//	                            waiting reader is woken by notify, or after
//	                            ringWakeEvery such appends
//	notify()                    wake a waiting reader for what appendNow kept
//	readAfter(seq, dst) (dst, closed)
//	                            copies of the entries above seq, oldest first, up to cap(dst)
//	wait() <-chan struct{}      ready after an append or close that follows an empty readAfter
//	ack(seq)                    acknowledge every entry up to seq (a lower seq changes nothing); without keep, free them
//	holdFor(seq, choose)        move the mark back to what choose picks over the entries above seq
//	refusing() bool             whether an append would drop, without the lock
//	refusal() (n, room)         how many times it started refusing; room is ready once it stops
//	oldest(), newest(), acked() seqs; 0 when there is none
//	usage() ringUsage           entries and bytes held, and those above the mark
//	close(), isClosed()         no more appends; readers drain and see closed
type ring struct {
	maxEvents int
	maxBytes  int
	shared    *atomic.Int64 // bytes held by every ring sharing it; may be nil
	// keep: acknowledged entries stay while there is room, for an HA
	// takeover's replay. Without HA nothing reads them again, so ack
	// frees them at once: a full ring of published events is a live heap
	// the garbage collector would mark and the memory limit would squeeze
	// for nothing.
	keep bool

	mu      sync.Mutex
	buf     []ringEntry // circular; len a power of two, grown up to maxEvents
	first   uint64      // position of the oldest entry; positions count appends
	next    uint64      // position of the next append
	ackPos  uint64      // entries at positions below it are acknowledged
	ackSeq  uint64      // the acknowledged mark, as a seq
	bytes   int         // held by every entry
	unacked int         // bytes held by the entries above the mark
	waiting bool        // a reader found nothing new and waits on ready
	held    int         // appends since waiting that did not wake the reader (appendNow)
	closed  bool
	// refused is set by a drop and cleared when the acknowledged mark
	// moves: once full, the ring refuses every event until the publisher
	// frees room, so refusing can be read without the lock (see refusing).
	refused  atomic.Bool
	refusals atomic.Uint64 // times refused was set
	room     chan struct{} // capacity 1: refused was cleared, or the ring closed
	ready    chan struct{} // capacity 1
	// readyFunc, when set, replaces ready: called, with mu held, where
	// ready would be signalled, and only for a reader that waits, so once
	// per wait (a pubPool queues the publisher). It must not block.
	readyFunc func()
	chunk     []byte // where the next event's bytes go; see ringMaxChunk
}

// newRing returns an empty ring; shared, if not nil, is the byte count it
// shares with other rings. keep says whether acknowledged entries stay
// while there is room (see ring.keep).
func newRing(maxEvents, maxBytes int, shared *atomic.Int64, keep bool) *ring {
	if shared == nil {
		shared = new(atomic.Int64)
	}
	return &ring{maxEvents: maxEvents, maxBytes: maxBytes, shared: shared, keep: keep, ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// append keeps a clone of m as event seq, read at at (Unix nanoseconds).
// It evicts acknowledged entries, oldest first, to stay within the bounds;
// when the unacknowledged entries alone leave no room, it keeps nothing
// and returns false, and so does every append after it until ack moves
// the mark: a full ring takes no smaller event in between, so that
// refusing can tell a reader what an append would do. It decides that
// before copying anything, so a dropped event costs a lock and a few
// compares.
func (r *ring) append(m *amiproto.Message, seq uint64, at int64) bool {
	_, ok := r.add(m, seq, at, 0, false)
	return ok
}

// ringWakeEvery bounds the events appendNow keeps for a waiting reader
// before it wakes it without notify: what one read of the socket brings
// at a flood's start (up to 32 KiB, a hundred events or more) is then
// published while the rest is parsed.
const ringWakeEvery = 32

// appendNow is append with the time read now, only for an event kept: a
// dropped event costs no clock read. It returns that time. chain is the
// event's Ami-Chain with HA, else 0. Unlike append, it leaves a waiting
// reader asleep until notify, or until ringWakeEvery events wait: the
// event reader appends what one read of the socket brought, then
// notifies once (EventDelivery.Drained), which saves a wake-up of the
// publisher, and the scheduling around it, per event.
func (r *ring) appendNow(m *amiproto.Message, seq, chain uint64) (time.Time, bool) {
	return r.add(m, seq, 0, chain, true)
}

// notify wakes a reader waiting for what appendNow kept.
func (r *ring) notify() {
	r.mu.Lock()
	if r.held > 0 {
		r.wake()
	}
	r.mu.Unlock()
}

// wake signals a waiting reader. r.mu is held.
func (r *ring) wake() {
	if r.waiting {
		r.waiting, r.held = false, 0
		if r.readyFunc != nil {
			r.readyFunc()
			return
		}
		select {
		case r.ready <- struct{}{}:
		default:
		}
	}
}

// setReady makes f what wakes the reader instead of wait's channel: f is
// called once each time a reader that found nothing (readAfter) has
// something to read, or the ring closes. Set before any read.
func (r *ring) setReady(f func()) {
	r.mu.Lock()
	r.readyFunc = f
	r.mu.Unlock()
}

func (r *ring) add(m *amiproto.Message, seq uint64, at int64, chain uint64, now bool) (t time.Time, ok bool) {
	size := m.Size()
	r.mu.Lock()
	if r.refused.Load() || int(r.next-r.ackPos) >= r.maxEvents || r.unacked+size > r.maxBytes || r.closed {
		if !r.closed && !r.refused.Swap(true) {
			r.refusals.Add(1)
		}
		// What waits for notify is what the reader must publish to make
		// room: a caller that waits for room (roomWait) must not wait on
		// a reader that sleeps.
		if r.held > 0 {
			r.wake()
		}
		r.mu.Unlock()
		return t, false
	}
	for int(r.next-r.first) >= r.maxEvents || r.bytes+size > r.maxBytes {
		r.evict()
	}
	for r.first < r.ackPos && r.shared.Load()+int64(size) > int64(r.maxBytes) {
		r.evict()
	}
	r.shared.Add(int64(size))
	if int(r.next-r.first) == len(r.buf) {
		r.grow()
	}
	if now {
		t = time.Now()
		at = t.UnixNano()
	}
	e := &r.buf[r.next&uint64(len(r.buf)-1)]
	e.seq, e.at, e.chain = seq, at, chain
	if cap(r.chunk)-len(r.chunk) < size {
		r.chunk = make([]byte, 0, max(size, min(ringMaxChunk, 2*cap(r.chunk)), ringMinChunk))
	}
	r.chunk, e.msg = m.AppendClone(r.chunk)
	r.next++
	r.bytes += size
	r.unacked += size
	if r.waiting {
		if now && r.held < ringWakeEvery-1 {
			r.held++
		} else {
			r.wake()
		}
	}
	r.mu.Unlock()
	return t, true
}

// evict drops the oldest entry, which must be acknowledged.
func (r *ring) evict() {
	e := &r.buf[r.first&uint64(len(r.buf)-1)]
	r.bytes -= e.msg.Size()
	r.shared.Add(-int64(e.msg.Size()))
	*e = ringEntry{}
	r.first++
}

// grow doubles the ring, keeping the entries at their positions.
func (r *ring) grow() {
	n := max(ringMinLen, 2*len(r.buf))
	buf := make([]ringEntry, n)
	for p := r.first; p < r.next; p++ {
		buf[p&uint64(n-1)] = r.buf[p&uint64(len(r.buf)-1)]
	}
	r.buf = buf
}

// pos returns the position of the first entry with a seq above seq, or
// r.next when there is none. r.mu must be held.
func (r *ring) pos(seq uint64) uint64 {
	n := int(r.next - r.first)
	if n == 0 || r.buf[(r.next-1)&uint64(len(r.buf)-1)].seq <= seq {
		return r.next // the common case: a reader that has read everything
	}
	i := sort.Search(n, func(i int) bool {
		return r.buf[(r.first+uint64(i))&uint64(len(r.buf)-1)].seq > seq
	})
	return r.first + uint64(i)
}

// readAfter appends to dst copies of the entries with a seq above seq,
// oldest first, until dst is full, and says whether the ring is closed.
// When there is none and the ring is open, wait's channel becomes ready
// at the next append or close.
func (r *ring) readAfter(seq uint64, dst []ringEntry) ([]ringEntry, bool) {
	r.mu.Lock()
	p := r.pos(seq)
	for ; p < r.next && len(dst) < cap(dst); p++ {
		dst = append(dst, r.buf[p&uint64(len(r.buf)-1)])
	}
	closed := r.closed
	if len(dst) == 0 && !closed {
		r.waiting = true
	}
	r.mu.Unlock()
	return dst, closed
}

// refusing reports whether the ring refuses events: an append would
// drop the event. It takes no lock, for a caller that sheds events before
// it has read them.
func (r *ring) refusing() bool { return r.refused.Load() }

// refusal returns how many times the ring started refusing, and a channel
// that is ready once it stops (or closes). A ready channel may be stale:
// drain it, then check refusing.
func (r *ring) refusal() (uint64, chan struct{}) { return r.refusals.Load(), r.room }

// wait returns a channel that is ready after an append or close that
// follows a readAfter that found nothing.
func (r *ring) wait() <-chan struct{} { return r.ready }

// ack moves the acknowledged mark up to seq: every entry at or below it
// may now be evicted. A mark below the current one changes nothing.
func (r *ring) ack(seq uint64) {
	r.mu.Lock()
	if seq > r.ackSeq {
		r.ackSeq = seq
		if r.refused.Swap(false) {
			signal(r.room)
		}
		for r.ackPos < r.next && r.buf[r.ackPos&uint64(len(r.buf)-1)].seq <= seq {
			r.unacked -= r.buf[r.ackPos&uint64(len(r.buf)-1)].msg.Size()
			r.ackPos++
		}
		for !r.keep && r.first < r.ackPos {
			r.evict()
		}
	}
	r.mu.Unlock()
}

// holdFor runs choose over the entries above seq, under the ring's lock,
// and moves the acknowledged mark back to the seq it returns, so that the
// entries above that stay until they are acknowledged again: a new
// active's replay. Nothing can be evicted between the choice and the
// hold. choose must be quick: the event reader waits meanwhile.
func (r *ring) holdFor(seq uint64, choose func(ringView) uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pos(seq)
	seq = choose(ringView{r: r, from: p, n: int(r.next - p)})
	r.ackSeq = seq
	r.ackPos = r.pos(seq)
	r.unacked = 0
	for p := r.ackPos; p < r.next; p++ {
		r.unacked += r.buf[p&uint64(len(r.buf)-1)].msg.Size()
	}
}

// ringView is the entries of a ring from a position on, as ha.Plan reads
// them; valid only under the ring's lock (holdFor).
type ringView struct {
	r    *ring
	from uint64
	n    int
}

func (v ringView) at(i int) *ringEntry {
	return &v.r.buf[(v.from+uint64(i))&uint64(len(v.r.buf)-1)]
}

func (v ringView) Len() int           { return v.n }
func (v ringView) Seq(i int) uint64   { return v.at(i).seq }
func (v ringView) Chain(i int) uint64 { return v.at(i).chain }

// Same cross-checks entry i against a stored event: its name, and its
// payload unless it has an ActionID, which differs between processes
// (see ha.Fingerprint); the chain covers the rest of such an event.
func (v ringView) Same(i int, event string, data []byte) bool {
	m := &v.at(i).msg
	return m.EventName() == event && (m.Has("ActionID") || bytes.Equal(m.AppendJSON(nil), data))
}

// isClosed reports whether the ring takes no more appends.
func (r *ring) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// close ends the appends; readers drain what is left and see closed.
func (r *ring) close() {
	r.mu.Lock()
	r.closed = true
	byFunc := r.readyFunc != nil
	if byFunc {
		r.wake()
	}
	r.mu.Unlock()
	if !byFunc {
		signal(r.ready)
	}
	signal(r.room)
}

// oldest returns the seq of the oldest entry held, 0 when empty.
func (r *ring) oldest() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next == r.first {
		return 0
	}
	return r.buf[r.first&uint64(len(r.buf)-1)].seq
}

// newest returns the seq of the newest entry held, 0 when empty.
func (r *ring) newest() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next == r.first {
		return 0
	}
	return r.buf[(r.next-1)&uint64(len(r.buf)-1)].seq
}

// acked returns the acknowledged mark.
func (r *ring) acked() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ackSeq
}

// ringUsage is what a ring holds, for stats.
type ringUsage struct {
	pending, pendingBytes int // above the acknowledged mark
	held, heldBytes       int // every entry, acknowledged or not
}

func (r *ring) usage() ringUsage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ringUsage{pending: int(r.next - r.ackPos), pendingBytes: r.unacked, held: int(r.next - r.first), heldBytes: r.bytes}
}

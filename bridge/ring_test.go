package bridge

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// ringEvent returns an event whose text is about size bytes.
func ringEvent(seq uint64, size int) *amiproto.Message {
	return amiproto.NewMessage(
		amiproto.Field{Key: "Event", Value: "Test"},
		amiproto.Field{Key: "N", Value: strconv.FormatUint(seq, 10)},
		amiproto.Field{Key: "Pad", Value: strings.Repeat("x", size)},
	)
}

func seqs(es []ringEntry) []uint64 {
	out := make([]uint64, len(es))
	for i := range es {
		out[i] = es[i].Seq()
	}
	return out
}

func equalSeqs(t *testing.T, what string, got []ringEntry, want ...uint64) {
	t.Helper()
	g := seqs(got)
	if len(g) != len(want) {
		t.Fatalf("%s: seqs %v, want %v", what, g, want)
	}
	for i := range g {
		if g[i] != want[i] {
			t.Fatalf("%s: seqs %v, want %v", what, g, want)
		}
		if n := got[i].Msg().Get("N"); n != strconv.FormatUint(want[i], 10) {
			t.Fatalf("%s: entry %d holds event N=%s", what, want[i], n)
		}
	}
}

// fillRing appends events from to to, of about size bytes, and fails on
// a drop.
func fillRing(t *testing.T, r *ring, from, to uint64, size int) {
	t.Helper()
	for s := from; s <= to; s++ {
		if !r.append(ringEvent(s, size), s, 0) {
			t.Fatalf("event %d dropped", s)
		}
	}
}

func TestRing_DropsOnlyWhenUnacknowledgedFillIt(t *testing.T) {
	r := newRing(4, 1<<20, nil, true)
	fillRing(t, r, 1, 4, 10)
	if r.append(ringEvent(5, 10), 5, 0) {
		t.Fatal("event 5 kept while 4 unacknowledged events fill a ring of 4")
	}
	r.ack(2)
	if !r.append(ringEvent(6, 10), 6, 0) || !r.append(ringEvent(7, 10), 7, 0) {
		t.Fatal("events dropped while acknowledged ones could make room")
	}
	if r.append(ringEvent(8, 10), 8, 0) {
		t.Fatal("event 8 kept past the bound")
	}
	got, _ := r.readAfter(0, make([]ringEntry, 0, 10))
	equalSeqs(t, "after evicting 1 and 2", got, 3, 4, 6, 7)
	if o, n, a := r.oldest(), r.newest(), r.acked(); o != 3 || n != 7 || a != 2 {
		t.Fatalf("oldest %d newest %d acked %d, want 3 7 2", o, n, a)
	}
}

func TestRing_KeepsAcknowledgedWhileThereIsRoom(t *testing.T) {
	r := newRing(100, 1<<20, nil, true)
	for s := uint64(1); s <= 10; s++ {
		r.append(ringEvent(s, 10), s, 0)
	}
	r.ack(10)
	got, _ := r.readAfter(0, make([]ringEntry, 0, 100))
	equalSeqs(t, "acknowledged entries", got, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	u := r.usage()
	if u.pending != 0 || u.pendingBytes != 0 || u.held != 10 || u.heldBytes == 0 {
		t.Fatalf("usage %+v, want 0 pending, 10 held", u)
	}
}

// Without HA nothing replays published events: ack frees them, and the
// shared count with them, while what is not yet acknowledged stays.
func TestRing_WithoutKeepAckFrees(t *testing.T) {
	var shared atomic.Int64
	r := newRing(100, 1<<20, &shared, false)
	fillRing(t, r, 1, 10, 10)
	r.ack(6)
	got, _ := r.readAfter(0, make([]ringEntry, 0, 100))
	equalSeqs(t, "after ack(6)", got, 7, 8, 9, 10)
	size := 0
	for s := uint64(7); s <= 10; s++ {
		size += ringEvent(s, 10).Size()
	}
	if u := r.usage(); u.pending != 4 || u.held != 4 || u.heldBytes != size || u.pendingBytes != size {
		t.Fatalf("usage %+v, want the 4 unacknowledged entries alone, %d bytes", u, size)
	}
	if got := shared.Load(); got != int64(size) {
		t.Fatalf("shared count %d, want %d", got, size)
	}
	if o, a := r.oldest(), r.acked(); o != 7 || a != 6 {
		t.Fatalf("oldest %d acked %d, want 7 6", o, a)
	}
	r.ack(10)
	if u := r.usage(); u.held != 0 || u.heldBytes != 0 || shared.Load() != 0 {
		t.Fatalf("usage %+v, shared %d after acknowledging everything, want nothing held", u, shared.Load())
	}
	if !r.append(ringEvent(11, 10), 11, 0) {
		t.Fatal("event 11 dropped by an empty ring")
	}
}

func TestRing_BytesBound(t *testing.T) {
	size := ringEvent(1, 100).Size()
	r := newRing(1000, 3*size, nil, true)
	fillRing(t, r, 1, 3, 100)
	if r.append(ringEvent(4, 100), 4, 0) {
		t.Fatal("event kept past the byte bound with nothing acknowledged")
	}
	r.ack(1)
	if !r.append(ringEvent(5, 100), 5, 0) {
		t.Fatal("event dropped though an acknowledged one could make room")
	}
	got, _ := r.readAfter(0, make([]ringEntry, 0, 10))
	equalSeqs(t, "byte-bounded ring", got, 2, 3, 5)
	if u := r.usage(); u.heldBytes != 3*size || u.pendingBytes != 3*size {
		t.Fatalf("usage %+v, want %d bytes held and pending", u, 3*size)
	}
}

// Rings sharing a byte count keep acknowledged entries for replay up to
// maxBytes in all: a busy ring evicts its own acknowledged entries, never
// another's, and never drops an event for the shared count.
func TestRing_SharedBytesBoundReplayOnly(t *testing.T) {
	size := ringEvent(1, 100).Size()
	var shared atomic.Int64
	a, b := newRing(1000, 4*size, &shared, true), newRing(1000, 4*size, &shared, true)
	for s := uint64(1); s <= 3; s++ {
		a.append(ringEvent(s, 100), s, 0)
	}
	a.ack(3)
	fillRing(t, b, 1, 4, 100) // the shared count never drops
	if got := shared.Load(); got != int64(7*size) {
		t.Fatalf("shared count %d, want %d", got, 7*size)
	}
	a.append(ringEvent(4, 100), 4, 0) // over the shared bound: a evicts its acknowledged ones
	got, _ := a.readAfter(0, make([]ringEntry, 0, 10))
	equalSeqs(t, "a after its append over the shared bound", got, 4)
	if got := shared.Load(); got != int64(5*size) {
		t.Fatalf("shared count %d, want %d", got, 5*size)
	}
}

func TestRing_ReadAfterSeqWithGaps(t *testing.T) {
	r := newRing(1000, 1<<20, nil, true)
	for _, s := range []uint64{2, 3, 7, 8, 20} {
		r.append(ringEvent(s, 1), s, 0)
	}
	got, _ := r.readAfter(3, make([]ringEntry, 0, 10))
	equalSeqs(t, "after 3", got, 7, 8, 20)
	got, _ = r.readAfter(5, make([]ringEntry, 0, 2))
	equalSeqs(t, "after 5, two at most", got, 7, 8)
	got, _ = r.readAfter(20, make([]ringEntry, 0, 10))
	equalSeqs(t, "after the newest", got)
}

func TestRing_GrowsKeepingOrder(t *testing.T) {
	r := newRing(1000, 1<<30, nil, true)
	for s := uint64(1); s <= 50; s++ {
		r.append(ringEvent(s, 1), s, 0)
	}
	r.ack(40)
	for s := uint64(51); s <= 300; s++ { // wraps, then grows twice
		r.append(ringEvent(s, 1), s, 0)
	}
	got, _ := r.readAfter(295, make([]ringEntry, 0, 10))
	equalSeqs(t, "after growing", got, 296, 297, 298, 299, 300)
	if r.oldest() != 1 {
		t.Fatalf("oldest %d, want 1: nothing needed evicting", r.oldest())
	}
}

func TestRing_WaitWakesOnAppendAndClose(t *testing.T) {
	r := newRing(10, 1<<20, nil, true)
	if got, closed := r.readAfter(0, make([]ringEntry, 0, 1)); len(got) != 0 || closed {
		t.Fatal("an empty open ring returned entries or closed")
	}
	done := make(chan []ringEntry)
	go func() {
		<-r.wait()
		got, _ := r.readAfter(0, make([]ringEntry, 0, 1))
		done <- got
	}()
	r.append(ringEvent(1, 1), 1, 0)
	equalSeqs(t, "after the wake-up", <-done, 1)
	r.readAfter(1, make([]ringEntry, 0, 1))
	r.close()
	<-r.wait()
	if _, closed := r.readAfter(1, make([]ringEntry, 0, 1)); !closed {
		t.Fatal("closed ring not reported closed")
	}
	if r.append(ringEvent(2, 1), 2, 0) {
		t.Fatal("append after close kept the event")
	}
}

// ready reports whether the ring's wait channel is ready, taking the
// signal.
func ready(r *ring) bool {
	select {
	case <-r.wait():
		return true
	default:
		return false
	}
}

// appendNow, the event reader's append, leaves a waiting reader asleep
// until notify (the end of a read of the socket) or until ringWakeEvery
// events wait; notify with nothing new wakes nobody.
func TestRing_AppendNowWakesOnNotifyOrAfterRingWakeEvery(t *testing.T) {
	r := newRing(1000, 1<<20, nil, true)
	r.readAfter(0, make([]ringEntry, 0, 1)) // nothing: the reader waits
	for s := uint64(1); s <= 3; s++ {
		if _, ok := r.appendNow(ringEvent(s, 1), s, 0); !ok {
			t.Fatalf("event %d dropped", s)
		}
	}
	if ready(r) {
		t.Fatal("appendNow woke the reader before notify")
	}
	r.notify()
	if !ready(r) {
		t.Fatal("notify did not wake the reader for 3 events")
	}
	got, _ := r.readAfter(0, make([]ringEntry, 0, 10))
	equalSeqs(t, "after notify", got, 1, 2, 3)

	r.readAfter(3, make([]ringEntry, 0, 1))
	r.notify()
	if ready(r) {
		t.Fatal("notify with nothing new woke the reader")
	}
	s := uint64(4)
	for ; s < 4+ringWakeEvery-1; s++ {
		r.appendNow(ringEvent(s, 1), s, 0)
	}
	if ready(r) {
		t.Fatalf("woken after %d events, before ringWakeEvery (%d)", s-4, ringWakeEvery)
	}
	r.appendNow(ringEvent(s, 1), s, 0)
	if !ready(r) {
		t.Fatalf("not woken after ringWakeEvery (%d) events without notify", ringWakeEvery)
	}
}

// A refused appendNow wakes the reader for what waits for notify: the
// caller then waits for room, which only that reader can make.
func TestRing_RefusalWakesTheReaderForHeldEvents(t *testing.T) {
	r := newRing(4, 1<<20, nil, true)
	r.readAfter(0, make([]ringEntry, 0, 1))
	for s := uint64(1); s <= 4; s++ {
		r.appendNow(ringEvent(s, 1), s, 0)
	}
	if ready(r) {
		t.Fatal("setup: woken before the ring was full")
	}
	if _, ok := r.appendNow(ringEvent(5, 1), 5, 0); ok {
		t.Fatal("setup: event 5 kept in a full ring of 4")
	}
	if !ready(r) {
		t.Fatal("a refused append left the reader asleep over 4 held events")
	}
}

// Once full, the ring refuses every event, a smaller one too, until the
// publisher acknowledges: refusing then says what an append would do,
// without the lock.
func TestRing_RefusesFromTheFirstDropUntilAnAck(t *testing.T) {
	big, small := ringEvent(1, 40), ringEvent(3, 1)
	// Room for big and small, not for the event in between: small would
	// fit, and is refused only because the ring refuses.
	r := newRing(1000, big.Size()+small.Size(), nil, true)
	if !r.append(big, 1, 0) || r.refusing() {
		t.Fatal("the first event was refused")
	}
	n0, _ := r.refusal()
	if r.append(ringEvent(2, 80), 2, 0) {
		t.Fatal("an event over the byte bound was kept")
	}
	if u := r.usage(); u.pendingBytes+small.Size() > r.maxBytes {
		t.Fatalf("setup: %d bytes pending leave no room for %d in %d", u.pendingBytes, small.Size(), r.maxBytes)
	}
	if !r.refusing() || r.append(small, 3, 0) {
		t.Fatal("a small event that fits was kept after a refusal, before any ack")
	}
	if n, _ := r.refusal(); n != n0+1 {
		t.Fatalf("%d refusals counted, want 1", n-n0)
	}
	r.ack(1)
	if r.refusing() || !r.append(small, 3, 0) {
		t.Fatal("still refusing after an ack")
	}
}

// BenchmarkRing measures the buffer's two event paths: an append that
// keeps a clone (evicting an acknowledged entry, as a ring that is always
// full does), and a drop when unacknowledged events fill it, which must
// cost far less than a publish.
func BenchmarkRing(b *testing.B) {
	events := burstEvents(b)
	b.Run("path=append", func(b *testing.B) {
		r := newRing(4096, DefaultEventBufferBytes, nil, true)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			s := uint64(i + 1)
			r.append(events[i%len(events)], s, 0)
			r.ack(s)
		}
	})
	b.Run("path=drop", func(b *testing.B) {
		r := newRing(4096, DefaultEventBufferBytes, nil, true)
		for i := range 4096 {
			r.append(events[i%len(events)], uint64(i+1), 0)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if r.append(events[i%len(events)], uint64(i+5000), 0) {
				b.Fatal("kept an event in a full ring")
			}
		}
	})
}

package bridge

import (
	"testing"
)

// Once full, the ring refuses every event, a smaller one too, until the
// publisher acknowledges: refusing then says what an append would do,
// without the lock.
func TestRing_RefusesFromTheFirstDropUntilAnAck(t *testing.T) {
	r := newRing(1000, 100, nil)
	big, small := ringEvent(1, 40), ringEvent(3, 1)
	if !r.append(big, 1, 0) || r.refusing() {
		t.Fatal("the first event was refused")
	}
	n0, _ := r.refusal()
	if r.append(ringEvent(2, 80), 2, 0) {
		t.Fatal("an event over the byte bound was kept")
	}
	if !r.refusing() || r.append(small, 3, 0) {
		t.Fatal("a small event was kept after a refusal, before any ack")
	}
	if n, _ := r.refusal(); n != n0+1 {
		t.Fatalf("%d refusals counted, want 1", n-n0)
	}
	r.ack(1)
	if r.refusing() || !r.append(small, 3, 0) {
		t.Fatal("still refusing after an ack")
	}
}

// The reader's wait for room ends with the ack that makes room, whether
// the ack comes before the wait or during it, and happens once per
// refusal: the events after a wait that ran out are dropped without one.
func TestRoomWait_OncePerRefusal(t *testing.T) {
	r := newRing(1, 1<<20, nil)
	var w roomWait
	if w.wait(r) {
		t.Fatal("waited on a ring that never refused")
	}
	for seq := uint64(1); seq <= 50; seq++ {
		if !r.append(ringEvent(seq, 1), seq, 0) {
			t.Fatalf("event %d refused", seq)
		}
		if r.append(ringEvent(seq+1, 1), seq+1, 0) {
			t.Fatal("a full ring kept an event")
		}
		acked := make(chan struct{})
		go func() { // the publisher, racing the wait
			defer close(acked)
			r.ack(seq)
		}()
		if !w.wait(r) {
			t.Fatalf("refusal %d: the wait missed the ack", seq)
		}
		<-acked
	}

	fillRing(t, r, 51, 51, 1)
	r.append(ringEvent(52, 1), 52, 0) // refused: nobody acknowledges now
	if w.wait(r) {
		t.Fatal("room without an ack")
	}
	if w.wait(r) || w.wait(r) {
		t.Fatal("a second wait for the same refusal")
	}
	r.ack(51)
	fillRing(t, r, 53, 53, 1)
	r.append(ringEvent(54, 1), 54, 0) // a new refusal
	r.close()
	if w.wait(r) {
		t.Fatal("room in a closed ring")
	}
}

// Events shed from a full ring are numbered and counted as accept's drops
// are: Ami-Seq goes on through them, events_dropped counts them, and the
// publisher publishes exactly the events kept, leaving their seqs as gaps.
func TestShed_NumbersAndCountsAsDrops(t *testing.T) {
	const n, room = 300, 8
	ns := startNATS(t, natsOptions{})
	nc, cc := connect(t, ns), connect(t, ns)
	sub := eventSub(t, cc, "ami")
	b, err := New(nc, []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}, Options{EventBuffer: room})
	if err != nil {
		t.Fatal(err)
	}
	p := b.pbxes[0]
	shed := 0
	for i := 1; i <= n; i++ { // what the event client does, the publisher not running
		ev := userEvent("seq", i)
		if p.shed(ev.EventName()) {
			shed++
			continue
		}
		p.accept(ev)
	}
	// room kept, one dropped by accept after its wait, the rest shed.
	if p.lastSeq.Load() != n || p.dropped.Load() != n-room || shed != n-room-1 {
		t.Fatalf("last seq %d, dropped %d, shed %d; want %d, %d, %d", p.lastSeq.Load(), p.dropped.Load(), shed, n, n-room, n-room-1)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.pub.loop()
	}()
	p.ring.close()
	<-done
	for want := uint64(1); want <= room; want++ {
		m, err := sub.NextMsg(waitTime)
		if err != nil {
			t.Fatal(err)
		}
		if seq := seqOf(t, m); seq != want {
			t.Fatalf("Ami-Seq %d, want %d", seq, want)
		}
	}
	if p.published.Load() != room {
		t.Fatalf("published %d, want %d", p.published.Load(), room)
	}
}

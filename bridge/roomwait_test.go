package bridge

import (
	"testing"
	"time"
)

// The reader's wait for room ends with the ack that makes room, whether
// the ack comes before the wait or during it, and happens once per
// refusal: the events after a wait that ran out are dropped without one.
func TestRoomWait_OncePerRefusal(t *testing.T) {
	r := newRing(1, 1<<20, nil, true)
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

// The reader waits at most roomWaitRatio times as long as it has read
// since its last wait, and a wait pays for itself: a reader whose waits
// took more than that (here 9 s owed, 0.5 s of reading since) drops the
// event at once, without waiting for an ack that may be coming; one that
// has read long enough since (1.5 s) waits again, up to maxRoomWait.
func TestRoomWait_BudgetIsNineTimesTheReading(t *testing.T) {
	refused := func() *ring {
		r := newRing(1, 1<<20, nil, true)
		fillRing(t, r, 1, 1, 1)
		if r.append(ringEvent(2, 1), 2, 0) {
			t.Fatal("a full ring kept an event")
		}
		return r
	}
	owed := -roomWaitRatio * time.Second

	w := roomWait{budget: owed, end: time.Now().Add(-time.Second / 2)}
	if w.wait(refused()) {
		t.Fatal("room without an ack")
	}
	if w.timer != nil {
		t.Fatal("the reader waited with its budget used up")
	}

	w = roomWait{budget: owed, end: time.Now().Add(-3 * time.Second / 2)}
	start := time.Now()
	if w.wait(refused()) {
		t.Fatal("room without an ack")
	}
	if d := time.Since(start); w.timer == nil || d < maxRoomWait {
		t.Fatalf("waited %v with a budget of 4.5 s, want %v", d, maxRoomWait)
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
	b := unstarted(t, nc, Options{EventBuffer: room})
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

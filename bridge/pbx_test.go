package bridge

import (
	"runtime"
	"testing"
)

// idlePBX returns a bridge, not started, and its one PBX, pbx1: the test
// plays the event session's reader (accept, shed) and, if it wants one,
// the publisher. sc may set pbx1's filter.
func idlePBX(t *testing.T, sc ServerConfig, opts Options) (*Bridge, *pbx) {
	t.Helper()
	sc.Name, sc.URL = "pbx1", "admin:x@127.0.0.1"
	b, err := New(connect(t, startNATS(t, natsOptions{})), []ServerConfig{sc}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b, b.pbxes[0]
}

// An ack that frees room while accept waits for it keeps the event: the
// reader does not drop what the publisher is about to make room for.
func TestAccept_KeepsTheEventAnAckMakesRoomFor(t *testing.T) {
	const room = 4
	_, p := idlePBX(t, ServerConfig{}, Options{EventBuffer: room})
	for i := 1; i <= room; i++ {
		p.accept(userEvent("kept", i))
	}
	acked := make(chan struct{})
	go func() { // the publisher, once accept has found the ring full
		defer close(acked)
		for !p.ring.refusing() {
			runtime.Gosched()
		}
		p.ring.ack(room)
	}()
	p.accept(userEvent("waited", room+1))
	<-acked
	if n := p.dropped.Load(); n != 0 {
		t.Fatalf("%d events dropped, want 0: the ack came during the wait", n)
	}
	got, _ := p.ring.readAfter(room, make([]ringEntry, 0, 2))
	if len(got) != 1 || got[0].seq != room+1 || got[0].msg.Get("N") != "5" {
		t.Fatalf("the ring holds %v after %d, want the waited event", seqs(got), room)
	}
}

// While the ring refuses, shed drops the events that get an Ami-Seq, and
// only those: a filtered event takes no seq, is no drop, and accept
// counts it as filtered.
func TestShed_LeavesFilteredEventsToTheFilter(t *testing.T) {
	b, p := idlePBX(t, ServerConfig{EventsInclude: []string{"UserEvent"}}, Options{EventBuffer: 1})
	p.accept(userEvent("kept", 1))
	p.accept(userEvent("dropped", 2)) // nobody acknowledges: the wait runs out
	if !p.ring.refusing() {
		t.Fatal("setup: the ring does not refuse")
	}
	before := b.Stats()[0]
	if p.shed("Newexten") {
		t.Fatal("a filtered event was shed")
	}
	p.accept(newEvent("Newexten", "N", "x")) // what the client does with an event not shed
	st := b.Stats()[0]
	if st.LastSeq != before.LastSeq || st.EventsDropped != before.EventsDropped || st.EventsFiltered != before.EventsFiltered+1 {
		t.Fatalf("after a filtered event: last seq %d, dropped %d, filtered %d; want %d, %d, %d",
			st.LastSeq, st.EventsDropped, st.EventsFiltered, before.LastSeq, before.EventsDropped, before.EventsFiltered+1)
	}
	if !p.shed("UserEvent") {
		t.Fatal("an event that passes the filter was not shed")
	}
	mid := st
	st = b.Stats()[0]
	if st.EventsReceived != mid.EventsReceived+1 || st.EventsDropped != mid.EventsDropped+1 || st.LastSeq != mid.LastSeq {
		t.Fatalf("after a shed event: received %d, dropped %d, last seq published %d; want %d, %d, %d",
			st.EventsReceived, st.EventsDropped, st.LastSeq, mid.EventsReceived+1, mid.EventsDropped+1, mid.LastSeq)
	}
}

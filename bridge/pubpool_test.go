package bridge

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// unstartedMany returns a Bridge of n PBXes, pbx1 to pbxN, on nc, not
// started.
func unstartedMany(t testing.TB, nc *nats.Conn, n int, opts Options) *Bridge {
	t.Helper()
	scs := make([]ServerConfig, n)
	for i := range scs {
		scs[i] = ServerConfig{Name: "pbx" + strconv.Itoa(i+1), URL: "admin:x@127.0.0.1"}
	}
	b, err := New(nc, scs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitDrained waits until the pool has published every event of p and
// seen its ring closed.
func waitDrained(t testing.TB, p *pbx) {
	t.Helper()
	select {
	case <-p.pub.drained:
	case <-time.After(waitTime):
		t.Fatalf("%s: the pool did not drain the closed ring: %d of %d published", p.name, p.published.Load(), p.seq)
	}
}

// With one pool for many PBXes, each PBX's events reach NATS all, once,
// in Ami-Seq order, whether its reader wakes the pool after every event
// (one event per read of the socket, a PBX at a real pace) or after many,
// and every PBX's ring is drained once closed, also a PBX that sent
// nothing.
func TestPubPool_ManyPBXesEachInOrder(t *testing.T) {
	const pbxes, n = 12, 3000
	ns := startNATS(t, natsOptions{})
	sub := eventSub(t, connect(t, ns), "ami")
	b := unstartedMany(t, connect(t, ns), pbxes+1, Options{})
	pool := newPubPool()
	pool.start()
	for _, p := range b.pbxes {
		p.pub.startPooled(pool)
	}
	var readers sync.WaitGroup
	for i, p := range b.pbxes[:pbxes] {
		readers.Add(1)
		go func() { // one PBX's event reader; the test waits for it
			defer readers.Done()
			every := 1 + i%3*20 // reads of 1, 21 and 41 events
			for k := 1; k <= n; k++ {
				p.accept(userEvent("fan", k))
				if k%every == 0 {
					p.ring.notify() // EventDelivery.Drained: the end of a read
				}
			}
			p.ring.notify()
		}()
	}
	readers.Wait()
	for _, p := range b.pbxes {
		p.ring.close()
	}
	for _, p := range b.pbxes {
		waitDrained(t, p)
	}
	pool.stop()
	last := map[string]uint64{}
	for range pbxes * n {
		m, err := sub.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("%v after %v", err, last)
		}
		name, seq := m.Header.Get(subjects.HeaderServer), seqOf(t, m)
		if seq != last[name]+1 {
			t.Fatalf("%s: Ami-Seq %d after %d", name, seq, last[name])
		}
		last[name] = seq
	}
	for _, p := range b.pbxes[:pbxes] {
		if last[p.name] != n || p.published.Load() != n || p.ring.acked() != n {
			t.Errorf("%s: last Ami-Seq %d, published %d, acknowledged %d; want %d", p.name, last[p.name], p.published.Load(), p.ring.acked(), n)
		}
	}
	if m, err := sub.NextMsg(50 * time.Millisecond); err == nil {
		t.Fatalf("one more event: %s Ami-Seq %s", m.Header.Get(subjects.HeaderServer), m.Header.Get(subjects.HeaderSeq))
	}
}

// A started Bridge on core NATS publishes through its pool, and Shutdown
// ends the pool's workers after every PBX's publisher has drained.
func TestPubPool_BridgeStartsAndStopsIt(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	b := unstartedMany(t, connect(t, ns), 3, Options{})
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	pool := b.ns.pool
	if pool == nil {
		t.Fatal("no pool on core NATS")
	}
	if err := b.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, p := range b.pbxes {
		if p.pub.pool != pool {
			t.Fatalf("%s: published by its own goroutine, not the pool", p.name)
		}
		waitDrained(t, p)
	}
	pool.mu.Lock()
	stopped := pool.stopped
	pool.mu.Unlock()
	if !stopped {
		t.Fatal("Shutdown left the pool running")
	}
}

// The ring's ready callback runs once per wait of its reader: after a
// readAfter that found nothing, at the first append (or, for appendNow,
// at notify), or at close; never while the reader has not waited, so a
// pool never holds a publisher twice.
func TestRing_ReadyFuncOncePerWait(t *testing.T) {
	r := newRing(100, 1<<20, nil, true)
	calls := 0
	r.setReady(func() { calls++ })
	want := func(n int, what string) {
		t.Helper()
		if calls != n {
			t.Fatalf("%s: %d calls, want %d", what, calls, n)
		}
	}
	r.append(ringEvent(1, 1), 1, 0)
	want(0, "append before any wait")
	got, _ := r.readAfter(0, make([]ringEntry, 0, 8))
	equalSeqs(t, "first read", got, 1)
	r.readAfter(1, make([]ringEntry, 0, 8)) // nothing: waits
	r.append(ringEvent(2, 1), 2, 0)
	r.append(ringEvent(3, 1), 3, 0)
	want(1, "two appends after a wait")
	r.readAfter(3, make([]ringEntry, 0, 8))
	r.appendNow(ringEvent(4, 1), 4, 0)
	want(1, "appendNow before notify")
	r.notify()
	r.notify()
	want(2, "notify twice")
	r.close()
	want(2, "close while the reader has something to read")
	if _, closed := r.readAfter(4, make([]ringEntry, 0, 8)); !closed {
		t.Fatal("closed ring not reported closed")
	}
	want(2, "a read of a closed ring")

	r = newRing(100, 1<<20, nil, true)
	calls = 0
	r.setReady(func() { calls++ })
	r.readAfter(0, make([]ringEntry, 0, 8))
	r.close()
	want(1, "close while the reader waits")
}

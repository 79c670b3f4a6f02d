package bridge

import (
	"runtime"
	"sync"
)

// pubWorkers bounds the goroutines of a pubPool: more than the cores
// would only contend for the one NATS connection.
const pubWorkers = 4

// pubPool publishes the events of every PBX of a Bridge on core NATS with
// a few goroutines instead of one per PBX. A PBX whose ring gets events
// while its publisher waits is queued once (the ring's ready callback,
// called by the event reader, which never waits for NATS here); a worker
// takes it, publishes one batch of it (up to pubBatch events, in Ami-Seq
// order), and queues it again at the back while more is left. A
// publisher is thus at any time in exactly one place: waiting on its
// ring, in the queue, or with one worker, so its events stay in order.
//
// Why: at a real PBX's pace (0.1 to 1 event per millisecond) each event
// arrives alone, and a goroutine per PBX meant a wake-up of that
// goroutine, and a kick of nats.go's flusher, per event. Busy workers go
// from one PBX to the next without sleeping, and their publishes leave in
// the flusher's writes together. With 500 PBXes the Go scheduler also
// gave 500 publishers no more turns than 500 readers, and the rings
// filled while the readers ran.
//
// JetStream keeps a publisher goroutine per PBX (publisher.loopJS): its
// window of acks in flight, retries and HA fencing are per PBX.
type pubPool struct {
	mu      sync.Mutex
	cond    sync.Cond // a publisher was queued, or stop
	queue   []*publisher
	head    int // queue[head:] waits
	stopped bool
	wg      sync.WaitGroup
}

func newPubPool() *pubPool {
	q := &pubPool{}
	q.cond.L = &q.mu
	return q
}

// start starts the workers. Their owner is whoever calls start (Bridge
// Start), which ends them with stop once every PBX has drained.
func (q *pubPool) start() {
	n := min(pubWorkers, runtime.GOMAXPROCS(0))
	q.wg.Add(n)
	for range n {
		go func() {
			defer q.wg.Done()
			// The batch buffer is the worker's, lent to each publisher
			// it runs: a PBX holds none of its own (up to pubBatch
			// entries, once it had a burst).
			var batch []ringEntry
			for {
				p := q.pop()
				if p == nil {
					return
				}
				batch = p.runOnce(batchBuf(batch))
			}
		}()
	}
}

// stop ends the workers once the queue is empty and waits for them.
func (q *pubPool) stop() {
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
	q.cond.Broadcast()
	q.wg.Wait()
}

// push queues p. The caller must own p: p's ring called its ready
// callback, or a worker is done with it, or it was never started.
func (q *pubPool) push(p *publisher) {
	q.mu.Lock()
	if q.head > 0 && q.head == len(q.queue) {
		clear(q.queue)
		q.queue, q.head = q.queue[:0], 0
	}
	q.queue = append(q.queue, p)
	q.mu.Unlock()
	q.cond.Signal()
}

// pop returns the next publisher, waiting for one; nil once stopped with
// the queue empty.
func (q *pubPool) pop() *publisher {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.queue) {
		if q.stopped {
			return nil
		}
		q.cond.Wait()
	}
	p := q.queue[q.head]
	q.queue[q.head] = nil
	q.head++
	if q.head > 1024 && 2*q.head > len(q.queue) {
		n := copy(q.queue, q.queue[q.head:])
		clear(q.queue[n:])
		q.queue, q.head = q.queue[:n], 0
	}
	return p
}

// startPooled hands p to pool: its events are published by the pool's
// workers from now on, and drained is closed once its ring is closed and
// every event of it is published.
func (p *publisher) startPooled(pool *pubPool) {
	p.pool = pool
	p.drained = make(chan struct{})
	p.p.ring.setReady(func() { pool.push(p) })
	pool.push(p)
}

// runOnce publishes one batch of p's events into batch, on a pool
// worker, and returns the buffer. When the ring has nothing new, p waits
// on it: the ring's next append (or its close) queues p again.
func (p *publisher) runOnce(batch []ringEntry) []ringEntry {
	n, closed, batch := p.publishFrom(p.done, batch)
	if n == 0 {
		if closed {
			close(p.drained)
		}
		return batch
	}
	p.done = n
	p.pool.push(p)
	return batch
}

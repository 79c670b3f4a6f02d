package bridge

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// arrivals knows when the requests of a PBX reached the bridge, so that a
// request that waited past its requester's deadline is dropped instead of
// run (see pbx.handle).
//
// Why a side subscription: micro calls an endpoint's handler one request
// at a time, so a request waits in the endpoint subscription's pending
// queue behind a slow action, and neither nats.Msg nor micro.Request says
// when it arrived. micro counts a request's stats when the handler
// returns, so the handler cannot take requests off that queue early into
// one of the bridge's own. A requester cannot be trusted to state an
// absolute deadline (clocks differ, and `nats req` sends none). So while
// the PBX's action service runs, a plain (non-queue) subscription on the
// same subject stamps every request's arrival, keyed by its reply
// subject; the handler takes the stamp. The stamper does nothing else,
// so it never lags behind the endpoints' queues by more than a scheduling
// delay.
//
// The stamps need a connection other than the service's (the main one,
// with Options.ServiceConn): nats-server counts a second delivery of a
// request to the same connection against the replies that
// `allow_responses` grants, so with the default of one reply no reply
// would get through. With one connection nothing is stamped, and a
// request's deadline counts from when its session takes it.
//
// It costs one more copy of each request on the main connection, and one
// trade: a request that NATS routes to no endpoint
// while the service swaps instances (a rare race when a session drops)
// still reaches this subscription, so its requester times out instead of
// getting no responders at once. The bridge permissions need a plain
// subscribe on the action subject, not only a queue one.
//
// The store is bounded: entries older than the longest deadline
// (MaxActionTimeout) go, and past max entries the oldest go. A request
// without a stamp counts as just arrived: one taken before its stamp
// landed (the endpoint was idle; a tombstone then drops the late stamp),
// or one whose stamp was evicted. Stamps of requests that another bridge's
// endpoint took, or that the pending limit dropped, are never taken and
// age out. A reply subject used by two requests at once keeps the older
// stamp.
type arrivals struct {
	max    int           // entries kept, stamps and tombstones
	maxAge time.Duration // older entries go

	mu    sync.Mutex
	at    map[string]arrival
	order []arrivalKey // in stamp order, for eviction; order[head:] is live
	head  int
	seq   uint64
	subs  []*nats.Subscription // the side subscriptions while the service runs
}

type arrival struct {
	at    time.Time
	seq   uint64
	taken bool // a tombstone: the handler took the request before its stamp landed
}

type arrivalKey struct {
	key string
	seq uint64
}

func newArrivals(max int, maxAge time.Duration) *arrivals {
	return &arrivals{max: max, maxAge: maxAge, at: make(map[string]arrival)}
}

// stamp records that a request with reply subject key arrived at now.
func (a *arrivals) stamp(key string, now time.Time) {
	if key == "" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.at[key]; ok {
		if e.taken {
			delete(a.at, key)
		}
		return
	}
	a.put(key, arrival{at: now}, now)
}

// take returns when the request with reply subject key arrived, or now
// when that is unknown, and forgets it.
func (a *arrivals) take(key string, now time.Time) time.Time {
	if key == "" {
		return now
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.at[key]; ok && !e.taken {
		delete(a.at, key)
		return e.at
	}
	a.put(key, arrival{at: now, taken: true}, now)
	return now
}

// put adds an entry, first evicting what is too old or too many. Lock held.
func (a *arrivals) put(key string, e arrival, now time.Time) {
	for a.head < len(a.order) {
		k := a.order[a.head]
		old, ok := a.at[k.key]
		live := ok && old.seq == k.seq
		if live && len(a.at) < a.max && now.Sub(old.at) <= a.maxAge {
			break
		}
		if live {
			delete(a.at, k.key)
		}
		a.order[a.head] = arrivalKey{}
		a.head++
	}
	if a.head > len(a.order)/2 { // compact, so order stays within twice the entries
		n := copy(a.order, a.order[a.head:])
		clear(a.order[n:])
		a.order = a.order[:n]
		a.head = 0
	}
	a.seq++
	e.seq = a.seq
	a.at[key] = e
	a.order = append(a.order, arrivalKey{key: key, seq: e.seq})
}

// listen starts the side subscriptions on subjs, on st's channel, unless
// they run. Their owner is the action service: started when the service
// gets an instance, ended by stop when it has none, so that with no
// endpoint up a requester gets no responders at once rather than a
// timeout.
func (a *arrivals) listen(st *stamper, subjs ...string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.subs != nil {
		return nil
	}
	var subs []*nats.Subscription
	for _, subject := range subjs {
		sub, err := st.subscribe(subject, a)
		if err != nil {
			st.unsubscribe(subs)
			return err
		}
		subs = append(subs, sub)
	}
	a.subs = subs
	return nil
}

// stop ends the side subscriptions; the stamps stay for the requests the
// endpoints still drain.
func (a *arrivals) stop(st *stamper) error {
	a.mu.Lock()
	subs := a.subs
	a.subs = nil
	a.mu.Unlock()
	return st.unsubscribe(subs)
}

// stamper runs the side subscriptions of every PBX of a Bridge: channel
// subscriptions that all feed one channel, read by one goroutine (run),
// rather than nats.go's goroutine per subscription, two per PBX, which
// were about 7 KiB of an idle PBX (docs/operations.md, "Large fan-in").
// The channel holds stamperQueue requests: past that, nats.go drops the
// stamps (a slow consumer on the main connection) and those requests
// count as just arrived.
type stamper struct {
	nc *nats.Conn
	ch chan *nats.Msg

	mu sync.RWMutex
	of map[*nats.Subscription]*arrivals // the store of each subscription
}

// stamperQueue is the stamps a Bridge's side subscriptions hold before
// its stamper takes them.
const stamperQueue = 4096

func newStamper(nc *nats.Conn) *stamper {
	return &stamper{nc: nc, ch: make(chan *nats.Msg, stamperQueue), of: make(map[*nats.Subscription]*arrivals)}
}

// run stamps each request into its subscription's store until ctx ends.
// Its owner is the Bridge: Start starts it, with the PBXes, and Shutdown
// ends it and waits for it with them.
func (st *stamper) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-st.ch:
			st.mu.RLock()
			a := st.of[m.Sub]
			st.mu.RUnlock()
			if a != nil {
				a.stamp(m.Reply, time.Now())
			}
		}
	}
}

// subscribe adds a side subscription on subject for a.
func (st *stamper) subscribe(subject string, a *arrivals) (*nats.Subscription, error) {
	st.mu.Lock()
	defer st.mu.Unlock() // held, so run finds a for the first request
	sub, err := st.nc.ChanSubscribe(subject, st.ch)
	if err != nil {
		return nil, err
	}
	st.of[sub] = a
	return sub, nil
}

// unsubscribe ends subs.
func (st *stamper) unsubscribe(subs []*nats.Subscription) error {
	var errs []error
	for _, sub := range subs {
		errs = append(errs, sub.Unsubscribe())
		st.mu.Lock()
		delete(st.of, sub)
		st.mu.Unlock()
	}
	return errors.Join(errs...)
}

package bridge

import (
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
// subject; the handler takes the stamp. Its callback does nothing else,
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

// listen starts the side subscriptions on subjs unless they run. Their
// owner is the action service: started when the service gets an
// instance, ended by stop when it has none, so that with no endpoint up a
// requester gets no responders at once rather than a timeout.
func (a *arrivals) listen(nc *nats.Conn, subjs ...string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.subs != nil {
		return nil
	}
	var subs []*nats.Subscription
	for _, subject := range subjs {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) { a.stamp(m.Reply, time.Now()) })
		if err == nil {
			// As many pending stamps as the store keeps: past that,
			// stamps are dropped and those requests count as just
			// arrived.
			if err = sub.SetPendingLimits(a.max, -1); err != nil {
				_ = sub.Unsubscribe()
			}
		}
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return err
		}
		subs = append(subs, sub)
	}
	a.subs = subs
	return nil
}

// stop ends the side subscriptions; the stamps stay for the requests the
// endpoints still drain.
func (a *arrivals) stop() error {
	a.mu.Lock()
	subs := a.subs
	a.subs = nil
	a.mu.Unlock()
	var errs []error
	for _, sub := range subs {
		errs = append(errs, sub.Unsubscribe())
	}
	return errors.Join(errs...)
}

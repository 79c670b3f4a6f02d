package bridge

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/bridge/internal/ha"
	"github.com/ami-bridge/ami-bridge/lease"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// quietRig is a PBX with a reference session and JetStream, for HA tests
// that drive the PBX's events one by one.
type quietRig struct {
	t   *testing.T
	pbx *amitest.Server
	ref *refEvents
	js  jetstream.JetStream
	url string
}

func newQuietRig(t *testing.T) *quietRig {
	ns := startNATS(t, natsOptions{jetStream: true})
	pbx := startPBX(t, amitest.Config{Profile: amitest.Asterisk22, WriteTimeout: time.Second})
	js, err := jetstream.New(connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	return &quietRig{t: t, pbx: pbx, ref: referenceSession(t, pbx), js: js, url: ns.ClientURL()}
}

func (r *quietRig) bridge(holder string) *Bridge {
	r.t.Helper()
	b, _ := startBridge(r.t, reconnecting(r.t, r.url), []ServerConfig{fastServer("pbx1", r.pbx)}, haBridgeOptions(holder, 0))
	return b
}

// emit sends events and waits until the reference session has them all.
func (r *quietRig) emit(ms ...*amiproto.Message) [][]byte {
	r.t.Helper()
	n := len(r.ref.snapshot())
	for _, m := range ms {
		r.pbx.Emit(m)
	}
	return waitFor(r.t, r.ref.snapshot, func(e [][]byte) bool { return len(e) >= n+len(ms) })
}

// call plays one call and waits until the reference session has it.
func (r *quietRig) call() {
	r.t.Helper()
	n := len(r.ref.snapshot())
	calls := r.pbx.StartCalls(context.Background(), 1, 1)
	if err := calls.Wait(); err != nil {
		r.t.Fatal(err)
	}
	_, sent, _ := calls.Count()
	waitFor(r.t, r.ref.snapshot, func(e [][]byte) bool { return int64(len(e)) >= int64(n)+sent })
}

// A quiet PBX and a clean handover (issue 16): one call, a silence, three
// equal UserEvents, the active shut down a second later, three more. The
// standby continues exactly: every event once, in order, Ami-Seq 1, 2,
// 3… with no gap, found by the stream's last event (matched).
func TestHA_QuietPBXHandover(t *testing.T) {
	r := newQuietRig(t)
	a := r.bridge("a")
	waitStatus(t, a, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	b := r.bridge("b")
	waitStatus(t, b, func(st subjects.PBXStatus) bool {
		return st.HA.Role == subjects.RoleStandby && st.HA.Holder == "a" && allUp(st)
	})
	r.call()
	time.Sleep(2 * time.Second) // the silence: the test's own schedule
	r.emit(userEvent("quiet", 1), userEvent("quiet", 1), userEvent("quiet", 1))
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive })
	want := r.emit(userEvent("quiet", 1), userEvent("quiet", 1), userEvent("quiet", 1))
	checkStreamHolds(t, r.js, want)
	st = b.Status()[0]
	if lt := st.HA.LastTakeover; len(st.HA.Gaps) > 0 || lt == nil || !lt.Matched {
		t.Fatalf("b: gaps %v, last takeover %+v; want none, matched", st.HA.Gaps, lt)
	}
}

// A standby that logged in during the silence read too few events to
// prove its place by the chain: it reads the stream back from before its
// login, finds its first events as the stream's last ones, and continues
// exactly: no event twice, no gap (issue 16: the ring's events went out
// again under new numbers, 9 UserEvents for 6).
func TestHA_StandbyThatLoggedInDuringTheSilence(t *testing.T) {
	r := newQuietRig(t)
	a := r.bridge("a")
	waitStatus(t, a, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	r.call()
	b := r.bridge("b")
	waitStatus(t, b, func(st subjects.PBXStatus) bool {
		return st.HA.Role == subjects.RoleStandby && st.HA.Holder == "a" && allUp(st)
	})
	first := r.emit(userEvent("quiet", 1), userEvent("quiet", 2), userEvent("quiet", 3))
	waitFor(t, func() uint64 { return a.Status()[0].LastSeq }, func(n uint64) bool { return n >= uint64(len(first)) })
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive })
	want := r.emit(userEvent("quiet", 4), userEvent("quiet", 5), userEvent("quiet", 6))
	checkOnceInOrder(t, streamUpTo(t, r.js, want[len(want)-1]), want)
	checkStreamHolds(t, r.js, want)
	st := b.Status()[0]
	if lt := st.HA.LastTakeover; len(st.HA.Gaps) > 0 || lt == nil || !lt.Matched {
		t.Fatalf("b: gaps %v, last takeover %+v; want none, matched", st.HA.Gaps, lt)
	}
}

// streamUpTo returns the stream once it holds the PBX's last event last:
// the publisher sends in order, so anything sent twice before it is
// stored by then.
func streamUpTo(t *testing.T, js jetstream.JetStream, last []byte) []storedEvent {
	t.Helper()
	return waitFor(t, func() []storedEvent { return streamEvents(t, js) }, func(s []storedEvent) bool {
		return len(s) > 0 && string(s[len(s)-1].data) == string(last)
	})
}

// checkOnceInOrder fails unless got holds want, each event once, in
// order, under increasing Ami-Seq and distinct Nats-Msg-Ids.
func checkOnceInOrder(t *testing.T, got []storedEvent, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("the stream holds %d events, the PBX sent %d", len(got), len(want))
	}
	ids := map[string]bool{}
	for i := range got {
		if string(got[i].data) != string(want[i]) || ids[got[i].id] || i > 0 && got[i].seq <= got[i-1].seq {
			t.Fatalf("stream event %d (Ami-Seq %d, %s): want the PBX's event %d, once, numbered above the one before:\n got %s\nwant %s", i+1, got[i].seq, got[i].id, i+1, got[i].data, want[i])
		}
		ids[got[i].id] = true
	}
}

// An active that dies before its first ack (issue 16 item 2): the stream
// holds its first events, its lease left epoch and limit but nothing
// acknowledged. The next active, which logged in after those events,
// never reuses their numbers: everything the PBX sent is in the stream
// once (the old checkpoint had Seq 0, the next active numbered from 1
// under the same epoch, and JetStream dropped its events as duplicates).
func TestHA_ActiveDiedBeforeItsFirstAck(t *testing.T) {
	r := newQuietRig(t)
	// What the dead active "a" left: the first three events stored as it
	// published them, and its lease, released by expiry.
	const epoch = 1700000000000
	old := []*amiproto.Message{userEvent("early", 1), userEvent("early", 2), userEvent("early", 3)}
	r.emit(old...)
	if _, err := r.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{subjects.AllEvents("ami")}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	var c ha.Chain
	for i, m := range old {
		seq := strconv.Itoa(i + 1)
		msg := &nats.Msg{Subject: subjects.Event("ami", "pbx1", m.EventName()), Data: m.AppendJSON(nil), Header: nats.Header{
			subjects.HeaderServer: {"pbx1"}, subjects.HeaderEvent: {m.EventName()}, subjects.HeaderSeq: {seq}, subjects.HeaderMsgID: {"pbx1:" + strconv.Itoa(epoch) + ":" + seq},
			subjects.HeaderChain: {strconv.FormatUint(c.Add(ha.Fingerprint(m)), 16)}}}
		if _, err := r.js.PublishMsg(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
	}
	bkt, err := lease.Open(t.Context(), r.js, lease.Config{Bucket: DefaultHABucket, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, err := bkt.Acquire(t.Context(), "pbx1", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context(), []byte(`{"epoch":1700000000000,"limit":65539}`)); err != nil {
		t.Fatal(err)
	}
	b := r.bridge("b")
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	want := r.emit(userEvent("late", 4), userEvent("late", 5), userEvent("late", 6))
	checkOnceInOrder(t, streamUpTo(t, r.js, want[len(want)-1]), want)
}

// markProven returns whether b's HA node has proven its numbering by a
// mark.
func markProven(b *Bridge) bool {
	h := b.pbxes[0].ha
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mark.Valid
}

// A standby that started after the stream's last events, on a PBX whose
// events are all equal, and an active that crashes: nothing but its mark
// can place the tail among its few events (the chain needs 64, and the
// stream read back fits them in several ways). It continues exactly: no
// false gap, nothing twice (issue 16: false gaps and lone events stored
// twice after a standby's restart).
func TestHA_MarkPlacesAFreshStandby(t *testing.T) {
	r := newQuietRig(t)
	nc := reconnecting(t, r.url)
	a, _ := startBridge(t, nc, []ServerConfig{fastServer("pbx1", r.pbx)}, haBridgeOptions("a", 0))
	waitStatus(t, a, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	same := func() *amiproto.Message { return userEvent("quiet", 1) }
	first := r.emit(same(), same(), same())
	streamUpTo(t, r.js, first[len(first)-1])
	b := r.bridge("b")
	waitStatus(t, b, func(st subjects.PBXStatus) bool {
		return st.HA.Role == subjects.RoleStandby && st.HA.Holder == "a" && allUp(st)
	})
	waitFor(t, func() bool { return markProven(b) }, func(ok bool) bool { return ok })
	more := r.emit(same(), same())
	waitFor(t, func() int { return len(streamEvents(t, r.js)) }, func(n int) bool { return n == len(more) })
	nc.Close() // a crashes: it publishes and renews no more
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive })
	want := r.emit(same())
	checkOnceInOrder(t, streamUpTo(t, r.js, want[len(want)-1]), want)
	st := b.Status()[0]
	if lt := st.HA.LastTakeover; len(st.HA.Gaps) > 0 || lt == nil || !lt.Matched {
		t.Fatalf("b: gaps %v, last takeover %+v; want none, matched", st.HA.Gaps, lt)
	}
}

// When the lease is free, a standby logged in for long takes it before
// one that logged in just before the active crashed, which may have
// missed events the old active read and never stored and would report a
// gap the other avoids (nemesis seed 16 long and seed 3 short: the fresh
// process won the race for the lease).
func TestHA_ProvenStandbyTakesTheFreeLeaseFirst(t *testing.T) {
	r := newQuietRig(t)
	nc := reconnecting(t, r.url)
	a, _ := startBridge(t, nc, []ServerConfig{fastServer("pbx1", r.pbx)}, haBridgeOptions("a", 0))
	waitStatus(t, a, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	first := r.emit(userEvent("quiet", 1), userEvent("quiet", 2))
	streamUpTo(t, r.js, first[len(first)-1])
	b := r.bridge("b")
	waitStatus(t, b, func(st subjects.PBXStatus) bool {
		return st.HA.Role == subjects.RoleStandby && st.HA.Holder == "a" && allUp(st)
	})
	waitFor(t, func() bool {
		return markProven(b) && !b.pbxes[0].ha.contendAfter(time.Now()).After(time.Now().Add(b.pbxes[0].ha.opts.LeaseTTL/8))
	}, func(ok bool) bool { return ok })
	nc.Close() // a crashes
	c := r.bridge("c")
	waitStatus(t, c, func(st subjects.PBXStatus) bool { return allUp(st) })
	if now := time.Now(); !c.pbxes[0].ha.contendAfter(now).After(now.Add(c.pbxes[0].ha.opts.LeaseTTL / 4)) {
		t.Fatal("c counts as logged in for long: the test needs a fresh process")
	}
	st := waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Holder != "a" && st.HA.Holder != "" })
	if st.HA.Holder != "b" {
		t.Fatalf("%s took the lease, want b (proven by its mark)", st.HA.Holder)
	}
	want := r.emit(userEvent("quiet", 3))
	checkOnceInOrder(t, streamUpTo(t, r.js, want[len(want)-1]), want)
}

// The process logged in the longest tries first for a free lease: the
// wait shrinks from half a lease TTL for a login just now to none for a
// login of two TTLs; the process that had the last ack tries at once.
func TestHA_FreshLoginWaitsForAFreeLease(t *testing.T) {
	p := standbyPBX(t, 100)
	p.events = &link{role: subjects.RoleEvents, log: slog.New(slog.DiscardHandler), changed: func() {}}
	h := p.ha
	ttl := h.opts.LeaseTTL
	loggedIn := func(ago time.Duration, now time.Time) {
		p.events.setState(subjects.StateConnected, nil)
		p.events.mu.Lock()
		p.events.since = now.Add(-ago)
		p.events.mu.Unlock()
	}
	now := time.Now()
	loggedIn(0, now)
	if at := h.contendAfter(now); !at.Equal(now.Add(ttl / 2)) {
		t.Fatalf("a login just now tries %v later, want half a TTL", at.Sub(now))
	}
	loggedIn(ttl, now)
	older := h.contendAfter(now)
	loggedIn(ttl/2, now)
	if younger := h.contendAfter(now); !older.Before(younger) {
		t.Fatalf("a login of one TTL tries %v later, one of half a TTL %v: want the older first", older.Sub(now), younger.Sub(now))
	}
	loggedIn(2*ttl, now)
	if at := h.contendAfter(now); !at.Equal(now) {
		t.Fatalf("a login of two TTLs tries %v later, want at once", at.Sub(now))
	}
	loggedIn(0, now)
	h.leaseWritten("old", ha.Value{Epoch: 1, Limit: 9, Final: true}) // a shutdown's handover
	if at := h.contendAfter(now); !at.Equal(now) {
		t.Fatalf("after a shutdown's handover, a login just now tries %v later, want at once", at.Sub(now))
	}
	h.leaseWritten("old", ha.Value{Epoch: 1, Limit: 9})
	h.mu.Lock()
	h.own.Valid = true
	h.mu.Unlock()
	if at := h.contendAfter(now); !at.Equal(now) {
		t.Fatalf("the last ack's holder tries %v later, want at once", at.Sub(now))
	}
}

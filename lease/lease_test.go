package lease_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/internal/natstest"
	"github.com/ami-bridge/ami-bridge/lease"
)

const waitTime = 10 * time.Second

// startJetStream connects to a JetStream server of the test's own.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	return natstest.ConnectJS(t, natstest.Start(t, natstest.Options{JetStream: true}))
}

func open(t *testing.T, js jetstream.JetStream, ttl time.Duration) *lease.Bucket {
	t.Helper()
	b, err := lease.Open(t.Context(), js, lease.Config{Bucket: "leases", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAcquire_OneHolderAmongContenders(t *testing.T) {
	b := open(t, startJetStream(t), 2*time.Second)
	var won atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.Acquire(t.Context(), "pbx1", string(rune('a'+i)), nil)
			switch {
			case err == nil:
				won.Add(1)
			case !errors.Is(err, lease.ErrHeld):
				t.Errorf("contender %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d holders, want exactly 1", won.Load())
	}
	if _, err := b.Acquire(t.Context(), "pbx2", "a", nil); err != nil {
		t.Fatalf("another key is independent: %v", err)
	}
}

func TestAcquire_HeldErrorNamesHolder(t *testing.T) {
	b := open(t, startJetStream(t), 2*time.Second)
	if _, err := b.Acquire(t.Context(), "pbx1", "node-a", nil); err != nil {
		t.Fatal(err)
	}
	_, err := b.Acquire(t.Context(), "pbx1", "node-b", nil)
	if !errors.Is(err, lease.ErrHeld) || err.Error() != "lease: held by another: node-a" {
		t.Fatalf("err = %v", err)
	}
	var held *lease.HeldError
	if !errors.As(err, &held) || held.Holder != "node-a" || held.Key != "pbx1" {
		t.Fatalf("err = %#v, want a *HeldError naming node-a", err)
	}
}

func TestRenew_KeepsTheLeasePastItsTTL(t *testing.T) {
	b := open(t, startJetStream(t), time.Second)
	l, err := b.Acquire(t.Context(), "pbx1", "a", []byte(`{"seq":1}`))
	if err != nil {
		t.Fatal(err)
	}
	// Renew for three TTLs; a contender must fail throughout.
	end := time.Now().Add(3 * time.Second)
	for seq := 2; time.Now().Before(end); seq++ {
		if err := l.Renew(t.Context(), []byte(`{"seq":`+strconv.Itoa(seq)+`}`)); err != nil {
			t.Fatalf("renew %d: %v", seq, err)
		}
		if _, err := b.Acquire(t.Context(), "pbx1", "b", nil); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("contender after renew %d: %v", seq, err)
		}
		time.Sleep(200 * time.Millisecond) // the renewal interval under test
	}
	if !l.Valid() {
		t.Fatal("a renewed lease is not valid")
	}
}

func TestExpiry_ContenderTakesOverAndSeesLastData(t *testing.T) {
	b := open(t, startJetStream(t), time.Second)
	l, err := b.Acquire(t.Context(), "pbx1", "a", []byte(`{"seq":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(t.Context(), []byte(`{"seq":42}`)); err != nil {
		t.Fatal(err)
	}
	// a dies here: no more renewals. b watches and takes the key when it
	// expires.
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	defer cancel()
	freed := make(chan struct{}, 1)
	seen := make(chan lease.State, 1)
	go b.Watch(ctx, "pbx1", func(st lease.State) {
		if st.Holder != "" {
			select {
			case seen <- st:
			default:
			}
			return
		}
		select {
		case freed <- struct{}{}:
		default:
		}
	})
	start := time.Now()
	select {
	case <-freed:
	case <-ctx.Done():
		t.Fatal("the expiry was never seen")
	}
	// Before it expired, the watch showed the holder and its last write.
	select {
	case st := <-seen:
		if st.Holder != "a" || string(st.Data) != `{"seq":42}` || st.DataToken != l.Token() {
			t.Fatalf("watched %+v, want holder a, its renewal's data and token", st)
		}
	default:
		t.Fatal("the watch never showed the key held")
	}
	took := time.Since(start)
	st, err := b.Get(t.Context(), "pbx1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Holder != "" || string(st.Data) != `{"seq":42}` {
		t.Fatalf("after expiry: %+v (data %s)", st, st.Data)
	}
	l2, err := b.Acquire(t.Context(), "pbx1", "b", nil)
	if err != nil {
		t.Fatalf("take over: %v", err)
	}
	if l.Valid() {
		t.Fatal("the old holder still thinks its lease valid after the key expired")
	}
	if err := l.Renew(t.Context(), nil); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("old holder's renew: %v, want ErrLost", err)
	}
	if !l2.Valid() {
		t.Fatal("new holder's lease not valid")
	}
	t.Logf("expiry seen %v after the last renewal's TTL started", took)
}

func TestRenew_AfterAnotherHolderWroteIsLost(t *testing.T) {
	js := startJetStream(t)
	b := open(t, js, 5*time.Second)
	l, err := b.Acquire(t.Context(), "pbx1", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Someone overwrites the key behind a's back (an operator, or a holder
	// that took it after an expiry a never saw).
	kv, err := js.KeyValue(t.Context(), "leases")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "pbx1", []byte(`{"holder":"b"}`)); err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(t.Context(), nil); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("renew: %v, want ErrLost", err)
	}
	if l.Valid() {
		t.Fatal("lost lease still valid")
	}
}

func TestRelease_FreesAtOnceWithFinalData(t *testing.T) {
	b := open(t, startJetStream(t), 10*time.Second)
	l, err := b.Acquire(t.Context(), "pbx1", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context(), []byte(`{"seq":7}`)); err != nil {
		t.Fatal(err)
	}
	if l.Valid() {
		t.Fatal("released lease still valid")
	}
	// Long before the 10 s TTL, b gets the key and a's final data.
	if _, err := b.Acquire(t.Context(), "pbx1", "b", nil); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	st, err := b.Get(t.Context(), "pbx1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Holder != "b" || string(st.Data) != `{"seq":7}` {
		t.Fatalf("state %+v data %s", st, st.Data)
	}
}

func TestValid_FalseOnceTheDeadlinePassesWithoutRenewal(t *testing.T) {
	b := open(t, startJetStream(t), time.Second)
	l, err := b.Acquire(t.Context(), "pbx1", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Valid() {
		t.Fatal("fresh lease not valid")
	}
	// A frozen process: no renewal, no failure seen. Wait for the
	// deadline the lease itself reports.
	time.Sleep(time.Until(l.ValidUntil()))
	if l.Valid() {
		t.Fatal("lease valid past ValidUntil")
	}
	if err := l.Renew(t.Context(), nil); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("renew past the deadline: %v, want ErrLost", err)
	}
}

func TestOpen_RefusesBucketWithoutMarkers(t *testing.T) {
	js := startJetStream(t)
	if _, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "plain"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lease.Open(t.Context(), js, lease.Config{Bucket: "plain"}); err == nil {
		t.Fatal("a bucket without per-key TTLs was accepted")
	}
	if _, err := lease.Open(t.Context(), js, lease.Config{TTL: 500 * time.Millisecond}); err == nil {
		t.Fatal("a sub-second TTL was accepted")
	}
}

// nats-server keeps a key's TTL in whole seconds: a key written with 1.9s
// expired after 1s while its holder counted on 1.9s.
func TestOpen_RefusesAFractionalTTL(t *testing.T) {
	js := startJetStream(t)
	for _, ttl := range []time.Duration{1500 * time.Millisecond, 1900 * time.Millisecond, 2*time.Second + time.Nanosecond} {
		if _, err := lease.Open(t.Context(), js, lease.Config{Bucket: "leases", TTL: ttl}); err == nil {
			t.Errorf("TTL %v was accepted", ttl)
		}
	}
	if _, err := lease.Open(t.Context(), js, lease.Config{Bucket: "leases", TTL: 3 * time.Second}); err != nil {
		t.Errorf("TTL 3s: %v", err)
	}
}

// A bucket with fewer replicas than the stream it guards would lose the
// leases where the stream survives: an existing one is refused.
func TestOpen_RefusesABucketWithFewerReplicas(t *testing.T) {
	js := startJetStream(t)
	if _, err := lease.Open(t.Context(), js, lease.Config{Bucket: "leases"}); err != nil { // created with 1
		t.Fatal(err)
	}
	_, err := lease.Open(t.Context(), js, lease.Config{Bucket: "leases", Replicas: 3})
	if !errors.Is(err, lease.ErrFewReplicas) {
		t.Fatalf("an R1 bucket for 3 replicas: %v, want ErrFewReplicas", err)
	}
	if _, err := lease.Open(t.Context(), js, lease.Config{Bucket: "leases", Replicas: 1}); err != nil {
		t.Fatalf("R1 for 1 replica: %v", err)
	}
}

func TestAcquire_RefusesNonJSONData(t *testing.T) {
	b := open(t, startJetStream(t), time.Second)
	if _, err := b.Acquire(t.Context(), "pbx1", "a", []byte("not json")); err == nil {
		t.Fatal("non-JSON data accepted")
	}
}

// ValidUntil is the send time of the last successful write plus the TTL
// less a tenth: the margin by which a holder stops publishing before the
// server can expire its key and hand it to another.
func TestValidUntil_TTLLessATenthFromTheWrite(t *testing.T) {
	const ttl = 2 * time.Second
	b := open(t, startJetStream(t), ttl)
	within := func(what string, l *lease.Lease, before, after time.Time) {
		t.Helper()
		margin := ttl - ttl/10
		if got := l.ValidUntil(); got.Before(before.Add(margin)) || got.After(after.Add(margin)) {
			t.Fatalf("after %s, ValidUntil is %v after the call began, want between %v and %v",
				what, got.Sub(before), margin, after.Add(margin).Sub(before))
		}
	}
	before := time.Now()
	l, err := b.Acquire(t.Context(), "pbx1", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	within("Acquire", l, before, time.Now())
	before = time.Now()
	if err := l.Renew(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	within("Renew", l, before, time.Now())
}

// A renewal the server stored but whose ack never came back must not end
// the lease: the next renewal finds its own write at the newer revision
// and goes on from it.
func TestRenew_LostAckKeepsTheLease(t *testing.T) {
	js := &natstest.InterceptJS{JetStream: startJetStream(t)}
	b := open(t, js, 2*time.Second)
	l, err := b.Acquire(t.Context(), "pbx1", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	js.DropAck.Store(true)
	if err := l.Renew(t.Context(), []byte(`{"seq":1}`)); err == nil || errors.Is(err, lease.ErrLost) {
		t.Fatalf("renew with its ack lost: %v, want a plain error", err)
	}
	if js.DropAck.Load() {
		t.Fatal("the renewal did not reach the server")
	}
	before := time.Now()
	if err := l.Renew(t.Context(), []byte(`{"seq":2}`)); err != nil {
		t.Fatalf("renew after a lost ack: %v, want the lease kept", err)
	}
	if !l.Valid() || l.ValidUntil().Before(before) {
		t.Fatal("the lease is not valid after its renewal")
	}
	if _, err := b.Acquire(t.Context(), "pbx1", "b", nil); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("contender: %v, want ErrHeld", err)
	}
	st, err := b.Get(t.Context(), "pbx1")
	if err != nil || st.Holder != "a" || string(st.Data) != `{"seq":2}` {
		t.Fatalf("state %+v (%v), want a holding with seq 2", st, err)
	}
	// Another lease of the same holder name is someone else: its write
	// ends this one.
	if err := l.Release(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	l2, err := b.Acquire(t.Context(), "pbx1", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Renew(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(t.Context(), nil); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("released lease renewed: %v, want ErrLost", err)
	}
}

// Valid and ValidUntil are what a publisher asks before every message:
// they must not wait for a renewal stuck in NATS.
func TestValid_DoesNotWaitForARenewal(t *testing.T) {
	js := &natstest.InterceptJS{JetStream: startJetStream(t)}
	b := open(t, js, 10*time.Second)
	l, err := b.Acquire(t.Context(), "pbx1", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	js.Hold, js.Entered = make(chan struct{}), make(chan struct{}, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	renewed := make(chan error, 1)
	go func() { renewed <- l.Renew(ctx, nil) }()
	<-js.Entered
	answered := make(chan bool, 1)
	go func() {
		_ = l.ValidUntil()
		answered <- l.Valid()
	}()
	select {
	case ok := <-answered:
		if !ok {
			t.Fatal("lease not valid during its renewal")
		}
	case <-time.After(time.Second):
		t.Fatal("Valid waited for the renewal held in NATS")
	}
	close(js.Hold)
	if err := <-renewed; err != nil {
		t.Fatal(err)
	}
}

// The .last key is written by compare-and-set. A write there by an
// earlier holder, late, while this lease holds the key, is overwritten by
// the next renewal; a later holder's write ends this lease rather than
// being overwritten.
func TestLast_CompareAndSet(t *testing.T) {
	js := startJetStream(t)
	b := open(t, js, 2*time.Second)
	l, err := b.Acquire(t.Context(), "pbx1", "a", []byte(`{"seq":1}`))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), "leases")
	if err != nil {
		t.Fatal(err)
	}
	late := []byte(`{"holder":"old","token":"old/1","data":{"seq":0}}`)
	if _, err := kv.Put(t.Context(), "pbx1.last", late); err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(t.Context(), []byte(`{"seq":2}`)); err != nil {
		t.Fatalf("renew after an earlier holder's late write: %v", err)
	}
	if st, err := b.Get(t.Context(), "pbx1"); err != nil || string(st.Data) != `{"seq":2}` || st.DataToken != l.Token() {
		t.Fatalf("last data %s by %s (%v), want this lease's {\"seq\":2}", st.Data, st.DataToken, err)
	}
	// A later holder took the key and wrote .last: this lease's next
	// write must not land there.
	if _, err := kv.Put(t.Context(), "pbx1", []byte(`{"holder":"b","token":"b/1"}`)); err != nil {
		t.Fatal(err)
	}
	later := []byte(`{"holder":"b","token":"b/1","data":{"seq":9}}`)
	if _, err := kv.Put(t.Context(), "pbx1.last", later); err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(t.Context(), []byte(`{"seq":3}`)); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("renew after a later holder: %v, want ErrLost", err)
	}
	if st, err := b.Get(t.Context(), "pbx1"); err != nil || string(st.Data) != `{"seq":9}` {
		t.Fatalf("last data %s (%v), want the later holder's", st.Data, err)
	}
}

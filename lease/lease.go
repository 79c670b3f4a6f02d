package lease

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors a caller branches on.
var (
	// ErrHeld is what Acquire's *HeldError matches (errors.Is) when
	// another holder has the key.
	ErrHeld = errors.New("lease: held by another")
	// ErrLost is returned by Renew and Release when the key is no longer
	// the caller's: it expired, or another holder took it.
	ErrLost = errors.New("lease: lost")
	// ErrFewReplicas is returned by Open when the bucket exists with
	// fewer replicas than asked: the leases would not survive the loss of
	// a server that the stream they guard survives.
	ErrFewReplicas = errors.New("lease: the bucket has too few replicas")
)

// HeldError is Acquire's error when someone holds the key: Holder names
// them, "" when the key was held but could not be read.
type HeldError struct {
	Key    string
	Holder string
}

func (e *HeldError) Error() string {
	if e.Holder == "" {
		return ErrHeld.Error()
	}
	return ErrHeld.Error() + ": " + e.Holder
}

// Is makes errors.Is(err, ErrHeld) hold.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// CheckTTL reports whether the server can keep ttl as it is: at least a
// second, and whole seconds, since nats-server keeps a per-message TTL in
// whole seconds. A key written with 1.5s would expire after 1s while its
// holder counted on 1.5s, and another could take it in between.
func CheckTTL(ttl time.Duration) error {
	if ttl < time.Second || ttl%time.Second != 0 {
		return fmt.Errorf("lease: ttl %v: want whole seconds, at least 1s: the server keeps a key's TTL in whole seconds", ttl)
	}
	return nil
}

// Defaults of the zero values in Config.
const (
	DefaultBucket = "ami_bridge_leases"
	DefaultTTL    = 2 * time.Second
)

// Config describes the bucket that holds the leases.
type Config struct {
	Bucket   string        // KV bucket name, default DefaultBucket
	TTL      time.Duration // a lease's time to live after its last renewal, default DefaultTTL
	Replicas int           // stream replicas of the bucket, default 1; an existing bucket must have at least as many
}

// Bucket is an open lease bucket. It is safe for concurrent use.
type Bucket struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	ttl    time.Duration
	guard  time.Duration
	prefix string // "$KV.<bucket>.": the subject of a key is prefix+key
}

// Open finds or creates the bucket. A bucket that exists already is used
// as it is; it must allow per-key TTLs (LimitMarkerTTL set), which Open
// checks.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Bucket, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if err := CheckTTL(cfg.TTL); err != nil {
		return nil, err
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "ami-bridge HA leases and checkpoints",
			History:     1,
			Replicas:    cfg.Replicas,
			Storage:     jetstream.FileStorage,
			// Markers tell watchers at once that a lease expired; they
			// only need to outlive a contender's next look.
			LimitMarkerTTL: max(cfg.TTL, time.Second) * 10,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("lease: bucket %s: %w", cfg.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease: bucket %s status: %w", cfg.Bucket, err)
	}
	if st.LimitMarkerTTL() == 0 {
		return nil, fmt.Errorf("lease: bucket %s has no limit marker TTL, so keys cannot expire one by one; delete it or create it with one", cfg.Bucket)
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		if have := bs.StreamInfo().Config.Replicas; have < cfg.Replicas {
			return nil, fmt.Errorf("%w: bucket %s has %d, want at least %d; raise them with nats stream edit KV_%s --replicas %d",
				ErrFewReplicas, cfg.Bucket, have, cfg.Replicas, cfg.Bucket, cfg.Replicas)
		}
	}
	return &Bucket{
		js:     js,
		kv:     kv,
		ttl:    cfg.TTL,
		guard:  cfg.TTL / 10,
		prefix: "$KV." + cfg.Bucket + ".",
	}, nil
}

// TTL returns the lease time to live.
func (b *Bucket) TTL() time.Duration { return b.ttl }

// record is what every write of a key holds. Token is unique to one
// Lease, so that a holder can tell its own write from anyone else's,
// even from its own earlier lease's.
type record struct {
	Holder string          `json:"holder"`
	Token  string          `json:"token,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

func encode(holder, token string, data []byte) ([]byte, error) {
	if len(data) > 0 && !json.Valid(data) {
		return nil, errors.New("lease: data must be JSON")
	}
	return json.Marshal(record{Holder: holder, Token: token, Data: data})
}

// newToken returns a token no other Lease has: the holder's name and 128
// random bits.
func newToken(holder string) string {
	return holder + "/" + rand.Text()
}

// State is what a key shows to someone who does not hold it.
type State struct {
	Holder   string // "" when nobody holds the key
	Revision uint64 // of the lease key; 0 when nobody holds it
	Data     []byte // the payload of the last write by any holder, even after its lease ended
	// DataToken is the token of the Lease that wrote Data: a holder that
	// finds its own (Lease.Token) knows nobody wrote since.
	DataToken string
}

// Get returns who holds key now and the last payload written for it.
func (b *Bucket) Get(ctx context.Context, key string) (State, error) {
	var st State
	e, err := b.kv.Get(ctx, key)
	switch {
	case err == nil:
		var r record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return st, fmt.Errorf("lease: key %s: %w", key, err)
		}
		st.Holder, st.Revision = r.Holder, e.Revision()
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return st, fmt.Errorf("lease: get %s: %w", key, err)
	}
	last, err := b.kv.Get(ctx, lastKey(key))
	switch {
	case err == nil:
		var r record
		if err := json.Unmarshal(last.Value(), &r); err != nil {
			return st, fmt.Errorf("lease: key %s: %w", lastKey(key), err)
		}
		st.Data, st.DataToken = r.Data, r.Token
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return st, fmt.Errorf("lease: get %s: %w", lastKey(key), err)
	}
	return st, nil
}

func lastKey(key string) string { return key + ".last" }

// Acquire takes key for holder if nobody holds it, writing data as the
// first payload. It fails with ErrHeld when someone does.
func (b *Bucket) Acquire(ctx context.Context, key, holder string, data []byte) (*Lease, error) {
	token := newToken(holder)
	v, err := encode(holder, token, data)
	if err != nil {
		return nil, err
	}
	sent := time.Now()
	rev, err := b.kv.Create(ctx, key, v, jetstream.KeyTTL(b.ttl))
	if errors.Is(err, jetstream.ErrKeyExists) {
		held := &HeldError{Key: key}
		if st, gerr := b.Get(ctx, key); gerr == nil {
			held.Holder = st.Holder
		}
		return nil, held
	}
	if err != nil {
		return nil, fmt.Errorf("lease: acquire %s: %w", key, err)
	}
	l := &Lease{b: b, key: key, holder: holder, token: token, rev: rev, base: sent}
	l.setDeadline(sent)
	if len(data) > 0 {
		l.mu.Lock()
		defer l.mu.Unlock()
		if err := l.writeLastLocked(ctx, v); err != nil {
			return l, fmt.Errorf("lease: acquire %s: write data: %w", key, err)
		}
	}
	return l, nil
}

// Watch calls fn with the state of key now and after every change, until
// ctx ends or the watch fails: Holder "" once the holder released the key
// or its lease expired, so that a contender can try Acquire at once; else
// the holder and what it wrote (Data, DataToken), each renewal's.
func (b *Bucket) Watch(ctx context.Context, key string, fn func(State)) error {
	w, err := b.kv.Watch(ctx, key)
	if err != nil {
		return fmt.Errorf("lease: watch %s: %w", key, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("lease: watch ended")
			}
			if e == nil { // the end of the initial values
				continue
			}
			var st State
			if e.Operation() == jetstream.KeyValuePut {
				var r record
				if err := json.Unmarshal(e.Value(), &r); err != nil {
					return fmt.Errorf("lease: key %s: %w", key, err)
				}
				st = State{Holder: r.Holder, Revision: e.Revision(), Data: r.Data, DataToken: r.Token}
			}
			fn(st)
		}
	}
}

// Lease is a key held by this process. Its methods are safe for concurrent
// use. Valid and ValidUntil take no lock and do no I/O, so a caller's hot
// path never waits behind a renewal; Renew and Release are serialised.
type Lease struct {
	b      *Bucket
	key    string
	holder string
	token  string // in every write of this lease; see record

	// The deadline is kept as nanoseconds after base, on the monotonic
	// clock, so that Valid is an atomic load and a clock read.
	base     time.Time
	deadline atomic.Int64
	lost     atomic.Bool

	mu      sync.Mutex // serialises Renew and Release, and guards rev and lastRev
	rev     uint64
	lastRev uint64 // of the .last key, as this lease last wrote or read it
}

// setDeadline makes the lease valid until the TTL less the guard after
// sent, the moment its last successful write was sent.
func (l *Lease) setDeadline(sent time.Time) {
	l.deadline.Store(int64(sent.Sub(l.base) + l.b.ttl - l.b.guard))
}

// Key returns the key held.
func (l *Lease) Key() string { return l.key }

// Token returns the token unique to this lease that its writes carry.
func (l *Lease) Token() string { return l.token }

// Valid reports whether the lease is still certainly this process's: no
// renewal has failed for a lost key, and ValidUntil has not passed.
func (l *Lease) Valid() bool {
	return !l.lost.Load() && time.Since(l.base) < time.Duration(l.deadline.Load())
}

// ValidUntil returns when the lease stops being certainly this process's
// unless a renewal succeeds before.
func (l *Lease) ValidUntil() time.Time {
	return l.base.Add(time.Duration(l.deadline.Load()))
}

// Renew extends the lease by the TTL from now and writes data as its
// payload. It fails with ErrLost when the key is no longer this process's;
// any other error (a timeout, NATS down) leaves the lease as it was, valid
// until ValidUntil, and the caller may retry.
//
// A renewal whose write the server stored but whose ack was lost leaves
// the key at a newer revision than the lease knows. The next Renew finds
// its own token there, adopts that revision and writes again, rather than
// taking the lease for lost.
func (l *Lease) Renew(ctx context.Context, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewLocked(ctx, data)
}

func (l *Lease) renewLocked(ctx context.Context, data []byte) error {
	if l.lost.Load() {
		return ErrLost
	}
	v, err := encode(l.holder, l.token, data)
	if err != nil {
		return err
	}
	for adopted := false; ; adopted = true {
		sent := time.Now()
		if !sent.Before(l.ValidUntil()) {
			// The server may have expired the key already and someone
			// else taken it; a write now could only succeed by luck.
			l.lost.Store(true)
			return fmt.Errorf("%w: not renewed before %v", ErrLost, l.ValidUntil().Format(time.RFC3339Nano))
		}
		// The bucket's Update cannot set a TTL, so this is Update's own
		// compare-and-set write with the TTL header added.
		ack, err := l.b.js.PublishMsg(ctx, &nats.Msg{Subject: l.b.prefix + l.key, Data: v},
			jetstream.WithExpectLastSequencePerSubject(l.rev), jetstream.WithMsgTTL(l.b.ttl))
		if err == nil {
			l.rev = ack.Sequence
			l.setDeadline(sent)
			break
		}
		if !wrongLast(err) {
			return fmt.Errorf("lease: renew %s: %w", l.key, err)
		}
		if adopted {
			l.lost.Store(true)
			return fmt.Errorf("%w: %s was written by someone else", ErrLost, l.key)
		}
		// Someone wrote the key after our last known write: it may be our
		// own renewal whose ack was lost.
		e, gerr := l.b.kv.Get(ctx, l.key)
		switch {
		case gerr == nil:
			var r record
			if json.Unmarshal(e.Value(), &r) != nil || r.Token != l.token || e.Revision() <= l.rev {
				l.lost.Store(true)
				return fmt.Errorf("%w: %s was written by someone else", ErrLost, l.key)
			}
			l.rev = e.Revision()
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			l.lost.Store(true)
			return fmt.Errorf("%w: %s expired or was deleted", ErrLost, l.key)
		default:
			// Cannot tell yet: the lease stays as it was.
			return fmt.Errorf("lease: renew %s: %w", l.key, gerr)
		}
	}
	if len(data) > 0 {
		if err := l.writeLastLocked(ctx, v); err != nil {
			return fmt.Errorf("lease: renew %s: write data: %w", l.key, err)
		}
	}
	return nil
}

// writeLastLocked writes v to the .last key by compare-and-set, so that a
// holder whose write is late (its lease ended meanwhile) cannot overwrite
// what a later holder wrote. When the key moved since this lease last saw
// it, the writer is this lease (an ack lost), or an earlier holder if this
// lease still holds the key: either way v goes on top. Otherwise a later
// holder wrote it, and the lease is lost. l.mu is held.
func (l *Lease) writeLastLocked(ctx context.Context, v []byte) error {
	for range 3 {
		rev, err := l.b.kv.Update(ctx, lastKey(l.key), v, l.lastRev)
		if err == nil {
			l.lastRev = rev
			return nil
		}
		if !wrongLast(err) {
			return err
		}
		e, err := l.b.kv.Get(ctx, lastKey(l.key))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			l.lastRev = 0
			continue
		case err != nil:
			return err
		}
		var r record
		if json.Unmarshal(e.Value(), &r) != nil || r.Token != l.token {
			k, err := l.b.kv.Get(ctx, l.key)
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return err
			}
			var kr record
			if err != nil || json.Unmarshal(k.Value(), &kr) != nil || kr.Token != l.token {
				l.lost.Store(true)
				return fmt.Errorf("%w: %s was taken by someone else", ErrLost, l.key)
			}
		}
		l.lastRev = e.Revision()
	}
	return fmt.Errorf("lease: %s keeps changing", lastKey(l.key))
}

// wrongLast reports whether err is JetStream's refusal of a
// compare-and-set: the subject moved past the revision given.
func wrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Release writes data as the last payload and gives the key up, so that a
// contender can take it at once. After Release the lease is not valid.
func (l *Lease) Release(ctx context.Context, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.renewLocked(ctx, data); err != nil {
		return err
	}
	l.lost.Store(true)
	if err := l.b.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev)); err != nil {
		return fmt.Errorf("lease: release %s: %w", l.key, err)
	}
	return nil
}

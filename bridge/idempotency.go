package bridge

// Idempotent requests: a request with the Ami-Idempotency-Key header
// runs its action at most once per key, PBX and window; a retry gets the
// first request's reply, or waits for it while the first runs.
//
// With JetStream the keys live in a KV bucket that every bridge on the
// NATS system shares: the first request claims its key with Create (which
// only one writer wins), runs the action, and writes the reply over its
// claim; a retry that finds the key claimed watches it for the reply,
// until its own deadline. Without JetStream a map in the process holds
// them, so the promise holds only for the retries that reach the same
// process.
//
// A key is claimed only right before the action is sent to Asterisk, so
// that a request refused before (400, 403, 504 for a session never free)
// leaves the key free for a retry. Every reply after the claim is kept,
// errors included: an action whose connection dropped before the answer
// may have run.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// IdempotencyOptions say how long, and where, the keys of idempotent
// requests (the Ami-Idempotency-Key header) are kept.
type IdempotencyOptions struct {
	// Window is how long a key is kept after its reply, default 2m;
	// whole seconds (the server keeps a key's TTL in whole seconds). A key
	// whose action still runs is kept at least until that action's
	// deadline.
	Window time.Duration
	// Bucket is the KV bucket of the keys with JetStream, default
	// "ami_bridge_requests"; created, with per-key TTLs, at the first
	// request with a key. Without JetStream the keys are held in memory,
	// by this process only.
	Bucket string
}

// Defaults of the zero values in IdempotencyOptions.
const (
	DefaultIdempotencyWindow = 2 * time.Minute
	DefaultIdempotencyBucket = "ami_bridge_requests"
)

// checkIdempotency fills the zero values of o and adds its problems.
func checkIdempotency(ps *problems, o *IdempotencyOptions) {
	if o.Window == 0 {
		o.Window = DefaultIdempotencyWindow
	}
	if o.Window < time.Second || o.Window%time.Second != 0 {
		ps.add("Idempotency.Window", "%v: want whole seconds, at least 1s: the server keeps a key's TTL in whole seconds", o.Window)
	}
	if o.Bucket == "" {
		o.Bucket = DefaultIdempotencyBucket
	}
	if strings.ContainsAny(o.Bucket, ".*> \t\r\n/\\") {
		ps.add("Idempotency.Bucket", "%q: no '.', '*', '>', '/', '\\' or whitespace", o.Bucket)
	}
}

// Bounds of the in-memory keys, without JetStream: past them a new key
// is a 503 until old ones expire, rather than a key forgotten early.
const (
	maxMemoryKeys       = 65536
	maxMemoryReplyBytes = 64 << 20
)

// keyRecordOverhead is room kept in a stored record for what is around
// the reply, so that the record fits the max payload.
const keyRecordOverhead = 4 << 10

// States of a key.
const (
	keyRunning = "running"
	keyDone    = "done"
)

// keyRecord is what a key holds: the hash of the body of the request
// that claimed it, and once answered the reply it got, as sent (secrets
// masked).
type keyRecord struct {
	State   string          `json:"state"`
	Body    string          `json:"body_sha256"`
	Code    int             `json:"code,omitempty"`  // the error code, 0 for a success
	Message string          `json:"error,omitempty"` // the error message, with Code
	Reply   json.RawMessage `json:"reply,omitempty"`
}

// recorded captures the reply a replier sends, to keep it for retries.
type recorded struct {
	mu      sync.Mutex // the reply may come after the handler returned (Ami-Wait)
	code    int
	message string
	body    []byte
	got     bool
	then    func() // runs once the reply is recorded; see afterRecord
}

func (rc *recorded) record(hdr nats.Header, body []byte) {
	rc.mu.Lock()
	rc.code, _ = strconv.Atoi(hdr.Get(micro.ErrorCodeHeader))
	rc.message = hdr.Get(micro.ErrorHeader)
	rc.body = append(rc.body[:0], body...)
	first := !rc.got
	rc.got = true
	then := rc.then
	rc.mu.Unlock()
	if first && then != nil {
		then()
	}
}

// afterRecord runs f once the reply is recorded: at once if it is, else
// on the goroutine that sends it (an Ami-Wait reply, after the handler
// returned).
func (rc *recorded) afterRecord(f func()) {
	rc.mu.Lock()
	if rc.got {
		rc.mu.Unlock()
		f()
		return
	}
	rc.then = f
	rc.mu.Unlock()
}

// keyStore keeps the keys: in a KV bucket with JetStream, else in memory.
type keyStore struct {
	window time.Duration
	bucket string
	js     jetstream.JetStream // set by Start with JetStream; nil: in memory
	// replicas of the bucket when created: the stream's, so that the keys
	// survive what the events survive; set by Start.
	replicas int

	mu       sync.Mutex // guards the fields below
	kv       jetstream.KeyValue
	mem      map[string]*memKey
	memBytes int
	pruned   time.Time
}

// memKey is a key held in memory.
type memKey struct {
	rec     keyRecord
	done    chan struct{} // closed when rec is done
	expires time.Time     // zero while running
}

// claim is a key this process claimed, until it stores the reply.
type claim struct {
	key string
	rev uint64 // of the claim in the bucket
}

// errStoreFull is the in-memory store's answer when it holds its bound.
var errStoreFull = errors.New("too many idempotency keys held in memory; retry once older ones expire")

// storeKey is the key of a request's key in the store: a hash, since the
// requester chooses the header (KV keys allow few characters) and the
// same key for another PBX is another request.
func storeKey(prefix, server, key string) string {
	h := sha256.New()
	for _, s := range []string{prefix, server, key} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func bodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// idempotent runs a request that carries an Ami-Idempotency-Key: run
// sends the action and answers through the replier it is given, at most
// once per key. deadline is the request's.
func (p *pbx) idempotent(r replier, key string, body []byte, stream bool, deadline time.Time, run func(replier)) {
	if strings.TrimSpace(key) == "" {
		p.replyError(r, subjects.CodeBadRequest, subjects.HeaderIdempotencyKey+" is empty", nil, stream)
		return
	}
	if stream {
		p.replyError(r, subjects.CodeBadRequest, fmt.Sprintf("%s cannot go with %s: a streamed reply is not kept for retries", subjects.HeaderIdempotencyKey, subjects.HeaderStream), nil, true)
		return
	}
	ks := p.ns.keys
	k, sum := storeKey(p.ns.prefix, p.name, key), bodyHash(body)
	ctx, cancel := context.WithDeadline(p.life.hard, deadline)
	defer cancel()
	for {
		c, rec, err := ks.claim(ctx, k, sum, deadline)
		if err != nil {
			p.replyKeyError(r, ctx, err, false)
			return
		}
		if c != nil {
			rr := r
			rr.rec = &recorded{}
			run(rr)
			// The reply is out, or will be (Ami-Wait): keeping it may take
			// a round trip, which the requester need not wait for, but a
			// retry does. Past the request's deadline too, until the
			// bridge's hard stop.
			rr.rec.afterRecord(func() {
				sctx, scancel := context.WithTimeout(p.life.hard, flushTimeout)
				err := ks.finish(sctx, c, sum, rr.rec, int(p.ns.nc.MaxPayload()))
				scancel()
				if err != nil {
					p.log.Warn("keep the reply of an idempotent request; its retries get a 504 until the key expires", "error", err)
				}
			})
			return
		}
		if rec.Body != sum {
			p.replyError(r, subjects.CodeConflict, fmt.Sprintf("%s was used with another request body within the idempotency window; use a new key", subjects.HeaderIdempotencyKey), nil, false)
			return
		}
		if rec.State != keyDone {
			if rec, err = ks.wait(ctx, k); err != nil {
				p.replyKeyError(r, ctx, err, true)
				return
			}
			if rec == nil {
				continue // the key expired: claim it anew
			}
		}
		if rec.Body != sum {
			p.replyError(r, subjects.CodeConflict, fmt.Sprintf("%s was used with another request body within the idempotency window; use a new key", subjects.HeaderIdempotencyKey), nil, false)
			return
		}
		if rec.Reply == nil { // a reply not kept: its error says why
			p.replyError(r, rec.Code, rec.Message, nil, false)
			return
		}
		var hdr nats.Header
		if rec.Code != 0 {
			hdr = nats.Header{micro.ErrorHeader: {rec.Message}, micro.ErrorCodeHeader: {strconv.Itoa(rec.Code)}}
		}
		p.send(r, hdr, rec.Reply)
		return
	}
}

// replyKeyError answers a request whose key could not be claimed, or
// whose first request's reply did not come while it was waiting: nothing
// was sent to Asterisk for it.
func (p *pbx) replyKeyError(r replier, ctx context.Context, err error, waiting bool) {
	switch {
	case p.life.hard.Err() != nil:
		p.replyError(r, subjects.CodeUnavailable, "the bridge is shutting down", nil, false)
	case ctx.Err() != nil && !waiting:
		p.replyError(r, subjects.CodeTimeout, "the idempotency store did not answer within the request's deadline; the action was not sent", nil, false)
	case ctx.Err() != nil:
		p.replyError(r, subjects.CodeTimeout, fmt.Sprintf("the first request with this %s has not answered within this request's deadline; it was not run again", subjects.HeaderIdempotencyKey), nil, false)
	default:
		p.replyError(r, subjects.CodeUnavailable, fmt.Sprintf("the idempotency store failed, the action was not sent: %v", err), nil, false)
	}
}

// ttl is a key's time to live from now: the window, or while its action
// may run, until deadline; in whole seconds.
func (ks *keyStore) ttl(deadline time.Time) time.Duration {
	d := max(ks.window, time.Until(deadline)+time.Second)
	return (d + time.Second - 1).Truncate(time.Second)
}

// claim claims k for a request whose body hashes to sum, or returns the
// record of whoever holds it.
func (ks *keyStore) claim(ctx context.Context, k, sum string, deadline time.Time) (*claim, *keyRecord, error) {
	if ks.js == nil {
		return ks.memClaim(k, sum)
	}
	kv, err := ks.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	v, err := json.Marshal(keyRecord{State: keyRunning, Body: sum})
	if err != nil {
		return nil, nil, err
	}
	for {
		rev, err := kv.Create(ctx, k, v, jetstream.KeyTTL(ks.ttl(deadline)))
		if err == nil {
			return &claim{key: k, rev: rev}, nil, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, nil, err
		}
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired in between
		}
		if err != nil {
			return nil, nil, err
		}
		var rec keyRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, nil, fmt.Errorf("key record: %w", err)
		}
		return nil, &rec, nil
	}
}

// wait returns k's record once done, or nil when k expired unanswered
// (the process that ran it ended before keeping the reply, a window ago).
func (ks *keyStore) wait(ctx context.Context, k string) (*keyRecord, error) {
	if ks.js == nil {
		return ks.memWait(ctx, k)
	}
	kv, err := ks.open(ctx)
	if err != nil {
		return nil, err
	}
	w, err := kv.Watch(ctx, k)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("the watch of the key ended")
			}
			if e == nil {
				continue // the end of the initial value
			}
			if e.Operation() != jetstream.KeyValuePut {
				return nil, nil
			}
			var rec keyRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return nil, fmt.Errorf("key record: %w", err)
			}
			if rec.State == keyDone {
				return &rec, nil
			}
		}
	}
}

// finish keeps the reply rc over claim c for the window. A reply too
// large to keep is kept as a 413 that says so.
func (ks *keyStore) finish(ctx context.Context, c *claim, sum string, rc *recorded, maxPayload int) error {
	rec := keyRecord{State: keyDone, Body: sum, Code: rc.code, Message: rc.message, Reply: rc.body}
	switch {
	case len(rc.body) > maxPayload-keyRecordOverhead:
		rec.Code = subjects.CodeTooLarge
		rec.Message = fmt.Sprintf("the first reply to this %s, of %d bytes, was too large to keep for retries", subjects.HeaderIdempotencyKey, len(rc.body))
		rec.Reply = nil
	case !json.Valid(rc.body): // every reply is JSON; this one was not sent
		rec.Code = subjects.CodeUnavailable
		rec.Message = fmt.Sprintf("the first request with this %s got no reply to keep", subjects.HeaderIdempotencyKey)
		rec.Reply = nil
	}
	if ks.js == nil {
		ks.memFinish(c.key, rec)
		return nil
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// Update cannot set a TTL: this is its compare-and-set write with the
	// TTL header added, as the lease package does.
	_, err = ks.js.PublishMsg(ctx, &nats.Msg{Subject: "$KV." + ks.bucket + "." + c.key, Data: v},
		jetstream.WithExpectLastSequencePerSubject(c.rev), jetstream.WithMsgTTL(ks.window))
	return err
}

// open returns the bucket, found or created at the first use: a bridge
// whose requesters send no key needs no bucket, nor its permissions.
// A failure is tried again at the next request.
func (ks *keyStore) open(ctx context.Context) (jetstream.KeyValue, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.kv != nil {
		return ks.kv, nil
	}
	kv, err := ks.js.KeyValue(ctx, ks.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = ks.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         ks.bucket,
			Description:    "ami-bridge idempotency keys and the replies they got",
			History:        1,
			Replicas:       max(ks.replicas, 1),
			Storage:        jetstream.FileStorage,
			LimitMarkerTTL: ks.window, // allows per-key TTLs; markers wake the watchers of an expired key
		})
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", ks.bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s status: %w", ks.bucket, err)
	}
	if st.LimitMarkerTTL() == 0 {
		return nil, fmt.Errorf("bucket %s has no limit marker TTL, so keys cannot expire one by one; delete it or create it with one", ks.bucket)
	}
	ks.kv = kv
	return kv, nil
}

func (ks *keyStore) memClaim(k, sum string) (*claim, *keyRecord, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	now := time.Now()
	if mk, ok := ks.mem[k]; ok && (mk.expires.IsZero() || now.Before(mk.expires)) {
		rec := mk.rec
		return nil, &rec, nil
	}
	if len(ks.mem) >= maxMemoryKeys || now.Sub(ks.pruned) > time.Second {
		ks.prune(now)
	}
	if len(ks.mem) >= maxMemoryKeys {
		return nil, nil, errStoreFull
	}
	if ks.mem == nil {
		ks.mem = make(map[string]*memKey)
	}
	if old, ok := ks.mem[k]; ok {
		ks.memBytes -= len(old.rec.Reply)
	}
	ks.mem[k] = &memKey{rec: keyRecord{State: keyRunning, Body: sum}, done: make(chan struct{})}
	return &claim{key: k}, nil, nil
}

// prune drops the expired keys. mu held.
func (ks *keyStore) prune(now time.Time) {
	ks.pruned = now
	for k, mk := range ks.mem {
		if !mk.expires.IsZero() && !now.Before(mk.expires) {
			ks.memBytes -= len(mk.rec.Reply)
			delete(ks.mem, k)
		}
	}
}

func (ks *keyStore) memWait(ctx context.Context, k string) (*keyRecord, error) {
	ks.mu.Lock()
	mk, ok := ks.mem[k]
	ks.mu.Unlock()
	if !ok {
		return nil, nil
	}
	select {
	case <-mk.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	rec := mk.rec
	return &rec, nil
}

func (ks *keyStore) memFinish(k string, rec keyRecord) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	mk := ks.mem[k]
	if ks.memBytes+len(rec.Reply) > maxMemoryReplyBytes {
		rec.Code = subjects.CodeTooLarge
		rec.Message = fmt.Sprintf("the first reply to this %s was not kept: the replies kept in memory hold their bound of %d bytes", subjects.HeaderIdempotencyKey, maxMemoryReplyBytes)
		rec.Reply = nil
	}
	ks.memBytes += len(rec.Reply)
	mk.rec = rec
	mk.expires = time.Now().Add(ks.window)
	close(mk.done)
}

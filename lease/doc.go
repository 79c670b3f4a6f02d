// Package lease elects one holder per key with a NATS KV bucket, the way a
// Kubernetes Lease does: whoever holds the key is the only one allowed to
// act for it, until it stops renewing and the key expires.
//
// It is built from the bucket's own primitives, with no consensus of its
// own: the JetStream stream behind the bucket orders every write.
//
//   - Acquire is the bucket's Create (put if absent) with a per-key TTL:
//     exactly one of several contenders gets the key.
//   - Renew rewrites the key with the revision the holder last wrote as the
//     expected last sequence of the key (the same compare-and-set as the
//     bucket's Update) and a fresh per-message TTL. A holder whose key was
//     taken or expired meanwhile fails with ErrLost. Every write of a
//     Lease carries a token unique to it, so a renewal whose ack was lost
//     (the server stored it) is recognised by the next one, which adopts
//     its revision instead of failing.
//   - When the holder stops renewing, the server removes the key when its
//     TTL runs out and leaves a delete marker, which a contender's Create
//     accepts. Watchers see the marker at once.
//   - Release deletes the key at the holder's revision, so a contender can
//     take it without waiting for the TTL.
//
// # Fencing
//
// A holder must stop acting before anyone else can take the key. The server
// counts the TTL from when it stored a write, which is after the holder
// sent it, so the holder counts from the moment it sent its last successful
// renewal, on its own monotonic clock: Lease.ValidUntil is that moment plus
// the TTL, less a guard for clock-rate differences. Past it, Valid reports
// false even when no renewal has failed yet, such as after the process was
// frozen (SIGSTOP) or starved. Nothing on the wire can prove the negative,
// so a caller checks Valid right before each act; an act already under way
// when the process froze is the one thing fencing cannot stop, and callers
// make such acts idempotent (ami-bridge's JetStream publishes carry a
// Nats-Msg-Id that the stream deduplicates).
//
// # Data
//
// Every write carries the holder's name and an opaque payload (ami-bridge
// puts its Ami-Seq limit there). The payload of the last write also goes to a
// second key, "<key>.last", written without a TTL, so that the payload
// of a holder that died is still there for the one that takes over after
// the lease expired.
package lease

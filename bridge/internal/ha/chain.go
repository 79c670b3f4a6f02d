// Package ha holds the pure part of ami-bridge's high availability: the
// fingerprint of an event, the chain that proves a place in a PBX's event
// sequence, the value a lease carries, and the plan of a new active. It
// does no I/O; package bridge runs the lease and the publisher around it.
// docs/ha.md explains the design.
package ha

import "github.com/ami-bridge/ami-bridge/amiproto"

// FNV-1a, 64 bits.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// Fingerprint identifies an event across the sessions of one AMI user:
// the FNV-1a hash of its fields in wire order, ActionID left out (the
// event session of each process gives a request's ActionID back to its
// own requester, so that field alone differs between processes).
func Fingerprint(m *amiproto.Message) uint64 {
	h := uint64(fnvOffset)
	for i := range m.Len() {
		f := m.Field(i)
		if len(f.Key) == len("ActionID") && equalFoldASCII(f.Key, "ActionID") {
			continue
		}
		h = fnvString(h, f.Key)
		h = fnvString(h, ":")
		h = fnvString(h, f.Value)
		h = fnvString(h, "\n")
	}
	return h
}

func equalFoldASCII(a, b string) bool {
	for i := 0; i < len(a); i++ {
		if a[i]|0x20 != b[i]|0x20 {
			return false
		}
	}
	return true
}

// W is how many events a chain covers: an event's chain is equal in two
// processes when (but for a hash collision) the W numbered events up to
// it are the same in both.
const W = 64

// Unknown is the fingerprint of an event dropped before it was parsed: a
// chain over it matches no other process's.
const Unknown = 0

// chainBase is the odd multiplier of the rolling hash; chainBaseW is
// chainBase to the power W, for the term that leaves the window.
const chainBase = 0x9E3779B97F4A7C15

var chainBaseW = func() uint64 {
	p := uint64(1)
	for range W {
		p *= chainBase
	}
	return p
}()

// mix spreads a fingerprint's bits (splitmix64's finalizer) so that the
// polynomial sum below does not inherit FNV's structure.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	x ^= x >> 31
	return x
}

// Chain is the rolling hash over the fingerprints of the last W events:
// sum of mix(fp[i])·B^(age i), mod 2^64. Add is O(1), with no allocation.
// Its zero value is an empty window. Every process of a PBX runs one
// over the events it numbers, standbys too.
type Chain struct {
	fps [W]uint64 // the mixed fingerprints in the window, circular
	n   uint64    // events added
	h   uint64
}

// Add puts the next event's fingerprint in the window and returns the
// chain of that event.
func (c *Chain) Add(fp uint64) uint64 {
	x := mix(fp)
	i := c.n % W
	old := c.fps[i] // zero while the window fills
	c.fps[i] = x
	c.n++
	c.h = c.h*chainBase + x - old*chainBaseW
	return c.h
}

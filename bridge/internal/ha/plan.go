package ha

import "sort"

// Tail is the last message the event stream holds for a PBX, as a new
// active read it after taking the lease.
type Tail struct {
	Found bool   // false: the stream holds nothing of this PBX
	Seq   uint64 // its Ami-Seq
	Epoch int64  // of its Nats-Msg-Id
	Chain uint64 // its Ami-Chain
	Event string // its Ami-Event, for the cross-check (Ring.Same)
	Data  []byte // its payload, for the cross-check
	// StreamSeq is its sequence in the stream, for reading back (Back).
	StreamSeq uint64
}

// Stored is an event the stream holds, as read back for Overlap.
type Stored struct {
	Event string
	Data  []byte
}

// fits returns every k >= 1, ascending, for which ring[0, k) equals
// back's last k events, entry by entry (Ring.Same): the ways the ring's
// oldest entries can be the newest events of back.
func fits(ring Ring, back []Stored) []int {
	var ks []int
	for c := 1; c <= min(ring.Len(), len(back)); c++ {
		fit := true
		for i := range c {
			if b := back[len(back)-c+i]; !ring.Same(i, b.Event, b.Data) {
				fit = false
				break
			}
		}
		if fit {
			ks = append(ks, c)
		}
	}
	return ks
}

// Overlap finds how many of the ring's oldest entries are the newest
// events of back (the stream's events up to its tail, oldest first): the
// k >= 1 for which ring[0, k) equals back's last k events (fits). The
// ring is what a process read since its login, so k is how far the
// stream already has it. ok is false when more than one k fits
// (repeating events), or the one that fits holds no payload that back
// holds only once, and k is then 0; k == 0 with ok: none fits.
func Overlap(ring Ring, back []Stored) (k int, ok bool) {
	ks := fits(ring, back)
	switch len(ks) {
	case 0:
		return 0, true
	case 1:
		k = ks[0]
	default:
		return 0, false
	}
	// A fit made only of payloads the stream repeats may be chance: a
	// process that logged in after the tail whose first event repeats the
	// tail's (a DeviceStateChange per call). One payload that the read
	// back holds once pins the place.
	seen := make(map[string]int, len(back))
	for _, b := range back {
		seen[string(b.Data)]++
	}
	for _, b := range back[len(back)-k:] {
		if seen[string(b.Data)] == 1 {
			return k, true
		}
	}
	return 0, false
}

// mayHold returns how many of the ring's oldest entries the stream may
// hold when no place is proven: up to the newest entry that may be the
// tail. An entry with W entries before it in the ring has a chain of its
// own events only, so it may be the tail only where its chain is the
// tail's; an earlier one, only where the ring up to it fits the stream
// read back (back), or, without it, where it is the same event.
func mayHold(ring Ring, tail Tail, back []Stored) int {
	n := ring.Len()
	for i := n - 1; i >= W; i-- {
		if ring.Chain(i) == tail.Chain && ring.Same(i, tail.Event, tail.Data) {
			return i + 1
		}
	}
	if back != nil {
		if ks := fits(ring, back); len(ks) > 0 {
			return ks[len(ks)-1]
		}
		return 0
	}
	for i := min(n, W) - 1; i >= 0; i-- {
		if ring.Same(i, tail.Event, tail.Data) {
			return i + 1
		}
	}
	return 0
}

// Ring is what a process holds of the events read since its event
// session's last login, oldest first: a snapshot, whose entries above the
// chosen point the caller keeps (holds) until the publisher has them.
type Ring interface {
	Len() int
	Seq(i int) uint64   // local seq; ascending
	Chain(i int) uint64 // the chain computed when the event was read
	// Same cross-checks entry i against the stored message beyond its
	// chain: the same event, the same payload but for a field that
	// differs between processes (ActionID).
	Same(i int, event string, data []byte) bool
}

// Own is what the planning process itself last had acknowledged while
// active, when it kept every event since (it lost the lease and nobody
// else has been seen holding it): it proves its place even when that
// entry has left its ring.
type Own struct {
	Valid bool
	Local uint64 // local seq of the last event acknowledged
	Seq   uint64 // its Ami-Seq
	Epoch int64
	Chain uint64
}

// Gap is a range of Ami-Seq, both ends included, that a new active could
// not prove were published: the old active may have published some (the
// stream has those), the rest are lost.
type Gap struct {
	From, To uint64
}

// Decision is where a new active starts.
type Decision struct {
	Epoch   int64  // the Nats-Msg-Id epoch to publish under
	After   uint64 // local seq: publish the ring's entries above it
	Offset  int64  // Ami-Seq = local seq + Offset
	Matched bool   // the stream's tail was found in the ring (or Own)
	Replay  int    // entries held above After, published at once
	Gap     *Gap   // numbers never to be used again; nil when none
	// Behind: the tail is an event this process has not read yet (its
	// reader lags the old active's); plan again once it has.
	Behind bool
}

// Input is what Plan decides from.
type Input struct {
	Tail Tail
	Ring Ring
	Own  Own
	Mark Mark
	// Back, when not nil, is the stream's last events of the PBX up to
	// the tail, oldest first, more than W of them (or all it holds): where
	// Overlap finds exactly one place, that proves it, event by event;
	// else it bounds what the stream may hold of the ring (mayHold).
	Back []Stored
	// Limit is the last lease value's: the highest Ami-Seq the old active
	// may have given.
	Limit uint64
	// Newest is the last local seq numbered, for a ring that holds
	// nothing since the login.
	Newest   uint64
	NewEpoch int64
}

// Mark is how a process's local seqs map to the Ami-Seq of the run it
// takes over: it sent a mark through the PBX (a UserEvent every session
// reads at the same place in the PBX's events), and the active of that
// run answered with the Ami-Seq of the last event it numbered before the
// mark, Seq; Local is this process's local seq of the same event. Valid
// for the events of the login that read the mark, in the run and epoch
// the answer came from.
type Mark struct {
	Valid bool
	Local uint64
	Seq   uint64
	Epoch int64
}

// Plan decides where a new active continues the PBX's stream. It reads
// only its input: nothing carries over from an earlier plan.
//
//   - No tail: nothing of this PBX is in the stream. It starts a new
//     epoch (NewEpoch) at Ami-Seq 1 from the ring's oldest event, so no
//     Nats-Msg-Id of an earlier holder (still in flight, or in the dedupe
//     window after the stream's own limits removed its messages) can
//     collide with its own.
//   - Own is the tail, or the Mark places it: the tail's local seq is
//     known. The entries after it go out with the numbers the old active
//     gave or would have given; what it stored after the read carries the
//     same Nats-Msg-Ids, and JetStream drops it. With a Mark, a tail that
//     came before the first entry held leaves exactly the numbers between
//     as a gap: events the old active read and never stored, or that
//     nobody here read.
//   - The tail proved in the ring by its chain (one entry with the tail's
//     chain that also passes the cross-check), or by Overlap over Back:
//     the same.
//   - Otherwise no place is proven. The numbers from Seq+1 to Limit+1 are
//     a gap, and the next entry held becomes Limit+2, so that no number
//     the old active may have given is used again. The entries up to the
//     newest one that may be the tail (mayHold) are left out: the stream
//     may hold them, and they would be stored twice. Equal payloads are no
//     proof (Asterisk repeats them: a DeviceStateChange per call), so what
//     follows an earlier equal event may be lost, inside the gap.
func Plan(in Input) Decision {
	tail, ring, own, back, limit, newest, newEpoch := in.Tail, in.Ring, in.Own, in.Back, in.Limit, in.Newest, in.NewEpoch
	n := ring.Len()
	start := newest // publish after it when the ring holds nothing
	if n > 0 {
		start = ring.Seq(0) - 1
	}
	if !tail.Found {
		return Decision{Epoch: newEpoch, After: start, Offset: -int64(start), Replay: n}
	}
	d := Decision{Epoch: tail.Epoch}
	if own.Valid && own.Seq == tail.Seq && own.Epoch == tail.Epoch && own.Chain == tail.Chain {
		d.After, d.Offset, d.Matched = own.Local, int64(own.Seq)-int64(own.Local), true
		for i := n - 1; i >= 0 && ring.Seq(i) > own.Local; i-- {
			d.Replay++
		}
		return d
	}
	if d, ok := planByMark(in); ok {
		return d
	}
	found := -1
	for i := n - 1; i >= 0; i-- {
		if ring.Chain(i) != tail.Chain || !ring.Same(i, tail.Event, tail.Data) {
			continue
		}
		if found >= 0 { // more than one place: none is proven
			found = -2
			break
		}
		found = i
	}
	if found == -1 && back != nil {
		if k, ok := Overlap(ring, back); ok && k > 0 {
			found = k - 1
		}
	}
	if found >= 0 {
		l := ring.Seq(found)
		d.After, d.Offset, d.Matched, d.Replay = l, int64(tail.Seq)-int64(l), true, n-1-found
		return d
	}
	// Unproven. Entries up to the newest that may be the tail may be in
	// the stream already: they are left out, inside the gap, rather than
	// stored twice under new numbers.
	after, replay := start, n
	if k := mayHold(ring, tail, back); k > 0 {
		after, replay = ring.Seq(k-1), n-k
	}
	top := max(limit, tail.Seq)
	d.After, d.Offset, d.Replay = after, int64(top)+1-int64(after), replay
	d.Gap = &Gap{From: tail.Seq + 1, To: top + 1}
	return d
}

// planByMark places the tail by this process's Mark, when it has one
// for the tail's epoch: the tail's local seq is its Ami-Seq less the
// mark's offset. ok is false when the mark proves nothing here (none, or
// the entry at that place is another event: the rings differ).
func planByMark(in Input) (d Decision, ok bool) {
	m, tail, ring := in.Mark, in.Tail, in.Ring
	if !m.Valid || m.Epoch != tail.Epoch {
		return d, false
	}
	off := int64(m.Seq) - int64(m.Local)
	at := int64(tail.Seq) - off // the tail's local seq
	n := ring.Len()
	start := int64(in.Newest) // the last local seq before the first entry held
	if n > 0 {
		start = int64(ring.Seq(0)) - 1
	}
	d = Decision{Epoch: tail.Epoch, Offset: off, Matched: true}
	switch {
	case at <= start:
		// The tail came before anything held: what lies between was read
		// by the old active and never stored, or by nobody here.
		d.After, d.Replay = uint64(start), n
		if first := start + 1 + off; int64(tail.Seq)+1 < first {
			d.Gap = &Gap{From: tail.Seq + 1, To: uint64(first - 1)}
		}
		return d, true
	case at > int64(in.Newest):
		// The old active read further than this process has yet.
		d.Behind = true
		return d, true
	}
	i := sort.Search(n, func(i int) bool { return int64(ring.Seq(i)) >= at })
	if i < n && int64(ring.Seq(i)) == at {
		if !ring.Same(i, tail.Event, tail.Data) {
			return Decision{}, false
		}
		i++
	}
	// The entries from i on come after the tail (held at i-1, or numbered
	// here and dropped).
	d.After, d.Replay = uint64(at), n-i
	return d, true
}

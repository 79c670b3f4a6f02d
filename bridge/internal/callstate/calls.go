package callstate

import (
	"slices"
	"strings"
	"time"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// call is one call in progress: the channels of one Linkedid.
//
// Its disposition and billable seconds follow Asterisk's CDR engine
// (main/cdr.c) with cdr.conf's defaults. Every channel that no one dialed
// (the caller, an originated channel, each half of a Local pair) is party
// A of its own CDRs; a dialed channel is only party B of its caller's.
// Each dial is a CDR with the dial's status (ANSWER answered, BUSY busy,
// NOANSWER and CANCEL no answer, CONGESTION and the rest failed); a party
// A's CDR without a dial is answered when the channel was up, else what
// its hangup cause says (17 busy, 16 and 19 no answer, others failed).
//
// The record's disposition is the best (answered, busy, no answer,
// congestion, failed) of its dials' CDRs, those with a DestinationChannel;
// of all its CDRs when it dialed no one (an Originate to an application).
// Its answer is the first answer of a party A, and its billable seconds
// the time during which at least one party A was answered: one CDR's
// billsec for a simple call, the longer one for a Local pair (two CDRs
// over the same time), their sum for CDRs one after the other.
type call struct {
	rec        subjects.CallRecord // what is known so far; End, Disposition, BillableS are set at the end
	originator *channel            // the channel whose Uniqueid is the Linkedid, while it lives
	live       int                 // channels of the call alive
	best       int                 // rank of the best disposition of its CDRs so far
	bestDial   int                 // the same of its CDRs with a party B: its dials
	causeSet   bool                // rec.HangupCause was set by a Hangup
	spans      []span              // answered time of its party A channels that ended
	joined     time.Time           // when the caller joined rec.Queue
}

type span struct{ from, to time.Time }

// Disposition ranks, worst first.
const (
	rankNone = iota
	rankFailed
	rankCongestion
	rankNoAnswer
	rankBusy
	rankAnswered
)

var rankNames = [...]string{
	rankFailed:     subjects.DispositionFailed,
	rankCongestion: subjects.DispositionCongestion,
	rankNoAnswer:   subjects.DispositionNoAnswer,
	rankBusy:       subjects.DispositionBusy,
	rankAnswered:   subjects.DispositionAnswered,
}

// dialRank maps a DialEnd's DialStatus as cdr.c's
// dial_status_to_disposition does with the default cdr.conf (congestion
// and canceldispositionenabled off); final is false for a status that does
// not end the dial.
func dialRank(status string) (rank int, final bool) {
	switch status {
	case "ANSWER":
		return rankAnswered, true
	case "BUSY":
		return rankBusy, true
	case "NOANSWER", "CANCEL":
		return rankNoAnswer, true
	case "", "RINGING", "PROCEEDING", "PROGRESS":
		return rankNone, false
	}
	return rankFailed, true // CONGESTION, CHANUNAVAIL, FAILED and the rest
}

// causeRank maps a hangup cause as cdr.c's cdr_object_set_disposition
// does, for a CDR that neither dialed nor was answered.
func causeRank(cause int) int {
	switch cause {
	case 17: // AST_CAUSE_BUSY
		return rankBusy
	case 16, 19: // NORMAL_CLEARING, NO_ANSWER
		return rankNoAnswer
	}
	return rankFailed // CONGESTION (34) without cdr.conf congestion=yes, NO_ROUTE_DESTINATION, UNREGISTERED, …
}

func (cl *call) fold(r int) {
	if r > cl.best {
		cl.best = r
	}
}

// attach adds a new channel to the call of its Linkedid, starting the call
// when it is the first.
func (m *Model) attach(c *channel, now time.Time) {
	id := c.v.Linkedid
	cl := m.calls[id]
	if cl == nil {
		cl = &call{rec: subjects.CallRecord{Server: m.server, Linkedid: id, Start: c.v.Created}}
		m.calls[id] = cl
	}
	cl.live++
	cl.rec.Channels = append(cl.rec.Channels, c.v.Channel)
	if early, ok := m.early.take(c.v.Uniqueid); ok {
		cl.rec.Cdr = append(cl.rec.Cdr, early...)
	}
	if c.v.Uniqueid == id {
		cl.originator = c
		cl.syncCaller(m, c)
	}
	if c.v.Created.Before(cl.rec.Start) {
		cl.rec.Start = c.v.Created
	}
	m.markDirty(subjects.KindCalls, id)
}

// relink moves c from the call of Linkedid old to its new one: Asterisk
// gives the channels of a bridge the oldest Linkedid. A call left without
// channels is merged into the new one, not published.
func (m *Model) relink(c *channel, old string, now time.Time) {
	oc := m.calls[old]
	if oc != nil {
		oc.live--
		if oc.originator == c {
			oc.originator = nil
		}
		m.markDirty(subjects.KindCalls, old)
	}
	m.attach(c, now)
	nc := m.calls[c.v.Linkedid]
	if oc == nil || oc.live > 0 {
		return
	}
	r := &oc.rec
	for _, ch := range r.Channels {
		if !slices.Contains(nc.rec.Channels, ch) {
			nc.rec.Channels = append(nc.rec.Channels, ch)
		}
	}
	for _, b := range r.Bridges {
		if !slices.Contains(nc.rec.Bridges, b) {
			nc.rec.Bridges = append(nc.rec.Bridges, b)
		}
	}
	nc.rec.Callees = append(nc.rec.Callees, r.Callees...)
	nc.rec.Transfers = append(nc.rec.Transfers, r.Transfers...)
	nc.rec.Cdr = append(nc.rec.Cdr, r.Cdr...)
	if nc.rec.Queue == nil {
		nc.rec.Queue, nc.joined = r.Queue, oc.joined
	}
	if r.Start.Before(nc.rec.Start) {
		nc.rec.Start = r.Start
	}
	if !r.Answer.IsZero() && (nc.rec.Answer.IsZero() || r.Answer.Before(nc.rec.Answer)) {
		nc.rec.Answer = r.Answer
	}
	nc.spans = append(nc.spans, oc.spans...)
	nc.fold(oc.best)
	nc.bestDial = max(nc.bestDial, oc.bestDial)
	delete(m.calls, old)
	m.removed(subjects.KindCalls, old)
	m.closed.put(old, c.v.Linkedid)
}

// syncCaller takes the caller from the originator's caller ID.
func (cl *call) syncCaller(m *Model, c *channel) {
	p := subjects.CallParty{Number: c.v.CallerID.Number, Name: c.v.CallerID.Name, Channel: c.v.Channel}
	if p != cl.rec.Caller {
		cl.rec.Caller = p
		m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
	}
}

// answered notes that a channel of the call is up: the call's answer is
// the first answer of a channel that is party A of a CDR.
func (cl *call) answered(m *Model, c *channel) {
	if c.dialedBy != "" || c.v.Answered.IsZero() {
		return
	}
	if cl.rec.Answer.IsZero() || c.v.Answered.Before(cl.rec.Answer) {
		cl.rec.Answer = c.v.Answered
		m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
	}
}

func (cl *call) addCallee(m *Model, dest *channel, number string) {
	for _, p := range cl.rec.Callees {
		if p.Channel == dest.v.Channel {
			return
		}
	}
	cl.rec.Callees = append(cl.rec.Callees, subjects.CallParty{Number: strings.Clone(number), Channel: dest.v.Channel})
	m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
}

func (cl *call) addBridge(m *Model, id string) {
	if !slices.Contains(cl.rec.Bridges, id) {
		cl.rec.Bridges = append(cl.rec.Bridges, id)
		m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
	}
}

func (c *channel) openPeriod(now time.Time) {
	c.period, c.pAnswer, c.pDial = true, time.Time{}, rankNone
	if c.v.StateCode == stateUp {
		c.pAnswer = now
	}
}

// closePeriod ends the open CDR of channel c at end, as party A: its
// disposition is its dial's, else answered when it was up, else what its
// hangup cause says (haveCause: the channel hung up).
func (cl *call) closePeriod(c *channel, end time.Time, cause int, haveCause bool) {
	if !c.period {
		return
	}
	c.period = false
	if c.dialedBy != "" {
		return // party B of its caller's CDR
	}
	up := !c.pAnswer.IsZero()
	if up && end.After(c.pAnswer) {
		cl.spans = append(cl.spans, span{c.pAnswer, end})
	}
	switch {
	case c.pDial != rankNone:
		cl.fold(c.pDial)
	case up:
		cl.fold(rankAnswered)
	case haveCause:
		cl.fold(causeRank(cause))
	}
}

// finish ends the call: the record is complete and waits for Flush.
func (m *Model) finish(cl *call, now time.Time, seen bool) {
	r := &cl.rec
	r.End = ms(now)
	r.EndSeen = seen
	if r.End.Before(r.Start) {
		r.End = r.Start
	}
	r.DurationS = int(r.End.Sub(r.Start) / time.Second)
	r.BillableS = int(answeredTime(cl.spans) / time.Second)
	if cl.best == rankNone {
		cl.best = rankFailed
		if !r.Answer.IsZero() {
			cl.best = rankAnswered
		}
	}
	if cl.bestDial != rankNone {
		cl.best = cl.bestDial
	}
	r.Disposition = rankNames[cl.best]
	if r.Queue != nil && r.Queue.Agent == "" && !cl.joined.IsZero() && r.Queue.WaitS == 0 {
		r.Queue.WaitS = int(now.Sub(cl.joined) / time.Second)
	}
	cl.originator, cl.spans = nil, nil
	delete(m.calls, r.Linkedid)
	m.removed(subjects.KindCalls, r.Linkedid)
	m.closed.put(r.Linkedid, "")
	m.done = append(m.done, cl)
}

// answeredTime is the length of the union of spans.
func answeredTime(spans []span) time.Duration {
	slices.SortFunc(spans, func(a, b span) int { return a.from.Compare(b.from) })
	var total time.Duration
	var cur span
	for i, s := range spans {
		switch {
		case i == 0:
			cur = s
		case !s.from.After(cur.to):
			if s.to.After(cur.to) {
				cur.to = s.to
			}
		default:
			total += cur.to.Sub(cur.from)
			cur = s
		}
	}
	if len(spans) > 0 && cur.to.After(cur.from) {
		total += cur.to.Sub(cur.from)
	}
	return total
}

// progress is the value of calls.<Linkedid> while the call runs.
func (cl *call) progress(server string) subjects.CallRecord {
	r := cl.rec
	r.Server = server
	return r
}

package callstate

import (
	"strconv"
	"strings"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// channel is one live channel.
type channel struct {
	v       subjects.StateChannel
	touched uint64 // Model.gen when an event last addressed it
	// dialedBy is the Uniqueid of the channel that dialed this one: such a
	// channel is party B of its caller's CDR and has none of its own.
	dialedBy string
	// The channel's current CDR as party A (cdr.c makes a new one after a
	// failed dial or a bridge, when the channel goes on in the dialplan).
	period  bool      // a CDR is open
	pAnswer time.Time // its answer: when the channel was up while it was open
	pDial   int       // the rank of its dial's status, rankNone before a dial ended
	dials   int       // dials of this channel under way
	hAt     time.Time // when it entered the h extension, where its CDR ends (cdr.conf endbeforehexten, on by default)
}

// snapKeys are the header names of one channel snapshot in an event: the
// channel's own (no prefix), or a peer's (DestChannel, LocalOneChannel…).
type snapKeys struct {
	p        string // the prefix
	uniqueid string // p + "Uniqueid"
}

func keysFor(p string) *snapKeys { return &snapKeys{p: p, uniqueid: p + "Uniqueid"} }

var (
	kSelf             = keysFor("")
	kDest             = keysFor("Dest")
	kLocalOne         = keysFor("LocalOne")
	kLocalTwo         = keysFor("LocalTwo")
	kTransferer       = keysFor("Transferer")
	kTransferee       = keysFor("Transferee")
	kOrigTransferer   = keysFor("OrigTransferer")
	kSecondTransferer = keysFor("SecondTransferer")
	kTransferTarget   = keysFor("TransferTarget")
)

// set stores v in *dst when it differs, as a copy: a substring would keep
// the whole event's text alive as long as the channel.
func set(dst *string, v string) bool {
	if *dst == v {
		return false
	}
	*dst = strings.Clone(v)
	return true
}

// setIf is set for a header the event may lack.
func setIf(dst *string, e *amiproto.Message, key string) bool {
	v, ok := e.Lookup(key)
	return ok && set(dst, v)
}

// party is a caller ID as the record keeps it: "<unknown>" is nothing.
func party(v string) string {
	if v == "<unknown>" {
		return ""
	}
	return v
}

func setParty(dst *string, e *amiproto.Message, key string) bool {
	v, ok := e.Lookup(key)
	return ok && set(dst, party(v))
}

func setInt(dst *int, e *amiproto.Message, key string) bool {
	v, ok := e.Lookup(key)
	if !ok {
		return false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n == *dst {
		return false
	}
	*dst = n
	return true
}

// stateUp is AST_STATE_UP.
const stateUp = 6

// snapshot finds the channel an event's snapshot (keys k) names and
// updates it. With create, a channel the model lacks is added (it appeared
// while the bridge was away, or before it started), unless it hung up
// lately. It returns nil when the event names no channel.
func (m *Model) snapshot(e *amiproto.Message, k *snapKeys, now time.Time, create bool) *channel {
	uid := e.Get(k.uniqueid)
	if uid == "" {
		return nil
	}
	c := m.channels[uid]
	fresh := false
	if c == nil {
		if !create {
			return nil
		}
		if _, gone := m.ended.get(uid); gone {
			return nil
		}
		c = &channel{v: subjects.StateChannel{Uniqueid: strings.Clone(uid), Created: ms(now)}}
		m.channels[c.v.Uniqueid] = c
		fresh = true
	}
	oldLinked := c.v.Linkedid
	changed := c.update(e, k, now)
	c.touched = m.gen
	if fresh {
		if c.v.Linkedid == "" {
			c.v.Linkedid = c.v.Uniqueid
		}
		m.attach(c, now)
	} else if c.v.Linkedid != oldLinked {
		if c.v.Linkedid == "" {
			c.v.Linkedid = oldLinked
		} else {
			m.relink(c, oldLinked, now)
		}
	}
	if fresh {
		c.openPeriod(now)
	} else if c.period && c.pAnswer.IsZero() && c.v.StateCode == stateUp {
		c.pAnswer = now
	}
	if changed || fresh {
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
		if cl := m.calls[c.v.Linkedid]; cl != nil {
			if cl.originator == c {
				cl.syncCaller(m, c)
			}
			cl.answered(m, c)
		}
	}
	return c
}

// update copies the snapshot's fields into c and reports whether any
// changed. It reads the event in one pass, matching the header names as
// Asterisk spells them.
func (c *channel) update(e *amiproto.Message, k *snapKeys, now time.Time) bool {
	v := &c.v
	ch := false
	for i := range e.Len() {
		f := e.Field(i)
		key := f.Key
		if k.p != "" {
			if len(key) <= len(k.p) || key[:len(k.p)] != k.p {
				continue
			}
			key = key[len(k.p):]
		}
		switch key {
		case "Channel":
			ch = set(&v.Channel, f.Value) || ch
		case "ChannelState":
			if n, err := strconv.Atoi(f.Value); err == nil && n != v.StateCode {
				v.StateCode, ch = n, true
			}
		case "ChannelStateDesc":
			ch = set(&v.State, f.Value) || ch
		case "CallerIDNum":
			ch = set(&v.CallerID.Number, party(f.Value)) || ch
		case "CallerIDName":
			ch = set(&v.CallerID.Name, party(f.Value)) || ch
		case "ConnectedLineNum":
			ch = set(&v.ConnectedLine.Number, party(f.Value)) || ch
		case "ConnectedLineName":
			ch = set(&v.ConnectedLine.Name, party(f.Value)) || ch
		case "Language":
			ch = set(&v.Language, f.Value) || ch
		case "AccountCode":
			ch = set(&v.AccountCode, f.Value) || ch
		case "Context":
			ch = set(&v.Context, f.Value) || ch
		case "Exten":
			ch = set(&v.Exten, f.Value) || ch
		case "Priority":
			if n, err := strconv.Atoi(f.Value); err == nil && n != v.Priority {
				v.Priority, ch = n, true
			}
		case "Linkedid":
			ch = set(&v.Linkedid, f.Value) || ch
		default:
			if !isChanVarKey(key) {
				continue
			}
			name, val, _ := strings.Cut(f.Value, "=")
			if old, ok := v.Vars[name]; ok && old == val {
				continue
			}
			if v.Vars == nil {
				v.Vars = map[string]string{}
			}
			v.Vars[strings.Clone(name)] = strings.Clone(val)
			ch = true
		}
	}
	if v.StateCode == stateUp && v.Answered.IsZero() {
		v.Answered = ms(now)
		ch = true
	}
	return ch
}

// isChanVarKey: "ChanVariable" or "ChanVariable(<channel>)".
func isChanVarKey(key string) bool {
	const p = "ChanVariable"
	if len(key) < len(p) || key[:len(p)] != p {
		return false
	}
	return len(key) == len(p) || (key[len(p)] == '(' && key[len(key)-1] == ')')
}

// ms is t in UTC to the millisecond, as the values carry times.
func ms(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// onSnapshot takes the channel's snapshot from an event that carries
// nothing else the model keeps (Newchannel, Newstate, NewCallerid…).
func (m *Model) onSnapshot(e *amiproto.Message, now time.Time) {
	m.snapshot(e, kSelf, now, true)
}

func (m *Model) onNewexten(e *amiproto.Message, now time.Time) {
	c := m.snapshot(e, kSelf, now, true)
	if c == nil {
		return
	}
	ch := setIf(&c.v.Application, e, "Application")
	ch = setIf(&c.v.AppData, e, "AppData") || ch
	if ch {
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
	}
	switch {
	case c.v.Exten == "h":
		if c.hAt.IsZero() {
			c.hAt = now
		}
	case !c.period:
		c.openPeriod(now) // a new dialplan step after a closed CDR
	}
}

// onVarSet updates one of the channelvars: the variables the channel's
// events carry as ChanVariable headers. Other variables are not state.
func (m *Model) onVarSet(e *amiproto.Message, now time.Time) {
	c := m.channels[e.Get("Uniqueid")]
	if c == nil {
		return
	}
	name := e.Get("Variable")
	old, ok := c.v.Vars[name]
	if !ok {
		return
	}
	if val := e.Get("Value"); val != old {
		// A map assignment stores the key given even when the key was
		// there: name is the event's, which the reader may reuse.
		c.v.Vars[strings.Clone(name)] = strings.Clone(val)
		c.touched = m.gen
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
	}
}

func (m *Model) onRename(e *amiproto.Message, now time.Time) {
	c := m.channels[e.Get("Uniqueid")]
	if c == nil {
		return
	}
	if setIf(&c.v.Channel, e, "Newname") {
		c.touched = m.gen
		m.markDirty(subjects.KindChannels, c.v.Uniqueid)
	}
}

func (m *Model) onLocalBridge(e *amiproto.Message, now time.Time) {
	m.snapshot(e, kLocalOne, now, true)
	m.snapshot(e, kLocalTwo, now, true)
}

func (m *Model) onHangup(e *amiproto.Message, now time.Time) {
	c := m.snapshot(e, kSelf, now, false)
	if c == nil {
		// A channel the model never saw (it started before the bridge):
		// the lists of a sync under way may still have it.
		if uid := e.Get("Uniqueid"); uid != "" {
			m.ended.put(strings.Clone(uid), strings.Clone(e.Get("Linkedid")))
			if m.syncing {
				m.tomb[objKey{subjects.KindChannels, strings.Clone(uid)}] = struct{}{}
			}
		}
		return
	}
	cause, _ := strconv.Atoi(e.Get("Cause"))
	m.endChannel(c, now, cause, e.Get("Cause-txt"), true)
}

// endChannel removes c: its Hangup (seen) or a sync that no longer finds
// it. The call ends with its last channel.
func (m *Model) endChannel(c *channel, now time.Time, cause int, causeText string, seen bool) {
	uid := c.v.Uniqueid
	if b := m.bridges[c.v.Bridge]; b != nil && b.remove(uid) {
		b.touched = m.gen
		m.markDirty(subjects.KindBridges, b.v.BridgeUniqueid)
	}
	delete(m.channels, uid)
	m.removed(subjects.KindChannels, uid)
	m.ended.put(uid, c.v.Linkedid)
	cl := m.calls[c.v.Linkedid]
	if cl == nil {
		return
	}
	end := now
	if !c.hAt.IsZero() {
		end = c.hAt
	}
	cl.closePeriod(c, end, cause, seen)
	if seen && (cl.originator == c || !cl.causeSet) {
		cl.rec.HangupCause, cl.rec.HangupCauseText = cause, strings.Clone(causeText)
		cl.causeSet = true
	}
	if cl.originator == c {
		cl.originator = nil
	}
	cl.live--
	if cl.live <= 0 {
		m.finish(cl, now, seen)
	}
}

func (m *Model) onDialBegin(e *amiproto.Message, now time.Time) {
	caller := m.snapshot(e, kSelf, now, true)
	dest := m.snapshot(e, kDest, now, true)
	if caller == nil && dest != nil {
		dest.dials++ // an Originate: the dialed channel is party A
	}
	if caller == nil || dest == nil {
		return
	}
	dest.dialedBy = caller.v.Uniqueid
	if !caller.period {
		caller.openPeriod(now)
	}
	caller.dials++
	if cl := m.calls[caller.v.Linkedid]; cl != nil {
		cl.addCallee(m, dest, dialNumber(e.Get("DialString")))
	}
}

// dialNumber is what was dialed, from a DialString: "200", "burst@test" → "burst".
func dialNumber(s string) string {
	s, _, _ = strings.Cut(s, "@")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func (m *Model) onDialEnd(e *amiproto.Message, now time.Time) {
	caller := m.snapshot(e, kSelf, now, true)
	dest := m.snapshot(e, kDest, now, true)
	// Party A of the dial's CDR: the caller, or the dialed channel itself
	// when nothing dialed it (Originate).
	a := caller
	if a == nil {
		a = dest
	}
	if a == nil {
		return
	}
	status := e.Get("DialStatus")
	r, final := dialRank(status)
	if !final {
		return
	}
	a.dials = max(a.dials-1, 0)
	cl := m.calls[a.v.Linkedid]
	if cl == nil {
		return
	}
	// Each dialed party is a CDR of its own (cdr.c forks them): every
	// status counts. The caller's CDR ends when its last dial failed.
	cl.fold(r)
	if caller != nil {
		cl.bestDial = max(cl.bestDial, r)
	}
	if a.pDial != rankAnswered {
		a.pDial = max(a.pDial, r)
		if r != rankAnswered && a.dials == 0 {
			cl.closePeriod(a, now, 0, false)
		}
	}
}

func (m *Model) onBlindTransfer(e *amiproto.Message, now time.Time) {
	by := m.snapshot(e, kTransferer, now, true)
	m.snapshot(e, kTransferee, now, true)
	if by == nil {
		return
	}
	if cl := m.calls[by.v.Linkedid]; cl != nil {
		to := e.Get("Extension")
		if ctx := e.Get("Context"); ctx != "" {
			to += "@" + ctx
		}
		cl.rec.Transfers = append(cl.rec.Transfers, subjects.CallTransfer{
			Kind: subjects.TransferBlind, At: ms(now), By: by.v.Channel, To: strings.Clone(to)})
		m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
	}
}

func (m *Model) onAttendedTransfer(e *amiproto.Message, now time.Time) {
	orig := m.snapshot(e, kOrigTransferer, now, true)
	second := m.snapshot(e, kSecondTransferer, now, true)
	m.snapshot(e, kTransferTarget, now, true)
	m.snapshot(e, kTransferee, now, true)
	to := e.Get("TransferTargetChannel")
	if to == "" {
		to = e.Get("DestApp")
	}
	if to == "" {
		to = e.Get("DestBridgeUniqueid")
	}
	t := subjects.CallTransfer{Kind: subjects.TransferAttended, At: ms(now), To: strings.Clone(to)}
	var first string
	for _, c := range []*channel{orig, second} {
		if c == nil || c.v.Linkedid == first {
			continue
		}
		if first == "" {
			first = c.v.Linkedid
		}
		if cl := m.calls[c.v.Linkedid]; cl != nil {
			t.By = c.v.Channel
			cl.rec.Transfers = append(cl.rec.Transfers, t)
			m.markDirty(subjects.KindCalls, cl.rec.Linkedid)
		}
	}
}

// onCdr keeps Asterisk's own verdict on the call next to the record. The
// Cdr event names the Uniqueid of its party A only; it often comes after
// that channel's Hangup, even after the call's end: a finished record
// still takes it until the Flush that hands it out.
func (m *Model) onCdr(e *amiproto.Message, now time.Time) {
	uid := e.Get("UniqueID")
	var linked string
	if c := m.channels[uid]; c != nil {
		linked = c.v.Linkedid
	} else if l, ok := m.ended.get(uid); ok {
		linked = l
	}
	bill, _ := strconv.Atoi(e.Get("BillableSeconds"))
	cdr := subjects.CallCdr{
		Channel:            strings.Clone(e.Get("Channel")),
		DestinationChannel: strings.Clone(e.Get("DestinationChannel")),
		Disposition:        strings.Clone(e.Get("Disposition")),
		BillableS:          bill,
	}
	if linked == "" {
		early, _ := m.early.get(uid)
		m.early.put(strings.Clone(uid), append(early, cdr))
		return
	}
	if cl := m.calls[linked]; cl != nil {
		cl.rec.Cdr = append(cl.rec.Cdr, cdr)
		m.markDirty(subjects.KindCalls, linked)
		return
	}
	for i := len(m.done) - 1; i >= 0; i-- {
		if m.done[i].rec.Linkedid == linked {
			m.done[i].rec.Cdr = append(m.done[i].rec.Cdr, cdr)
			return
		}
	}
}

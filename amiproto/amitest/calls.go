package amitest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// CallSpec describes a call for the fake PBX to play. The zero value is the
// call of capture 14a: Local/burst@test running Wait(1), no caller ID.
type CallSpec struct {
	// Channel is the originated channel, "Local/<exten>@<context>".
	// "" means "Local/burst@test". An exten starting with "nosuch" fails
	// with Reason 0 (no such extension), and "busy" fails with Reason 5.
	Channel string
	// Application and Data, or else Context and Exten, are what the
	// channel runs once answered, as in Originate.
	Application, Data string
	Context, Exten    string
	// CallerID is Originate's CallerID, such as `"AMI Test" <5551234>`.
	// With one, the call also sends NewCallerid and NewConnectedLine for
	// both legs, as capture 07a shows.
	CallerID string
	// ActionID, when set, is carried by the OriginateResponse event.
	ActionID string
	// Sync plays a synchronous Originate: no OriginateResponse event.
	Sync bool
}

// CallInfo names what a played call used.
type CallInfo struct {
	Channel  string // the ;1 leg, "Local/burst@test-0000001d;1"
	Uniqueid string // the ;1 leg's Uniqueid, also the call's Linkedid
	Events   int    // events sent
	Failed   bool   // the call failed (OriginateResponse Failure)
}

// callTemplates holds what every call of a server shares.
type callTemplates struct {
	newextenPriv  string
	newextenClass uint32
	chanVars      []string
}

func (t *callTemplates) init(p Profile, chanVars []string) {
	// Asterisk 13 files Newexten under "call"; 22 under "dialplan".
	t.newextenPriv, t.newextenClass = "dialplan,all", classDialplan
	if p == Asterisk13 {
		t.newextenPriv, t.newextenClass = "call,all", classCall
	}
	t.chanVars = chanVars
}

// callRender is the per-call state of the renderer; its buffers are reused
// from call to call so that a generator allocates almost nothing.
type callRender struct {
	spec    resolvedCall
	base    []byte // "Local/burst@test-0000001d"
	leg1    []byte // base + ";1"
	leg2    []byte
	uid1    []byte
	uid2    []byte
	times   [3]string // Cdr start, answer, end
	lastSec int64
	chanNo  uint32 // the channel number in base
	uidNo   uint64 // the number in uid1; uid2 has the next
}

// resolvedCall is a CallSpec with defaults applied and its parts split.
type resolvedCall struct {
	device      string // "Local/burst@test"
	exten       string
	context     string
	dialString  string // "burst@test"
	app, data   string
	oContext    string
	oExten      string
	cidNum      string // "" = unknown
	cidName     string
	cdrCallerID string
	actionID    string
	sync        bool
	failReason  int // 0 = success; 1 = no such exten (Reason 0); 5 = busy
}

func resolveCall(spec CallSpec) resolvedCall {
	r := resolvedCall{device: spec.Channel, app: spec.Application, data: spec.Data,
		oContext: spec.Context, oExten: spec.Exten, actionID: spec.ActionID, sync: spec.Sync}
	if r.device == "" {
		r.device = "Local/burst@test"
	}
	if r.app == "" && r.oExten == "" {
		r.app, r.data = "Wait", "1"
	}
	_, res, _ := strings.Cut(r.device, "/")
	r.exten, r.context, _ = strings.Cut(res, "@")
	if r.context == "" {
		r.context = "default"
	}
	r.dialString = res
	r.cidNum, r.cidName = parseCallerID(spec.CallerID)
	r.cdrCallerID = `"` + r.cidName + `" <` + r.cidNum + `>`
	switch {
	case strings.HasPrefix(r.exten, "nosuch"):
		r.failReason = 1
	case r.exten == "busy":
		r.failReason = 5
	}
	return r
}

// parseCallerID splits `"Name" <num>` (or a bare number) in two.
func parseCallerID(v string) (num, name string) {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			num = v[i+1 : i+j]
		}
		name = strings.Trim(strings.TrimSpace(v[:i]), `"`)
		return num, name
	}
	return v, ""
}

func orUnknown(v string) string {
	if v == "" {
		return "<unknown>"
	}
	return v
}

// newIDs takes the next channel number and two Uniqueids.
func (s *Server) newIDs(c *callRender, now time.Time) {
	n := s.pbx.chanSeq.Add(1) - 1
	u := s.pbx.uidSeq.Add(2) - 2
	c.chanNo, c.uidNo = n, u
	c.base = append(append(c.base[:0], c.spec.device...), '-')
	c.base = appendHex8(c.base, n)
	c.leg1 = append(append(c.leg1[:0], c.base...), ';', '1')
	c.leg2 = append(append(c.leg2[:0], c.base...), ';', '2')
	sec := now.Unix()
	c.uid1 = append(strconv.AppendInt(c.uid1[:0], sec, 10), '.')
	c.uid1 = strconv.AppendUint(c.uid1, u, 10)
	c.uid2 = append(strconv.AppendInt(c.uid2[:0], sec, 10), '.')
	c.uid2 = strconv.AppendUint(c.uid2, u+1, 10)
	if sec != c.lastSec {
		c.lastSec = sec
		const layout = "2006-01-02 15:04:05"
		c.times[0] = now.Format(layout)
		c.times[1] = c.times[0]
		c.times[2] = now.Add(time.Second).Format(layout)
	}
}

func appendHex8(b []byte, n uint32) []byte {
	const hex = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, hex[n>>uint(shift)&15])
	}
	return b
}

// leg is the state of one channel of the call at one moment.
type leg struct {
	name      []byte
	uid       []byte
	state     string
	stateDesc string
	cidNum    string
	cidName   string
	conNum    string
	conName   string
	exten     string
	priority  int
}

func (c *callRender) appendLeg(b []byte, prefix string, l *leg, linkedid []byte, chanVars []string) []byte {
	b = appendPrefixed(b, prefix, "Channel", l.name)
	b = appendPrefixedS(b, prefix, "ChannelState", l.state)
	b = appendPrefixedS(b, prefix, "ChannelStateDesc", l.stateDesc)
	b = appendPrefixedS(b, prefix, "CallerIDNum", l.cidNum)
	b = appendPrefixedS(b, prefix, "CallerIDName", l.cidName)
	b = appendPrefixedS(b, prefix, "ConnectedLineNum", l.conNum)
	b = appendPrefixedS(b, prefix, "ConnectedLineName", l.conName)
	b = appendPrefixedS(b, prefix, "Language", "en")
	b = appendPrefixedS(b, prefix, "AccountCode", "")
	b = appendPrefixedS(b, prefix, "Context", c.spec.context)
	b = appendPrefixedS(b, prefix, "Exten", l.exten)
	b = append(b, prefix...)
	b = appendInt(appendKey(b, "Priority"), l.priority)
	b = append(b, '\r', '\n')
	b = appendPrefixed(b, prefix, "Uniqueid", l.uid)
	b = appendPrefixed(b, prefix, "Linkedid", linkedid)
	for _, v := range chanVars {
		b = append(b, prefix...)
		b = append(b, "ChanVariable: "...)
		b = append(b, v...)
		b = append(b, '=', '\r', '\n')
	}
	return b
}

func appendPrefixed(b []byte, prefix, key string, value []byte) []byte {
	b = append(b, prefix...)
	b = append(b, key...)
	b = append(b, ':', ' ')
	b = append(b, value...)
	return append(b, '\r', '\n')
}

func appendPrefixedS(b []byte, prefix, key, value string) []byte {
	b = append(b, prefix...)
	return appendField(b, key, value)
}

// renderCall appends the events of one call to batch, in the order of
// captures 07a and 14a: 22 events for a plain call, 26 with a caller ID,
// 8 for a failed one.
func (s *Server) renderCall(c *callRender, batch *eventBatch, now time.Time) (events int, failed bool) {
	s.newIDs(c, now)
	sp := &c.spec
	t := &s.tmpl
	cv := t.chanVars
	start := batch.events()
	b := batch.buf

	l1 := leg{name: c.leg1, uid: c.uid1, state: "0", stateDesc: "Down", cidNum: "<unknown>", cidName: "<unknown>",
		conNum: "<unknown>", conName: "<unknown>", exten: sp.exten, priority: 1}
	l2 := l1
	l2.name, l2.uid, l2.state, l2.stateDesc = c.leg2, c.uid2, "4", "Ring"

	event := func(name, priv string) {
		b = appendField(b, "Event", name)
		b = appendField(b, "Privilege", priv)
	}
	legEvent := func(name, priv string, l *leg) {
		event(name, priv)
		b = c.appendLeg(b, "", l, c.uid1, cv)
	}
	done := func(class uint32) {
		batch.buf = b
		batch.end(class)
		b = batch.buf
	}
	newexten := func(l *leg, app, appData string, appDataTail []byte) {
		legEvent("Newexten", t.newextenPriv, l)
		b = appendField(b, "Extension", l.exten)
		b = appendField(b, "Application", app)
		b = append(appendKey(b, "AppData"), appData...)
		b = append(append(b, appDataTail...), '\r', '\n')
		done(t.newextenClass)
	}
	hangup := func(l *leg, cause, causeTxt string) {
		legEvent("Hangup", "call,all", l)
		b = appendField(b, "Cause", cause)
		b = appendField(b, "Cause-txt", causeTxt)
		done(classCall)
	}
	deviceState := func(state string) {
		event("DeviceStateChange", "call,all")
		b = appendField(b, "Device", sp.device)
		b = appendField(b, "State", state)
		done(classCall)
	}
	originateResponse := func(ok bool, reason string) {
		event("OriginateResponse", "call,all")
		if sp.actionID != "" {
			b = appendField(b, "ActionID", sp.actionID)
		}
		if ok {
			b = appendField(b, "Response", "Success")
			b = appendPrefixed(b, "", "Channel", c.leg1)
		} else {
			b = appendField(b, "Response", "Failure")
			b = appendField(b, "Channel", sp.device)
		}
		if sp.app != "" {
			b = appendField(b, "Application", sp.app)
			b = appendField(b, "Data", sp.data)
		} else {
			b = appendField(b, "Context", sp.oContext)
			b = appendField(b, "Exten", sp.oExten)
		}
		b = appendField(b, "Reason", reason)
		if ok {
			b = appendPrefixed(b, "", "Uniqueid", c.uid1)
		} else {
			b = appendField(b, "Uniqueid", "<unknown>")
		}
		b = appendField(b, "CallerIDNum", orUnknown(sp.cidNum))
		b = appendField(b, "CallerIDName", orUnknown(sp.cidName))
		if ok {
			for _, v := range cv {
				b = append(b, "ChanVariable("...)
				b = append(b, c.leg1...)
				b = append(b, "): "...)
				b = append(b, v...)
				b = append(b, '=', '\r', '\n')
			}
		}
		done(classCall)
	}
	cdr := func(l *leg, app, data string) {
		event("Cdr", "cdr,all")
		b = appendField(b, "AccountCode", "")
		b = appendField(b, "Source", sp.cidNum)
		b = appendField(b, "Destination", sp.exten)
		b = appendField(b, "DestinationContext", sp.context)
		b = appendField(b, "CallerID", sp.cdrCallerID)
		b = appendPrefixed(b, "", "Channel", l.name)
		b = appendField(b, "DestinationChannel", "")
		b = appendField(b, "LastApplication", app)
		b = appendField(b, "LastData", data)
		b = appendField(b, "StartTime", c.times[0])
		b = appendField(b, "AnswerTime", c.times[1])
		b = appendField(b, "EndTime", c.times[2])
		b = appendField(b, "Duration", "1")
		b = appendField(b, "BillableSeconds", "1")
		b = appendField(b, "Disposition", "ANSWERED")
		b = appendField(b, "AMAFlags", "DOCUMENTATION")
		b = appendPrefixed(b, "", "UniqueID", l.uid)
		b = appendField(b, "UserField", "")
		done(classCDR)
	}
	dialEvent := func(name string, l *leg, extraKey, extraValue string) {
		event(name, "call,all")
		b = c.appendLeg(b, "Dest", l, c.uid1, cv)
		b = appendField(b, extraKey, extraValue)
		done(classCall)
	}

	legEvent("Newchannel", "call,all", &l1)
	done(classCall)
	legEvent("Newchannel", "call,all", &l2)
	done(classCall)
	newexten(&l1, "AppDial2", "(Outgoing Line)", nil)

	if sp.failReason != 0 {
		cause, causeTxt, reason, devState := "0", "Unknown", "0", "INVALID"
		if sp.failReason == 5 {
			cause, causeTxt, reason, devState = "17", "User busy", "5", "NOT_INUSE"
		}
		hangup(&l2, cause, causeTxt)
		deviceState(devState)
		hangup(&l1, "0", "Unknown")
		if !sp.sync {
			originateResponse(false, reason)
		}
		deviceState(devState)
		return batch.events() - start, true
	}

	if sp.cidNum != "" || sp.cidName != "" {
		for _, l := range [2]*leg{&l1, &l2} {
			l.cidNum, l.cidName = orUnknown(sp.cidNum), orUnknown(sp.cidName)
			legEvent("NewCallerid", "call,all", l)
			b = appendField(b, "CID-CallingPres", "0 (Presentation Allowed, Not Screened)")
			done(classCall)
			l.conNum, l.conName = l.cidNum, l.cidName
			legEvent("NewConnectedLine", "call,all", l)
			done(classCall)
		}
	}

	event("LocalBridge", "call,all")
	b = c.appendLeg(b, "LocalOne", &l1, c.uid1, cv)
	b = c.appendLeg(b, "LocalTwo", &l2, c.uid1, cv)
	b = appendField(b, "Context", sp.context)
	b = appendField(b, "Exten", sp.exten)
	b = appendField(b, "LocalOptimization", "Yes")
	done(classCall)
	dialEvent("DialBegin", &l1, "DialString", sp.dialString)
	newexten(&l2, "Answer", "", nil)
	l2.state, l2.stateDesc = "6", "Up"
	legEvent("Newstate", "call,all", &l2)
	done(classCall)
	deviceState("INUSE")
	l1.state, l1.stateDesc = "6", "Up"
	legEvent("Newstate", "call,all", &l1)
	done(classCall)
	deviceState("INUSE")
	dialEvent("DialEnd", &l1, "DialStatus", "ANSWER")
	if !sp.sync {
		originateResponse(true, "4")
	}
	l2.priority = 2
	newexten(&l2, "Wait", "1", nil)
	legEvent("HangupRequest", "call,all", &l2)
	b = appendField(b, "Cause", "0")
	done(classCall)
	hangup(&l1, "0", "Unknown")
	leg1App, leg1Data := sp.app, sp.data
	if leg1App == "" {
		leg1App, leg1Data = "Hangup", ""
	}
	cdr(&l1, leg1App, leg1Data)
	legEvent("SoftHangupRequest", "call,all", &l2)
	b = appendField(b, "Cause", "16")
	done(classCall)
	l2.exten, l2.priority = "h", 1
	newexten(&l2, "NoOp", "hangup handler ", c.leg2)
	l2.priority = 2
	hangup(&l2, "0", "Unknown")
	cdr(&l2, "Wait", "1")
	deviceState("NOT_INUSE")
	deviceState("NOT_INUSE")
	s.pbx.live.add(c, now)
	return batch.events() - start, false
}

// broadcastWhole broadcasts a batch of whole calls under the live model's
// lock, so that no list answer lands inside one of them, even for a
// session whose event mask splits the batch: the lists, which never show
// a burst call, then agree with every session's events.
func (s *Server) broadcastWhole(b *eventBatch) {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	s.broadcast(b)
}

// PlayCall sends the events of one call to every logged-in session, as if
// someone had originated it, and returns its names. It returns once the
// events are queued for every session.
func (s *Server) PlayCall(spec CallSpec) CallInfo {
	c := &callRender{spec: resolveCall(spec)}
	var batch eventBatch
	n, failed := s.renderCall(c, &batch, time.Now())
	s.pbx.processed.Add(1)
	s.broadcastWhole(&batch)
	return CallInfo{Channel: string(c.leg1), Uniqueid: string(c.uid1), Events: n, Failed: failed}
}

// Calls is a running call generator, started by StartCalls.
type Calls struct {
	done   chan struct{}
	calls  atomic.Int64
	events atomic.Int64
	bytes  atomic.Int64
	err    error
}

// Done is closed when the generator has stopped.
func (c *Calls) Done() <-chan struct{} { return c.done }

// Wait blocks until the generator stops. It returns nil when every call
// was played, or why it stopped early (the context's error, or
// ErrServerClosed).
func (c *Calls) Wait() error {
	<-c.done
	return c.err
}

// Count returns the calls played so far and the events and bytes they
// sent (per session that took all of them).
func (c *Calls) Count() (calls, events, bytes int64) {
	return c.calls.Load(), c.events.Load(), c.bytes.Load()
}

// ErrServerClosed is why a generator stops when its server closes.
var ErrServerClosed = errors.New("amitest: server closed")

// StartCalls plays total calls (forever when total <= 0) at
// callsPerSecond, or as fast as the sessions read when callsPerSecond <= 0.
// Each call is the 22-event sequence of capture 14a with its own channel
// names, Uniqueids and Linkedid. Events are rendered once per batch of
// calls and copied to each session, so the generator costs little more
// than the copies. It stops early when ctx ends or the server closes.
func (s *Server) StartCalls(ctx context.Context, callsPerSecond float64, total int) *Calls {
	return s.StartCallsSpec(ctx, CallSpec{}, callsPerSecond, total)
}

// StartCallsSpec is StartCalls with every call played from spec.
func (s *Server) StartCallsSpec(ctx context.Context, spec CallSpec, callsPerSecond float64, total int) *Calls {
	c := &Calls{done: make(chan struct{})}
	// Adding to wg under mu, which Close holds to cancel, keeps every Add
	// before Close's Wait.
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		c.err = ErrServerClosed
		close(c.done)
		return c
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer close(c.done)
		c.err = s.runCalls(ctx, c, spec, callsPerSecond, total)
	}()
	return c
}

// maxBatchCalls is how many calls one broadcast carries at full speed:
// enough to amortise the per-session locking, small enough to keep the
// sessions' queues moving.
const maxBatchCalls = 32

func (s *Server) runCalls(ctx context.Context, c *Calls, spec CallSpec, rate float64, total int) error {
	r := &callRender{spec: resolveCall(spec)}
	var batch eventBatch
	begin := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for played := 0; total <= 0 || played < total; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return ErrServerClosed
		default:
		}
		n := maxBatchCalls
		if rate > 0 {
			due := int(time.Since(begin).Seconds()*rate) + 1 - played
			if due <= 0 {
				next := begin.Add(time.Duration(float64(played) / rate * float64(time.Second)))
				timer.Reset(time.Until(next))
				select {
				case <-timer.C:
				case <-ctx.Done():
					return ctx.Err()
				case <-s.ctx.Done():
					return ErrServerClosed
				}
				continue
			}
			n = min(due, maxBatchCalls)
		}
		if total > 0 {
			n = min(n, total-played)
		}
		batch.reset()
		now := time.Now()
		for range n {
			s.renderCall(r, &batch, now)
		}
		s.pbx.processed.Add(int64(n))
		s.broadcastWhole(&batch)
		played += n
		c.calls.Add(int64(n))
		c.events.Add(int64(batch.events()))
		c.bytes.Add(int64(len(batch.buf)))
	}
	return nil
}

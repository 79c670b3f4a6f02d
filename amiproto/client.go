package amiproto

import (
	"cmp"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Client is a live AMI session. Its methods are safe for concurrent use, and
// any number of actions may be in flight at once: responses are matched by
// ActionID in whatever order they come.
//
// One goroutine reads the socket all the time, whatever the consumers do,
// because Asterisk drops a client that leaves its writes waiting for about
// 100 ms.
//
// A Client owns its goroutines: the reader, the writer while there are
// actions to write and, with WithKeepalive, each Ping's timer func (an
// idle session holds one goroutine, its reader: a bridge of a thousand
// idle PBXes keeps a thousand sessions). Close, Shutdown or the loss of the
// connection stops them all; Done is closed once every one has returned.
type Client struct {
	conn   net.Conn
	rd     *Reader
	opts   options
	ep     Endpoint
	banner string

	wmu     sync.Mutex
	wbuf    []byte        // actions waiting for the writer goroutine
	spare   []byte        // the buffer the writer last wrote, reused for wbuf
	writing bool          // a writer goroutine runs; send starts one when not
	wclosed bool          // terminate ran: no writer starts any more
	wake    chan struct{} // tells a running writer there is something in wbuf

	mu       sync.Mutex
	pending  map[string]*call
	gaveUp   gaveUpSet  // ActionIDs whose caller stopped waiting; true once a list started
	answered *ActionIDs // recent wire ActionIDs of requests, to their caller's
	// orphanLists counts open lists whose entries may lack an ActionID, so
	// the common case skips looking for their owner.
	orphanLists int
	closing     bool          // Shutdown started: no new requests
	idle        chan struct{} // made by the first Shutdown; closed when pending drains
	idleClosed  bool
	err         error // why the session ended
	termOnce    sync.Once

	ended   chan struct{}  // closed by terminate: the writer and keepalive return
	stopped chan struct{}  // closed when the reader, writer and keepalive have returned
	wg      sync.WaitGroup // the writer and the keepalive; the reader waits for them

	kaMu sync.Mutex  // orders the keepalive's re-arming against terminate
	ka   *time.Timer // the next Ping's timer; nil until Dial has logged in

	created time.Time    // the keepalive's clock starts here
	lastRx  atomic.Int64 // when bytes last arrived, as a sinceStart Duration

	events    chan *Message // nil with an EventDelivery.Func
	dropped   atomic.Uint64
	loggedOff atomic.Bool // Logoff sent: the close that follows is ours
}

// call is one request waiting for its answer.
type call struct {
	action   string
	wireID   string
	callerID string
	hasID    bool
	resp     *Response
	listing  bool // the response started an EventList
	done     chan struct{}
	err      error

	// each, when set (RequestEach), takes the list's messages instead of
	// resp.Events. The reader calls it under eachMu; eachOff, set under
	// eachMu once RequestEach returns, keeps it from being called later.
	each    func(*Message) bool
	eachMu  sync.Mutex
	eachOff bool
}

// actionIDs are unique in the process and never reused, so a late answer
// from an old connection cannot match a request on a new one.
var (
	actionSeq    atomic.Uint64
	actionPrefix = newActionPrefix()
)

func newActionPrefix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "ab" + hex.EncodeToString(b[:]) + "-"
}

func nextActionID() string {
	return actionPrefix + strconv.FormatUint(actionSeq.Add(1), 36)
}

// orphanEntries names, per list action, the entry event Asterisk sends
// without an ActionID: IAXpeers' PeerEntry events carry none (IAXpeerlist's
// do). Such events join the collection when exactly one of that action is
// open; otherwise they are ordinary events. Either way the complete event,
// which has the ActionID, ends the collection.
var orphanEntries = map[string]string{"iaxpeers": "PeerEntry"}

// Dial connects to the Asterisk manager at rawURL, reads the banner and logs
// in. rawURL is "host", "host:port", "user:secret@host:port", optionally
// with a "tcp://" or "tls://" scheme; the port defaults to 5038, or 5039 for
// tls. User and secret are percent-decoded. Without a user Dial does not log
// in. A program that holds the user and secret apart should call
// DialEndpoint, so that no secret goes through URL escaping.
//
// Events that Asterisk sends right behind the login response (FullyBooted)
// are delivered, never lost. Every failure is a *DialError whose Op says
// which step failed; a refused login wraps an *AuthError.
func Dial(ctx context.Context, rawURL string, opts ...Option) (*Client, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return nil, &DialError{Op: "url", Err: err}
	}
	return DialEndpoint(ctx, ep, opts...)
}

// DialEndpoint is Dial for an address already split into its parts: ep's
// User and Secret are used as they are, with no decoding. ep.Addr is
// "host:port".
func DialEndpoint(ctx context.Context, ep Endpoint, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.events.check(); err != nil {
		return nil, &DialError{Op: "options", Err: err}
	}
	if ep.Addr == "" {
		return nil, &DialError{Op: "url", Err: errors.New("missing host")}
	}
	conn, err := o.dial(ctx, "tcp", ep.Addr)
	if err == nil && conn == nil {
		err = errors.New("the dialer returned no connection")
	}
	if err != nil {
		return nil, &DialError{Op: "connect", Addr: ep.Addr, Err: err}
	}
	// Until the login is done, ending ctx ends the connection. The func
	// closes the TCP socket it was given, which also ends a TLS session on
	// top of it; conn itself is reassigned below.
	raw := conn
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	if ep.TLS {
		cfg := o.tls.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(ep.Addr)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, &DialError{Op: "tls", Addr: ep.Addr, Err: ctxErr(ctx, err)}
		}
		conn = tc
	}
	c := newClient(conn, ep, o)
	c.banner, err = c.rd.ReadBanner()
	if err != nil {
		conn.Close()
		return nil, &DialError{Op: "banner", Addr: ep.Addr, Err: ctxErr(ctx, err)}
	}
	if !strings.HasPrefix(c.banner, "Asterisk Call Manager/") {
		conn.Close()
		return nil, &DialError{Op: "banner", Addr: ep.Addr, Err: fmt.Errorf("not an AMI banner: %.64q", c.banner)}
	}
	c.start()
	if ep.User != "" {
		if err := c.login(ctx, ep.User, ep.Secret); err != nil {
			c.Close()
			// Wait for the goroutines to stop, so no event reaches the
			// caller's EventDelivery.Func after Dial has failed.
			<-c.stopped
			return nil, &DialError{Op: "login", Addr: ep.Addr, Err: ctxErr(ctx, err)}
		}
	}
	if !stop() {
		// ctx ended after the login answer, and its func has closed, or
		// is closing, the socket: the client would be dead on arrival.
		c.Close()
		<-c.stopped
		return nil, &DialError{Op: "login", Addr: ep.Addr, Err: ctx.Err()}
	}
	c.startKeepalive()
	return c, nil
}

// start starts the client's reader. The client owns its goroutines:
// terminate makes the writer and the keepalive return and closes the
// socket, which ends the reader; the reader then waits for the other two
// (wg) and closes stopped (Done). The writer starts with the first action
// to write (send), the keepalive once Dial has logged in
// (startKeepalive).
func (c *Client) start() {
	go c.readLoop()
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func newClient(conn net.Conn, ep Endpoint, o options) *Client {
	c := &Client{
		conn:     conn,
		opts:     o,
		created:  time.Now(),
		ep:       ep,
		pending:  make(map[string]*call),
		ended:    make(chan struct{}),
		wake:     make(chan struct{}, 1),
		stopped:  make(chan struct{}),
		answered: cmp.Or(o.ids, NewActionIDs()),
	}
	if o.events.Func == nil {
		c.events = make(chan *Message, o.events.queue())
	}
	var r io.Reader = conn
	if o.keepalive > 0 {
		r = lifeReader{r: conn, c: c}
	}
	if o.events.Drained != nil {
		r = drainedReader{r: r, drained: o.events.Drained}
	}
	c.rd = NewReaderLimits(r, o.limits)
	return c
}

func (c *Client) login(ctx context.Context, user, secret string) error {
	login := NewAction("Login", "Username", user)
	if c.opts.md5 {
		resp, err := c.Request(ctx, NewAction("Challenge", "AuthType", "MD5"))
		if err != nil {
			return fmt.Errorf("challenge: %w", err)
		}
		sum := md5.Sum([]byte(resp.Get("Challenge") + secret))
		login.Add("AuthType", "MD5").Add("Key", hex.EncodeToString(sum[:]))
	} else {
		login.Add("Secret", secret)
	}
	login.Add("Events", c.opts.events.loginEvents())
	resp, err := c.Request(ctx, login)
	if err != nil {
		if re := (*ResponseError)(nil); errors.As(err, &re) {
			return &AuthError{User: user, Response: resp.Message}
		}
		return err
	}
	return nil
}

// Banner returns the greeting line Asterisk sent, such as
// "Asterisk Call Manager/11.0.0".
func (c *Client) Banner() string { return c.banner }

// Endpoint returns the address the client dialed; its String never holds
// the secret.
func (c *Client) Endpoint() Endpoint { return c.ep }

// Request sends action and waits for its answer. The client puts its own
// ActionID on the wire; a caller's ActionID is restored on the returned
// Response. A "Response: Error" answer returns the Response and a
// *ResponseError. An invalid action returns an *ActionError and sends
// nothing. A lost connection gives an error wrapping ErrConnLost, Close
// gives ErrClosed, and ctx ends the wait and frees the slot.
func (c *Client) Request(ctx context.Context, action *Message) (*Response, error) {
	return c.request(ctx, action, false)
}

// RequestEach is Request for a list action whose entries are handled as
// they are read instead of collected, so that a list of any length takes
// no memory in the client. each is called on the client's reader
// goroutine, in order: first with the leading response, when it starts a
// list ("EventList: start"), then with each entry event, ActionIDs
// restored as Request does. The Response returned holds the leading
// response and the complete event, and no Events. A response that starts
// no list is returned as Request returns it, and each is not called.
//
// When each returns false the list is given up: RequestEach returns at
// once with the leading response, no Complete and a nil error, and the
// client reads and discards the rest of the list up to its complete
// event, so the session stays in step.
//
// While each runs nothing else is read from the socket: the session's
// other answers and events wait, and Asterisk drops a session it cannot
// write to for long. each may wait for its consumer a little (the bridge
// waits for NATS), never without bound. RequestEach returns only once
// each has returned, and each is never called after that, whatever ended
// the request (ctx, Close, a lost connection).
func (c *Client) RequestEach(ctx context.Context, action *Message, each func(*Message) bool) (*Response, error) {
	return c.requestWith(ctx, action, false, each)
}

func (c *Client) request(ctx context.Context, action *Message, internal bool) (*Response, error) {
	return c.requestWith(ctx, action, internal, nil)
}

func (c *Client) requestWith(ctx context.Context, action *Message, internal bool, each func(*Message) bool) (*Response, error) {
	return c.await(ctx, action, internal, each, nil)
}

func (c *Client) requestExpect(ctx context.Context, action *Message, e *Expect) (*Response, error) {
	return c.await(ctx, action, false, nil, e)
}

// await sends action, with e, if not nil, registered before, and waits
// for the answer.
func (c *Client) await(ctx context.Context, action *Message, internal bool, each func(*Message) bool, e *Expect) (*Response, error) {
	id, cl, err := c.begin(action, internal, each, e)
	if err != nil {
		return nil, err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		if c.abandon(id, cl) {
			cl.stopEach()
			return nil, ctx.Err()
		}
		<-cl.done // answered while we gave up: take the answer
	}
	cl.stopEach() // before reading resp, which feed may be writing
	if cl.resp != nil {
		cl.restoreID()
	}
	return cl.resp, cl.err
}

// begin registers action under a fresh ActionID and queues it. Internal
// requests (Logoff, keepalive Pings) are allowed during Shutdown.
func (c *Client) begin(action *Message, internal bool, each func(*Message) bool, e *Expect) (string, *call, error) {
	if err := ValidateMessage(action); err != nil {
		return "", nil, err
	}
	if action.Kind() != KindAction || action.Name() == "" {
		return "", nil, &ActionError{Key: action.Field(0).Key, Reason: `the first field must be "Action: <name>"`}
	}
	id := nextActionID()
	cl := &call{action: action.Name(), wireID: id, done: make(chan struct{}), each: each}
	cl.callerID, cl.hasID = action.Lookup("ActionID")

	c.mu.Lock()
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return "", nil, err
	case c.closing && !internal:
		c.mu.Unlock()
		return "", nil, ErrClosed
	}
	c.pending[id] = cl
	c.mu.Unlock()
	if cl.hasID {
		// Recorded before the request leaves: another client sharing the
		// map may read the event before this one reads the response.
		c.answered.put(id, cl.callerID)
	}
	if e != nil {
		c.answered.register(id, e)
	}

	c.send(action, id)
	return id, cl, nil
}

// abandon stops waiting for id. It reports false when the answer came
// first: cl.done is then closed, or about to be.
func (c *Client) abandon(id string, cl *call) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, still := c.pending[id]; !still {
		return false
	}
	c.removePending(id, cl)
	c.forget(id, cl.listing)
	return true
}

// restoreID puts the caller's ActionID back on every part of the answer,
// or takes the client's off when the caller gave none.
func (cl *call) restoreID() {
	cl.fixID(cl.resp.Message)
	for _, ev := range cl.resp.Events {
		cl.fixID(ev)
	}
	cl.fixID(cl.resp.Complete)
}

// fixID restores the caller's ActionID on one message of the answer.
func (cl *call) fixID(m *Message) {
	switch {
	case m == nil || !m.Has("ActionID"):
	case cl.hasID:
		m.Set("ActionID", cl.callerID)
	default:
		m.Del("ActionID")
	}
}

// stopEach waits for a call of each in progress and keeps each from
// being called again. The request is over: done is closed, or the call
// was abandoned.
func (cl *call) stopEach() {
	if cl.each == nil {
		return
	}
	cl.eachMu.Lock()
	cl.eachOff = true
	cl.eachMu.Unlock()
}

// feed hands one message of cl's list to its each func, outside c.mu, and
// gives the list up when each returns false. Only the reader calls it.
// Close may end the request meanwhile: eachMu keeps m, which the
// requester may read once it is over, and each, to before stopEach.
func (c *Client) feed(cl *call, m *Message) {
	more := true
	cl.eachMu.Lock()
	if !cl.eachOff {
		cl.fixID(m)
		more = cl.each(m)
	}
	cl.eachMu.Unlock()
	if more {
		return
	}
	c.mu.Lock()
	if _, still := c.pending[cl.wireID]; !still {
		c.mu.Unlock()
		return
	}
	c.removePending(cl.wireID, cl)
	c.forget(cl.wireID, true) // swallow the rest up to the complete event
	c.mu.Unlock()
	close(cl.done)
}

// send queues action, with ActionID id, for the writer goroutine, and
// starts that goroutine unless it runs. It never waits for the socket: a
// PBX that stops reading must not keep a caller past its context.
// Requests queued while a write is in progress go out together in the
// next one.
func (c *Client) send(action *Message, id string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendWithID(c.wbuf, action, id)
	if c.writing {
		select {
		case c.wake <- struct{}{}:
		default: // the writer is already due to run
		}
		return
	}
	if c.wclosed {
		return
	}
	// Added before terminate sets wclosed, hence before the reader's
	// wg.Wait, which comes after terminate.
	c.writing = true
	c.wg.Add(1)
	go c.writeLoop()
}

// writerLinger is how long the writer waits for more to write before it
// returns: requests in a row keep one writer, an idle session keeps none.
const writerLinger = 100 * time.Millisecond

// writeLoop writes queued actions until none came for writerLinger, or
// the session ends. A failed write ends the session; a write stuck on a
// PBX that stopped reading ends with the connection, on Close or when a
// keepalive Ping goes unanswered.
func (c *Client) writeLoop() {
	defer c.wg.Done()
	var linger *time.Timer
	c.wmu.Lock()
	for !c.wclosed {
		if len(c.wbuf) == 0 {
			c.wmu.Unlock()
			if linger == nil {
				linger = time.NewTimer(writerLinger)
				defer linger.Stop()
			} else {
				linger.Reset(writerLinger)
			}
			idle := false
			select {
			case <-c.wake:
			case <-c.ended:
			case <-linger.C:
				idle = true
			}
			c.wmu.Lock()
			if idle && len(c.wbuf) == 0 {
				break
			}
			continue
		}
		buf := c.wbuf
		c.wbuf = c.spare[:0] // the two buffers take turns: one filling, one on the wire
		c.wmu.Unlock()
		if _, err := c.conn.Write(buf); err != nil {
			c.terminate(fmt.Errorf("%w: write: %v", ErrConnLost, err))
			c.wmu.Lock()
			break
		}
		c.wmu.Lock()
		c.spare = buf
	}
	c.writing = false
	c.wmu.Unlock()
}

// appendWithID encodes an already validated action, with the Action line
// first, then ActionID id, then the other fields but any ActionID.
func appendWithID(dst []byte, m *Message, id string) []byte {
	f0 := m.Field(0)
	dst = append(dst, f0.Key...)
	dst = append(dst, ": "...)
	dst = append(dst, f0.Value...)
	dst = append(dst, "\r\nActionID: "...)
	dst = append(dst, id...)
	dst = append(dst, "\r\n"...)
	for i := 1; i < m.Len(); i++ {
		f := m.Field(i)
		if strings.EqualFold(f.Key, "ActionID") {
			continue
		}
		dst = append(dst, f.Key...)
		dst = append(dst, ": "...)
		dst = append(dst, f.Value...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// readLoop reads the socket until it ends and routes every message. It
// returns only after terminate; it then waits for the writer and the
// keepalive, and closes the event stream and stopped.
func (c *Client) readLoop() {
	defer func() {
		if f := c.opts.events.Drained; f != nil {
			f() // after the last Func: nothing more comes from this session
		}
		c.wg.Wait()
		if c.events != nil {
			close(c.events)
		}
		close(c.stopped)
	}()
	for {
		if c.opts.events.Shedding != nil && c.opts.events.Shedding() && c.mayskip() && c.rd.SkipEvent(c.opts.events.Skip) {
			continue
		}
		var m *Message
		var err error
		if c.opts.events.Borrow {
			m, err = c.rd.ReadBorrowed() // dispatch clones what it keeps
		} else {
			m, err = c.rd.ReadMessage()
		}
		if err != nil {
			if pe := (*ProtocolError)(nil); errors.As(err, &pe) {
				c.report(err)
				continue
			}
			if c.loggedOff.Load() {
				c.terminate(ErrClosed)
				return
			}
			c.terminate(fmt.Errorf("%w: %v", ErrConnLost, err))
			return
		}
		c.dispatch(m)
	}
}

// mayskip reports whether an event may be skipped unread: no request
// waits for an answer, nor for list entries (given up or not).
func (c *Client) mayskip() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) == 0 && c.gaveUp.lists == 0
}

// dispatch routes one message: a response to its request, a list entry or
// complete event to its collection, anything else to the event stream.
func (c *Client) dispatch(m *Message) {
	if v, ok := m.Lookup(""); ok {
		c.report(&ProtocolError{Line: c.rd.line, Msg: fmt.Sprintf("line without a colon kept as data: %.80q", v)})
	}
	switch m.Kind() {
	case KindResponse:
		c.dispatchResponse(c.own(m))
	case KindEvent:
		if !c.dispatchListEvent(m) {
			c.deliver(m)
		}
	default:
		c.report(&UnmatchedError{Message: c.own(m), Reason: "message is neither a Response nor an Event"})
	}
}

// own returns m as a message that may be kept: m itself, or a clone when
// the reader lent it (EventDelivery.Borrow).
func (c *Client) own(m *Message) *Message {
	if c.opts.events.Borrow {
		return m.Clone()
	}
	return m
}

func (c *Client) dispatchResponse(m *Message) {
	id := m.ActionID()
	c.mu.Lock()
	cl, ok := c.pending[id]
	if !ok {
		if _, late := c.gaveUp.get(id); late {
			// The answer to a request whose caller gave up: expected, not
			// worth a report. Keep swallowing its list, if it starts one.
			c.gaveUp.del(id)
			if isListStart(m) {
				c.gaveUp.set(id, true)
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		reason := "response with an unknown ActionID"
		if id == "" {
			reason = "response without an ActionID"
		}
		c.report(&UnmatchedError{Message: m, Reason: reason})
		return
	}
	cl.resp = &Response{Message: m}
	if isListStart(m) {
		cl.listing = true
		if cl.orphans() {
			c.orphanLists++
		}
		c.mu.Unlock()
		if cl.each != nil {
			c.feed(cl, m)
		}
		return
	}
	c.removePending(id, cl)
	c.mu.Unlock()
	if cl.resp.IsError() {
		cl.err = &ResponseError{Action: cl.action, Response: cl.resp}
	}
	close(cl.done)
}

// dispatchListEvent adds m to its open collection, or hands it to the
// collection's each func, and reports whether it did.
func (c *Client) dispatchListEvent(m *Message) bool {
	id := m.ActionID()
	c.mu.Lock()
	cl, ok := c.pending[id]
	if id == "" && c.orphanLists > 0 {
		cl, ok = c.orphanOwner(m.Name())
	}
	if listing, _ := c.gaveUp.get(id); !ok && listing {
		if strings.EqualFold(m.Get("EventList"), "Complete") {
			c.gaveUp.del(id)
		}
		c.mu.Unlock()
		return true
	}
	if !ok || !cl.listing {
		// Not a list entry. Events that carry the ActionID of an answered
		// request (OriginateResponse, UserEvent) get the caller's back.
		callerID, mine := c.answered.resolve(id, m) // an Expect may wait for m
		if ok && cl.hasID {
			m.Set("ActionID", cl.callerID)
		} else if mine {
			m.Set("ActionID", callerID)
		}
		c.mu.Unlock()
		return false
	}
	m = c.own(m) // a list entry is kept, by the call or by its each func
	if !strings.EqualFold(m.Get("EventList"), "Complete") {
		if cl.each != nil {
			c.mu.Unlock()
			c.feed(cl, m)
			return true
		}
		cl.resp.Events = append(cl.resp.Events, m)
		c.mu.Unlock()
		return true
	}
	cl.resp.Complete = m
	c.removePending(cl.wireID, cl)
	c.mu.Unlock()
	close(cl.done)
	return true
}

// orphans reports whether the call's list may send entries without an
// ActionID.
func (cl *call) orphans() bool { return orphanEntries[strings.ToLower(cl.action)] != "" }

// removePending takes an answered or abandoned call out of the pending set.
// c.mu is held.
func (c *Client) removePending(id string, cl *call) {
	delete(c.pending, id)
	if cl.listing && cl.orphans() {
		c.orphanLists--
	}
	c.signalIdle()
}

func (c *Client) orphanOwner(event string) (*call, bool) {
	var owner *call
	for _, cl := range c.pending {
		if cl.listing && strings.EqualFold(orphanEntries[strings.ToLower(cl.action)], event) {
			if owner != nil {
				return nil, false
			}
			owner = cl
		}
	}
	return owner, owner != nil
}

// idRing maps the latest answered wire ActionIDs to the caller's own, so
// late events that carry them can be given back the caller's. It holds at
// most idRingSize entries.
type idRing struct {
	ids  map[string]string
	ring []string
	next int
}

const idRingSize = 4096

func (r *idRing) put(wire, caller string) {
	if r.ids == nil {
		r.ids = make(map[string]string, idRingSize)
		r.ring = make([]string, idRingSize)
	}
	delete(r.ids, r.ring[r.next])
	r.ring[r.next] = wire
	r.ids[wire] = caller
	r.next = (r.next + 1) % idRingSize
}

func (r *idRing) get(wire string) (string, bool) {
	caller, ok := r.ids[wire]
	return caller, ok
}

// forget remembers that nobody waits for id any more, so its late answer
// and list entries are swallowed instead of reported or sent to the event
// stream. The set is bounded: requests that never get an answer must not
// grow it forever. c.mu is held.
func (c *Client) forget(id string, listing bool) {
	c.gaveUp.set(id, listing)
}

// deliver queues an event without ever blocking the reader.
func (c *Client) deliver(m *Message) {
	if c.opts.events.Func != nil {
		c.opts.events.Func(m)
		return
	}
	select {
	case c.events <- m:
	default:
		n := c.dropped.Add(1)
		c.report(&DroppedEventsError{Event: m.Name(), Total: n})
	}
}

func (c *Client) report(err error) {
	if c.opts.onReport != nil {
		c.opts.onReport(err)
	}
}

// signalIdle wakes Shutdown once the last pending request is gone, or the
// session has ended. c.mu is held.
func (c *Client) signalIdle() {
	if c.idle != nil && !c.idleClosed && (len(c.pending) == 0 || c.err != nil) {
		close(c.idle)
		c.idleClosed = true
	}
}

// terminate ends the session once: it records why, closes the socket and
// fails every pending request at once, collections included.
func (c *Client) terminate(cause error) {
	c.termOnce.Do(func() {
		c.mu.Lock()
		c.err = cause
		pending := c.pending
		c.pending = map[string]*call{}
		c.orphanLists = 0
		c.signalIdle()
		c.mu.Unlock()
		c.conn.Close()
		for _, cl := range pending {
			cl.err = cause
			close(cl.done)
		}
		c.wmu.Lock()
		c.wclosed = true
		c.wmu.Unlock()
		close(c.ended)
		c.kaMu.Lock()
		if c.ka != nil && c.ka.Stop() { // no func runs or will: the keepalive ends here
			c.wg.Done()
		}
		c.kaMu.Unlock()
	})
}

// Events returns the event stream: every Event that is not part of a
// Collection, in the order Asterisk sent them, including events that carry
// an ActionID such as OriginateResponse. It is closed after the connection
// ends, once the last event is queued. With an EventDelivery.Func the
// events go to the func and Events returns nil; wait on Done instead.
func (c *Client) Events() <-chan *Message { return c.events }

// Dropped returns how many events were dropped because the event queue was
// full.
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// Done is closed when the client has fully stopped, by Close, Shutdown or
// the loss of the connection: its reader, writer and keepalive goroutines
// have returned, so no EventDelivery.Func or WithReportFunc call is running or
// will run. Err then says why.
func (c *Client) Done() <-chan struct{} { return c.stopped }

// Err returns why the session ended: nil while it is up, ErrClosed after
// Close or Shutdown, or an error wrapping ErrConnLost.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Pending returns the number of requests waiting for an answer.
func (c *Client) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Close ends the connection at once and fails every pending request,
// Collections included, with ErrClosed. It does not wait for the client's
// goroutines, so it may be called from an EventDelivery.Func; Done says when they
// have returned. Calling it again does nothing.
func (c *Client) Close() error {
	c.terminate(ErrClosed)
	return nil
}

// Shutdown refuses new requests, waits for the pending ones until ctx ends,
// sends Logoff, closes, and waits for the client's goroutines to return
// (Done). It returns ctx's error when that did not finish in time; pending
// requests then fail with ErrClosed. Any number of calls may run at once:
// one sends the Logoff, and each returns when the client has stopped or its
// own ctx has ended. It must not be called from an EventDelivery.Func or
// WithReportFunc, which run on the reader it waits for.
func (c *Client) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		c.idle = make(chan struct{})
		c.signalIdle()
	}
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
		c.terminate(ErrClosed)
		return ctx.Err()
	}
	if c.loggedOff.CompareAndSwap(false, true) {
		// A session that already ended has nobody to log off from; only
		// running out of time is Shutdown's failure.
		err := c.logoff(ctx)
		c.terminate(ErrClosed)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	select {
	case <-c.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logoff sends Logoff and waits for Goodbye. The caller has set loggedOff,
// so that the close which follows reads as ErrClosed.
func (c *Client) logoff(ctx context.Context) error {
	if err := c.Err(); err != nil {
		return err
	}
	_, err := c.request(ctx, NewAction("Logoff"), true)
	return err
}

// startKeepalive starts the keepalive once Dial has logged in: it pings
// at the configured interval and ends the session as lost when a Ping
// goes unanswered while nothing else arrives either, which is how a
// half-open TCP connection shows. It is a timer, not a goroutine, between
// Pings (memory of idle sessions); the keepalive counts in wg from here
// until a func sees the session ended, or terminate stops the timer.
func (c *Client) startKeepalive() {
	if c.opts.keepalive <= 0 {
		return
	}
	c.kaMu.Lock()
	defer c.kaMu.Unlock()
	select {
	case <-c.ended: // terminate has run, and the reader may wait on wg
		return
	default:
	}
	c.wg.Add(1)
	c.ka = time.AfterFunc(c.opts.keepalive, c.keepalive)
}

// keepalive is one tick: a Ping, then the timer armed for the next tick,
// on the interval's beat as a ticker would be, unless the session ended.
func (c *Client) keepalive() {
	start := time.Now()
	if !c.ping() {
		c.terminate(fmt.Errorf("%w: %w", ErrConnLost, ErrKeepalive))
	}
	c.kaMu.Lock()
	defer c.kaMu.Unlock()
	select {
	case <-c.ended: // terminate found the timer not armed: done here
		c.wg.Done()
		return
	default:
	}
	every := c.opts.keepalive
	c.ka.Reset(every - time.Since(start)%every)
}

// ping sends one Ping and waits for its answer. It reports false when the
// keepalive timeout passed with neither the answer nor any other byte from
// the PBX: bytes of any kind prove the link is alive, and Asterisk may hold
// the answer back for as long as one of the session's actions runs
// (capture 17).
func (c *Client) ping() bool {
	ttl := c.opts.keepaliveTimeout()
	id, cl, err := c.begin(NewAction("Ping"), true, nil, nil)
	if err != nil {
		return true // the session has ended: nothing left to detect
	}
	sent := c.sinceStart()
	timer := time.NewTimer(ttl)
	defer timer.Stop()
	for {
		select {
		case <-cl.done:
			return true
		case <-timer.C:
		}
		last := max(sent, time.Duration(c.lastRx.Load()))
		if left := last + ttl - c.sinceStart(); left > 0 {
			timer.Reset(left)
			continue
		}
		if !c.abandon(id, cl) {
			return true // the answer came just now
		}
		return false
	}
}

// sinceStart is the monotonic time since the client was made; lastRx is
// kept in the same unit.
func (c *Client) sinceStart() time.Duration { return time.Since(c.created) }

// lifeReader notes when bytes last came from the PBX, for the keepalive.
type lifeReader struct {
	r io.Reader
	c *Client
}

func (l lifeReader) Read(p []byte) (n int, err error) {
	if n, err = l.r.Read(p); n > 0 {
		l.c.lastRx.Store(int64(l.c.sinceStart()))
	}
	return n, err
}

// drainedReader calls EventDelivery.Drained before each read of the
// socket: the Reader reads only once it has parsed every whole message it
// holds, so each of them has been handed over by then.
type drainedReader struct {
	r       io.Reader
	drained func()
}

func (d drainedReader) Read(p []byte) (int, error) {
	d.drained()
	return d.r.Read(p)
}

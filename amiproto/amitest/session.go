package amitest

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// session is one client connection. Its read goroutine parses actions and
// runs their handlers one at a time, as Asterisk does, so answers leave in
// request order unless a fault says otherwise. Everything written to the
// client goes through one queue drained by the write goroutine, which is
// where the write faults act.
type session struct {
	srv     *Server
	conn    net.Conn
	id      uint64
	created time.Time

	// Owned by the read goroutine.
	user      string
	userWrite bool
	challenge string

	authed atomic.Bool
	mask   atomic.Uint32 // event classes taken; 0 = events off

	out      outQueue
	done     chan struct{} // closed when the connection is gone
	readDone chan struct{} // closed when the read goroutine returns
	endOnce  sync.Once
	dropNext atomic.Bool // DropMidMessage armed
	halfOpen atomic.Bool // HalfOpen: swallow input and output

	authTimer *time.Timer

	holdMu    sync.Mutex
	held      [][]byte
	holdTimer *time.Timer

	hold eventHold // events waiting for the running action (stall.go)
}

// outQueue holds the bytes waiting for the write goroutine.
type outQueue struct {
	mu     sync.Mutex
	buf    []byte
	spare  []byte
	splits []int         // offsets in buf where a new socket write must start
	eof    bool          // accepts nothing more; the writer closes once drained
	busy   bool          // a write is under way (the writer's, or an inline one)
	wake   chan struct{} // bytes or eof arrived
	space  chan struct{} // the writer took the buffer
}

var sessionSeq atomic.Uint64

func newSession(s *Server, conn net.Conn) *session {
	ss := &session{
		srv:      s,
		conn:     conn,
		id:       sessionSeq.Add(1),
		created:  time.Now(),
		done:     make(chan struct{}),
		readDone: make(chan struct{}),
	}
	ss.out.wake = make(chan struct{}, 1)
	ss.out.space = make(chan struct{}, 1)
	ss.mask.Store(classAll)
	return ss
}

// startAuthTimer arms Config.AuthTimeout. It runs under Server.mu, as the
// session is registered, so that every abort sees the timer.
func (ss *session) startAuthTimer() {
	if d := ss.srv.cfg.AuthTimeout; d > 0 {
		ss.authTimer = time.AfterFunc(d, func() {
			if !ss.authed.Load() {
				ss.abort()
			}
		})
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// enqueue appends b to the output queue. Once MaxQueue bytes wait it
// blocks until the writer takes them, so a slow client slows its producer
// instead of growing memory. It reports false when the session is ending.
func (ss *session) enqueue(b []byte) bool { return ss.enqueueSegments(b, nil) }

// enqueueSegments is enqueue for bytes that must leave in separate socket
// writes, cut at the offsets in segs.
func (ss *session) enqueueSegments(b []byte, segs []int) bool {
	q := &ss.out
	for {
		q.mu.Lock()
		if q.eof {
			q.mu.Unlock()
			return false
		}
		if len(q.buf) == 0 || len(q.buf)+len(b) <= ss.srv.cfg.MaxQueue {
			for _, off := range segs {
				q.splits = append(q.splits, len(q.buf)+off)
			}
			q.buf = append(q.buf, b...)
			q.mu.Unlock()
			signal(q.wake)
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-ss.done:
			return false
		}
	}
}

// enqueueThen queues b and runs f while no other output can be queued.
// It does not wait for room: b is small.
func (ss *session) enqueueThen(b []byte, f func()) {
	q := &ss.out
	q.mu.Lock()
	if !q.eof {
		q.buf = append(q.buf, b...)
		f()
	}
	q.mu.Unlock()
	signal(q.wake)
}

// enqueueEvent queues an event unless the session is swallowing output.
func (ss *session) enqueueEvent(b []byte) {
	if !ss.halfOpen.Load() && !ss.holdEvent(b) {
		ss.enqueue(b)
	}
}

// writeInline writes b to the socket on the caller's goroutine when
// nothing is queued or being written (Server.EmitRawInline), and
// reports whether it did. A failed write ends the session, as the
// writer's would.
func (ss *session) writeInline(b []byte) bool {
	q := &ss.out
	q.mu.Lock()
	if q.busy || q.eof || len(q.buf) > 0 {
		q.mu.Unlock()
		return false
	}
	q.busy = true
	q.mu.Unlock()
	err := ss.writeChunk(b, nil)
	q.mu.Lock()
	q.busy = false
	more := len(q.buf) > 0 || q.eof
	q.mu.Unlock()
	if err != nil {
		if !errors.Is(err, net.ErrClosed) && !errors.Is(err, errDropped) {
			ss.srv.logf("amitest: session %d write: %v", ss.id, err)
		}
		ss.abort()
		return true
	}
	if more {
		signal(q.wake) // what was queued meanwhile waits for the writer
	}
	return true
}

// closeAfterFlush stops accepting output; the writer closes the connection
// once what is queued has been written.
func (ss *session) closeAfterFlush() {
	ss.out.mu.Lock()
	ss.out.eof = true
	ss.out.mu.Unlock()
	signal(ss.out.wake)
}

// abort closes the connection now, dropping what is queued.
func (ss *session) abort() {
	ss.endOnce.Do(func() {
		ss.out.mu.Lock()
		ss.out.eof = true
		ss.out.mu.Unlock()
		close(ss.done)
		ss.conn.Close()
		if ss.authTimer != nil {
			ss.authTimer.Stop()
		}
		ss.holdMu.Lock()
		if ss.holdTimer != nil {
			ss.holdTimer.Stop()
		}
		ss.held = nil
		ss.holdMu.Unlock()
		ss.srv.forget(ss)
		ss.srv.logf("amitest: session %d closed", ss.id)
	})
}

func (ss *session) readLoop() {
	defer ss.srv.wg.Done()
	ss.srv.logf("amitest: session %d from %s", ss.id, ss.conn.RemoteAddr())
	ss.enqueue([]byte(ss.srv.profile.Banner() + "\r\n"))
	defer close(ss.readDone)
	var in io.Reader = ss.conn
	if ss.srv.cfg.RecordReceived {
		in = recorder{r: ss.conn, srv: ss.srv}
	}
	r := newActionReader(in)
	for {
		a, err := r.next()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				ss.srv.logf("amitest: session %d read: %v", ss.id, err)
			}
			ss.closeAfterFlush()
			return
		}
		// A closing session keeps reading, and ignoring, what the client
		// still sends, so that its close is a FIN and not a reset that
		// could destroy the last answer in the client's buffer.
		if ss.halfOpen.Load() {
			ss.srv.faults.ignoredInput.Add(1)
			continue
		}
		if ss.closing() {
			continue
		}
		ss.process(a)
	}
}

func (ss *session) closing() bool {
	ss.out.mu.Lock()
	defer ss.out.mu.Unlock()
	return ss.out.eof
}

// lingerClose ends a session whose output is all written: it half-closes
// the socket so the client reads EOF after the last answer, then waits a
// little for the client to close its side.
func (ss *session) lingerClose() {
	cw, ok := ss.conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ss.readDone:
	case <-ss.done:
	case <-t.C:
	}
}

func (ss *session) writeLoop() {
	defer ss.srv.wg.Done()
	defer ss.abort()
	q := &ss.out
	for {
		q.mu.Lock()
		chunk, eof, splits, busy := q.buf, q.eof, q.splits, q.busy
		if busy { // an inline write (writeInline) wakes the writer when done
			chunk, eof = nil, false
		} else if len(chunk) > 0 {
			q.buf, q.spare, q.splits = q.spare[:0], nil, nil
			q.busy = true
		}
		q.mu.Unlock()
		if len(chunk) == 0 {
			if eof {
				ss.lingerClose()
				return
			}
			select {
			case <-q.wake:
				continue
			case <-ss.done:
				return
			}
		}
		signal(q.space)
		err := ss.writeChunk(chunk, splits)
		q.mu.Lock()
		q.busy = false
		if err == nil && cap(chunk) <= 2*ss.srv.cfg.MaxQueue && q.spare == nil {
			q.spare = chunk[:0]
		}
		q.mu.Unlock()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, errDropped) {
				ss.srv.logf("amitest: session %d write: %v", ss.id, err)
			}
			return
		}
	}
}

var errDropped = errors.New("amitest: connection dropped by fault")

// writeChunk writes b to the socket through the write faults, starting a
// new socket write at each offset in splits.
func (ss *session) writeChunk(b []byte, splits []int) error {
	if ss.halfOpen.Load() {
		return nil
	}
	if !ss.srv.faults.waitStall(ss.done) {
		return net.ErrClosed
	}
	if ss.dropNext.CompareAndSwap(true, false) {
		ss.conn.Write(b[:cutPoint(b)])
		return errDropped
	}
	start := 0
	for _, end := range splits {
		if end > start && end < len(b) {
			if err := ss.writeSegment(b[start:end]); err != nil {
				return err
			}
			start = end
		}
	}
	return ss.writeSegment(b[start:])
}

func (ss *session) writeSegment(b []byte) error {
	if d := ss.srv.cfg.WriteTimeout; d > 0 {
		ss.conn.SetWriteDeadline(time.Now().Add(d))
	}
	if ss.srv.faults.slow.Load() {
		for i := range b {
			if _, err := ss.conn.Write(b[i : i+1]); err != nil {
				return err
			}
		}
		return nil
	}
	_, err := ss.conn.Write(b)
	return err
}

// cutPoint picks where to cut b so that the cut falls inside a message:
// the middle of its first line, or the middle of b for one short line.
func cutPoint(b []byte) int {
	n := len(b) / 2
	if i := strings.IndexByte(string(b[:min(len(b), 256)]), '\n'); i > 1 {
		n = i / 2
	}
	return max(n, 1)
}

// process answers one parsed action.
func (ss *session) process(a parsedAction) {
	w := &ResponseWriter{ss: ss}
	switch a.status {
	case statusLineTooLong:
		w.Error("Failed to parse message: line too long")
		w.commit()
		return
	case statusTooManyLines:
		w.Error("Too many lines in message or allocation failure")
		w.commit()
		return
	}
	m := a.msg
	if id, ok := m.Lookup("ActionID"); ok && id != "" {
		w.actionID, w.hasID = id, true
	}
	action := m.Get("Action")
	if action == "" {
		w.Error("Missing action in request")
		w.commit()
		return
	}
	lower := strings.ToLower(action)
	if ss.srv.faults.ignores(lower) {
		return
	}
	if !ss.authed.Load() && lower != "login" && lower != "logoff" && lower != "challenge" {
		w.Error("Permission denied")
		w.commit()
		return
	}
	h, ok := ss.srv.handler(action)
	if !ok {
		w.Error("Invalid/unknown command: " + action + ". Use Action: ListCommands to show available commands.")
		w.commit()
		return
	}
	if ss.authed.Load() && !ss.userWrite && !ss.srv.cli.noPrivilege(lower) {
		w.Error("Permission denied")
		w.commit()
		ss.srv.broadcastOne(ss.securityEvent("RequestNotAllowed", "Error", "RequestType", "Action: "+action), classSecurity)
		return
	}
	w.cut = ss.srv.faults.takeDropDuring(lower)
	ss.beginAction()
	h.ServeAMI(w, &Request{Message: m, User: ss.user, srv: ss.srv})
	w.commit()
	ss.endAction()
	if w.hangup {
		ss.closeAfterFlush()
	}
}

// securityEvent renders a security-class event about this session, with
// the fields of the captures' SuccessfulAuth and RequestNotAllowed.
func (ss *session) securityEvent(name, severity string, kv ...string) []byte {
	now := time.Now()
	b := make([]byte, 0, 512)
	b = appendField(b, "Event", name)
	b = appendField(b, "Privilege", "security,all")
	b = appendField(b, "EventTV", formatEventTV(now))
	b = appendField(b, "Severity", severity)
	b = appendField(b, "Service", "AMI")
	b = appendField(b, "EventVersion", "1")
	b = appendField(b, "AccountID", ss.user)
	b = appendField(b, "SessionID", "0x"+strconv.FormatUint(0x7f38c4000000+ss.id<<12, 16))
	b = appendField(b, "LocalAddress", ss.addrString(ss.conn.LocalAddr()))
	b = appendField(b, "RemoteAddress", ss.addrString(ss.conn.RemoteAddr()))
	for i := 0; i+1 < len(kv); i += 2 {
		b = appendField(b, kv[i], kv[i+1])
	}
	b = appendField(b, "SessionTV", formatEventTV(ss.created))
	return append(b, '\r', '\n')
}

func formatEventTV(t time.Time) string { return t.Format("2006-01-02T15:04:05.000-0700") }

// addrString formats an address as Asterisk does: IPV4/TCP/127.0.0.1/5038.
func (ss *session) addrString(a net.Addr) string {
	proto := "TCP"
	if ss.srv.cfg.TLS != nil {
		proto = "TLS"
	}
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	family := "IPV4"
	if strings.Contains(host, ":") {
		family = "IPV6"
	}
	return family + "/" + proto + "/" + host + "/" + port
}

// holdAnswer keeps an answer for out-of-order release: once batch answers
// are held, or holdDelay after the first, they leave reversed or shuffled.
func (ss *session) holdAnswer(b []byte, batch int, shuffle bool) {
	ss.holdMu.Lock()
	ss.held = append(ss.held, b)
	if len(ss.held) < batch {
		if ss.holdTimer == nil {
			ss.holdTimer = time.AfterFunc(holdDelay, func() { ss.releaseHeld(shuffle) })
		}
		ss.holdMu.Unlock()
		return
	}
	ss.holdMu.Unlock()
	ss.releaseHeld(shuffle)
}

// holdDelay bounds how long a partial batch of out-of-order answers waits.
const holdDelay = 5 * time.Millisecond

func (ss *session) releaseHeld(shuffle bool) {
	ss.holdMu.Lock()
	held := ss.held
	ss.held = nil
	if ss.holdTimer != nil {
		ss.holdTimer.Stop()
		ss.holdTimer = nil
	}
	// Enqueue under the lock so that two releases cannot interleave their
	// answers with a later in-order one.
	defer ss.holdMu.Unlock()
	if shuffle {
		rand.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	} else {
		for i, j := 0, len(held)-1; i < j; i, j = i+1, j-1 {
			held[i], held[j] = held[j], held[i]
		}
	}
	for _, b := range held {
		ss.enqueue(b)
	}
}

func (ss *session) hasHeld() bool {
	ss.holdMu.Lock()
	defer ss.holdMu.Unlock()
	return len(ss.held) > 0
}

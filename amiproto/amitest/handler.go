package amitest

import (
	"github.com/ami-bridge/ami-bridge/amiproto"
)

// Handler answers one action. ServeAMI runs on the session's read
// goroutine, so the session's next action waits for it, as in Asterisk.
type Handler interface {
	ServeAMI(w *ResponseWriter, r *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(w *ResponseWriter, r *Request)

// ServeAMI calls f(w, r).
func (f HandlerFunc) ServeAMI(w *ResponseWriter, r *Request) { f(w, r) }

// Request is an action received by the server. Its fields are in wire
// order; lines without a colon have been dropped, as Asterisk does.
type Request struct {
	*amiproto.Message
	// User is the logged-in user, or "" before login.
	User string

	srv *Server
}

// Server returns the server that received the request, for handlers that
// emit events.
func (r *Request) Server() *Server { return r.srv }

// flushAt is the size at which a long answer (a big collection) is handed
// to the writer in pieces instead of whole.
const flushAt = 64 << 10

// ResponseWriter writes the answer to one action. What it is given is
// written in order, after the session's earlier answers, once the handler
// returns or calls Flush (long answers leave in pieces as they grow). It
// must not be used after ServeAMI returns.
type ResponseWriter struct {
	ss       *session
	actionID string
	hasID    bool
	buf      []byte
	cut      bool // DropDuring: cut this answer and close
	dead     bool // cut done: swallow the rest
	hangup   bool // CloseAfter: close once written
	segs     []int
}

// Segment ends a socket write: what was written so far leaves in its own
// write, as Asterisk writes the three parts of a Ping response (capture
// 04), so the client's reads split there unless the bytes pile up first.
func (w *ResponseWriter) Segment() { w.segs = append(w.segs, len(w.buf)) }

// CloseAfter closes the connection once the answer has been written, as
// Logoff and a failed Login do.
func (w *ResponseWriter) CloseAfter() { w.hangup = true }

// ActionID returns the action's ActionID and whether it had a non-empty
// one. Asterisk echoes only the first ActionID of an action.
func (w *ResponseWriter) ActionID() (string, bool) { return w.actionID, w.hasID }

// Respond writes "Response: <status>", the ActionID line when the action
// had one, then the key, value pairs, and the blank line.
func (w *ResponseWriter) Respond(status string, kv ...string) {
	w.buf = appendField(w.buf, "Response", status)
	w.appendActionID()
	for i := 0; i+1 < len(kv); i += 2 {
		w.buf = appendField(w.buf, kv[i], kv[i+1])
	}
	w.end()
}

// Success is Respond("Success", kv...).
func (w *ResponseWriter) Success(kv ...string) { w.Respond("Success", kv...) }

// Error writes "Response: Error", the ActionID and "Message: <message>".
func (w *ResponseWriter) Error(message string) { w.Respond("Error", "Message", message) }

// WriteMessage writes m as it is: no ActionID is added.
func (w *ResponseWriter) WriteMessage(m *amiproto.Message) {
	for _, f := range m.Fields() {
		if f.Key == "" {
			w.buf = append(w.buf, f.Value...)
			w.buf = append(w.buf, '\r', '\n')
			continue
		}
		w.buf = appendField(w.buf, f.Key, f.Value)
	}
	w.end()
}

// Write writes p unchanged, for framings no Message can express. It never
// fails.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	w.maybeFlush()
	return len(p), nil
}

// List writes an event list as Asterisk does: a Success response with
// "EventList: start" and message, each item with the ActionID added as its
// second line when it has none, then the completing event with
// "EventList: Complete" and "ListItems: N", plus the extra key, value
// pairs of complete.
func (w *ResponseWriter) List(message, completeEvent string, items []*amiproto.Message, complete ...string) {
	w.Success("EventList", "start", "Message", message)
	for _, it := range items {
		fs := it.Fields()
		if len(fs) == 0 {
			continue
		}
		f0 := fs[0]
		w.buf = appendField(w.buf, f0.Key, f0.Value)
		if !it.Has("ActionID") {
			w.appendActionID()
		}
		w.WriteMessage(amiproto.NewMessage(fs[1:]...))
	}
	w.listComplete(completeEvent, len(items), complete...)
}

func (w *ResponseWriter) listComplete(event string, n int, kv ...string) {
	w.buf = appendField(w.buf, "Event", event)
	w.appendActionID()
	w.buf = appendField(w.buf, "EventList", "Complete")
	w.buf = appendInt(appendKey(w.buf, "ListItems"), n)
	w.buf = append(w.buf, '\r', '\n')
	for i := 0; i+1 < len(kv); i += 2 {
		w.buf = appendField(w.buf, kv[i], kv[i+1])
	}
	w.end()
}

func (w *ResponseWriter) appendActionID() {
	if w.hasID {
		w.buf = appendField(w.buf, "ActionID", w.actionID)
	}
}

// end closes a message and hands a long answer to the writer.
func (w *ResponseWriter) end() {
	w.buf = append(w.buf, '\r', '\n')
	w.maybeFlush()
}

func (w *ResponseWriter) maybeFlush() {
	if len(w.buf) >= flushAt && w.ss.srv.faults.outOfOrderBatch() == 0 {
		w.flush()
	}
}

func (w *ResponseWriter) flush() {
	if w.dead || len(w.buf) == 0 {
		w.buf = w.buf[:0]
		return
	}
	ss := w.ss
	if w.cut {
		ss.enqueue(w.buf[:max(len(w.buf)/2, 1)])
		ss.closeAfterFlush()
		w.dead = true
		w.buf = w.buf[:0]
		return
	}
	if ss.hasHeld() {
		ss.releaseHeld(false)
	}
	// A session that ends stops the rest of a long answer being built.
	w.dead = !ss.enqueueSegments(w.buf, w.segs)
	w.buf, w.segs = w.buf[:0], w.segs[:0]
}

// Flush hands what was written so far to the session's writer. Events a
// handler emits go straight to the sessions' queues, so a handler that
// wants its event after its response flushes first, as the built-in
// actions do.
func (w *ResponseWriter) Flush() { w.commit() }

// commit hands the finished answer to the writer, or to the out-of-order
// hold.
func (w *ResponseWriter) commit() {
	if w.dead || len(w.buf) == 0 {
		return
	}
	if batch, shuffle := w.ss.srv.faults.outOfOrder(); batch > 0 && !w.cut && !w.hangup {
		w.ss.holdAnswer(w.buf, batch, shuffle)
		w.buf, w.segs = nil, nil
		return
	}
	w.flush()
}

func appendKey(b []byte, key string) []byte {
	b = append(b, key...)
	return append(b, ':', ' ')
}

// fields appends key/value pairs to the message being written, in order.
func (w *ResponseWriter) fields(kv ...string) {
	for i := 0; i+1 < len(kv); i += 2 {
		w.buf = appendField(w.buf, kv[i], kv[i+1])
	}
}

func appendField(b []byte, key, value string) []byte {
	b = append(b, key...)
	b = append(b, ':', ' ')
	b = append(b, value...)
	return append(b, '\r', '\n')
}

func appendInt(b []byte, n int) []byte {
	if n < 0 {
		b = append(b, '-')
		n = -n
	}
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

package amiproto

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// SkipEvent lets a consumer that is shedding load drop an event for a
// fraction of the cost of reading it. When the next message lies whole in
// the buffer and its first line is "Event: <name>", SkipEvent calls skip
// with the name; if skip returns true the message is consumed unparsed and
// SkipEvent returns true. In every other case nothing is consumed, skip
// may not have been called, and ReadMessage reads the message as usual.
//
// name is the value EventName would return, and is valid only during the
// call. A message that breaks a limit is never skipped: ReadMessage
// reports it.
func (r *Reader) SkipEvent(skip func(name string) bool) bool {
	if r.skip != skipNone || r.discardLine {
		return false
	}
	buf := r.buf[:r.end]
	p := r.pos
	const key = "Event:"
	if len(buf)-p < len(key) || buf[p+len(key)-1] != ':' || !isEventKey(buf[p:p+len(key)-1]) {
		return false // not an event, or blank lines first: the slow way
	}
	// The first line: its end, and where the name starts as in scanMessage.
	e := nextLF(buf, p+len(key))
	if e < 0 {
		return false
	}
	hi := e
	if buf[hi-1] == '\r' {
		hi--
	}
	lim := r.limits
	if hi-p > lim.MaxLineBytes {
		return false
	}
	v := p + valueStart(buf[p:hi], len(key)-1)
	// The end of the message: the first blank line. Checking the limits
	// costs a compare per line.
	lines, msgBytes := 1, hi-p
	for lo := e + 1; ; {
		e = nextLF(buf, lo)
		if e < 0 {
			return false // the message goes on past the buffer
		}
		n := e - lo
		if n > 0 && buf[e-1] == '\r' {
			n--
		}
		if n == 0 {
			break
		}
		lines++
		msgBytes += n
		if n > lim.MaxLineBytes || lines > lim.MaxFields || msgBytes > lim.MaxMessageBytes {
			return false
		}
		lo = e + 1
	}
	if !skip(unsafe.String(unsafe.SliceData(buf[v:]), hi-v)) {
		return false
	}
	r.line += lines + 1
	r.mstart, r.pos, r.scan = e+1, e+1, e+1
	return true
}

// nextLF returns the index of the first '\n' in buf at or after i, or -1.
// Like scanMessage it tests eight bytes at a time: AMI lines are too short
// for bytes.IndexByte's set-up to pay.
func nextLF(buf []byte, i int) int {
	for ; i+8 <= len(buf); i += 8 {
		if m := hasZeroByte(binary.LittleEndian.Uint64(buf[i:]) ^ lsb*'\n'); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(buf); i++ {
		if buf[i] == '\n' {
			return i
		}
	}
	return -1
}

// isEventKey reports whether k is "Event", in any case, as Kind does.
func isEventKey(k []byte) bool {
	return string(k) == "Event" || bytes.EqualFold(k, []byte("Event"))
}

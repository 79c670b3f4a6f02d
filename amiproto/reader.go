package amiproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"strings"
	"unsafe"
)

// Default reader limits. They are far above what Asterisk sends (its own
// input lines stop at 1 KiB; "core show help" is one 17 KB response and
// ShowDialPlan or ListCommands stay well below a megabyte) and bound what a
// broken or hostile peer can make the reader hold.
const (
	DefaultMaxLineBytes    = 64 << 10
	DefaultMaxMessageBytes = 16 << 20
	DefaultMaxFields       = 1 << 16
)

// Upper bounds on the limits themselves: spans index a message with int32.
const (
	maxLineLimit    = 1 << 28
	maxMessageLimit = 1 << 29
	maxFieldsLimit  = 1 << 24
)

// ReaderLimits bound what a Reader accepts. A zero field takes its default.
type ReaderLimits struct {
	MaxLineBytes    int // longest line, terminator excluded
	MaxMessageBytes int // sum of a message's line lengths
	MaxFields       int // lines in one message
}

func (l ReaderLimits) withDefaults() ReaderLimits {
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultMaxLineBytes
	}
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if l.MaxFields <= 0 {
		l.MaxFields = DefaultMaxFields
	}
	l.MaxLineBytes = min(l.MaxLineBytes, maxLineLimit)
	l.MaxMessageBytes = min(l.MaxMessageBytes, maxMessageLimit)
	l.MaxFields = min(l.MaxFields, maxFieldsLimit)
	return l
}

// Buffer sizes. The buffer starts small, for the many sessions that are
// mostly idle (an idle session's Pings and their answers are ~100 bytes;
// one process holds thousands of sessions), and doubles while one message
// does not fit or, up to busyBufSize, while reads fill it: a busy stream
// reaches busyBufSize within a few reads. It goes back to busyBufSize once
// a message larger than shrinkAbove is done.
const (
	startBufSize = 1 << 10
	busyBufSize  = 32 << 10
	minReadSize  = 1 << 10
	shrinkAbove  = 1 << 20
)

// Reader reads AMI messages from a stream. It accepts CRLF and bare LF line
// endings, any number of blank lines between messages, and the legacy
// "Response: Follows" Command block. It is not safe for concurrent use.
//
// The Reader does its own buffering: a message is scanned in place and
// copied once, with its index, into the single string its Message holds.
type Reader struct {
	src    io.Reader
	srcErr error // sticky error from src, returned once the buffer is drained
	limits ReaderLimits
	line   int // lines read so far, for error positions

	// buf[mstart:end] holds unconsumed input: the message being read from
	// mstart, the next unread line from pos; scan is where the search for
	// the current line's '\n' resumes.
	buf                    []byte
	mstart, pos, scan, end int

	spans    []span // the current message's fields, relative to mstart
	msgBytes int    // sum of the current message's line lengths

	skip        skipMode // what is being discarded after a limit error
	discardLine bool     // the rest of an over-long line is still to come
	filled      bool     // the last read filled the buffer: the stream is busy

	msgSlab   []Message // ReadMessage's Messages are cut from it
	slabSize  int       // the size of the latest slab
	chunk     []byte    // the free part of the chunk messages' text is cut from
	chunkSize int       // the size of the latest chunk

	// ReadBorrowed's: the message being read takes scratch, reused by
	// every borrowed read, instead of a piece of chunk.
	borrow   bool
	scratch  []byte
	borrowed Message
}

// span locates one field relative to Reader.mstart. key < 0 marks the fixed
// keys below.
type span struct {
	key, keyEnd, val, valEnd int32
}

const (
	spanNoKey  = -1 // a line without a colon: Field.Key is ""
	spanOutput = -2 // a raw line of a Follows block: Field.Key is "Output"
)

// skipMode says how much of a message that broke a limit is still to be
// discarded.
type skipMode uint8

const (
	skipNone skipMode = iota
	// skipMessage discards up to the next blank line.
	skipMessage
	// skipFollows discards a Follows block, whose raw output may hold bare-LF
	// blank lines, up to its "--END COMMAND--" or a CRLF blank line.
	skipFollows
)

// NewReader returns a Reader over r with the default limits.
func NewReader(r io.Reader) *Reader { return NewReaderLimits(r, ReaderLimits{}) }

// NewReaderLimits returns a Reader over r with the given limits.
func NewReaderLimits(r io.Reader, limits ReaderLimits) *Reader {
	return &Reader{src: r, limits: limits.withDefaults(), buf: make([]byte, startBufSize)}
}

// Buffered returns the number of bytes read from the stream but not yet
// parsed.
func (r *Reader) Buffered() int { return r.end - r.pos }

// ReadBanner reads the one-line greeting Asterisk sends first, such as
// "Asterisk Call Manager/11.0.0", and returns it without its line ending.
func (r *Reader) ReadBanner() (string, error) {
	r.mstart = r.pos
	lo, hi, _, err := r.nextLine()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	r.mstart = r.pos
	return string(r.buf[lo:hi]), nil
}

// BannerVersion returns the AMI version in a banner: "11.0.0" for
// "Asterisk Call Manager/11.0.0", or "" when there is none.
func BannerVersion(banner string) string {
	i := strings.LastIndexByte(banner, '/')
	if i < 0 {
		return ""
	}
	return strings.TrimSpace(banner[i+1:])
}

// ReadMessage reads the next message. It returns io.EOF at a clean end of
// stream and io.ErrUnexpectedEOF when the stream ends inside a message.
//
// A *ProtocolError wrapping ErrLineTooLong or ErrMessageTooLarge means the
// message broke a limit: it is discarded and the next call reads the message
// after it, so one bad message costs nothing else.
//
// The message stays valid after later reads, but it shares memory with the
// messages read around it: up to 64 Message headers and 16 KiB of text are
// kept alive while any of them is. Clone a message that outlives its
// neighbours by far.
func (r *Reader) ReadMessage() (*Message, error) {
	if len(r.msgSlab) == 0 {
		// Like the chunks: small for an idle session, doubling while
		// messages keep coming.
		r.slabSize = min(max(2*r.slabSize, minMsgSlab), msgSlabSize)
		r.msgSlab = make([]Message, r.slabSize)
	}
	m := &r.msgSlab[0]
	if err := r.ReadMessageInto(m); err != nil {
		return nil, err
	}
	r.msgSlab = r.msgSlab[1:]
	return m, nil
}

// ReadBorrowed is ReadMessage for a caller done with each message before
// it reads the next: the message, and every string taken from it, are
// valid only until the next read, which reuses their memory. Clone what
// must outlive that.
//
// It saves ReadMessage's copy into memory of its own. The copy itself is
// cheap; touching fresh memory is not: at a fan-in's rates (a hundred
// thousand messages a second spread over hundreds of sessions' chunks)
// the page faults and cache misses of that copy cost more than parsing.
func (r *Reader) ReadBorrowed() (*Message, error) {
	r.borrow = true
	err := r.ReadMessageInto(&r.borrowed)
	r.borrow = false
	if err != nil {
		return nil, err
	}
	return &r.borrowed, nil
}

// ReadMessageInto is ReadMessage into a caller's Message, which it
// overwrites, for a loop that is done with one message before it reads the
// next. Copies of the old Message, and strings taken from it, stay valid.
func (r *Reader) ReadMessageInto(m *Message) error {
	r.startMessage()
	if !r.scanMessage() {
		if err := r.readSlow(); err != nil {
			return err
		}
	}
	*m = r.message()
	return nil
}

// scanMessage is the fast path of a read: one pass over a message that lies
// whole in the buffer, has no Follows block and keeps within the limits,
// which is nearly every message. On anything else it returns false having
// changed nothing, and readSlow reads the message.
//
// It tests eight bytes at a time for the next '\n' and, until the line's
// first ':' is found, for ':' too: AMI lines are short, too short for
// bytes.IndexByte's set-up to pay.
func (r *Reader) scanMessage() bool {
	if r.skip != skipNone || r.discardLine {
		return false
	}
	buf := r.buf[:r.end]
	spans := r.spans[:0]
	lim := r.limits
	p, mstart := r.pos, r.pos // the current line's start, the message's
	colon := -1               // the current line's first ':'
	lines, msgBytes := 0, 0
	for i := p; ; {
		e := -1 // the next '\n', or ':' while colon < 0
		for ; i+8 <= len(buf); i += 8 {
			w := binary.LittleEndian.Uint64(buf[i:])
			m := hasZeroByte(w ^ lsb*'\n')
			if colon < 0 {
				m |= hasZeroByte(w ^ lsb*':')
			}
			if m != 0 {
				e = i + bits.TrailingZeros64(m)>>3
				break
			}
		}
		if e < 0 {
			for ; i < len(buf); i++ {
				if c := buf[i]; c == '\n' || (c == ':' && colon < 0) {
					e = i
					break
				}
			}
			if e < 0 {
				return false // the message goes on past the buffer
			}
		}
		i = e + 1
		if buf[e] == ':' {
			colon = e
			continue
		}
		lines++
		hi := e
		if hi > p && buf[hi-1] == '\r' {
			hi--
		}
		n := hi - p
		switch {
		case n > lim.MaxLineBytes:
			return false
		case n == 0 && len(spans) == 0:
			p, mstart = i, i // blank lines between messages
			continue
		case n == 0:
			r.spans, r.msgBytes = spans, msgBytes
			r.mstart, r.pos, r.scan = mstart, i, i
			r.line += lines
			return true
		case len(spans) == 0 && isFollowsLine(buf[p:hi]):
			return false
		case len(spans) >= lim.MaxFields || msgBytes+n > lim.MaxMessageBytes:
			return false
		}
		msgBytes += n
		s := span{key: spanNoKey, val: int32(p - mstart), valEnd: int32(hi - mstart)}
		if colon >= 0 { // before hi: buf[hi] is CR or LF
			v := colon + 1
			if v < hi && buf[v] == ' ' {
				v++ // the one space Asterisk writes
			}
			if v < hi && (buf[v] == ' ' || buf[v] == '\t') {
				v = p + valueStart(buf[p:hi], colon-p)
			}
			s.key, s.keyEnd, s.val = s.val, int32(colon-mstart), int32(v-mstart)
		}
		spans = append(spans, s)
		p, colon = i, -1
	}
}

// hasZeroByte returns x with the high bit of its first zero byte set (in
// memory order), no bit below it, and maybe bits above it: the lowest set
// bit is exact, which is all scanMessage reads.
func hasZeroByte(x uint64) uint64 { return (x - lsb) &^ x & msb }

// readSlow reads the current message line by line, refilling the buffer
// as it goes, with Follows blocks, limits and read errors.
func (r *Reader) readSlow() error {
	follows := false // inside a "Response: Follows" message
	output := false  // inside its raw output block
	for {
		lo, hi, crlf, err := r.nextLine()
		if err != nil {
			if errors.Is(err, ErrLineTooLong) {
				if r.skip != skipNone {
					continue // part of the message being discarded
				}
				return r.fail(err, skipFor(follows))
			}
			if r.skip == skipNone {
				r.rewind()
			}
			if errors.Is(err, io.EOF) && (len(r.spans) > 0 || r.skip != skipNone) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		line := r.buf[lo:hi]
		if r.skip != skipNone {
			r.skipLine(line, crlf)
			r.mstart = r.pos
			continue
		}
		if follows {
			if bytes.HasSuffix(line, endCommand) {
				follows, output = false, false
				if hi-len(endCommand) > lo {
					if err := r.addSpan(spanOutput, lo, hi-len(endCommand)); err != nil {
						return r.fail(err, skipMessage)
					}
				}
				continue
			}
			if output {
				// Raw output never holds a CR; a CRLF blank line ends the
				// message even if the marker went missing.
				if crlf && len(line) == 0 {
					return nil
				}
				if err := r.addSpan(spanOutput, lo, hi); err != nil {
					return r.fail(err, skipFollows)
				}
				continue
			}
			if !isFollowsHeader(line, crlf) {
				output = true
				if err := r.addSpan(spanOutput, lo, hi); err != nil {
					return r.fail(err, skipFollows)
				}
				continue
			}
		}
		if len(line) == 0 {
			if len(r.spans) == 0 {
				r.mstart = r.pos // blank lines between messages
				continue
			}
			return nil
		}
		if len(r.spans) == 0 && isFollowsLine(line) {
			follows = true
		}
		if err := r.addSpan(0, lo, hi); err != nil {
			return r.fail(err, skipFor(follows))
		}
	}
}

// startMessage forgets the previous message and gives back the memory a
// very large one made the buffer grow to.
func (r *Reader) startMessage() {
	r.spans = r.spans[:0]
	r.msgBytes = 0
	r.mstart = r.pos
	if len(r.buf) > shrinkAbove && r.end-r.pos <= busyBufSize/2 {
		nb := make([]byte, busyBufSize)
		n := copy(nb, r.buf[r.pos:r.end])
		r.buf, r.mstart, r.pos, r.scan, r.end = nb, 0, 0, r.scan-r.pos, n
	}
}

// rewind goes back to the start of the message, so that a call after a
// transient read error (a deadline) reads the message whole.
func (r *Reader) rewind() {
	r.line -= bytes.Count(r.buf[r.mstart:r.pos], []byte{'\n'})
	r.pos, r.scan = r.mstart, r.mstart
}

func skipFor(follows bool) skipMode {
	if follows {
		return skipFollows
	}
	return skipMessage
}

// fail records how much of the message is left to discard and returns err.
func (r *Reader) fail(err error, mode skipMode) error {
	r.skip = mode
	r.mstart = r.pos
	return err
}

// skipLine advances the discard state by one line.
func (r *Reader) skipLine(line []byte, crlf bool) {
	switch r.skip {
	case skipFollows:
		if bytes.HasSuffix(line, endCommand) {
			r.skip = skipMessage
		} else if crlf && len(line) == 0 {
			r.skip = skipNone
		}
	case skipMessage:
		if len(line) == 0 {
			r.skip = skipNone
		}
	}
}

var endCommand = []byte("--END COMMAND--")

// isFollowsLine reports whether line is "Response: Follows", the start of a
// legacy Command block.
func isFollowsLine(line []byte) bool {
	if len(line) < len("Response:Follows") || line[len("Response")] != ':' {
		return false
	}
	k, v := line[:len("Response")], line[len("Response:"):]
	return bytes.EqualFold(k, []byte("Response")) &&
		bytes.EqualFold(bytes.TrimLeft(v, " \t"), []byte("Follows"))
}

// isFollowsHeader reports whether a line of a Follows block, before its raw
// output started, is still a header. Asterisk ends header lines in CRLF and
// raw output lines in a bare LF; on a stream that uses bare LF throughout,
// Privilege and ActionID, the only headers Asterisk puts there, still count.
// A CRLF blank line is reported as a header so that it ends the message.
func isFollowsHeader(line []byte, crlf bool) bool {
	if len(line) == 0 {
		return crlf
	}
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return false
	}
	if crlf {
		return true
	}
	return bytes.EqualFold(line[:i], []byte("Privilege")) || bytes.EqualFold(line[:i], []byte("ActionID"))
}

// addSpan records buf[lo:hi] as a field. kind is 0 for a "Key: value" line
// (a line without a colon becomes spanNoKey) or spanOutput for raw Command
// output.
func (r *Reader) addSpan(kind int32, lo, hi int) error {
	if len(r.spans) >= r.limits.MaxFields || r.msgBytes+(hi-lo) > r.limits.MaxMessageBytes {
		return &ProtocolError{Line: r.line, Msg: "message exceeds size limit", Err: ErrMessageTooLarge}
	}
	r.msgBytes += hi - lo
	base := int32(r.mstart)
	s := span{key: kind, val: int32(lo) - base, valEnd: int32(hi) - base}
	if kind == 0 {
		line := r.buf[lo:hi]
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			s.key = spanNoKey
		} else {
			s.key, s.keyEnd = s.val, s.val+int32(i)
			s.val += int32(valueStart(line, i))
		}
	}
	r.spans = append(r.spans, s)
	return nil
}

// valueStart returns where the value begins in line, whose key ends at
// colon. Leading blanks are skipped, except in "Output:" lines, whose
// values are CLI text with meaningful indentation: there only the one space
// Asterisk writes after the colon goes.
func valueStart(line []byte, colon int) int {
	j := colon + 1
	if colon == len("Output") && bytes.EqualFold(line[:colon], []byte("Output")) {
		if j < len(line) && line[j] == ' ' {
			j++
		}
		return j
	}
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	return j
}

// Sizes of the memory that read messages are cut from; see alloc.
const (
	minMsgSlab  = 4
	msgSlabSize = 64
	minChunk    = 512
	maxChunk    = 16 << 10
)

// message copies the current message's text out of the buffer, followed by
// its index, and returns it as a Message.
func (r *Reader) message() Message {
	n := len(r.spans)
	text := int(r.spans[n-1].valEnd) // the last value ends the text
	wide := text >= noOffset16
	b := r.alloc(text + n*entrySize(wide))
	copy(b, r.buf[r.mstart:r.mstart+text])
	idx := b[text:]
	for i, s := range r.spans {
		ks, ke := int(s.key), int(s.keyEnd)
		switch s.key {
		case spanNoKey:
			ks, ke = int(s.val), int(s.val)
		case spanOutput:
			ks = -1
		}
		if !wide && ks >= 0 { // the common case, in one store
			binary.LittleEndian.PutUint64(idx[i*8:], uint64(ks)|uint64(ke)<<16|uint64(s.val)<<32|uint64(s.valEnd)<<48)
			continue
		}
		putEntry(idx, wide, i, ks, ke, int(s.val), int(s.valEnd))
	}
	r.mstart = r.pos
	// alloc hands out each byte once, and b is not written again: it can
	// be the string.
	return Message{data: unsafe.String(&b[0], len(b)), n: uint32(n), wide: wide}
}

// alloc returns size bytes for a message. Small messages are cut from
// shared chunks, so that a busy stream costs one allocation every few dozen
// messages; a kept message keeps its chunk alive, at most maxChunk bytes.
// Chunks start small, so that an idle session holds little, and double
// while messages keep coming.
func (r *Reader) alloc(size int) []byte {
	if r.borrow {
		if cap(r.scratch) < size {
			r.scratch = make([]byte, max(size, minChunk))
		}
		return r.scratch[:size:size]
	}
	if size > maxChunk/4 {
		return make([]byte, size)
	}
	if len(r.chunk) < size {
		r.chunkSize = min(max(2*r.chunkSize, minChunk), maxChunk)
		r.chunk = make([]byte, max(r.chunkSize, size))
	}
	b := r.chunk[:size:size]
	r.chunk = r.chunk[size:]
	return b
}

// nextLine finds the next line and returns its bounds in buf, without its
// terminator, and whether it ended in CRLF rather than a bare LF. The bounds
// are valid until the next call. A line over the limit is reported as a
// *ProtocolError as soon as it is seen; the rest of it is discarded by the
// following calls.
func (r *Reader) nextLine() (lo, hi int, crlf bool, err error) {
	for {
		if i := bytes.IndexByte(r.buf[r.scan:r.end], '\n'); i >= 0 {
			lo, hi = r.pos, r.scan+i
			r.pos, r.scan = hi+1, hi+1
			if r.discardLine {
				r.discardLine = false
				continue
			}
			r.line++
			if hi > lo && r.buf[hi-1] == '\r' {
				hi, crlf = hi-1, true
			}
			if hi-lo > r.limits.MaxLineBytes {
				return 0, 0, false, r.lineTooLong()
			}
			return lo, hi, crlf, nil
		}
		r.scan = r.end
		if r.discardLine {
			r.end, r.scan = r.pos, r.pos // drop what has come of the line so far
		} else if r.end-r.pos > r.limits.MaxLineBytes+1 { // +1: room for its CR
			r.line++
			r.end, r.scan = r.pos, r.pos
			r.discardLine = true
			return 0, 0, false, r.lineTooLong()
		}
		if err := r.fill(); err != nil {
			if errors.Is(err, io.EOF) && (r.end > r.pos || r.discardLine) {
				err = io.ErrUnexpectedEOF
			}
			return 0, 0, false, err
		}
	}
}

func (r *Reader) lineTooLong() error {
	return &ProtocolError{Line: r.line, Msg: "line exceeds size limit", Err: ErrLineTooLong}
}

// fill reads more input after end, first making room by dropping the
// consumed bytes before mstart or, when the message fills the buffer, by
// growing it.
func (r *Reader) fill() error {
	if err := r.srcErr; err != nil {
		// Like bufio, report a read error once, so that a caller may
		// retry after a transient one.
		r.srcErr = nil
		return err
	}
	if len(r.buf)-r.end < minReadSize && r.mstart > 0 {
		n := copy(r.buf, r.buf[r.mstart:r.end])
		r.pos -= r.mstart
		r.scan -= r.mstart
		r.end = n
		r.mstart = 0
	}
	if len(r.buf)-r.end < minReadSize || (r.filled && len(r.buf) < busyBufSize) {
		nb := make([]byte, 2*len(r.buf))
		copy(nb, r.buf[:r.end])
		r.buf = nb
	}
	for range 100 {
		n, err := r.src.Read(r.buf[r.end:])
		if n < 0 || n > len(r.buf)-r.end {
			return errInvalidRead
		}
		r.filled = n == len(r.buf)-r.end // more was likely waiting
		r.end += n
		if err != nil {
			if n > 0 {
				r.srcErr = err // after the bytes that came with it
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	return io.ErrNoProgress
}

var errInvalidRead = errors.New("ami: source reader returned an invalid count")

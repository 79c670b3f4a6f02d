package amiproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
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
	return l
}

// Reader reads AMI messages from a stream. It accepts CRLF and bare LF line
// endings, any number of blank lines between messages, and the legacy
// "Response: Follows" Command block. It is not safe for concurrent use.
type Reader struct {
	r      *bufio.Reader
	limits ReaderLimits
	line   int // lines read so far, for error positions

	buf   []byte // the current message's keys and values, back to back
	spans []span
	long  []byte // assembles a line longer than the bufio buffer

	skip bool // discard up to the next blank line (after a limit error)

	msgSlab   []Message
	fieldSlab []Field
}

// span locates one field in Reader.buf. key < 0 marks the fixed keys below.
type span struct {
	key, keyEnd, val, valEnd int32
}

const (
	spanNoKey  = -1 // a line without a colon: Field.Key is ""
	spanOutput = -2 // a raw line of a Follows block: Field.Key is "Output"
)

// NewReader returns a Reader over r with the default limits.
func NewReader(r io.Reader) *Reader { return NewReaderLimits(r, ReaderLimits{}) }

// NewReaderLimits returns a Reader over r with the given limits.
func NewReaderLimits(r io.Reader, limits ReaderLimits) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok || br.Size() < 16<<10 {
		br = bufio.NewReaderSize(r, 32<<10)
	}
	return &Reader{r: br, limits: limits.withDefaults()}
}

// Buffered returns the number of bytes read from the stream but not yet
// parsed.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// ReadBanner reads the one-line greeting Asterisk sends first, such as
// "Asterisk Call Manager/11.0.0", and returns it without its line ending.
func (r *Reader) ReadBanner() (string, error) {
	line, _, err := r.readLine()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return string(line), nil
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
func (r *Reader) ReadMessage() (*Message, error) {
	if len(r.msgSlab) == 0 {
		r.msgSlab = make([]Message, 32)
	}
	m := &r.msgSlab[0]
	if err := r.ReadMessageInto(m); err != nil {
		return nil, err
	}
	r.msgSlab = r.msgSlab[1:]
	return m, nil
}

// ReadMessageInto is ReadMessage into a caller's Message, whose Fields are
// replaced.
func (r *Reader) ReadMessageInto(m *Message) error {
	r.buf = r.buf[:0]
	r.spans = r.spans[:0]
	follows := false // inside a "Response: Follows" message
	output := false  // inside its raw output block
	for {
		line, crlf, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && (len(r.spans) > 0 || r.skip) {
				err = io.ErrUnexpectedEOF
			}
			if perr := (*ProtocolError)(nil); errors.As(err, &perr) {
				r.skip = true
			}
			return err
		}
		if r.skip {
			if len(line) == 0 {
				r.skip = false
			}
			continue
		}
		if follows {
			if crlf && bytes.HasSuffix(line, endCommand) {
				if body := line[:len(line)-len(endCommand)]; len(body) > 0 {
					if err := r.addSpan(spanOutput, body); err != nil {
						return err
					}
				}
				follows, output = false, false
				continue
			}
			if output || !crlf || (len(line) > 0 && bytes.IndexByte(line, ':') < 0) {
				output = true
				if err := r.addSpan(spanOutput, line); err != nil {
					return err
				}
				continue
			}
		}
		if len(line) == 0 {
			if len(r.spans) == 0 {
				continue // blank lines between messages
			}
			break
		}
		if err := r.addSpan(0, line); err != nil {
			return err
		}
		if len(r.spans) == 1 && isFollows(r.buf, r.spans[0]) {
			follows = true
		}
	}
	m.Fields = r.fields()
	return nil
}

var endCommand = []byte("--END COMMAND--")

func isFollows(buf []byte, s span) bool {
	return s.key >= 0 && strings.EqualFold(string(buf[s.key:s.keyEnd]), "Response") &&
		strings.EqualFold(string(buf[s.val:s.valEnd]), "Follows")
}

// addSpan copies one line into the message buffer. kind is 0 for a
// "Key: value" line (a line without a colon becomes spanNoKey) or
// spanOutput for raw Command output.
func (r *Reader) addSpan(kind int32, line []byte) error {
	if len(r.spans) >= r.limits.MaxFields || len(r.buf)+len(line) > r.limits.MaxMessageBytes {
		r.skip = true
		return &ProtocolError{Line: r.line, Msg: "message exceeds size limit", Err: ErrMessageTooLarge}
	}
	base := int32(len(r.buf))
	r.buf = append(r.buf, line...)
	s := span{key: kind, val: base, valEnd: base + int32(len(line))}
	if kind == 0 {
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			s.key = spanNoKey
		} else {
			s.key, s.keyEnd = base, base+int32(i)
			j := i + 1
			for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
				j++
			}
			s.val = base + int32(j)
		}
	}
	r.spans = append(r.spans, s)
	return nil
}

// fields turns the spans into Fields over one string: one allocation for
// the bytes, and Fields cut from a shared slab.
func (r *Reader) fields() []Field {
	str := string(r.buf)
	n := len(r.spans)
	if len(r.fieldSlab) < n {
		r.fieldSlab = make([]Field, max(n, 512))
	}
	fs := r.fieldSlab[:n:n]
	r.fieldSlab = r.fieldSlab[n:]
	for i, s := range r.spans {
		switch s.key {
		case spanNoKey:
			fs[i] = Field{Value: str[s.val:s.valEnd]}
		case spanOutput:
			fs[i] = Field{Key: "Output", Value: str[s.val:s.valEnd]}
		default:
			fs[i] = Field{Key: str[s.key:s.keyEnd], Value: str[s.val:s.valEnd]}
		}
	}
	return fs
}

// readLine returns the next line without its terminator, and whether it
// ended in CRLF rather than a bare LF. The line is valid until the next
// call. A line over the limit is discarded up to its end and reported as a
// *ProtocolError.
func (r *Reader) readLine() (line []byte, crlf bool, err error) {
	line, err = r.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		line, err = r.readLongLine(line)
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			return nil, false, io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	r.line++
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line, crlf = line[:n-1], true
	}
	if len(line) > r.limits.MaxLineBytes {
		return nil, false, &ProtocolError{Line: r.line, Msg: "line exceeds size limit", Err: ErrLineTooLong}
	}
	return line, crlf, nil
}

func (r *Reader) readLongLine(first []byte) ([]byte, error) {
	r.long = append(r.long[:0], first...)
	for {
		frag, err := r.r.ReadSlice('\n')
		if len(r.long)+len(frag) > r.limits.MaxLineBytes+2 {
			r.long = r.long[:0]
			for err == bufio.ErrBufferFull {
				_, err = r.r.ReadSlice('\n')
			}
			r.line++
			if err != nil {
				return nil, err
			}
			return nil, &ProtocolError{Line: r.line, Msg: "line exceeds size limit", Err: ErrLineTooLong}
		}
		r.long = append(r.long, frag...)
		if err != bufio.ErrBufferFull {
			return r.long, err
		}
	}
}

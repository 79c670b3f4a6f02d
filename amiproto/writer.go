package amiproto

import (
	"bufio"
	"io"
)

// Writer writes AMI actions to a stream.
type Writer struct {
	w   *bufio.Writer
	buf []byte
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriter(w)}
}

// WriteMessage validates m, then writes it as "Key: value\r\n" lines and a
// blank line, and flushes. A message that fails validation writes nothing.
func (w *Writer) WriteMessage(m *Message) error {
	var err error
	w.buf, err = AppendMessage(w.buf[:0], m)
	if err != nil {
		return err
	}
	if _, err := w.w.Write(w.buf); err != nil {
		return err
	}
	return w.w.Flush()
}

// AppendMessage appends m in wire form to dst and returns the extended
// buffer. It checks every field first and appends nothing when one is
// invalid: CR, LF or NUL anywhere, an empty key, or a key holding ':' or
// whitespace, since any of those would let a value inject headers or whole
// actions.
func AppendMessage(dst []byte, m *Message) ([]byte, error) {
	if err := ValidateMessage(m); err != nil {
		return dst, err
	}
	for k, v := range m.All() {
		dst = append(dst, k...)
		dst = append(dst, ':', ' ')
		dst = append(dst, v...)
		dst = append(dst, '\r', '\n')
	}
	return append(dst, '\r', '\n'), nil
}

// ValidateMessage reports the first field of m that cannot be sent safely,
// as an *ActionError, or nil.
func ValidateMessage(m *Message) error {
	if m.Len() == 0 {
		return &ActionError{Reason: "empty message"}
	}
	for i := range m.Len() {
		if err := validateField(m.Field(i)); err != nil {
			return err
		}
	}
	return nil
}

func validateField(f Field) error {
	if f.Key == "" {
		return &ActionError{Reason: "empty key"}
	}
	for i := 0; i < len(f.Key); i++ {
		switch c := f.Key[i]; {
		case c == ':':
			return &ActionError{Key: f.Key, Reason: "key contains ':'"}
		case c <= ' ' || c == 0x7f:
			return &ActionError{Key: f.Key, Reason: "key contains whitespace or a control character"}
		}
	}
	for i := 0; i < len(f.Value); i++ {
		switch f.Value[i] {
		case '\r':
			return &ActionError{Key: f.Key, Reason: "value contains CR"}
		case '\n':
			return &ActionError{Key: f.Key, Reason: "value contains LF"}
		case 0:
			return &ActionError{Key: f.Key, Reason: "value contains NUL"}
		}
	}
	return nil
}

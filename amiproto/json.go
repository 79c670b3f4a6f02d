package amiproto

import (
	"encoding/binary"
	"unicode/utf8"
	"unsafe"
)

// AppendJSON appends m to dst as one JSON object and returns the extended
// buffer: the fields in wire order, keys spelled as they came.
//
// A key that repeats (Variable, ChanVariable, Output, ...) becomes one member
// whose value is the array of its values in wire order, placed where the key
// first appeared and spelled as it was there. Keys repeat when they are equal
// ignoring ASCII case, the way Asterisk compares header names. Lines without
// a colon (Fields with an empty Key) are left out.
//
// The output is valid JSON for any bytes: control characters are escaped,
// and invalid UTF-8 becomes U+FFFD, byte by byte. U+2028 and U+2029 are
// escaped too, as encoding/json does. Two keys that differ only in invalid
// bytes therefore come out spelled the same; Asterisk's keys are ASCII. A
// nil m gives null.
//
// AppendJSON allocates nothing when dst has room, for messages of up to 64
// fields.
func (m *Message) AppendJSON(dst []byte) []byte {
	if m == nil {
		return append(dst, "null"...)
	}
	// The fields decoded once, on the stack for up to linkStack of them.
	var fstack [linkStack]Field
	var fs []Field
	if n := m.Len(); n <= linkStack {
		fs = fstack[:n:n]
	} else {
		fs = make([]Field, n)
	}
	m.decode(fs)
	var stack [linkStack]uint32
	var links []uint32
	if len(fs) <= linkStack {
		links = stack[:len(fs)]
	} else {
		links = make([]uint32, len(fs))
	}
	linkRepeats(fs, links)
	dst = append(dst, '{')
	comma := false
	for i := range fs {
		if fs[i].Key == "" || links[i]&isRepeat != 0 {
			continue
		}
		if comma {
			dst = append(dst, ',')
		}
		comma = true
		dst = AppendJSONString(dst, fs[i].Key)
		dst = append(dst, ':')
		next := links[i] >> 1
		if next == 0 {
			dst = AppendJSONString(dst, fs[i].Value)
			continue
		}
		dst = append(dst, '[')
		dst = AppendJSONString(dst, fs[i].Value)
		for j := next; j != 0; j = links[j] >> 1 {
			dst = append(dst, ',')
			dst = AppendJSONString(dst, fs[j].Value)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// MarshalJSON encodes m as AppendJSON does. It has a value receiver so that
// encoding/json uses it for a Message as well as a *Message.
func (m Message) MarshalJSON() ([]byte, error) {
	return m.AppendJSON(make([]byte, 0, 2+len(m.data)+6*m.Len())), nil
}

// linkStack is the field count up to which AppendJSON keeps its bookkeeping
// on the stack.
const linkStack = 64

// isRepeat marks, in a link, a field whose key an earlier field has.
const isRepeat = 1

// linkRepeats fills links, one per field, with the index of the next field
// that has the same key, shifted left by one, ORed with isRepeat when an
// earlier field has it. A small open-addressing table of case-folded key
// hashes finds them with one hash per field.
func linkRepeats(fs []Field, links []uint32) {
	n := len(fs)
	if n < 2 {
		return
	}
	type slot struct{ last, hash uint32 } // last: the latest field with the key, plus one
	var stack [2 * linkStack]slot
	slots := stack[:]
	if n > linkStack {
		size := len(stack)
		for size < 2*n {
			size *= 2
		}
		slots = make([]slot, size)
	}
	mask := uint32(len(slots) - 1)
	for i := range n {
		key := fs[i].Key
		if key == "" {
			continue
		}
		h := foldHash(key)
		for s := h & mask; ; s = (s + 1) & mask {
			sl := &slots[s]
			if sl.last == 0 {
				sl.last, sl.hash = uint32(i)+1, h
				break
			}
			prev := sl.last - 1
			if sl.hash == h && equalFoldASCIIKey(fs[prev].Key, key) {
				links[prev] |= uint32(i) << 1
				links[i] = isRepeat
				sl.last = uint32(i) + 1
				break
			}
		}
	}
}

// foldHash hashes a key so that keys equal ignoring ASCII case hash
// equal. It reads at most 16 bytes: a collision only costs a comparison.
func foldHash(s string) uint32 {
	const fold = lsb * 0x20 // sets the case bit of every byte
	var a, b uint64
	switch n := len(s); {
	case n >= 8:
		a, b = load64(s, 0), load64(s, n-8)
	case n >= 4:
		a, b = uint64(load32(s, 0)), uint64(load32(s, n-4))
	default:
		a = uint64(s[0]) | uint64(s[n/2])<<8 | uint64(s[n-1])<<16
	}
	h := (a|fold)*0x9e3779b97f4a7c15 ^ (b|fold)*0xc2b2ae3d27d4eb4f ^ uint64(len(s))
	return uint32(h >> 32)
}

func equalFoldASCIIKey(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// jsonSafe marks the bytes that go into a JSON string as they are: ASCII
// but control characters, '"' and '\\'.
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// needsEscape reports whether any of the eight bytes in x is a control
// character, '"', '\\' or not ASCII: the SWAR tests from Hacker's Delight.
// It may be wrong about bytes after the first one that needs escaping,
// never about whether one does.
func needsEscape(x uint64) bool {
	quote := x ^ (lsb * '"')
	backslash := x ^ (lsb * '\\')
	lt0x20 := (x - lsb*0x20) & ^x
	hasQuote := (quote - lsb) & ^quote
	hasBackslash := (backslash - lsb) & ^backslash
	return (lt0x20|hasQuote|hasBackslash|x)&msb != 0
}

// The loads read little-endian integers from a string at i. They go
// through a []byte view of the string, which the compiler turns into one
// load and one bounds check; the bytes are only read.
func load32(s string, i int) uint32 { return binary.LittleEndian.Uint32(bytesOf(s)[i:]) }
func load64(s string, i int) uint64 { return binary.LittleEndian.Uint64(bytesOf(s)[i:]) }

func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// AppendJSONString appends s as a JSON string, with the escaping of
// AppendJSON: invalid UTF-8 becomes U+FFFD, control characters, U+2028 and
// U+2029 are escaped. Most AMI text needs no escaping: that is checked
// eight bytes at a time and copied at once.
func AppendJSONString(dst []byte, s string) []byte {
	i, n := 0, len(s)
	switch {
	case n >= 8:
		for i+8 <= n && !needsEscape(load64(s, i)) {
			i += 8
		}
		if i+8 > n && i < n && !needsEscape(load64(s, n-8)) { // the tail, overlapping
			i = n
		}
	case n >= 4:
		if !needsEscape(uint64(load32(s, 0)) | uint64(load32(s, n-4))<<32) {
			i = n
		}
	}
	for i < n && jsonSafe[s[i]] {
		i++
	}
	dst = append(dst, '"')
	if i < len(s) {
		return appendJSONEscaped(dst, s, i)
	}
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendJSONEscaped appends the rest of a JSON string whose bytes before
// start need no escaping, and the closing quote.
func appendJSONEscaped(dst []byte, s string, start int) []byte {
	i := start
	start = 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

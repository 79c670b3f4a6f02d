package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// capturePath is the burst the fake PBX replays, relative to the
// repository: the events a real Asterisk 22.10.1 sent while answering 200
// Async Originates.
const capturePath = "amiproto/testdata/captures/asterisk-22/14a_burst_200_originates.recv.bin"

// burst is the capture's events, each in its wire form exactly as Asterisk
// sent it, back to back in buf: event i is buf[offs[i]:offs[i+1]].
type burst struct {
	buf  []byte
	offs []int
	msgs []*amiproto.Message // event i parsed, for the raw publisher
}

// loadBurst reads the capture's events. The session's own events
// (FullyBooted, SuccessfulAuth) are left out: a PBX sends them once per
// login, not in a burst.
func loadBurst(path string) (*burst, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	_, rest, ok := bytes.Cut(raw, []byte("\r\n")) // the banner
	if !ok {
		return nil, fmt.Errorf("%s: no banner", path)
	}
	b := &burst{offs: []int{0}}
	for len(rest) > 0 {
		packet, after, ok := bytes.Cut(rest, []byte("\r\n\r\n"))
		if !ok {
			return nil, fmt.Errorf("%s: unterminated message at its end", path)
		}
		packet = rest[:len(packet)+4]
		rest = after
		m, err := amiproto.NewReader(bytes.NewReader(packet)).ReadMessage()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if !isBurstEvent(m) {
			continue
		}
		b.buf = append(b.buf, packet...)
		b.offs = append(b.offs, len(b.buf))
		b.msgs = append(b.msgs, m)
	}
	if len(b.msgs) == 0 {
		return nil, fmt.Errorf("%s: no events", path)
	}
	return b, nil
}

// isBurstEvent reports whether m is an event a PBX sends under load: not
// a response, and not one of the events of a session's login.
func isBurstEvent(m *amiproto.Message) bool {
	name := m.EventName()
	return name != "" && name != "FullyBooted" && name != "SuccessfulAuth"
}

// burstEvent is isBurstEvent of one message in its wire form.
func burstEvent(packet []byte) bool {
	m, err := amiproto.NewReader(bytes.NewReader(packet)).ReadMessage()
	return (err == nil || errors.Is(err, io.EOF)) && m != nil && isBurstEvent(m)
}

// len returns the number of events in the burst.
func (b *burst) len() int { return len(b.msgs) }

// span returns the wire form of events first to first+n-1 of the endless
// repetition of the burst, as at most two contiguous pieces.
func (b *burst) span(first, n int, emit func([]byte)) {
	for i := first % b.len(); n > 0; i = 0 {
		j := min(b.len(), i+n)
		emit(b.buf[b.offs[i]:b.offs[j]])
		n -= j - i
	}
}

// spanner emits events first to first+n-1 of a capture played in a loop.
type spanner interface {
	span(first, n int, emit func([]byte))
}

// relabel is a private copy of a burst whose every pass gets its own
// Uniqueids and Linkedids: pass k adds 10·k to the Unix-seconds part of
// each (the digits before the '.' of every Uniqueid, Linkedid and
// UniqueID value), in place, the length unchanged.
type relabel struct {
	b    *burst
	at   []int    // offsets in b.buf of the 10 digits to rewrite
	orig []uint64 // their values in the capture
	pass int      // the pass b.buf is labelled for
}

// idValue matches a Uniqueid-like header and the seconds of its value.
var idValue = regexp.MustCompile(`(?i)(?:uniqueid|linkedid): (\d{10})\.`)

func newRelabel(b *burst) *relabel {
	r := &relabel{b: &burst{buf: bytes.Clone(b.buf), offs: b.offs, msgs: b.msgs}}
	for _, m := range idValue.FindAllSubmatchIndex(r.b.buf, -1) {
		v, _ := strconv.ParseUint(string(r.b.buf[m[2]:m[3]]), 10, 64)
		r.at, r.orig = append(r.at, m[2]), append(r.orig, v)
	}
	return r
}

// label rewrites the ids for pass k.
func (r *relabel) label(k int) {
	if k == r.pass {
		return
	}
	r.pass = k
	var d [20]byte
	for i, at := range r.at {
		s := strconv.AppendUint(d[:0], r.orig[i]+10*uint64(k), 10)
		copy(r.b.buf[at+10-len(s):at+10], s) // 10 digits until the year 2286
	}
}

func (r *relabel) span(first, n int, emit func([]byte)) {
	l := r.b.len()
	for n > 0 {
		r.label(first / l)
		i := first % l
		j := min(l, i+n)
		emit(r.b.buf[r.b.offs[i]:r.b.offs[j]])
		n -= j - i
		first += j - i
	}
}

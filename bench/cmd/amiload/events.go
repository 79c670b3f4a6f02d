package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

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

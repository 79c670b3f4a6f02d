package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// subConn is the subscriber's NATS connection: the few operations of the
// client protocol a counting subscriber needs (INFO, CONNECT, SUB, PING,
// PONG, MSG, HMSG, -ERR), read straight from the socket.
//
// Why not nats.go: it decodes every message's header block into a map.
// At the fan-in's 150,000 events/s that cost the subscriber about 4.5 µs
// per event, two thirds of a core, on the two cores the daemon and the
// fake PBXes share: the tool took the CPU it was measuring. Here a
// message's headers are scanned in place for the three the tally reads.
type subConn struct {
	conn net.Conn
	r    *bufio.Reader
	buf  []byte // a message's headers and payload, reused
}

// subMsg is one message as subConn reads it; its slices are valid until
// the next read.
type subMsg struct {
	sid     int
	subject []byte
	hdr     []byte // the header block ("NATS/1.0\r\n…\r\n\r\n"), nil for MSG
	data    []byte
}

// dialSub connects to the NATS server at rawURL and subscribes to each of
// subjs, with sid 1, 2, …, in order. It returns once the server has
// processed the subscriptions (a PING answered), so that no message
// published after it is missed.
func dialSub(rawURL string, subjs []string, timeout time.Duration) (*subConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, timeout)
	if err != nil {
		return nil, err
	}
	s := &subConn{conn: conn, r: bufio.NewReaderSize(conn, 256<<10)}
	conn.SetDeadline(time.Now().Add(timeout))
	if err := s.handshake(subjs); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return s, nil
}

func (s *subConn) handshake(subjs []string) error {
	line, err := s.r.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("NATS INFO: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("INFO ")) {
		return fmt.Errorf("NATS server sent %q, want INFO", bytes.TrimSpace(line))
	}
	connect, _ := json.Marshal(map[string]any{
		"verbose": false, "pedantic": false, "headers": true, "no_responders": false,
		"name": "amiload-sub", "lang": "go", "version": "amiload", "protocol": 1,
	})
	var w bytes.Buffer
	fmt.Fprintf(&w, "CONNECT %s\r\n", connect)
	for i, subj := range subjs {
		fmt.Fprintf(&w, "SUB %s %d\r\n", subj, i+1)
	}
	w.WriteString("PING\r\n")
	if _, err := s.conn.Write(w.Bytes()); err != nil {
		return err
	}
	for {
		line, err := s.r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("NATS handshake: %w", err)
		}
		switch {
		case bytes.HasPrefix(line, []byte("PONG")):
			return nil
		case bytes.HasPrefix(line, []byte("-ERR")):
			return fmt.Errorf("NATS server: %s", bytes.TrimSpace(line))
		}
		// INFO updates, +OK: nothing to do
	}
}

// read returns the next message, answering the server's PINGs meanwhile.
func (s *subConn) read() (subMsg, error) {
	for {
		line, err := s.r.ReadSlice('\n')
		if err != nil {
			return subMsg{}, err
		}
		switch {
		case bytes.HasPrefix(line, []byte("MSG ")):
			return s.message(line[4:], false)
		case bytes.HasPrefix(line, []byte("HMSG ")):
			return s.message(line[5:], true)
		case bytes.HasPrefix(line, []byte("PING")):
			if _, err := s.conn.Write([]byte("PONG\r\n")); err != nil {
				return subMsg{}, err
			}
		case bytes.HasPrefix(line, []byte("-ERR")):
			return subMsg{}, fmt.Errorf("NATS server: %s", bytes.TrimSpace(line))
		}
		// INFO, +OK, PONG: nothing to do
	}
}

// message reads the body of MSG (subject sid [reply] size) or HMSG
// (subject sid [reply] hdrsize size), whose arguments are args.
func (s *subConn) message(args []byte, headers bool) (subMsg, error) {
	var fields [5][]byte
	f := fields[:0]
	for a := bytes.TrimSpace(args); len(a) > 0 && len(f) < len(fields); {
		var w []byte
		w, a, _ = bytes.Cut(a, []byte(" "))
		if len(w) > 0 {
			f = append(f, w)
		}
	}
	want := 3
	if headers {
		want = 4
	}
	if len(f) != want && len(f) != want+1 { // with or without a reply subject
		return subMsg{}, fmt.Errorf("NATS: malformed message line %q", args)
	}
	var m subMsg
	m.subject = f[0]
	var err error
	if m.sid, err = strconv.Atoi(string(f[1])); err != nil {
		return subMsg{}, fmt.Errorf("NATS: bad sid in %q", args)
	}
	size, err := strconv.Atoi(string(f[len(f)-1]))
	if err != nil || size < 0 {
		return subMsg{}, fmt.Errorf("NATS: bad size in %q", args)
	}
	hsize := 0
	if headers {
		if hsize, err = strconv.Atoi(string(f[len(f)-2])); err != nil || hsize < 0 || hsize > size {
			return subMsg{}, fmt.Errorf("NATS: bad header size in %q", args)
		}
	}
	// The subject is in the reader's buffer, which the body's read may
	// overwrite: keep it first.
	if cap(s.buf) < len(m.subject)+size+2 {
		s.buf = make([]byte, 0, 2*(len(m.subject)+size+2))
	}
	b := append(s.buf[:0], m.subject...)
	m.subject = b[:len(m.subject)]
	body := b[len(b) : len(b)+size+2]
	if _, err := io.ReadFull(s.r, body); err != nil {
		return subMsg{}, err
	}
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		return subMsg{}, errors.New("NATS: message not ended by CRLF")
	}
	body = body[:size]
	if headers {
		m.hdr = body[:hsize]
	}
	m.data = body[hsize:]
	return m, nil
}

// headerValue returns the value of key in a NATS header block, nil when
// absent: the first line is the status line, then "Key: value" lines.
func headerValue(hdr []byte, key string) []byte {
	_, rest, ok := bytes.Cut(hdr, []byte("\r\n"))
	for ok && len(rest) > 0 {
		var line []byte
		line, rest, ok = bytes.Cut(rest, []byte("\r\n"))
		k, v, found := bytes.Cut(line, []byte(":"))
		if found && string(k) == key {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}

func (s *subConn) close() error { return s.conn.Close() }

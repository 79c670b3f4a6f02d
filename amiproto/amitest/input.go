package amitest

import (
	"bufio"
	"bytes"
	"io"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// Asterisk's limits on what a client sends: a line (terminator included)
// fits in a 1024-byte buffer, and a message holds at most 128 lines.
const (
	maxInputLine  = 1024
	maxInputLines = 128
)

type inputStatus uint8

const (
	statusOK inputStatus = iota
	statusLineTooLong
	statusTooManyLines
)

// parsedAction is one message from the client, or the error Asterisk
// answers in its place.
type parsedAction struct {
	msg    *amiproto.Message
	status inputStatus
}

// actionReader splits client input the way Asterisk's manager does. It is
// not amiproto.Reader on purpose: Asterisk answers every stray blank line
// with "Missing action in request", silently drops lines without a colon,
// and rejects lines over 1 KiB and messages over 128 lines, while a
// client-side reader must skip blank lines and keep every line.
type actionReader struct {
	br *bufio.Reader
}

func newActionReader(r io.Reader) *actionReader {
	return &actionReader{br: bufio.NewReaderSize(r, 4096)}
}

// next returns the next message: the lines up to a blank line. A blank
// line on its own yields an empty message.
func (r *actionReader) next() (parsedAction, error) {
	var (
		fields  []amiproto.Field
		lines   int
		tooLong bool
	)
	for {
		line, long, err := r.readLine()
		if err != nil {
			return parsedAction{}, err
		}
		if long {
			tooLong = true
			continue
		}
		if len(line) == 0 {
			break
		}
		lines++
		key, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || lines > maxInputLines {
			continue
		}
		// ast_skip_blanks: every byte below 0x21, not only blanks and tabs,
		// so " Originate" and "\tCommand" run Originate and Command.
		for len(value) > 0 && value[0] < 0x21 {
			value = value[1:]
		}
		fields = append(fields, amiproto.Field{Key: string(key), Value: string(value)})
	}
	switch {
	case tooLong:
		return parsedAction{status: statusLineTooLong}, nil
	case lines > maxInputLines:
		return parsedAction{status: statusTooManyLines}, nil
	}
	return parsedAction{msg: amiproto.NewMessage(fields...)}, nil
}

// readLine returns one line without its LF or CRLF. A line that does not
// fit Asterisk's buffer is consumed to its end and reported as long.
func (r *actionReader) readLine() (line []byte, long bool, err error) {
	line, err = r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || (err == nil && len(line) > maxInputLine) {
		for err == bufio.ErrBufferFull {
			_, err = r.br.ReadSlice('\n')
		}
		return nil, true, err
	}
	if err != nil {
		return nil, false, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, false, nil
}

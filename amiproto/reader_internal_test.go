package amiproto

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// TestReader_ShrinksAfterAHugeMessage: a message over shrinkAbove grows the
// buffer; the next read gives that memory back, keeping the pipelined bytes
// that came in the same read, and they parse intact.
func TestReader_ShrinksAfterAHugeMessage(t *testing.T) {
	line := strings.Repeat("x", 60<<10)
	var in bytes.Buffer
	in.WriteString("Response: Follows\r\nPrivilege: Command\r\n")
	for range 20 { // 1.2 MB of output
		in.WriteString(line + "\n")
	}
	in.WriteString("--END COMMAND--\r\n\r\n")
	// Pipelined behind it, in the same read: a Follows block (which the
	// line-by-line path reads, from where the shrink left it), two events
	// and half of a third, which the stream completes later.
	tail := "Response: Follows\r\nPrivilege: Command\r\nActionID: 2\r\nout\n--END COMMAND--\r\n\r\n" +
		"Event: A\r\nK: 1\r\n\r\nEvent: B\r\nLong: " + strings.Repeat("b", 40) + "\r\n\r\nEvent: C\r\nK:"
	in.WriteString(tail)
	src := &stagedReader{stages: [][]byte{in.Bytes(), []byte(" 3\r\n\r\n")}}

	r := NewReader(src)
	big, err := r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := big.Output(); len(out) != 20*len(line)+19 {
		t.Fatalf("huge message's output is %d bytes", len(out))
	}
	if len(r.buf) <= shrinkAbove || r.Buffered() != len(tail) {
		t.Fatalf("setup: buffer %d bytes with %d buffered, want over %d with the %d pipelined", len(r.buf), r.Buffered(), shrinkAbove, len(tail))
	}
	want := [][]Field{
		{{"Response", "Follows"}, {"Privilege", "Command"}, {"ActionID", "2"}, {"Output", "out"}},
		{{"Event", "A"}, {"K", "1"}},
		{{"Event", "B"}, {"Long", strings.Repeat("b", 40)}},
		{{"Event", "C"}, {"K", "3"}},
	}
	for i, w := range want {
		m, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("message %d after the huge one: %v", i+1, err)
		}
		if i == 0 && len(r.buf) != busyBufSize {
			t.Errorf("buffer is %d bytes after the huge message, want %d", len(r.buf), busyBufSize)
		}
		if !slices.Equal(m.Fields(), w) {
			t.Errorf("message %d after the shrink read %q, want %q", i+1, m.Fields(), w)
		}
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Errorf("after the last message: %v, want EOF", err)
	}
}

// stagedReader returns each stage whole in one Read, then io.EOF.
type stagedReader struct{ stages [][]byte }

func (s *stagedReader) Read(p []byte) (int, error) {
	if len(s.stages) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.stages[0])
	if s.stages[0] = s.stages[0][n:]; len(s.stages[0]) == 0 {
		s.stages = s.stages[1:]
	}
	return n, nil
}

// TestReader_BufferFollowsTheStream: a session that gets a message now and
// then keeps a small buffer; one whose reads fill the buffer grows it to
// busyBufSize, so that each read takes more at once.
func TestReader_BufferFollowsTheStream(t *testing.T) {
	event := "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/1001-00000001\r\nUniqueid: 1700000000.1\r\n\r\n"
	var stages [][]byte
	for range 200 {
		stages = append(stages, []byte(event))
	}
	quiet := NewReader(&stagedReader{stages: stages})
	stream := NewReader(bytes.NewReader(bytes.Repeat([]byte(event), 2000)))
	for _, r := range []*Reader{quiet, stream} {
		for {
			if _, err := r.ReadMessage(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(quiet.buf) > 2*startBufSize {
		t.Errorf("one message per read: buffer grew to %d bytes", len(quiet.buf))
	}
	if len(stream.buf) != busyBufSize {
		t.Errorf("reads that fill the buffer: buffer is %d bytes, want %d", len(stream.buf), busyBufSize)
	}
}

// TestMessage_CloneOwnsItsBytes: a clone of a read message keeps neither
// the reader's chunk nor its slab alive.
func TestMessage_CloneOwnsItsBytes(t *testing.T) {
	r := NewReader(strings.NewReader("Event: A\r\nK: 1\r\n\r\nEvent: B\r\nK: 2\r\n\r\n"))
	a, err := r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	c := a.Clone()
	if c == a || unsafe.StringData(c.data) == unsafe.StringData(a.data) || cap(r.chunk) == 0 {
		t.Fatal("the clone shares the read message's memory")
	}
	if !slices.Equal(c.Fields(), a.Fields()) || c.Size() != len(a.data) {
		t.Errorf("clone %q, original %q", c.Fields(), a.Fields())
	}

	// AppendClone: the same, on the bytes it appends to a shared buffer.
	buf := make([]byte, 0, 256)
	buf, c1 := a.AppendClone(buf)
	buf, c2 := c.AppendClone(buf)
	if unsafe.StringData(c1.data) != &buf[0] || unsafe.StringData(c2.data) != &buf[len(a.data)] || len(buf) != 2*len(a.data) {
		t.Fatal("AppendClone's copies are not on the buffer it appended to")
	}
	if !slices.Equal(c1.Fields(), a.Fields()) || !slices.Equal(c2.Fields(), a.Fields()) {
		t.Errorf("appended clones %q, %q; original %q", c1.Fields(), c2.Fields(), a.Fields())
	}
}

package amiproto_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"runtime"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// burst14a is the 200-Originate burst captured from Asterisk 22: 4,604
// messages, 1.73 MB, the traffic a busy PBX sends.
const burst14a = "testdata/captures/asterisk-22/14a_burst_200_originates.recv.bin"

func loadBurst(b *testing.B) (data []byte, msgs int) {
	b.Helper()
	data, err := os.ReadFile(burst14a)
	if err != nil {
		b.Fatal(err)
	}
	r := amiproto.NewReader(bytes.NewReader(data))
	if _, err := r.ReadBanner(); err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := r.ReadMessage(); err != nil {
			if !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
			return data, msgs
		}
		msgs++
	}
}

// reportPerMessage adds ns/msg and allocs/msg, which say more than ns/op
// when one op is a whole capture.
func reportPerMessage(b *testing.B, msgs int, before *runtime.MemStats) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	total := float64(b.N) * float64(msgs)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/msg")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/msg")
}

// benchBurst reads the whole burst capture b.N times with a new Reader
// each time, calling next until it returns io.EOF, and reports the cost
// per message.
func benchBurst(b *testing.B, next func(r *amiproto.Reader) error) {
	data, msgs := loadBurst(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ResetTimer()
	for range b.N {
		r := amiproto.NewReader(bytes.NewReader(data))
		if _, err := r.ReadBanner(); err != nil {
			b.Fatal(err)
		}
		for {
			if err := next(r); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	reportPerMessage(b, msgs, &ms)
}

// BenchmarkReader_Burst14a parses the whole burst capture with ReadMessage:
// every message is a new *Message that the caller may keep.
func BenchmarkReader_Burst14a(b *testing.B) {
	benchBurst(b, func(r *amiproto.Reader) error {
		_, err := r.ReadMessage()
		return err
	})
}

// BenchmarkReader_Burst14aInto parses the burst into one reused Message, the
// way a loop that handles each message before reading the next can.
func BenchmarkReader_Burst14aInto(b *testing.B) {
	var m amiproto.Message
	benchBurst(b, func(r *amiproto.Reader) error { return r.ReadMessageInto(&m) })
}

// BenchmarkReader_Burst14aBorrowed parses the burst with ReadBorrowed, as
// the bridge's event session does: each message in the one reused buffer.
func BenchmarkReader_Burst14aBorrowed(b *testing.B) {
	benchBurst(b, func(r *amiproto.Reader) error {
		_, err := r.ReadBorrowed()
		return err
	})
}

// BenchmarkReader_Burst14aSkip reads the burst as an overloaded consumer
// does, skipping every event it can with SkipEvent and reading the rest
// (responses, and events that straddle a read) with ReadMessageInto. Set
// against BenchmarkReader_Burst14aInto, it is what dropping an event
// unparsed saves.
func BenchmarkReader_Burst14aSkip(b *testing.B) {
	var m amiproto.Message
	skip := func(string) bool { return true }
	skipped, messages := 0, 0
	benchBurst(b, func(r *amiproto.Reader) error {
		messages++
		if r.SkipEvent(skip) {
			skipped++
			return nil
		}
		return r.ReadMessageInto(&m)
	})
	b.ReportMetric(float64(skipped)/float64(messages), "skipped/msg")
}

// BenchmarkWriter appends an Originate with channel variables, as the bridge
// sends one.
func BenchmarkWriter(b *testing.B) {
	m := amiproto.NewAction("Originate",
		"ActionID", "ab12cd34-1f",
		"Channel", "PJSIP/1001",
		"Context", "from-internal",
		"Exten", "5551234",
		"Priority", "1",
		"CallerID", "\"AMI Bridge\" <1000>",
		"Timeout", "30000",
		"Async", "true",
	).AddMap("Variable", map[string]string{"FOO": "foo", "BAR": "bar: with colon", "CDR(userfield)": "campaign-7"})
	buf, err := amiproto.AppendMessage(nil, m)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if buf, err = amiproto.AppendMessage(buf[:0], m); err != nil {
			b.Fatal(err)
		}
	}
}

// burstMessages returns the parsed burst capture.
func burstMessages(b *testing.B) (data []byte, msgs []*amiproto.Message) {
	b.Helper()
	data, err := os.ReadFile(burst14a)
	if err != nil {
		b.Fatal(err)
	}
	r := amiproto.NewReader(bytes.NewReader(data))
	if _, err := r.ReadBanner(); err != nil {
		b.Fatal(err)
	}
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return data, msgs
		}
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
	}
}

// BenchmarkAppendJSON encodes every message of the burst capture; one op is
// one message.
func BenchmarkAppendJSON(b *testing.B) {
	_, msgs := burstMessages(b)
	size := 0
	for _, m := range msgs {
		size += len(m.AppendJSON(nil))
	}
	b.SetBytes(int64(size / len(msgs)))
	b.ReportAllocs()
	buf := make([]byte, 0, 64<<10)
	i := 0
	for b.Loop() {
		buf = msgs[i].AppendJSON(buf[:0])
		if i++; i == len(msgs) {
			i = 0
		}
	}
}

// BenchmarkParseAndJSON reads the burst capture and encodes each message as
// JSON, as the bridge does before publishing; ns/msg is per event (goami2
// takes 11–14 µs for this).
func BenchmarkParseAndJSON(b *testing.B) {
	data, msgs := loadBurst(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ResetTimer()
	buf := make([]byte, 0, 64<<10)
	for range b.N {
		r := amiproto.NewReader(bytes.NewReader(data))
		if _, err := r.ReadBanner(); err != nil {
			b.Fatal(err)
		}
		for {
			m, err := r.ReadMessage()
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				b.Fatal(err)
			}
			buf = m.AppendJSON(buf[:0])
		}
	}
	b.StopTimer()
	reportPerMessage(b, msgs, &ms)
}

// BenchmarkMessage_Get looks up the keys a consumer of events reads, on
// every message of the burst capture; one op is one message.
func BenchmarkMessage_Get(b *testing.B) {
	_, msgs := burstMessages(b)
	b.ReportAllocs()
	i, n := 0, 0
	for b.Loop() {
		m := msgs[i]
		n += len(m.EventName()) + len(m.Get("Uniqueid")) + len(m.Get("ActionID"))
		if i++; i == len(msgs) {
			i = 0
		}
	}
	if n == 0 {
		b.Fatal("no values found")
	}
}

// BenchmarkNewAction builds an Originate as the bridge does from a JSON
// request: a field list packed into one Message.
func BenchmarkNewAction(b *testing.B) {
	fs := []amiproto.Field{
		{Key: "Action", Value: "Originate"}, {Key: "Channel", Value: "PJSIP/1001"},
		{Key: "Context", Value: "from-internal"}, {Key: "Exten", Value: "5551234"},
		{Key: "Priority", Value: "1"}, {Key: "Async", Value: "true"},
		{Key: "Variable", Value: "FOO=foo"}, {Key: "Variable", Value: "BAR=bar"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if m := amiproto.NewMessage(fs...); m.Len() != len(fs) {
			b.Fatal(m.Len())
		}
	}
}

package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// capturePath is a real Asterisk 22.10.1 session: the banner, a login, then
// 200 Async Originates answered by 4,400 events (about 1.7 MB).
const capturePath = "../amiproto/testdata/captures/asterisk-22/14a_burst_200_originates.recv.bin"

// result is what one pass over the capture produced.
type result struct {
	msgs      int // messages parsed
	failed    int // packets the parser rejected
	jsonBytes int // JSON bytes written (ParseJSON only)
}

// contender is one parser under test. Each function makes one full pass
// over the capture, banner included, the way that library's client reads
// a connection.
type contender struct {
	name      string
	parse     func(capture []byte) (result, error)
	parseJSON func(capture []byte, buf []byte) (result, []byte, error)
}

// contenders holds amiproto; goami2_test.go adds goami2 under the goami2
// build tag, because that module is not always fetchable (see README.md).
var contenders = []contender{{
	name:      "amiproto",
	parse:     parseAmiproto,
	parseJSON: parseJSONAmiproto,
}}

func loadCapture(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(capturePath)
	if err != nil {
		tb.Fatalf("read capture: %v", err)
	}
	return b
}

// parseAmiproto reads the capture as amiproto's Client does: one Reader
// over the stream, the banner, then ReadMessage until EOF. ReadMessage
// returns messages that own their memory, like goami2's *Message.
func parseAmiproto(capture []byte) (result, error) {
	var res result
	r := amiproto.NewReader(bytes.NewReader(capture))
	if _, err := r.ReadBanner(); err != nil {
		return res, fmt.Errorf("amiproto: banner: %w", err)
	}
	for {
		_, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("amiproto: message %d: %w", res.msgs+1, err)
		}
		res.msgs++
	}
}

// parseJSONAmiproto is parseAmiproto plus AppendJSON of every message into
// buf, which is reused from message to message and from pass to pass.
func parseJSONAmiproto(capture []byte, buf []byte) (result, []byte, error) {
	var res result
	r := amiproto.NewReader(bytes.NewReader(capture))
	if _, err := r.ReadBanner(); err != nil {
		return res, buf, fmt.Errorf("amiproto: banner: %w", err)
	}
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return res, buf, nil
		}
		if err != nil {
			return res, buf, fmt.Errorf("amiproto: message %d: %w", res.msgs+1, err)
		}
		buf = m.AppendJSON(buf[:0])
		res.msgs++
		res.jsonBytes += len(buf)
	}
}

var (
	lineEnd   = []byte("\r\n")
	packetEnd = []byte("\r\n\r\n")
)

// packetSplitter returns a bufio.SplitFunc that yields the banner line first
// and then one AMI packet per token, "\r\n\r\n" included. That is how
// goami2's client frames the stream (it reads the prompt apart, then treats
// everything up to a blank line as one message), and it is also the
// reference message count, independent of both parsers.
func packetSplitter() func(data []byte, atEOF bool) (int, []byte, error) {
	sep := lineEnd
	return func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.Index(data, sep); i >= 0 {
			n := i + len(sep)
			sep = packetEnd
			return n, data[:n], nil
		}
		if atEOF && len(data) > 0 {
			return 0, nil, io.ErrUnexpectedEOF
		}
		return 0, nil, nil
	}
}

// newPacketScanner frames the capture as goami2's client does: the prompt
// line apart (it is consumed here), then everything up to "\r\n\r\n" as one
// message. Its buffer starts at 32 KiB, as amiproto's Reader's does.
func newPacketScanner(capture []byte) *bufio.Scanner {
	sc := bufio.NewScanner(bytes.NewReader(capture))
	sc.Buffer(make([]byte, 32<<10), 16<<20)
	sc.Split(packetSplitter())
	sc.Scan() // the banner
	return sc
}

// countPackets returns the number of packets after the banner.
func countPackets(capture []byte) (int, error) {
	split := packetSplitter()
	n := -1 // the banner
	for len(capture) > 0 {
		adv, tok, err := split(capture, true)
		if err != nil {
			return 0, err
		}
		if tok == nil {
			break
		}
		capture = capture[adv:]
		n++
	}
	return n, nil
}

// meter snapshots the process's counters before a benchmark's loop.
type meter struct {
	mallocs uint64
	cpu     time.Duration
}

func startMeter() meter {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return meter{mallocs: ms.Mallocs, cpu: cpuTime()}
}

// report adds per-message metrics, msgs being the messages in one pass:
// ns/msg (wall), cpu-ns/msg (process CPU time, which other processes on a
// shared machine do not inflate) and allocs/msg. It must be called right after the b.Loop loop.
func (m meter) report(b *testing.B, msgs int) {
	cpu := cpuTime() - m.cpu
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	total := float64(b.N) * float64(msgs)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/msg")
	b.ReportMetric(float64(cpu.Nanoseconds())/total, "cpu-ns/msg")
	b.ReportMetric(float64(ms.Mallocs-m.mallocs)/total, "allocs/msg")
}

// BenchmarkParse parses the whole capture once per iteration.
func BenchmarkParse(b *testing.B) {
	capture := loadCapture(b)
	msgs, err := countPackets(capture)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range contenders {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(capture)))
			var res result
			var err error
			meter := startMeter()
			for b.Loop() {
				if res, err = c.parse(capture); err != nil {
					b.Fatal(err)
				}
			}
			meter.report(b, msgs)
			if res.failed > 0 {
				b.ReportMetric(float64(res.failed), "rejected/op")
			}
		})
	}
}

// BenchmarkParseJSON parses the whole capture and encodes every message as
// JSON once per iteration.
func BenchmarkParseJSON(b *testing.B) {
	capture := loadCapture(b)
	msgs, err := countPackets(capture)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range contenders {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(capture)))
			var res result
			var err error
			buf := make([]byte, 0, 64<<10)
			meter := startMeter()
			for b.Loop() {
				if res, buf, err = c.parseJSON(capture, buf); err != nil {
					b.Fatal(err)
				}
			}
			meter.report(b, msgs)
			if res.failed > 0 {
				b.ReportMetric(float64(res.failed), "rejected/op")
			}
		})
	}
}

// TestMessageCount checks that every contender sees every packet of the
// capture, so the benchmarks compare the same work.
func TestMessageCount(t *testing.T) {
	capture := loadCapture(t)
	want, err := countPackets(capture)
	if err != nil {
		t.Fatal(err)
	}
	// The capture's README: 200 responses and 4,400 events for the
	// originates, plus login, FullyBooted, SuccessfulAuth and Logoff.
	if want != 4604 {
		t.Fatalf("reference split found %d packets, want 4604", want)
	}
	for _, c := range contenders {
		t.Run(c.name, func(t *testing.T) {
			res, err := c.parse(capture)
			if err != nil {
				t.Fatal(err)
			}
			if res.msgs+res.failed != want {
				t.Errorf("parsed %d + rejected %d messages, want %d in all", res.msgs, res.failed, want)
			}
			if res.failed > 0 {
				t.Logf("%s rejected %d of %d messages", c.name, res.failed, want)
			}
			jres, buf, err := c.parseJSON(capture, nil)
			if err != nil {
				t.Fatal(err)
			}
			if jres != (result{msgs: res.msgs, failed: res.failed, jsonBytes: jres.jsonBytes}) {
				t.Errorf("ParseJSON pass saw %+v, Parse pass %+v", jres, res)
			}
			if !json.Valid(buf) {
				t.Errorf("last message's JSON is not valid: %s", buf)
			}
		})
	}
}

// TestAmiprotoJSONValid checks that every message amiproto encodes is valid
// JSON, so BenchmarkParseJSON measures real output.
func TestAmiprotoJSONValid(t *testing.T) {
	r := amiproto.NewReader(bytes.NewReader(loadCapture(t)))
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for n := 1; ; n++ {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		buf = m.AppendJSON(buf[:0])
		if !json.Valid(buf) {
			t.Fatalf("message %d: invalid JSON %s", n, buf)
		}
	}
}

// framingSink keeps BenchmarkFraming's copies alive.
var framingSink string

// BenchmarkFraming measures only the framing and the one string copy per
// message that a goami2-style parser pays before it parses anything
// (goami2.Parse takes a string). It runs no library code: it is a floor
// under goami2's cost, for when goami2 itself cannot be fetched.
func BenchmarkFraming(b *testing.B) {
	capture := loadCapture(b)
	msgs, err := countPackets(capture)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(capture)))
	meter := startMeter()
	for b.Loop() {
		sc := newPacketScanner(capture)
		for sc.Scan() {
			framingSink = string(sc.Bytes())
		}
		if err := sc.Err(); err != nil {
			b.Fatal(err)
		}
	}
	meter.report(b, msgs)
}

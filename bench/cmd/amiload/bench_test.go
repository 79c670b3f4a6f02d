package main

import (
	"bufio"
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/subjects"
)

// loopReader serves b over and over, as an endless AMI stream.
type loopReader struct {
	b   []byte
	off int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

// errStop ends relayEvents after the benchmark's events.
type errStop struct{}

func (errStop) Error() string { return "stop" }

// BenchmarkRelayEvents is the relay's own work per event, without NATS:
// cut the AMI stream into messages, find the event name, look up its
// subject. One op is one event of capture 14a.
func BenchmarkRelayEvents(b *testing.B) {
	burst, err := loadBurst(filepath.Join(testRepo, capturePath))
	if err != nil {
		b.Fatal(err)
	}
	r := bufio.NewReaderSize(&loopReader{b: burst.buf}, 32<<10)
	b.SetBytes(int64(len(burst.buf) / burst.len()))
	b.ReportAllocs()
	n := 0
	b.ResetTimer()
	err = relayEvents(r, "pbx1", func(subject string, data []byte) error {
		if n++; n >= b.N {
			return errStop{}
		}
		return nil
	})
	if _, ok := err.(errStop); !ok && b.N > 0 {
		b.Fatal(err)
	}
}

// TestRelayEvents: the relay publishes every event of the capture, whole
// and on its name's subject, and nothing else (the login's response).
func TestRelayEvents(t *testing.T) {
	burst, err := loadBurst(filepath.Join(testRepo, capturePath))
	if err != nil {
		t.Fatal(err)
	}
	login := "Response: Success\r\nMessage: Authentication accepted\r\n\r\n"
	var got int
	err = relayEvents(bufio.NewReaderSize(bytes.NewReader(append([]byte(login), burst.buf...)), 4096), "pbx1",
		func(subject string, data []byte) error {
			want := burst.buf[burst.offs[got]:burst.offs[got+1]]
			if name := burst.msgs[got].EventName(); subject != subjects.Event("relay", "pbx1", name) || !bytes.Equal(data, want) {
				t.Fatalf("event %d: %s, %q; want %s", got, subject, data[:min(len(data), 60)], name)
			}
			got++
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if got != burst.len() {
		t.Errorf("%d events relayed, want the capture's %d", got, burst.len())
	}
}

// BenchmarkSubscriberObserve is the subscriber's work per bridged event:
// server, Ami-Seq and Ami-Time from the header block as the bridge
// writes it, the counts and the latency. The subscriber must stay far
// below the bridge's cost.
func BenchmarkSubscriberObserve(b *testing.B) {
	var t tally
	t.reset()
	stamp := time.Now().UTC().Format(time.RFC3339Nano)
	hdr := func(seq int) []byte {
		return fmt.Appendf(nil, "NATS/1.0\r\n%s: pbx1\r\n%s: %d\r\n%s: %s\r\n\r\n",
			subjects.HeaderServer, subjects.HeaderSeq, seq, subjects.HeaderTime, stamp)
	}
	hdrs := [][]byte{hdr(1), hdr(2)}
	m := &subMsg{subject: []byte("ami.pbx1.event.Newchannel")}
	b.ReportAllocs()
	for i := range b.N {
		m.hdr = hdrs[i%2]
		t.observe(m, time.Now())
		if len(t.lat) >= 1<<20 {
			t.lat = t.lat[:0]
		}
	}
}

// BenchmarkRawPublishInProcess is the in-process ceiling's publisher
// alone: the bridge's subjects, headers and JSON bodies published over an
// in-process connection to an embedded nats-server with no subscriber.
// One op is one event.
func BenchmarkRawPublishInProcess(b *testing.B) {
	burst, err := loadBurst(filepath.Join(testRepo, capturePath))
	if err != nil {
		b.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{DontListen: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	p := newRawPublisher(burst, "raw")
	b.ReportAllocs()
	b.ResetTimer()
	if _, err := p.publish(nc, b.N); err != nil {
		b.Fatal(err)
	}
}

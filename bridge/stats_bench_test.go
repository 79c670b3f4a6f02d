package bridge

import (
	"testing"
	"time"
)

// BenchmarkAcceptEvent measures the reader's side of the event hot path:
// filter, Ami-Seq, the stats hooks and the append to the ring (a clone),
// whose events are acknowledged every 4,096 as the publisher would. With BenchmarkPublishEvent it makes the whole
// per-event cost; BenchmarkStatsHooks is the metrics' share of it.
func BenchmarkAcceptEvent(b *testing.B) {
	events := burstEvents(b)
	ns := startNATS(b, natsOptions{})
	br, err := New(connect(b, ns), []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}, Options{EventBuffer: 4096})
	if err != nil {
		b.Fatal(err)
	}
	s := br.pbxes[0]
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.accept(events[i%len(events)])
		if s.seq%4096 == 0 { // what the publisher does once a batch
			s.ring.ack(s.seq)
		}
	}
	b.StopTimer()
	if d := s.dropped.Load(); d != 0 {
		b.Fatalf("%d events dropped", d)
	}
}

// meterSink makes the meter escape to the heap as it does on the real path.
var meterSink *actionMeter

// BenchmarkStatsHooks measures what the metrics add to each path: per
// event read (and per filtered event), per JetStream publish, per action,
// and per scrape of one PBX (off every hot path).
func BenchmarkStatsHooks(b *testing.B) {
	var st pbxStats
	at := time.Now()
	b.Run("path=event", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			st.eventRead(at)
		}
	})
	b.Run("path=filtered-event", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			st.eventRead(at)
			st.filtered.Add(1)
		}
	})
	b.Run("path=jetstream-publish", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			st.jsLatency.observe(time.Since(at))
		}
	})
	b.Run("path=action", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			m := st.meter()
			meterSink = m // escapes, as into the request's replier
			m.action = "Ping"
			m.replied(nil)
		}
	})
	b.Run("path=scrape", func(b *testing.B) {
		ns := startNATS(b, natsOptions{})
		br, err := New(connect(b, ns), []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_ = br.Stats()
		}
	})
}

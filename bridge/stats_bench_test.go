package bridge

import (
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/bridge/internal/callstate"
)

// BenchmarkAcceptEvent measures the reader's side of the event hot path:
// filter, Ami-Seq, the stats hooks and the append to the ring. "keep"
// appends a clone, the ring acknowledged every 4,096 events as the
// publisher would; "drop" meets a ring full of unacknowledged events, the
// flood's common case, which must cost far less than a publish
// (BenchmarkPublishEvent); "shed" is the same drop decided by shed
// before the event is parsed, to add to BenchmarkReader_Burst14aSkip's
// per-message cost in amiproto. "keep-state" adds the live state's
// Apply (StateOptions), the model flushed every 4,096 events as the
// writer would. BenchmarkStatsHooks is the metrics' share.
func BenchmarkAcceptEvent(b *testing.B) {
	events := burstEvents(b)
	ns := startNATS(b, natsOptions{})
	for _, path := range []string{"keep", "drop", "shed", "keep-ha", "keep-state"} {
		b.Run("path="+path, func(b *testing.B) {
			opts := Options{EventBuffer: 4096}
			if path == "keep-ha" { // the fingerprint and the chain added (a standby's reader, or the active's)
				opts.JetStream.Enabled, opts.HA.Enabled = true, true
				path = "keep"
			}
			if path == "keep-state" {
				opts.State.Enabled = true
				path = "keep"
			}
			br := unstarted(b, connect(b, ns), opts)
			s := br.pbxes[0]
			if opts.HA.Enabled && s.ha == nil {
				b.Fatal("no HA")
			}
			keep := path == "keep"
			if path != "keep" {
				// One more than fits: the ring refuses, and the one wait
				// for room (roomWait) is spent before the timing.
				for i := range 4097 {
					s.accept(events[i%len(events)])
				}
			}
			before := s.dropped.Load()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if path == "shed" {
					// An OriginateResponse is never shed: an Ami-Wait
					// request may wait for it (originatewait.go).
					if name := events[i%len(events)].EventName(); !s.shed(name) && name != originateResponse {
						b.Fatal("not shed from a full ring")
					}
					continue
				}
				s.accept(events[i%len(events)])
				if keep && s.seq%4096 == 0 { // what the publisher does once a batch
					s.ring.ack(s.seq)
					if s.st != nil { // and the state writer every flush_interval
						s.st.model.Flush(false, func(callstate.Change) {})
					}
				}
			}
			if d := s.dropped.Load() - before; keep != (d == 0) {
				b.Fatalf("%d events dropped on path %s", d, path)
			}
		})
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
			m := st.meter(time.Now())
			meterSink = m // escapes, as into the request's replier
			m.action = "Ping"
			m.replied(nil)
		}
	})
	b.Run("path=scrape", func(b *testing.B) {
		ns := startNATS(b, natsOptions{})
		br := unstarted(b, connect(b, ns), Options{})
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_ = br.Stats()
		}
	})
}

package callstate

import (
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// burstEvents is the event stream of capture 14a (Asterisk 22): 200
// originated Local pairs, 4,400 events.
func burstEvents(b *testing.B) []*amiproto.Message {
	var evs []*amiproto.Message
	for _, rm := range loadCapture(b, "22", "14a_burst_200_originates") {
		if rm.m.Kind() == amiproto.KindEvent {
			evs = append(evs, rm.m)
		}
	}
	return evs
}

// BenchmarkApply_Burst14a: the model's cost per event on a real burst,
// with a Flush every 50 events as the writer's ticker would do under load.
func BenchmarkApply_Burst14a(b *testing.B) { benchApply(b, 50) }

// BenchmarkApply_BurstNoFlush is Apply alone on the same stream.
func BenchmarkApply_BurstNoFlush(b *testing.B) { benchApply(b, 0) }

// benchApply applies the burst to a new model per op, with a Flush every
// flushEvery events and at the end; none when flushEvery is 0.
func benchApply(b *testing.B, flushEvery int) {
	evs := burstEvents(b)
	now := time.Unix(1795667265, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m := New("pbx1")
		m.SetClock(func() time.Time { return now })
		for i, e := range evs {
			m.Apply(e)
			if flushEvery > 0 && i%flushEvery == flushEvery-1 {
				m.Flush(false, func(Change) {})
			}
		}
		if flushEvery > 0 {
			m.Flush(false, func(Change) {})
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/event")
	if flushEvery > 0 {
		b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
	}
}

// BenchmarkApply_Unused: an event the model does not use costs a lookup.
func BenchmarkApply_Unused(b *testing.B) {
	m := New("pbx1")
	e := ev("RTCPSent", "Channel", "PJSIP/100-00000001", "Uniqueid", "1.1", "SSRC", "0x1234")
	b.ReportAllocs()
	for b.Loop() {
		m.Apply(e)
	}
}

// BenchmarkFlush: 100 live calls of two channels each, every key changed
// since the last Flush.
func BenchmarkFlush(b *testing.B) {
	m, _ := newModel()
	for i := range 100 {
		a := "a" + string(rune('0'+i/10)) + string(rune('0'+i%10))
		m.Apply(chanEv("Newchannel", a, a, "Ring"))
		m.Apply(chanEv("Newchannel", a+"b", a, "Ring"))
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		m.mu.Lock()
		for k := range m.channels {
			m.markDirty("channels", k)
		}
		for k := range m.calls {
			m.markDirty("calls", k)
		}
		m.mu.Unlock()
		m.Flush(false, func(Change) { n++ })
	}
	b.ReportMetric(float64(n)/float64(b.N), "keys/flush")
}

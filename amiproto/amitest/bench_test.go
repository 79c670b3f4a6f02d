package amitest_test

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// countingWriter counts the bytes a client received.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// BenchmarkStartCalls_MaxSpeed runs the generator flat out to one client
// that reads and discards, and reports the events per second the client
// received. b.N is the number of calls (22 events each).
func BenchmarkStartCalls_MaxSpeed(b *testing.B) {
	srv := start(b, amitest.Config{})
	c := dial(b, srv.Addr())
	c.login("admin", "s3cret!", "on")
	c.readEvent("SuccessfulAuth")
	if c.rd.Buffered() != 0 {
		b.Fatal("unexpected bytes after login")
	}
	var got countingWriter
	c.conn.SetReadDeadline(time.Time{})
	go io.Copy(&got, c.conn)

	b.ReportAllocs()
	b.ResetTimer()
	calls := srv.StartCalls(context.Background(), 0, b.N)
	if err := calls.Wait(); err != nil {
		b.Fatal(err)
	}
	_, events, sent := calls.Count()
	waitFor(b, func() bool { return got.n.Load() >= sent })
	b.StopTimer()
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(sent)/float64(events), "B/event")
}

// BenchmarkStartCalls_ParsedByReader is BenchmarkStartCalls_MaxSpeed with
// the client parsing every event with amiproto.Reader.
func BenchmarkStartCalls_ParsedByReader(b *testing.B) {
	srv := start(b, amitest.Config{})
	c := dial(b, srv.Addr())
	c.login("admin", "s3cret!", "on")
	c.readEvent("SuccessfulAuth")
	c.conn.SetReadDeadline(time.Time{})
	var parsed atomic.Int64
	go func() {
		var m amiproto.Message
		for c.rd.ReadMessageInto(&m) == nil {
			parsed.Add(1)
		}
	}()

	b.ReportAllocs()
	b.ResetTimer()
	calls := srv.StartCalls(context.Background(), 0, b.N)
	if err := calls.Wait(); err != nil {
		b.Fatal(err)
	}
	_, events, _ := calls.Count()
	waitFor(b, func() bool { return parsed.Load() >= events })
	b.StopTimer()
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkStartCalls_RenderOnly measures the generator with no session
// to copy to: the cost of rendering the events alone.
func BenchmarkStartCalls_RenderOnly(b *testing.B) {
	srv := start(b, amitest.Config{})
	b.ReportAllocs()
	b.ResetTimer()
	calls := srv.StartCalls(context.Background(), 0, b.N)
	if err := calls.Wait(); err != nil {
		b.Fatal(err)
	}
	_, events, _ := calls.Count()
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// waitFor polls cond: the client side offers no event to wait on.
func waitFor(b *testing.B, cond func() bool) {
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("timed out")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// BenchmarkPlayScenario plays dial calls with no wait to one reading
// client and reports the scenario events per second: the cost of the live
// model and the templates, for mixes that load a bridge.
func BenchmarkPlayScenario(b *testing.B) {
	srv := start(b, amitest.Config{})
	c := dial(b, srv.Addr())
	c.login("admin", "s3cret!", "on")
	c.readEvent("SuccessfulAuth")
	var got countingWriter
	c.conn.SetReadDeadline(time.Time{})
	go io.Copy(&got, c.conn)

	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	for range b.N {
		info, err := srv.PlayScenario(context.Background(), amitest.ScenarioDial, amitest.Timing{})
		if err != nil {
			b.Fatal(err)
		}
		events += info.Events
	}
	b.StopTimer()
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

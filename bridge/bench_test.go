package bridge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// burstEvents returns the events of capture 14a: 200 originated calls,
// 4,400 events, as a real Asterisk 22 sent them.
func burstEvents(b *testing.B) []*amiproto.Message {
	b.Helper()
	data, err := os.ReadFile("../amiproto/testdata/captures/asterisk-22/14a_burst_200_originates.recv.bin")
	if err != nil {
		b.Fatal(err)
	}
	r := amiproto.NewReader(bytes.NewReader(data))
	if _, err := r.ReadBanner(); err != nil {
		b.Fatal(err)
	}
	var events []*amiproto.Message
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if m.Kind() == amiproto.KindEvent {
			events = append(events, m)
		}
	}
	return events
}

// BenchmarkPublishEvent measures the publisher's hot path alone: subject,
// headers, JSON body and the NATS publish of one event, against an
// embedded nats-server. The allocations are nats.go's header encoding.
func BenchmarkPublishEvent(b *testing.B) {
	events := burstEvents(b)
	ns := startNATS(b, natsOptions{})
	nc := connect(b, ns)
	br := unstarted(b, nc, Options{})
	p := br.pbxes[0].pub
	at := time.Now().UnixNano()
	es := make([]ringEntry, len(events))
	for i, m := range events {
		es[i] = ringEntry{seq: uint64(i + 1), at: at, msg: *m.Clone()}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.publishCore(&es[i%len(es)])
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if d := br.pbxes[0].dropped.Load(); d != 0 {
		b.Fatalf("%d events dropped", d)
	}
}

// BenchmarkPublishBatch measures an event's whole way but the sockets:
// accept (numbering, the clone into the ring), the reader's notify once
// every 12 events, then the publisher's core NATS loop, one ring read of
// 256 events, their publish, one ack. It is
// about BenchmarkAcceptEvent/path=keep plus BenchmarkPublishEvent.
func BenchmarkPublishBatch(b *testing.B) {
	events := burstEvents(b)
	ns := startNATS(b, natsOptions{})
	nc := connect(b, ns)
	br := unstarted(b, nc, Options{EventBuffer: 8192})
	x := br.pbxes[0]
	var done uint64
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x.accept(events[i%len(events)])
		if x.seq%12 == 0 { // the end of a read of the socket at 12,000 events/s (EventDelivery.Drained)
			x.ring.notify()
		}
		if x.seq%pubBatch == 0 {
			done, _ = x.pub.publishBatch(done)
		}
	}
	for done < x.seq {
		done, _ = x.pub.publishBatch(done)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	if d := x.dropped.Load(); d != 0 {
		b.Fatalf("%d events dropped", d)
	}
}

// BenchmarkEventsAMIToNATS measures events per second from an AMI socket
// to a NATS subscriber, through the whole bridge (AMI client, filter,
// numbering, JSON, headers, publish), and in the same run the raw NATS
// publish rate of the same messages to the same subscriber: the ceiling.
// It reports both and their ratio, and fails on any loss.
//
// Two sources feed the socket. "capture" writes the 4,400 events of
// capture 14a, the bytes a real Asterisk 22 sent, ten times a burst: the
// PBX side then costs next to nothing, as it does when Asterisk runs on
// another host. "generator" is amitest's call generator at full speed (22
// events per call, 2,000 calls a burst), which renders every event on this
// machine's CPUs too. Bursts, not an endless stream: a source that outruns
// the bridge forever must end in counted drops, since the bridge never
// stops reading the socket, so each burst is timed from its first byte to
// its last event at the subscriber.
func BenchmarkEventsAMIToNATS(b *testing.B) {
	b.Run("source=capture", func(b *testing.B) {
		var blob []byte
		for _, ev := range burstEvents(b) {
			blob = append(blob, ev.String()...)
		}
		const copies = 10
		benchEventsAMIToNATS(b, copies*4400, func(pbx *amitest.Server) func() error {
			for range copies {
				pbx.EmitRaw(blob)
			}
			return func() error { return nil }
		})
	})
	b.Run("source=generator", func(b *testing.B) {
		const perCall, burstCalls = 22, 2000
		benchEventsAMIToNATS(b, perCall*burstCalls, func(pbx *amitest.Server) func() error {
			return pbx.StartCalls(context.Background(), 0, burstCalls).Wait
		})
	})
}

// benchEventsAMIToNATS runs bursts of burst events, each started by send,
// whose result is waited for at the end of the burst.
func benchEventsAMIToNATS(b *testing.B, burst int, send func(*amitest.Server) func() error) {
	bursts := max(1, b.N/burst)
	n := bursts * burst

	tw := newWorld(b, withServer(func(sc *ServerConfig) { sc.EventsExclude = []string{"FullyBooted", "SuccessfulAuth"} }))
	tw.up()
	cc, pbx, br := tw.cc, tw.pbx, tw.b

	// The subscriber keeps a sample of the messages to replay them raw.
	const sampleSize = 704
	var (
		got    atomic.Int64
		target atomic.Int64
		done   = make(chan struct{}, 1)
		sample []*nats.Msg
	)
	sub, err := cc.Subscribe(subjects.AllEvents("ami"), func(m *nats.Msg) {
		if len(sample) < sampleSize {
			sample = append(sample, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
		}
		if got.Add(1) == target.Load() {
			done <- struct{}{}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	if err := cc.Flush(); err != nil {
		b.Fatal(err)
	}
	wait := func(what string) {
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatalf("%s: received %d of %d events; status %+v", what, got.Load(), target.Load(), br.Status()[0])
		}
	}

	b.ResetTimer()
	var bridged time.Duration
	cpu0 := cpuTime(b)
	for i := range bursts {
		target.Store(int64((i + 1) * burst))
		start := time.Now()
		finished := send(pbx)
		wait("bridged")
		bridged += time.Since(start)
		if err := finished(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	bridgedCPU := cpuTime(b) - cpu0
	if st := br.Status()[0]; st.EventsDropped != 0 || st.LastSeq != uint64(n) || st.EventsPublished != uint64(n) {
		b.Fatalf("loss: %+v", st)
	}

	// The ceiling: the same messages, published raw from one goroutine,
	// in bursts of the same size.
	rawConn := connect(b, tw.ns)
	raw := slices.Clone(sample)
	got.Store(0)
	var ceiling time.Duration
	cpu0 = cpuTime(b)
	for i := range bursts {
		target.Store(int64((i + 1) * burst))
		start := time.Now()
		for j := range burst {
			if err := rawConn.PublishMsg(raw[j%len(raw)]); err != nil {
				b.Fatal(err)
			}
		}
		wait("raw")
		ceiling += time.Since(start)
	}
	rawCPU := cpuTime(b) - cpu0

	bridgedRate := float64(n) / bridged.Seconds()
	rawRate := float64(n) / ceiling.Seconds()
	b.ReportMetric(bridgedRate, "events/s")
	b.ReportMetric(rawRate, "raw-events/s")
	b.ReportMetric(100*bridgedRate/rawRate, "%-of-raw")
	b.ReportMetric(float64(bridged.Nanoseconds())/float64(n), "ns/event")
	// CPU time per event, of the whole process (PBX, bridge, nats-server
	// and subscriber): steadier than the rates on a shared machine.
	b.ReportMetric(float64(bridgedCPU.Nanoseconds())/float64(n), "cpu-ns/event")
	b.ReportMetric(float64(rawCPU.Nanoseconds())/float64(n), "raw-cpu-ns/event")
	b.ReportMetric(0, "ns/op")
}

// cpuTime returns the user and system CPU time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkActionRoundTrip measures a Ping from a NATS requester through
// the bridge to an AMI PBX and back, with 1 and 16 requesters at once,
// and reports the latency percentiles; on the generic subject, and on
// the per-action one (named-).
func BenchmarkActionRoundTrip(b *testing.B) {
	for _, tc := range []struct {
		name          string
		conc          int
		subject, body string
		stamped       bool // a ServiceConn, so that the stamper stamps arrivals, as in the daemon
	}{
		{"requesters=1", 1, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, false},
		{"requesters=16", 16, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, false},
		{"named-requesters=1", 1, subjects.NamedAction("ami", "pbx1", "Ping"), ``, false},
		{"named-requesters=16", 16, subjects.NamedAction("ami", "pbx1", "Ping"), ``, false},
		{"stamped-requesters=1", 1, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, true},
		{"stamped-requesters=16", 16, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, true},
	} {
		conc := tc.conc
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var opts []worldOption
			if tc.stamped {
				opts = append(opts, withServiceConn())
			}
			tw := newWorld(b, opts...)
			tw.w.waitState(subjects.StateConnected)
			cc := tw.cc

			subject := tc.subject
			body := []byte(tc.body)
			lat := make([][]time.Duration, conc)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for r := range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						m, err := cc.Request(subject, body, waitTime)
						if err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
							b.Errorf("request: %v", err)
							return
						}
						lat[r] = append(lat[r], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			pct := func(p float64) float64 {
				return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
			}
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkPublishFanIn measures an event's way from accept to NATS when
// many PBXes each send one event per read of the socket (a real PBX's
// pace): 100 PBXes in turn get one event and the reader's notify, with
// their publishers running; each op is one event, and cpu-ns/event is
// the process's CPU time (all goroutines, the embedded nats-server's
// too) over the events. publisher=goroutines is one publisher goroutine
// per PBX (publisher.loop, as with JetStream), publisher=pool the core
// NATS pool (pubPool). pace=flood gives the events as fast as accept
// takes them; pace=150k paces them at 150 events a millisecond, 500 PBXes
// at 300 events/s, where each publisher has one event at a time.
func BenchmarkPublishFanIn(b *testing.B) {
	const pbxes = 100
	events := burstEvents(b)
	for _, perMS := range []int{0, 150} {
		for _, pooled := range []bool{false, true} {
			name := "pace=flood"
			if perMS > 0 {
				name = "pace=" + strconv.Itoa(perMS) + "k"
			}
			name += "/publisher=goroutines"
			if pooled {
				name = strings.Replace(name, "goroutines", "pool", 1)
			}
			b.Run(name, func(b *testing.B) { benchPublishFanIn(b, events, pbxes, perMS, pooled) })
		}
	}
}

func benchPublishFanIn(b *testing.B, events []*amiproto.Message, pbxes, perMS int, pooled bool) {
	ns := startNATS(b, natsOptions{})
	br := unstartedMany(b, connect(b, ns), pbxes, Options{})
	var pool *pubPool
	var wg sync.WaitGroup
	if pooled {
		pool = newPubPool()
		pool.start()
	}
	for _, p := range br.pbxes {
		if pooled {
			p.pub.startPooled(pool)
			continue
		}
		wg.Add(1)
		go func() { // ends when the benchmark closes the ring
			defer wg.Done()
			p.pub.loop()
		}()
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ReportAllocs()
	cpu0, start, n := cpu(), time.Now(), 0
	for i := 0; b.Loop(); i++ {
		if perMS > 0 && i%perMS == 0 {
			time.Sleep(time.Until(start.Add(time.Duration(i/perMS) * time.Millisecond)))
		}
		p := br.pbxes[i%pbxes]
		p.accept(events[i%len(events)])
		p.ring.notify()
		n++
	}
	for _, p := range br.pbxes {
		p.ring.close()
	}
	if pooled {
		for _, p := range br.pbxes {
			waitDrained(b, p)
		}
		pool.stop()
	}
	wg.Wait()
	b.ReportMetric(float64(cpu()-cpu0)/float64(n), "cpu-ns/event")
	for _, p := range br.pbxes {
		if d := p.dropped.Load(); d != 0 {
			b.Fatalf("%s: %d events dropped", p.name, d)
		}
	}
}

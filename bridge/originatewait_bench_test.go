package bridge

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// BenchmarkOriginateRate: how many Originates per second one PBX's two
// action sessions take when every call takes 1.5 s to be answered, with
// a synchronous Originate (the session is held until the call is
// answered) against Ami-Wait (async; the session is held only until the
// call is queued). Requesters send Originates for a 5 s window; only the
// replies that came within it, with the outcome, count. Run with
//
//	go test -run '^$' -bench BenchmarkOriginateRate ./bridge/
func BenchmarkOriginateRate(b *testing.B) {
	const answer = 1500 * time.Millisecond
	for _, bc := range []struct {
		name       string
		requesters int
		wait       bool
	}{
		{"sync", 8, false},
		{"wait", 256, true},
		{"wait-1024", 1024, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ns := startNATS(b, natsOptions{})
			cc := connect(b, ns)
			pbx := startPBX(b, amitest.Config{AnswerDelay: answer})
			sc := fastServer("pbx1", pbx)
			sc.ActionSessions = 2
			sc.MaxPendingRequests = 2048
			br, _ := startBridge(b, connect(b, ns), []ServerConfig{sc}, Options{})
			waitStatus(b, br, allUp)
			body := []byte(`{"Channel":"Local/echo@test","Application":"Echo","Async":"false"}`)
			var hdr nats.Header
			if bc.wait {
				body = []byte(`{"Channel":"Local/echo@test","Application":"Echo"}`)
				hdr = waitHeader()
			}
			b.ReportAllocs()
			b.ResetTimer()
			var ok, failed atomic.Int64
			var took time.Duration
			for range b.N {
				start := time.Now()
				end := start.Add(5 * time.Second)
				var wg sync.WaitGroup
				for range bc.requesters {
					wg.Go(func() {
						for time.Now().Before(end) {
							m, err := cc.RequestMsg(&nats.Msg{Subject: subjects.NamedAction("ami", "pbx1", "Originate"), Header: hdr, Data: body}, 20*time.Second)
							switch {
							case time.Now().After(end):
							case err == nil && m.Header.Get(subjects.HeaderErrorCode) == "":
								ok.Add(1)
							default:
								failed.Add(1)
							}
						}
					})
				}
				wg.Wait()
				took += end.Sub(start)
			}
			b.StopTimer()
			b.ReportMetric(float64(ok.Load())/took.Seconds(), "originates/s")
			b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/op")
		})
	}
}

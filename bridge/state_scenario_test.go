package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// recordLog collects the call records published, by Linkedid.
type recordLog struct {
	mu   sync.Mutex
	recs map[string][]subjects.CallRecord
}

func collectRecords(t testing.TB, nc *nats.Conn) *recordLog {
	t.Helper()
	l := &recordLog{recs: map[string][]subjects.CallRecord{}}
	sub, err := nc.Subscribe("ami.pbx1.call.>", func(m *nats.Msg) {
		var r subjects.CallRecord
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("record %s: %v", m.Data, err)
			return
		}
		l.mu.Lock()
		l.recs[r.Linkedid] = append(l.recs[r.Linkedid], r)
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *recordLog) of(linkedid string) []subjects.CallRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.recs[linkedid])
}

// waitRecord waits for the record of linkedid and wants it alone, with
// end_seen as given.
func (l *recordLog) waitRecord(t testing.TB, linkedid string, endSeen bool) subjects.CallRecord {
	t.Helper()
	recs := waitFor(t, func() []subjects.CallRecord { return l.of(linkedid) }, func(r []subjects.CallRecord) bool { return len(r) > 0 })
	if len(recs) != 1 || recs[0].EndSeen != endSeen {
		t.Errorf("call %s: records %+v, want one with end_seen %v", linkedid, recs, endSeen)
	}
	return recs[0]
}

// liveIDs is what the PBX has live, by kind, as the bucket must hold it.
func liveIDs(pbx *amitest.Server) map[string][]string {
	s := pbx.Live()
	out := map[string][]string{}
	for _, c := range s.Channels {
		out[subjects.KindChannels] = append(out[subjects.KindChannels], c.Uniqueid)
	}
	for _, b := range s.Bridges {
		out[subjects.KindBridges] = append(out[subjects.KindBridges], b.Uniqueid)
	}
	for _, q := range s.Queues {
		out[subjects.KindQueues] = append(out[subjects.KindQueues], q.Name)
	}
	for d := range s.Devices {
		out[subjects.KindDevices] = append(out[subjects.KindDevices], d)
	}
	for k, ids := range out {
		slices.Sort(ids)
		out[k] = slices.Compact(ids)
	}
	return out
}

// bucketEqualsLive waits, at most within, until the bucket's channels,
// bridges, queues and devices are the PBX's live ones.
func bucketEqualsLive(t testing.TB, kv jetstream.KeyValue, pbx *amitest.Server, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		want := liveIDs(pbx)
		var diff []string
		for _, kind := range []string{subjects.KindChannels, subjects.KindBridges, subjects.KindQueues, subjects.KindDevices} {
			got := stateIDs(t, kv, kind)
			if kind == subjects.KindDevices {
				// Asterisk never caches a Local channel's device state:
				// DeviceStateList leaves out the Local/… devices whose
				// DeviceStateChange events the bucket holds.
				got = slices.DeleteFunc(got, func(d string) bool { return strings.HasPrefix(d, "Local/") })
			}
			if !slices.Equal(got, want[kind]) {
				diff = append(diff, fmt.Sprintf("%s: bucket %v, PBX %v", kind, got, want[kind]))
			}
		}
		if diff == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket is not the PBX's live state %v after the login:\n%s", within, strings.Join(diff, "\n"))
		}
		time.Sleep(10 * time.Millisecond) // the bucket, written by another goroutine
	}
}

// agreesWithCdrs checks a call's record against the Cdr events the fake
// PBX sent for it, by a rule of its own: the disposition is the best
// (ANSWERED, BUSY, NO ANSWER, FAILED) of the Cdrs with a
// DestinationChannel (the dials), of all of them when there is none; the
// billable seconds are, within 1 s, the longest Cdr's. A call with no Cdr
// (an unanswered lone channel, which cdr.conf's defaults drop) must not
// be answered.
func agreesWithCdrs(t testing.TB, rec subjects.CallRecord, in amitest.ScenarioInfo) {
	t.Helper()
	rank := map[string]int{"FAILED": 1, "CONGESTION": 2, "NO ANSWER": 3, "BUSY": 4, "ANSWERED": 5}
	name := map[int]string{1: subjects.DispositionFailed, 2: subjects.DispositionCongestion, 3: subjects.DispositionNoAnswer,
		4: subjects.DispositionBusy, 5: subjects.DispositionAnswered}
	var best, bestDial, billable int
	for _, c := range in.Cdrs {
		r := rank[c.Get("Disposition")]
		best = max(best, r)
		if c.Get("DestinationChannel") != "" {
			bestDial = max(bestDial, r)
		}
		var bs int
		fmt.Sscan(c.Get("BillableSeconds"), &bs)
		billable = max(billable, bs)
	}
	if bestDial > 0 {
		best = bestDial
	}
	switch {
	case best == 0 && rec.Disposition == subjects.DispositionAnswered:
		t.Errorf("call %s (%s): no Cdr, record answered", in.Linkedid, in.Kind)
	case best > 0 && rec.Disposition != name[best]:
		t.Errorf("call %s (%s): record %s, its %d Cdr events say %s", in.Linkedid, in.Kind, rec.Disposition, len(in.Cdrs), name[best])
	}
	if d := rec.BillableS - billable; d < -1 || d > 1 {
		t.Errorf("call %s (%s): record billable %d s, its Cdr events %d s", in.Linkedid, in.Kind, rec.BillableS, billable)
	}
}

// TestState_ScenarioMix: on the 13 and 22 profiles, the bucket equals
// what the PBX has live after a mix of scenario calls, after a reconnect
// of the PBX and after a restart of the bridge, each within 1 s of the
// login; every call gives one record, which agrees with the Cdr events
// of its call, with end_seen false only for the call that ended while no
// bridge ran.
func TestState_ScenarioMix(t *testing.T) {
	for _, profile := range []amitest.Profile{amitest.Asterisk13, amitest.Asterisk22} {
		t.Run(profile.String(), func(t *testing.T) { scenarioMix(t, profile) })
	}
}

func scenarioMix(t *testing.T, profile amitest.Profile) {
	ns := startNATS(t, natsOptions{jetStream: true})
	pbx := startPBX(t, amitest.Config{Profile: profile})
	cc := connect(t, ns)
	records := collectRecords(t, cc)
	start := func() *Bridge {
		b, _ := startBridge(t, connect(t, ns), []ServerConfig{fastServer("pbx1", pbx)}, stateOptions(true))
		return b
	}
	stop := func(b *Bridge) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b := start()
	waitSynced(t, b, 1)
	_, kv := stateKV(t, cc)
	bucketEqualsLive(t, kv, pbx, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// 1. A mix with the bridge up: one record per call, its end seen.
	infos, err := pbx.StartMix(ctx, amitest.MixSpec{Seed: 19, Rate: 40, Count: 24, MaxRing: 150 * time.Millisecond, MaxTalk: 250 * time.Millisecond}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		agreesWithCdrs(t, records.waitRecord(t, in.Linkedid, true), in)
	}
	bucketEqualsLive(t, kv, pbx, time.Second)

	// 2. Calls in progress across a reconnect of the PBX and a restart
	// of the bridge: the bucket follows, and each call gives one record.
	var wg sync.WaitGroup
	long := make([]amitest.ScenarioInfo, 3)
	for i, kind := range []amitest.ScenarioKind{amitest.ScenarioDial, amitest.ScenarioQueue, amitest.ScenarioBlindTransfer} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in, err := pbx.PlayScenario(ctx, kind, amitest.Timing{Ring: 100 * time.Millisecond, Talk: 1500 * time.Millisecond})
			if err != nil {
				t.Error(err)
			}
			long[i] = in
		}()
	}
	waitFor(t, func() int { return len(pbx.Live().Bridges) }, func(n int) bool { return n >= 2 })
	pbx.DropConnections()
	waitSynced(t, b, 2)
	bucketEqualsLive(t, kv, pbx, time.Second)
	stop(b)
	b = start()
	waitSynced(t, b, 1)
	bucketEqualsLive(t, kv, pbx, time.Second)
	wg.Wait()
	for _, in := range long {
		agreesWithCdrs(t, records.waitRecord(t, in.Linkedid, true), in)
	}
	bucketEqualsLive(t, kv, pbx, time.Second)

	// 3. A call that ends while no bridge runs: the next one closes it
	// from the bucket, end_seen false.
	done := make(chan amitest.ScenarioInfo, 1)
	go func() {
		in, err := pbx.PlayScenario(ctx, amitest.ScenarioDial, amitest.Timing{Talk: time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- in
	}()
	waitFor(t, func() []string { return stateIDs(t, kv, subjects.KindCalls) }, func(ids []string) bool { return len(ids) == 1 })
	stop(b)
	away := <-done
	b = start()
	waitSynced(t, b, 1)
	records.waitRecord(t, away.Linkedid, false)
	bucketEqualsLive(t, kv, pbx, time.Second)
	waitIDs(t, kv, subjects.KindCalls, nil)

	// No call gave a second record meanwhile.
	for _, in := range slices.Concat(infos, long, []amitest.ScenarioInfo{away}) {
		if n := len(records.of(in.Linkedid)); n != 1 {
			t.Errorf("call %s (%s): %d records", in.Linkedid, in.Kind, n)
		}
	}
}

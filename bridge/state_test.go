package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/internal/natstest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// stateOptions turns the live state on, with records and a short flush
// interval, JetStream events or not.
func stateOptions(js bool) Options {
	return Options{
		JetStream: JetStreamOptions{Enabled: js},
		State:     StateOptions{Enabled: true, Records: true, FlushInterval: 10 * time.Millisecond},
	}
}

// stateKV waits for the state bucket and returns it.
func stateKV(t testing.TB, cc *nats.Conn) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	js, err := jetstream.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	kv := waitFor(t, func() jetstream.KeyValue {
		kv, _ := js.KeyValue(context.Background(), DefaultStateBucket)
		return kv
	}, func(kv jetstream.KeyValue) bool { return kv != nil })
	return js, kv
}

// stateIDs returns the ids of the bucket's keys of kind for pbx1, sorted.
func stateIDs(t testing.TB, kv jetstream.KeyValue, kind string) []string {
	t.Helper()
	l, err := kv.ListKeysFiltered(context.Background(), "pbx1."+kind+".>")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for k := range l.Keys() {
		_, _, id, err := subjects.ParseStateKey(k)
		if err != nil {
			t.Fatalf("key %q: %v", k, err)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// waitIDs waits until the bucket's keys of kind are want.
func waitIDs(t testing.TB, kv jetstream.KeyValue, kind string, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	waitFor(t, func() []string { return stateIDs(t, kv, kind) }, func(got []string) bool { return slices.Equal(got, want) })
}

// waitHas waits until the bucket has, or has not, the key of id.
func waitHas(t testing.TB, kv jetstream.KeyValue, kind, id string, has bool) {
	t.Helper()
	waitFor(t, func() bool { return slices.Contains(stateIDs(t, kv, kind), id) }, func(got bool) bool { return got == has })
}

// listedUniqueids is what the PBX lists in CoreShowChannels, asked on a
// session of the test's own: the truth the bucket must match.
func listedUniqueids(t testing.TB, pbx *amitest.Server) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	c, err := amiproto.DialEndpoint(ctx, pbx.Endpoint("admin", testSecret))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.CoreShowChannels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range resp.Events {
		ids = append(ids, e.Get("Uniqueid"))
	}
	return ids
}

func stateStats(b *Bridge) *StateStats { return b.Stats()[0].LiveState }

func waitSynced(t testing.TB, b *Bridge, n uint64) {
	t.Helper()
	waitFor(t, func() uint64 { return stateStats(b).Reconciliations }, func(got uint64) bool { return got >= n })
}

// emitCall sends the events of a two-channel call whose Linkedid is
// id, and returns id. (amitest's generated calls are not used with
// Config.Channels: within the second the PBX started, their Uniqueids
// are those of the long channels.)
func emitCall(pbx *amitest.Server, id string) string {
	pbx.Emit(newChannel(id, id, "PJSIP/100-"+id))
	pbx.Emit(newChannel(id+"1", id, "PJSIP/200-"+id))
	pbx.Emit(hangup(id+"1", id, "PJSIP/200-"+id))
	pbx.Emit(hangup(id, id, "PJSIP/100-"+id))
	return id
}

func newChannel(uid, linkedid, channel string) *amiproto.Message {
	return newEvent("Newchannel", "Privilege", "call,all", "Channel", channel, "ChannelState", "0", "CallerIDNum", "100",
		"Uniqueid", uid, "Linkedid", linkedid)
}

func hangup(uid, linkedid, channel string) *amiproto.Message {
	return newEvent("Hangup", "Privilege", "call,all", "Channel", channel, "Uniqueid", uid, "Linkedid", linkedid, "Cause", "16", "Cause-txt", "Normal Clearing")
}

// TestState_ChannelsLiveInTheBucketAndOneRecordPerCall: the long
// channels the PBX had before the bridge came are in the bucket after its
// first login; a channel is there while it is up and gone after its
// Hangup; each call gives one record, on core NATS and in the stream.
func TestState_ChannelsLiveInTheBucketAndOneRecordPerCall(t *testing.T) {
	for _, js := range []bool{false, true} {
		name := "core NATS"
		if js {
			name = "JetStream"
		}
		t.Run(name, func(t *testing.T) {
			tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withPBX(amitest.Config{Channels: 4}), withOptions(stateOptions(js)))
			records, err := tw.cc.SubscribeSync("ami.pbx1.call.>")
			if err != nil {
				t.Fatal(err)
			}
			_, kv := stateKV(t, tw.cc)
			waitSynced(t, tw.b, 1)
			long := listedUniqueids(t, tw.pbx)
			waitIDs(t, kv, subjects.KindChannels, long)
			if got := stateStats(tw.b).Added[subjects.KindChannels]; got != uint64(len(long)) {
				t.Errorf("reconciliation added %d channels, the PBX lists %d", got, len(long))
			}

			tw.pbx.Emit(newChannel("9000.1", "9000.1", "PJSIP/100-0001"))
			tw.pbx.Emit(newChannel("9000.2", "9000.1", "PJSIP/200-0002"))
			waitIDs(t, kv, subjects.KindChannels, append([]string{"9000.1", "9000.2"}, long...))
			waitHas(t, kv, subjects.KindCalls, "9000.1", true)
			tw.pbx.Emit(hangup("9000.2", "9000.1", "PJSIP/200-0002"))
			tw.pbx.Emit(hangup("9000.1", "9000.1", "PJSIP/100-0001"))
			waitIDs(t, kv, subjects.KindChannels, long)

			// More calls: one record each, by Linkedid.
			want := map[string]bool{"9000.1": true}
			for _, id := range []string{"8000.1", "8000.2", "8000.3"} {
				want[emitCall(tw.pbx, id)] = true
			}
			got := map[string]int{}
			for len(got) < len(want) {
				m, err := records.NextMsg(waitTime)
				if err != nil {
					t.Fatalf("records: got %v, want %v: %v", got, want, err)
				}
				var r subjects.CallRecord
				if err := json.Unmarshal(m.Data, &r); err != nil {
					t.Fatal(err)
				}
				if !want[r.Linkedid] || !r.EndSeen || m.Subject != subjects.CallRecordSubject("ami", "pbx1", r.Linkedid) {
					t.Fatalf("record %s on %s: want one of %v, end seen", m.Data, m.Subject, want)
				}
				if id := m.Header.Get(jetstream.MsgIDHeader); id != "pbx1.call."+r.Linkedid {
					t.Errorf("Nats-Msg-Id %q", id)
				}
				got[r.Linkedid]++
			}
			if m, err := records.NextMsg(100 * time.Millisecond); err == nil {
				t.Fatalf("a record more: %s", m.Data)
			}
			for id := range want {
				waitHas(t, kv, subjects.KindCalls, id, false)
			}
			if js {
				jsc, _ := jetstream.New(tw.cc)
				info, err := jsc.Stream(context.Background(), DefaultStream)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Contains(info.CachedInfo().Config.Subjects, "ami.*.call.>") {
					t.Errorf("stream subjects %v lack the call records'", info.CachedInfo().Config.Subjects)
				}
				for id := range want {
					msg, err := info.GetLastMsgForSubject(context.Background(), subjects.CallRecordSubject("ami", "pbx1", id))
					if err != nil || !strings.Contains(string(msg.Data), id) {
						t.Errorf("no record of %s in the stream: %v", id, err)
					}
				}
			}
			waitFor(t, func() uint64 { return stateStats(tw.b).Records }, func(n uint64) bool { return n == uint64(len(want)) })
		})
	}
}

// TestState_OffCostsNoBucket: without StateOptions nothing is kept: no
// model, no bucket, no record.
func TestState_OffCostsNoBucket(t *testing.T) {
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withPBX(amitest.Config{Channels: 4}))
	records, err := tw.cc.SubscribeSync("ami.pbx1.call.>")
	if err != nil {
		t.Fatal(err)
	}
	tw.w.waitAllUp()
	waitSessions(t, tw.pbx, perPBX)
	events, err := tw.cc.SubscribeSync("ami.pbx1.event.Hangup")
	if err != nil {
		t.Fatal(err)
	}
	tw.pbx.PlayCall(amitest.CallSpec{})
	if _, err := events.NextMsg(waitTime); err != nil { // the call went through the bridge
		t.Fatal(err)
	}
	if tw.b.pbxes[0].st != nil || tw.b.Stats()[0].LiveState != nil {
		t.Fatal("state kept while off")
	}
	js, _ := jetstream.New(tw.cc)
	if _, err := js.KeyValue(context.Background(), DefaultStateBucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("bucket lookup: %v, want not found", err)
	}
	if m, err := records.NextMsg(50 * time.Millisecond); err == nil {
		t.Errorf("a record while off: %s", m.Data)
	}
}

// TestState_CoalescesABurst: one key changed hundreds of times within
// one flush interval is written a few times, not hundreds. The writes
// are counted from the bucket's stream, whose sequence counts every put
// and delete.
func TestState_CoalescesABurst(t *testing.T) {
	o := stateOptions(false)
	o.State.FlushInterval = 200 * time.Millisecond
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withOptions(o))
	js, kv := stateKV(t, tw.cc)
	waitSynced(t, tw.b, 1)
	tw.pbx.Emit(newChannel("7000.1", "7000.1", "PJSIP/100-0001"))
	waitIDs(t, kv, subjects.KindChannels, []string{"7000.1"})
	before := kvWrites(t, js)
	const changes = 300
	for range changes {
		tw.pbx.Emit(newChannel("7000.2", "7000.1", "PJSIP/200-0002"))
		tw.pbx.Emit(hangup("7000.2", "7000.1", "PJSIP/200-0002"))
	}
	tw.pbx.Emit(newChannel("7000.3", "7000.1", "PJSIP/300-0003")) // the end of the burst
	waitIDs(t, kv, subjects.KindChannels, []string{"7000.1", "7000.3"})
	// One flush more, after the one that wrote 7000.3 has finished.
	tw.pbx.Emit(newChannel("7000.4", "7000.1", "PJSIP/400-0004"))
	waitIDs(t, kv, subjects.KindChannels, []string{"7000.1", "7000.3", "7000.4"})
	// Each flush writes channels.7000.2, channels.7000.3 (or .4) and
	// calls.7000.1 at most: a burst that spans a few flushes stays far
	// below the 3*changes writes of no coalescing.
	if n := kvWrites(t, js) - before; n > 15 {
		t.Errorf("%d KV writes for %d changes of channels.7000.2 and calls.7000.1", n, 3*changes)
	}
}

// kvWrites is the number of puts and deletes the state bucket took.
func kvWrites(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), "KV_"+DefaultStateBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// TestState_ReconcilesAfterAReconnect: a long channel hung up while the
// bridge was away (its Hangup event never reached it) leaves the bucket
// at the next login, and its call gets its record, flagged as closed
// without its end seen.
func TestState_ReconcilesAfterAReconnect(t *testing.T) {
	pbx := startPBX(t, amitest.Config{Channels: 4})
	px := startProxy(t, pbx.Addr())
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withOptions(stateOptions(false)), withServer(func(sc *ServerConfig) {
		sc.URL = "tcp://admin:" + testSecret + "@" + px.addr()
	}))
	records, err := tw.cc.SubscribeSync("ami.pbx1.call.>")
	if err != nil {
		t.Fatal(err)
	}
	_, kv := stateKV(t, tw.cc)
	waitSynced(t, tw.b, 1)
	waitIDs(t, kv, subjects.KindChannels, listedUniqueids(t, pbx))

	px.cut() // the bridge is away until resume
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	c, err := amiproto.DialEndpoint(ctx, pbx.Endpoint("admin", testSecret))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Both channels of the first pair: their call ends.
	for _, ch := range []string{"Local/long@test-00000000;1", "Local/long@test-00000000;2"} {
		if _, err := c.Request(ctx, amiproto.NewAction("Hangup", "Channel", ch)); err != nil {
			t.Fatal(err)
		}
	}
	truth := listedUniqueids(t, pbx)
	if len(truth) != 2 {
		t.Fatalf("the PBX lists %v after two hangups of four", truth)
	}
	px.resume()
	waitSynced(t, tw.b, 2)
	waitIDs(t, kv, subjects.KindChannels, truth)
	m, err := records.NextMsg(waitTime)
	if err != nil {
		t.Fatal(err)
	}
	var r subjects.CallRecord
	if err := json.Unmarshal(m.Data, &r); err != nil || r.EndSeen {
		t.Fatalf("record %s (%v): want end_seen false", m.Data, err)
	}
	st := stateStats(tw.b)
	if st.Removed[subjects.KindChannels] != 2 || st.ClosedUnseen != 1 {
		t.Errorf("stats: removed %v, closed unseen %d; want 2 channels, 1 call", st.Removed, st.ClosedUnseen)
	}
}

// proxy is a TCP relay between the bridge and a PBX that the test cuts:
// while cut, it drops its connections and every new one.
type proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	wg    sync.WaitGroup // the relays' copies
	mu    sync.Mutex
	open  bool
	conns []net.Conn
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &proxy{t: t, ln: ln, target: target, open: true}
	done := make(chan struct{})
	go func() { // the accept loop, the test's: ends when cleanup closes ln
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			px.relay(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		px.cut()
		px.wg.Wait()
	})
	return px
}

func (px *proxy) addr() string { return px.ln.Addr().String() }

func (px *proxy) relay(c net.Conn) {
	px.mu.Lock()
	defer px.mu.Unlock()
	if !px.open {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", px.target)
	if err != nil {
		c.Close()
		return
	}
	px.conns = append(px.conns, c, up)
	// The copies end when either side closes; cut closes both.
	px.wg.Add(2)
	go func() { defer px.wg.Done(); io.Copy(up, c); up.Close() }()
	go func() { defer px.wg.Done(); io.Copy(c, up); c.Close() }()
}

func (px *proxy) cut() {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.open = false
	for _, c := range px.conns {
		c.Close()
	}
	px.conns = nil
}

func (px *proxy) resume() {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.open = true
}

// TestState_HAOnlyTheActiveWrites: of two bridges with HA, only the
// active writes the bucket and publishes records; the standby keeps its
// model and, once it takes over, writes the same state and does not
// publish again the records of calls the active had published.
func TestState_HAOnlyTheActiveWrites(t *testing.T) {
	ns := startNATS(t, natsOptions{jetStream: true})
	pbx := startPBX(t, amitest.Config{Profile: amitest.Asterisk22, Channels: 4, WriteTimeout: time.Second})
	cc := connect(t, ns)
	records, err := cc.SubscribeSync("ami.pbx1.call.>")
	if err != nil {
		t.Fatal(err)
	}
	start := func(holder string) *Bridge {
		o := haBridgeOptions(holder, 0)
		o.State = stateOptions(true).State
		b, _ := startBridge(t, reconnecting(t, ns.ClientURL()), []ServerConfig{fastServer("pbx1", pbx)}, o)
		return b
	}
	a := start("a")
	waitStatus(t, a, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive && allUp(st) })
	b := start("b")
	waitStatus(t, b, func(st subjects.PBXStatus) bool {
		return st.HA.Role == subjects.RoleStandby && st.HA.Holder == "a" && allUp(st)
	})
	waitSynced(t, b, 1)
	_, kv := stateKV(t, cc)
	waitIDs(t, kv, subjects.KindChannels, listedUniqueids(t, pbx))

	nextRecord := func(want string) {
		t.Helper()
		m, err := records.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("record of %s: %v", want, err)
		}
		var r subjects.CallRecord
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Linkedid != want {
			t.Fatalf("record %s (%v), want the call %s", m.Data, err, want)
		}
	}
	call1 := emitCall(pbx, "8000.1")
	nextRecord(call1)
	waitHas(t, kv, subjects.KindCalls, call1, false)
	if st := stateStats(b); st.Writes != 0 || st.Records != 0 {
		t.Fatalf("the standby wrote %d keys and published %d records", st.Writes, st.Records)
	}
	waitFor(t, func() *StateStats { return stateStats(a) }, func(st *StateStats) bool { return st.Writes > 0 && st.Records == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, b, func(st subjects.PBXStatus) bool { return st.HA.Role == subjects.RoleActive })
	waitFor(t, func() uint64 { return stateStats(b).Writes }, func(n uint64) bool { return n > 0 })
	waitIDs(t, kv, subjects.KindChannels, listedUniqueids(t, pbx))
	call2 := emitCall(pbx, "8000.2")
	nextRecord(call2) // and not call1 again, which b held as standby
	if m, err := records.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("a record more: %s", m.Data)
	}
}

// TestState_NATSOutage: while NATS is down the state goes on changing; the
// writer fails, retries, and once NATS is back the bucket is the state
// again (a channel that came, one that went), and the record of the call
// that ended meanwhile is in the stream.
func TestState_NATSOutage(t *testing.T) {
	o := natstest.Options{JetStream: true, StoreDir: t.TempDir()}
	ns := natstest.Start(t, o)
	o.Port = ns.Addr().(*net.TCPAddr).Port // to start it again where it was
	url := ns.ClientURL()
	pbx := startPBX(t, amitest.Config{Channels: 2})
	b, _ := startBridge(t, reconnecting(t, url), []ServerConfig{fastServer("pbx1", pbx)}, stateOptions(true))
	waitSynced(t, b, 1)
	long := listedUniqueids(t, pbx)
	pbx.Emit(newChannel("6000.1", "6000.1", "PJSIP/100-0001"))
	_, kv := stateKV(t, reconnecting(t, url))
	waitIDs(t, kv, subjects.KindChannels, append([]string{"6000.1"}, long...))

	natstest.Stop(ns)
	pbx.Emit(hangup("6000.1", "6000.1", "PJSIP/100-0001"))
	pbx.Emit(newChannel("6000.2", "6000.2", "PJSIP/200-0002"))
	waitFor(t, func() *StateStats { return stateStats(b) }, func(st *StateStats) bool {
		return st.Entries[subjects.KindChannels] == len(long)+1 && st.WriteErrors > 0
	})
	ns = natstest.Start(t, o)
	t.Cleanup(func() { // before the server's own cleanup stops it
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	cc := reconnecting(t, ns.ClientURL())
	js, kv := stateKV(t, cc)
	waitIDs(t, kv, subjects.KindChannels, append([]string{"6000.2"}, long...))
	waitHas(t, kv, subjects.KindCalls, "6000.1", false)
	waitHas(t, kv, subjects.KindCalls, "6000.2", true)
	s, err := js.Stream(context.Background(), DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	m := waitFor(t, func() *jetstream.RawStreamMsg {
		m, _ := s.GetLastMsgForSubject(context.Background(), subjects.CallRecordSubject("ami", "pbx1", "6000.1"))
		return m
	}, func(m *jetstream.RawStreamMsg) bool { return m != nil })
	if !strings.Contains(string(m.Data), `"end_seen":true`) {
		t.Errorf("record %s", m.Data)
	}
}

// TestState_RefusedListLoggedOnce: a user without write classes is
// refused the lists; each refusal is logged once, not at every login, and
// the events still make the state.
func TestState_RefusedListLoggedOnce(t *testing.T) {
	tw := newWorld(t, withNATS(natsOptions{jetStream: true}), withOptions(stateOptions(false)),
		withPBX(amitest.Config{Channels: 2, Users: map[string]amitest.User{"admin": {Secret: testSecret}}}))
	_, kv := stateKV(t, tw.cc)
	waitSynced(t, tw.b, 1)
	tw.pbx.DropConnections()
	waitSynced(t, tw.b, 2)
	refused := map[string]int{} // by action
	for _, line := range strings.Split(tw.logs.String(), "\n") {
		var l struct{ Msg, Action string }
		if json.Unmarshal([]byte(line), &l) == nil && strings.HasPrefix(l.Msg, "the PBX refused a list action") {
			refused[l.Action]++
		}
	}
	if refused["CoreShowChannels"] != 1 {
		t.Errorf("CoreShowChannels refused: logged %d times over two logins, want once", refused["CoreShowChannels"])
	}
	for a, n := range refused {
		if n != 1 {
			t.Errorf("%s refused: logged %d times over two logins, want once", a, n)
		}
	}
	if st := stateStats(tw.b); st.Added[subjects.KindChannels] != 0 {
		t.Errorf("channels added from a refused list: %v", st.Added)
	}
	tw.pbx.Emit(newChannel("4000.1", "4000.1", "PJSIP/100-0001"))
	waitIDs(t, kv, subjects.KindChannels, []string{"4000.1"})
}

// TestState_TakeoverPublishesOnlyTheRecordsNotYetOut: a process that
// becomes the writer holding finished records (a standby's) publishes
// those whose call is still in the bucket, the last writer having
// published none of them, and drops the others, which it did publish;
// the call it publishes is not also closed again from the bucket.
func TestState_TakeoverPublishesOnlyTheRecordsNotYetOut(t *testing.T) {
	ns := startNATS(t, natsOptions{jetStream: true})
	nc, cc := connect(t, ns), connect(t, ns)
	records, err := cc.SubscribeSync("ami.pbx1.call.>")
	if err != nil {
		t.Fatal(err)
	}
	br := unstarted(t, nc, stateOptions(false))
	if err := br.setupState(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := br.pbxes[0].st
	if err := s.open(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := func(id string) subjects.CallRecord {
		return subjects.CallRecord{Server: "pbx1", Linkedid: id, Channels: []string{"PJSIP/1-" + id}}
	}
	inBucket, _ := json.Marshal(rec("3000.1"))
	if _, err := s.kv.Put(context.Background(), subjects.StateKey("pbx1", subjects.KindCalls, "3000.1"), inBucket); err != nil {
		t.Fatal(err)
	}
	held := rec("3000.1")
	held.EndSeen = true
	s.hold([]subjects.CallRecord{held, rec("3000.2")}) // 3000.2: its key is gone, the last writer published it
	s.synced.Store(true)
	s.tick()
	m, err := records.NextMsg(waitTime)
	if err != nil {
		t.Fatal(err)
	}
	var r subjects.CallRecord
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Linkedid != "3000.1" || !r.EndSeen {
		t.Fatalf("record %s (%v), want the held one of 3000.1", m.Data, err)
	}
	if m, err := records.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("a record more: %s", m.Data)
	}
	if ids := stateIDs(t, s.kv, subjects.KindCalls); len(ids) != 0 {
		t.Errorf("calls left in the bucket: %v", ids)
	}
}

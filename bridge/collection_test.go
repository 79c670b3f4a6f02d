package bridge

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// entryValue is the value of each heldList entry: with it an entry is
// about 200 bytes of AMI.
var entryValue = strings.Repeat("0123456789abcdef", 6)

// heldList installs action on pbx: a list of n DBGetTreeResponse-like
// entries whose complete event leaves only once letGo is called. written
// is closed once every entry is in the hands of the session's writer.
func heldList(t testing.TB, pbx *amitest.Server, action string, n int) (written chan struct{}, letGo func()) {
	t.Helper()
	written, release := make(chan struct{}), make(chan struct{})
	letGo = sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // before the PBX closes, which waits for the handler
	pbx.HandleFunc(action, func(w *amitest.ResponseWriter, _ *amitest.Request) {
		id, _ := w.ActionID()
		w.Success("EventList", "start", "Message", "Entries will follow")
		for i := range n {
			w.WriteMessage(newEvent("Entry", "ActionID", id, "Family", "big", "Key", strconv.Itoa(i), "Val", entryValue))
		}
		w.Flush()
		close(written)
		<-release
		w.WriteMessage(newEvent("EntryComplete", "ActionID", id, "EventList", "Complete", "ListItems", strconv.Itoa(n)))
	})
	return written, letGo
}

// oneSession runs a bridge on pbx with a single action session, so that
// a Ping after a request goes to the session that served it.
func oneSession(t *testing.T, r *world, sc ServerConfig) {
	t.Helper()
	sc.ActionSessions = 1
	startBridge(t, r.nc, []ServerConfig{sc}, Options{})
	r.w.waitAllUp()
}

// pingOK checks that the PBX answers a Ping through the bridge.
func pingOK(t *testing.T, cc *nats.Conn) {
	t.Helper()
	m := request(t, cc, subjects.Action("ami", "pbx1"), `{"Action":"Ping"}`, nil)
	if r, _ := decodeReply(t, m); r.Error != nil || r.Response["Ping"] != "Pong" {
		t.Fatalf("Ping after the list: %s", m.Data)
	}
}

// Unstreamed, a list up to MaxReplyEntries is answered whole; one entry
// more is a 413 that names the limit and how to raise it, and the session
// goes on.
func TestBridge_ListOverTheEntryLimitIs413(t *testing.T) {
	const channels = 300
	r := newWorld(t, withPBX(amitest.Config{Channels: channels}), withoutBridge())
	sc := fastServer("pbx1", r.pbx)
	sc.MaxReplyEntries = channels - 1
	oneSession(t, r, sc)

	m := request(t, r.cc, subjects.Action("ami", "pbx1"), `{"Action":"CoreShowChannels"}`, nil)
	rep, _ := decodeReply(t, m)
	if m.Header.Get(micro.ErrorCodeHeader) != "413" || rep.Error == nil ||
		!strings.Contains(rep.Error.Message, "max_reply_entries") || !strings.Contains(rep.Error.Message, strconv.Itoa(channels-1)) {
		t.Fatalf("reply over the entry limit: %v %.300s", m.Header, m.Data)
	}
	if rep.Response["EventList"] != "start" || rep.Events != nil {
		t.Errorf("the 413 should carry the leading response and no entries: %.300s", m.Data)
	}
	pingOK(t, r.cc)
}

func TestBridge_ListAtTheEntryLimitIsWhole(t *testing.T) {
	const channels = 300
	r := newWorld(t, withPBX(amitest.Config{Channels: channels}), withoutBridge())
	sc := fastServer("pbx1", r.pbx)
	sc.MaxReplyEntries = channels
	oneSession(t, r, sc)

	m := request(t, r.cc, subjects.Action("ami", "pbx1"), `{"Action":"CoreShowChannels","ActionID":"a1"}`, nil)
	rep, _ := decodeReply(t, m)
	if rep.Error != nil || len(rep.Events) != channels || rep.Complete["ListItems"] != strconv.Itoa(channels) ||
		rep.Events[0]["ActionID"] != "a1" || rep.Complete["ActionID"] != "a1" {
		t.Fatalf("%d entries, complete %v: %.300s", len(rep.Events), rep.Complete, m.Data)
	}
}

// Unstreamed, entries over MaxReplyBytes of JSON are a 413 that names the
// byte limit, even below the NATS max payload.
func TestBridge_ListOverTheByteLimitIs413(t *testing.T) {
	const channels, limit = 300, 20 << 10
	r := newWorld(t, withPBX(amitest.Config{Channels: channels}), withoutBridge())
	sc := fastServer("pbx1", r.pbx)
	sc.MaxReplyBytes = limit
	oneSession(t, r, sc)

	m := request(t, r.cc, subjects.Action("ami", "pbx1"), `{"Action":"CoreShowChannels"}`, nil)
	rep, _ := decodeReply(t, m)
	if m.Header.Get(micro.ErrorCodeHeader) != "413" || rep.Error == nil ||
		!strings.Contains(rep.Error.Message, "max_reply_bytes") || !strings.Contains(rep.Error.Message, strconv.Itoa(limit)) {
		t.Fatalf("reply over the byte limit: %v %.300s", m.Header, m.Data)
	}
	pingOK(t, r.cc)
}

// streamSub sends body with Ami-Stream: true and returns the subscription
// its parts arrive on.
func streamSub(t *testing.T, cc *nats.Conn, body string) *nats.Subscription {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := cc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	t.Cleanup(func() { sub.Unsubscribe() })
	err = cc.PublishMsg(&nats.Msg{Subject: subjects.Action("ami", "pbx1"), Reply: inbox,
		Header: nats.Header{subjects.HeaderStream: {"true"}}, Data: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func nextPart(t *testing.T, sub *nats.Subscription, what string) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(waitTime)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return m
}

// expectEntry checks that part is entry i of heldList.
func expectEntry(t *testing.T, m *nats.Msg, i int) {
	t.Helper()
	var ev map[string]string
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev["Event"] != "Entry" || ev["Key"] != strconv.Itoa(i) {
		t.Fatalf("part for entry %d: %v %s", i, err, m.Data)
	}
}

// Streamed, each entry leaves as it is read: the requester has the
// envelope and every entry while the PBX still holds the complete event.
func TestBridge_StreamedEntriesArriveBeforeTheListEnds(t *testing.T) {
	const n = 50
	r := newWorld(t, withoutBridge())
	_, letGo := heldList(t, r.pbx, "BigList", n)
	oneSession(t, r, fastServer("pbx1", r.pbx))

	sub := streamSub(t, r.cc, `{"Action":"BigList"}`)
	if env, _ := decodeReply(t, nextPart(t, sub, "envelope")); env.Error != nil || env.Response["EventList"] != "start" {
		t.Fatalf("envelope %+v", env)
	}
	for i := range n {
		expectEntry(t, nextPart(t, sub, "entry"), i)
	}
	letGo()
	var complete map[string]string
	if m := nextPart(t, sub, "complete"); json.Unmarshal(m.Data, &complete) != nil || complete["EventList"] != "Complete" {
		t.Fatalf("complete %s", m.Data)
	}
	if m := nextPart(t, sub, "terminator"); len(m.Data) != 0 {
		t.Fatalf("terminator %s", m.Data)
	}
}

// Streamed past MaxReplyEntries: the entries up to the limit, then a 413
// part and the terminator, all before the list ends on the PBX; the rest
// of the list is discarded and the session goes on.
func TestBridge_StreamedListOverTheLimitEndsWith413(t *testing.T) {
	const n, limit = 5000, 100
	r := newWorld(t, withoutBridge())
	_, letGo := heldList(t, r.pbx, "BigList", n)
	sc := fastServer("pbx1", r.pbx)
	sc.MaxReplyEntries = limit
	oneSession(t, r, sc)

	sub := streamSub(t, r.cc, `{"Action":"BigList"}`)
	nextPart(t, sub, "envelope")
	for i := range limit {
		expectEntry(t, nextPart(t, sub, "entry"), i)
	}
	m := nextPart(t, sub, "413")
	if rep, _ := decodeReply(t, m); m.Header.Get(micro.ErrorCodeHeader) != "413" || rep.Error == nil || !strings.Contains(rep.Error.Message, "max_reply_entries") {
		t.Fatalf("after %d entries: %v %s", limit, m.Header, m.Data)
	}
	if m := nextPart(t, sub, "terminator"); len(m.Data) != 0 {
		t.Fatalf("terminator %s", m.Data)
	}
	letGo()
	pingOK(t, r.cc)
	if m, err := sub.NextMsg(0); err == nil {
		t.Errorf("a part after the terminator: %s", m.Data)
	}
}

// Whatever the PBX sends, the bridge holds no more than its limits plus a
// fixed part: a 100,000-entry list (about 20 MB of AMI) is cut at 1,000
// entries, and the heap, measured once the PBX has written every entry
// and before it ends the list, has grown by less than fixedPart. Holding
// the entries, as the bridge once did until the complete event, takes
// some 25 MB (measured on the code before the limits).
func TestBridge_ListMemoryStaysWithinTheLimit(t *testing.T) {
	const n, limit, fixedPart = 100_000, 1000, 8 << 20
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			r := newWorld(t, withPBX(amitest.Config{MaxQueue: 256 << 10}), withoutBridge())
			written, letGo := heldList(t, r.pbx, "BigList", n)
			sc := fastServer("pbx1", r.pbx)
			sc.MaxReplyEntries = limit
			oneSession(t, r, sc)

			var before, during runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var sub *nats.Subscription
			reply := make(chan *nats.Msg, 1)
			if stream {
				sub = streamSub(t, r.cc, `{"Action":"BigList"}`)
			} else {
				go func() {
					m, err := r.cc.Request(subjects.Action("ami", "pbx1"), []byte(`{"Action":"BigList"}`), waitTime)
					if err != nil {
						t.Errorf("request: %v", err)
					}
					reply <- m
				}()
			}
			<-written
			runtime.GC()
			runtime.ReadMemStats(&during)
			letGo()
			grown := int64(during.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("heap growth %d KB", grown>>10)
			if grown > fixedPart {
				t.Errorf("the heap grew by %d MB while the PBX sent %d entries, above the fixed part of %d MB", grown>>20, n, fixedPart>>20)
			}
			if stream {
				parts := 0
				for m := nextPart(t, sub, "part"); len(m.Data) > 0; m = nextPart(t, sub, "part") {
					parts++
				}
				if parts != 1+limit+1 {
					t.Errorf("%d parts, want the envelope, %d entries and the 413", parts, limit)
				}
			} else if m := <-reply; m == nil || m.Header.Get(micro.ErrorCodeHeader) != "413" {
				t.Errorf("reply %v", m)
			}
			pingOK(t, r.cc)
		})
	}
}

// BenchmarkStreamedList measures a 5,000-entry CoreShowChannels streamed
// from the PBX through the bridge to a NATS requester, per list, and how
// long the first entry takes to reach the requester.
func BenchmarkStreamedList(b *testing.B) {
	const channels = 5000
	tw := newWorld(b, withPBX(amitest.Config{Channels: channels}))
	tw.w.waitAllUp()
	cc := tw.cc
	inbox := nats.NewInbox()
	sub, err := cc.SubscribeSync(inbox)
	if err != nil {
		b.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	req := &nats.Msg{Subject: subjects.Action("ami", "pbx1"), Reply: inbox,
		Header: nats.Header{subjects.HeaderStream: {"true"}}, Data: []byte(`{"Action":"CoreShowChannels"}`)}
	var toFirst time.Duration // request to the first entry, summed
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := cc.PublishMsg(req); err != nil {
			b.Fatal(err)
		}
		parts := 0
		for {
			m, err := sub.NextMsg(waitTime)
			if err != nil {
				b.Fatal(err)
			}
			if len(m.Data) == 0 {
				break
			}
			if parts++; parts == 2 {
				toFirst += time.Since(t0)
			}
		}
		if parts != channels+2 {
			b.Fatalf("%d parts, want %d", parts, channels+2)
		}
	}
	b.ReportMetric(float64(b.N*channels)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(toFirst.Microseconds())/float64(b.N), "first-entry-µs")
}

package bridge

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// onceAction is the action the idempotency tests run: amitest counts
// each execution by its Round field, and answers with that count, so a
// reply tells which execution it came from.
const onceAction = "PlaceCall"

// counter counts, on the PBX's side, the executions of onceAction by
// Round, and can hold them until released.
type counter struct {
	mu      sync.Mutex
	n       map[string]int
	arrived chan string   // each execution's Round, as it starts
	release chan struct{} // nil: answer at once; else answer once closed (see free)
	once    sync.Once
}

// countOn counts on pbx; with hold, each execution waits for free, which
// the test's cleanup calls too, so that a failed test does not leave the
// PBX's handler blocked.
func countOn(t *testing.T, pbx *amitest.Server, hold bool) *counter {
	c := &counter{n: map[string]int{}, arrived: make(chan string, 64)}
	if hold {
		c.release = make(chan struct{})
		t.Cleanup(c.free)
	}
	pbx.HandleFunc(onceAction, func(w *amitest.ResponseWriter, r *amitest.Request) {
		round := r.Get("Round")
		c.mu.Lock()
		c.n[round]++
		n := c.n[round]
		c.mu.Unlock()
		c.arrived <- round
		if c.release != nil {
			<-c.release
		}
		w.Success("Message", "placed", "Execution", strconv.Itoa(n))
	})
	return c
}

// free lets the held executions answer.
func (c *counter) free() { c.once.Do(func() { close(c.release) }) }

func (c *counter) count(round string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[round]
}

func keyed(key string) nats.Header {
	return nats.Header{subjects.HeaderIdempotencyKey: {key}}
}

func onceBody(round string) string {
	return `{"Action":"` + onceAction + `","Round":"` + round + `"}`
}

// waitServing waits until every action session of b's PBX is logged in,
// and so in the queue group.
// keyedWorld starts NATS (with JetStream when opts asks), a PBX whose
// Ping-like action counts its runs (countOn), and a bridge on it: the
// opening of the idempotency tests. It returns the requester's
// connection, the action subject and the counter.
func keyedWorld(t *testing.T, hold bool, opts Options) (*nats.Conn, string, *counter) {
	t.Helper()
	ns := startNATS(t, natsOptions{jetStream: opts.JetStream.Enabled})
	pbx := startPBX(t, amitest.Config{})
	c := countOn(t, pbx, hold)
	b, _ := startBridge(t, connect(t, ns), []ServerConfig{fastServer("pbx1", pbx)}, opts)
	waitServing(t, b)
	return connect(t, ns), subjects.Action("ami", "pbx1"), c
}

func waitServing(t *testing.T, b *Bridge) {
	t.Helper()
	waitStatus(t, b, allUp)
}

// answered is how many requests b's PBX answered.
func answered(b *Bridge) uint64 {
	var n uint64
	for _, a := range b.Stats()[0].Actions {
		n += a.Count
	}
	return n
}

// TestIdempotency_TwoProcessesRunTheActionOnce sends concurrent retries
// with one key to two bridges on one NATS with JetStream: the PBX runs
// the action once per key, and every retry gets its reply. Rounds go on
// until one round's requests were answered by both bridges (the queue
// group picks at random), so the claim was contended across processes.
func TestIdempotency_TwoProcessesRunTheActionOnce(t *testing.T) {
	ns := startNATS(t, natsOptions{jetStream: true})
	pbx := startPBX(t, amitest.Config{})
	c := countOn(t, pbx, false)
	opts := Options{JetStream: JetStreamOptions{Enabled: true}}
	b1, _ := startBridge(t, connect(t, ns), []ServerConfig{fastServer("pbx1", pbx)}, opts)
	b2, _ := startBridge(t, connect(t, ns), []ServerConfig{fastServer("pbx1", pbx)}, opts)
	waitServing(t, b1)
	waitServing(t, b2)
	cc := connect(t, ns)

	const retries = 4 // as many as the two bridges have action sessions
	for round := 1; round <= 30; round++ {
		r := strconv.Itoa(round)
		before1, before2 := answered(b1), answered(b2)
		var wg sync.WaitGroup
		replies := make([]*nats.Msg, retries)
		for i := range retries {
			wg.Go(func() {
				replies[i] = request(t, cc, subjects.Action("ami", "pbx1"), onceBody(r), keyed("call-"+r))
			})
		}
		wg.Wait()
		if n := c.count(r); n != 1 {
			t.Fatalf("round %s: the PBX ran the action %d times, want 1", r, n)
		}
		for i, m := range replies {
			rb, _ := decodeReply(t, m)
			if rb.Error != nil || rb.Response["Execution"] != "1" {
				t.Fatalf("round %s: reply %d: %s", r, i, m.Data)
			}
		}
		if answered(b1) > before1 && answered(b2) > before2 {
			return
		}
	}
	t.Fatal("no round reached both bridges")
}

// TestIdempotency_RetryAfterTheRequesterTimedOut: a requester gives up
// while the action runs; its retry with the same key gets the first
// reply, and the PBX ran the action once.
func TestIdempotency_RetryAfterTheRequesterTimedOut(t *testing.T) {
	for _, js := range []bool{false, true} {
		t.Run(fmt.Sprintf("jetstream=%v", js), func(t *testing.T) {
			cc, subj, c := keyedWorld(t, true, Options{JetStream: JetStreamOptions{Enabled: js}})

			_, err := cc.RequestMsg(&nats.Msg{Subject: subj, Data: []byte(onceBody("1")), Header: keyed("k1")}, 100*time.Millisecond)
			if err != nats.ErrTimeout {
				t.Fatalf("first request: %v, want a timeout", err)
			}
			<-c.arrived
			done := make(chan *nats.Msg, 1)
			go func() { done <- request(t, cc, subj, onceBody("1"), keyed("k1")) }() // waits for the running one
			c.free()
			m := <-done
			again := request(t, cc, subj, onceBody("1"), keyed("k1")) // finds it done
			for _, m := range []*nats.Msg{m, again} {
				if rb, _ := decodeReply(t, m); rb.Error != nil || rb.Response["Execution"] != "1" {
					t.Fatalf("retry got %s", m.Data)
				}
			}
			if n := c.count("1"); n != 1 {
				t.Fatalf("the PBX ran the action %d times, want 1", n)
			}
			// Another key runs it again.
			if rb, _ := decodeReply(t, request(t, cc, subj, onceBody("1"), keyed("k2"))); rb.Response["Execution"] != "2" {
				t.Fatalf("another key: %+v", rb)
			}
		})
	}
}

// TestIdempotency_SameKeyOtherBodyIsAConflict: a key reused with another
// body gets a 409, never the first reply, and runs nothing.
func TestIdempotency_SameKeyOtherBodyIsAConflict(t *testing.T) {
	for _, js := range []bool{false, true} {
		t.Run(fmt.Sprintf("jetstream=%v", js), func(t *testing.T) {
			cc, subj, c := keyedWorld(t, false, Options{JetStream: JetStreamOptions{Enabled: js}})
			request(t, cc, subj, onceBody("1"), keyed("k"))
			m := request(t, cc, subj, onceBody("2"), keyed("k"))
			if code := m.Header.Get(subjects.HeaderErrorCode); code != strconv.Itoa(subjects.CodeConflict) {
				t.Fatalf("same key, other body: code %q, reply %s", code, m.Data)
			}
			if rb, _ := decodeReply(t, m); rb.Response != nil {
				t.Fatalf("the conflict carries a response: %s", m.Data)
			}
			if n1, n2 := c.count("1"), c.count("2"); n1 != 1 || n2 != 0 {
				t.Fatalf("executions: round 1 %d, round 2 %d; want 1 and 0", n1, n2)
			}
		})
	}
}

// TestIdempotency_OneProcessWithoutJetStream: without JetStream,
// concurrent retries at one bridge run the action once.
func TestIdempotency_OneProcessWithoutJetStream(t *testing.T) {
	cc, _, c := keyedWorld(t, false, Options{})
	for round := range 10 {
		r := strconv.Itoa(round)
		var wg sync.WaitGroup
		for range DefaultActionSessions + 1 {
			wg.Go(func() {
				m := request(t, cc, subjects.Action("ami", "pbx1"), onceBody(r), keyed(r))
				if rb, _ := decodeReply(t, m); rb.Error != nil || rb.Response["Execution"] != "1" {
					t.Errorf("round %s: %s", r, m.Data)
				}
			})
		}
		wg.Wait()
		if n := c.count(r); n != 1 {
			t.Fatalf("round %s: the PBX ran the action %d times, want 1", r, n)
		}
	}
}

// TestIdempotency_BadKeys: an empty key, or a key with a streamed reply,
// is a 400 and runs nothing.
func TestIdempotency_BadKeys(t *testing.T) {
	cc, _, c := keyedWorld(t, false, Options{})
	for name, hdr := range map[string]nats.Header{
		"empty":  keyed(" "),
		"stream": {subjects.HeaderIdempotencyKey: {"k"}, subjects.HeaderStream: {"true"}},
	} {
		sub, _ := cc.SubscribeSync(nats.NewInbox())
		if err := cc.PublishMsg(&nats.Msg{Subject: subjects.Action("ami", "pbx1"), Reply: sub.Subject, Data: []byte(onceBody("1")), Header: hdr}); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(waitTime)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if code := m.Header.Get(subjects.HeaderErrorCode); code != "400" {
			t.Fatalf("%s: code %q, reply %s", name, code, m.Data)
		}
		sub.Unsubscribe()
	}
	if n := c.count("1"); n != 0 {
		t.Fatalf("the PBX ran the action %d times, want 0", n)
	}
}

func TestCheck_IdempotencyWindow(t *testing.T) {
	servers := []ServerConfig{{Name: "pbx1", URL: "admin:x@127.0.0.1"}}
	for _, o := range []IdempotencyOptions{{Window: 1500 * time.Millisecond}, {Window: -time.Second}, {Bucket: "a.b"}} {
		ps := Check(servers, Options{Idempotency: o})
		if len(ps) != 1 || (ps[0].Field != "Idempotency.Window" && ps[0].Field != "Idempotency.Bucket") {
			t.Errorf("%+v: %v", o, ps)
		}
	}
	if ps := Check(servers, Options{Idempotency: IdempotencyOptions{Window: time.Minute, Bucket: "reqs"}}); len(ps) != 0 {
		t.Errorf("good options: %v", ps)
	}
}

// BenchmarkIdempotentRequest measures what a key adds to a request (a
// Ping from a NATS requester through the bridge to the PBX and back):
// without a key; with a new key each time, in memory and in the KV
// bucket (the claim, and the reply kept after it is sent); and a retry
// of one key, answered from the bucket without reaching the PBX.
func BenchmarkIdempotentRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		js   bool
		key  func(i int) string // "": no header
	}{
		{"nokey", false, nil},
		{"nokey-jetstream", true, nil},
		{"key-memory", false, func(i int) string { return "k" + strconv.Itoa(i) }},
		{"key-jetstream", true, func(i int) string { return "k" + strconv.Itoa(i) }},
		{"retry-jetstream", true, func(int) string { return "same" }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tw := newWorld(b, withNATS(natsOptions{jetStream: bc.js}), withOptions(Options{JetStream: JetStreamOptions{Enabled: bc.js}}))
			tw.w.waitAllUp()
			msg := &nats.Msg{Subject: subjects.Action("ami", "pbx1"), Data: []byte(`{"Action":"Ping"}`)}
			if bc.key != nil { // the bucket is created at the first key
				msg.Header = keyed("warm-up")
				request(b, tw.cc, msg.Subject, string(msg.Data), msg.Header)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if bc.key != nil {
					msg.Header = keyed(bc.key(i))
				}
				t0 := time.Now()
				m, err := tw.cc.RequestMsg(msg, waitTime)
				if err != nil || m.Header.Get(subjects.HeaderErrorCode) != "" {
					b.Fatalf("request: %v %s", err, m.Data)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
			}
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
		})
	}
}

// TestIdempotency_KeyExpiresAfterTheWindow: once the window has passed
// since the first reply, the key is free and the same request runs
// again; the bucket's expiry marker does not block the new claim.
func TestIdempotency_KeyExpiresAfterTheWindow(t *testing.T) {
	for _, js := range []bool{false, true} {
		t.Run(fmt.Sprintf("jetstream=%v", js), func(t *testing.T) {
			cc, subj, c := keyedWorld(t, false, Options{JetStream: JetStreamOptions{Enabled: js}, Idempotency: IdempotencyOptions{Window: time.Second}})
			start := time.Now()
			request(t, cc, subj, onceBody("1"), keyed("k"))
			// Retries within the window get the first reply; the first
			// one after it runs the action again. Expiry has nothing to
			// wait on but the clock.
			for {
				rb, _ := decodeReply(t, request(t, cc, subj, onceBody("1"), keyed("k")))
				if rb.Response["Execution"] == "2" {
					break
				}
				if rb.Response["Execution"] != "1" {
					t.Fatalf("retry: %+v", rb)
				}
				if time.Since(start) > waitTime {
					t.Fatal("the key never expired")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if time.Since(start) < time.Second {
				t.Errorf("the key expired after %v, within the window of 1s", time.Since(start))
			}
			if n := c.count("1"); n != 2 {
				t.Errorf("the PBX ran the action %d times, want 2", n)
			}
		})
	}
}

// TestIdempotency_RetryGivesUpAtItsDeadline: a retry whose first request
// is still running past the retry's own deadline gets a 504, and the
// action is not run again.
func TestIdempotency_RetryGivesUpAtItsDeadline(t *testing.T) {
	for _, js := range []bool{false, true} {
		t.Run(fmt.Sprintf("jetstream=%v", js), func(t *testing.T) {
			cc, subj, c := keyedWorld(t, true, Options{JetStream: JetStreamOptions{Enabled: js}})
			first := make(chan *nats.Msg, 1)
			go func() { first <- request(t, cc, subj, onceBody("1"), keyed("k")) }()
			<-c.arrived
			// A retry that NATS gives to the session busy with the first
			// request waits behind it, unanswered; the one given to the
			// free session waits for the first's reply, until its
			// deadline.
			hdr := keyed("k")
			hdr.Set(subjects.HeaderTimeout, "200ms")
			for i := 0; ; i++ {
				m, err := cc.RequestMsg(&nats.Msg{Subject: subj, Data: []byte(onceBody("1")), Header: hdr}, time.Second)
				if err == nats.ErrTimeout && i < 20 {
					continue
				}
				if err != nil {
					t.Fatalf("retry: %v", err)
				}
				if code := m.Header.Get(subjects.HeaderErrorCode); code != "504" || !strings.Contains(string(m.Data), "not run again") {
					t.Fatalf("retry past its deadline: code %q, reply %s", code, m.Data)
				}
				break
			}
			c.free()
			if rb, _ := decodeReply(t, <-first); rb.Response["Execution"] != "1" {
				t.Fatalf("first request: %+v", rb)
			}
			if n := c.count("1"); n != 1 {
				t.Fatalf("the PBX ran the action %d times, want 1", n)
			}
		})
	}
}

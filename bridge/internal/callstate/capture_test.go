package callstate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ami-bridge/ami-bridge/amiproto"
	"github.com/ami-bridge/ami-bridge/subjects"
)

var captures = filepath.Join("..", "..", "..", "amiproto", "testdata", "captures")

// recvMsg is one message Asterisk sent, with when it arrived when the
// capture has its .chunks.jsonl (at < 0 otherwise).
type recvMsg struct {
	m  *amiproto.Message
	at time.Duration
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// captureData is the bytes capture name of version ver received.
func captureData(t testing.TB, ver, name string) []byte {
	t.Helper()
	dir := filepath.Join(captures, "asterisk-"+ver)
	data, err := os.ReadFile(filepath.Join(dir, name+".recv.bin"))
	if errors.Is(err, os.ErrNotExist) {
		var f *os.File
		if f, err = os.Open(filepath.Join(dir, name+".recv.bin.gz")); err == nil {
			defer f.Close()
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(f); err == nil {
				data, err = io.ReadAll(zr)
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// loadCapture reads every message of capture name of version ver ("22",
// "13"), timed from the capture's chunks when it has them.
func loadCapture(t testing.TB, ver, name string) []recvMsg {
	t.Helper()
	dir := filepath.Join(captures, "asterisk-"+ver)
	data := captureData(t, ver, name)
	// Chunk i ends at byte ends[i] of the recv stream and arrived at times[i].
	var ends []int
	var times []time.Duration
	if cf, err := os.Open(filepath.Join(dir, name+".chunks.jsonl")); err == nil {
		defer cf.Close()
		sc := bufio.NewScanner(cf)
		total := 0
		for sc.Scan() {
			var c struct {
				T   float64 `json:"t"`
				Dir string  `json:"dir"`
				Len int     `json:"len"`
			}
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				t.Fatal(err)
			}
			if c.Dir == "recv" {
				total += c.Len
				ends = append(ends, total)
				times = append(times, time.Duration(c.T*float64(time.Second)))
			}
		}
	}
	cr := &countingReader{r: bytes.NewReader(data)}
	r := amiproto.NewReader(cr)
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	var out []recvMsg
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s/%s: %v", ver, name, err)
		}
		at := time.Duration(-1)
		if ends != nil {
			end := cr.n - r.Buffered()
			if i, _ := slices.BinarySearch(ends, end); i < len(times) {
				at = times[i]
			}
		}
		out = append(out, recvMsg{m, at})
	}
	return out
}

// uniqueidTime is the creation second a Uniqueid starts with.
func uniqueidTime(uid string) time.Time {
	sec, _, _ := strings.Cut(uid, ".")
	n, _ := strconv.ParseInt(sec, 10, 64)
	return time.Unix(n, 0)
}

// replay applies a capture's events to m with a clock the test drives: the
// chunk arrival times when the capture has them, else the creation second
// of the latest Newchannel's Uniqueid (all the capture tells of time).
// It returns every record Flush handed out, flushing every flushEvery
// events.
func replay(t testing.TB, m *Model, msgs []recvMsg, flushEvery int) []subjects.CallRecord {
	var now time.Time
	m.SetClock(func() time.Time { return now })
	var recs []subjects.CallRecord
	n := 0
	for _, rm := range msgs {
		if rm.m.Kind() != amiproto.KindEvent {
			continue
		}
		now = captureTime(rm, now)
		m.Apply(rm.m)
		if n++; flushEvery > 0 && n%flushEvery == 0 {
			recs = append(recs, m.Flush(false, func(Change) {})...)
		}
	}
	return append(recs, m.Flush(false, func(Change) {})...)
}

// captureTime is the clock of replay when it applies rm, the clock being
// at now: rm's chunk's arrival time when the capture has them, else the
// creation second of the latest Newchannel's Uniqueid.
func captureTime(rm recvMsg, now time.Time) time.Time {
	switch {
	case rm.at >= 0:
		return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(rm.at)
	case rm.m.EventName() == "Newchannel":
		if u := uniqueidTime(rm.m.Get("Uniqueid")); u.After(now) {
			return u
		}
	}
	return now
}

// cdrTruth is what the capture's own Cdr events say of each call, grouped
// by Linkedid through the Uniqueids of the capture's Newchannel events.
type cdrTruth struct {
	disposition string // the best of the call's CDRs with a destination (else of all), mapped to the record's names
	beforeEnd   int    // Cdr events that arrived before the call's last Hangup
	billable    int    // the union of the CDRs' answered spans, in seconds
	n           int
}

var cdrRank = map[string]int{"FAILED": rankFailed, "CONGESTION": rankCongestion, "NO ANSWER": rankNoAnswer, "BUSY": rankBusy, "ANSWERED": rankAnswered}

func cdrTruths(t testing.TB, msgs []recvMsg) (linked map[string]string, truth map[string]*cdrTruth) {
	linked = map[string]string{}
	truth = map[string]*cdrTruth{}
	spans := map[string][]span{}
	best, bestDial := map[string]int{}, map[string]int{}
	// Asterisk may send a call's Cdr events before its channel events.
	for _, rm := range msgs {
		if rm.m.EventName() == "Newchannel" {
			linked[rm.m.Get("Uniqueid")] = rm.m.Get("Linkedid")
		}
	}
	live := map[string]int{}
	for _, rm := range msgs {
		switch rm.m.EventName() {
		case "Newchannel":
			live[rm.m.Get("Linkedid")]++
		case "Hangup":
			if l, ok := linked[rm.m.Get("Uniqueid")]; ok {
				live[l]--
			}
		case "Cdr":
			l, ok := linked[rm.m.Get("UniqueID")]
			if !ok {
				continue // a channel from before the capture
			}
			d := rm.m.Get("Disposition")
			r, ok := cdrRank[d]
			if !ok {
				t.Fatalf("Cdr with disposition %q", d)
			}
			best[l] = max(best[l], r)
			if rm.m.Get("DestinationChannel") != "" {
				bestDial[l] = max(bestDial[l], r)
			}
			bill, _ := strconv.Atoi(rm.m.Get("BillableSeconds"))
			if at := rm.m.Get("AnswerTime"); at != "" && bill > 0 {
				a, err := time.Parse(time.DateTime, at)
				if err != nil {
					t.Fatal(err)
				}
				spans[l] = append(spans[l], span{a, a.Add(time.Duration(bill) * time.Second)})
			}
			if truth[l] == nil {
				truth[l] = &cdrTruth{}
			}
			truth[l].n++
			if n, started := live[l]; !started || n > 0 {
				truth[l].beforeEnd++
			}
		}
	}
	for l, tr := range truth {
		tr.disposition = rankNames[best[l]]
		if bestDial[l] != rankNone {
			tr.disposition = rankNames[bestDial[l]]
		}
		tr.billable = int(answeredTime(spans[l]) / time.Second)
	}
	return linked, truth
}

// checkRecords: every call the capture started gives exactly one record,
// seen to its end, whose disposition is its Cdr events' and whose billable
// seconds are theirs within 1 s. It returns how many agree to the second.
func checkRecords(t *testing.T, msgs []recvMsg, recs []subjects.CallRecord) (exact int) {
	t.Helper()
	linked, truth := cdrTruths(t, msgs)
	calls := map[string]bool{}
	for _, l := range linked {
		calls[l] = true
	}
	got := map[string]subjects.CallRecord{}
	for _, r := range recs {
		if _, dup := got[r.Linkedid]; dup {
			t.Errorf("call %s: two records", r.Linkedid)
		}
		got[r.Linkedid] = r
	}
	for l := range calls {
		r, ok := got[l]
		if !ok {
			t.Errorf("call %s: no record", l)
			continue
		}
		if !r.EndSeen {
			t.Errorf("call %s: end_seen false", l)
		}
		tr := truth[l]
		if tr == nil {
			t.Logf("call %s: no Cdr event in the capture; record says %s", l, r.Disposition)
			continue
		}
		t.Logf("call %s: %d Cdr events: %s, billable %d s; record: %s, billable %d s", l, tr.n, tr.disposition, tr.billable, r.Disposition, r.BillableS)
		if len(r.Cdr) < tr.beforeEnd {
			t.Errorf("call %s: %d Cdr events in the record, %d arrived before its end", l, len(r.Cdr), tr.beforeEnd)
		}
		if r.Disposition != tr.disposition {
			t.Errorf("call %s: disposition %q, its %d Cdr events say %q", l, r.Disposition, tr.n, tr.disposition)
		}
		if d := r.BillableS - tr.billable; d < -1 || d > 1 {
			t.Errorf("call %s: billable %d s, its Cdr events say %d s", l, r.BillableS, tr.billable)
		} else if d == 0 {
			exact++
		}
		if r.End.Before(r.Start) || r.DurationS < r.BillableS {
			t.Errorf("call %s: start %v end %v duration %d billable %d", l, r.Start, r.End, r.DurationS, r.BillableS)
		}
	}
	return exact
}

func TestCapture_Burst14a(t *testing.T) {
	for _, ver := range []string{"22", "13"} {
		t.Run(ver, func(t *testing.T) {
			msgs := loadCapture(t, ver, "14a_burst_200_originates")
			m := New("pbx1")
			recs := replay(t, m, msgs, 97)
			linked, _ := cdrTruths(t, msgs)
			calls := map[string]bool{}
			for _, l := range linked {
				calls[l] = true
			}
			if len(calls) != 200 {
				t.Fatalf("the capture starts %d calls, want 200", len(calls))
			}
			exact := checkRecords(t, msgs, recs)
			t.Logf("%d records, %d of 200 calls with billable seconds equal to their Cdr's (the capture has no timing: the clock is the Uniqueids' second)", len(recs), exact)
			// Memory: when every call ended, nothing but devices is left.
			counts := m.Counts()
			for _, k := range []string{subjects.KindChannels, subjects.KindBridges, subjects.KindQueues, subjects.KindCalls} {
				if counts[k] != 0 {
					t.Errorf("after the burst: %d %s left", counts[k], k)
				}
			}
			if counts[subjects.KindDevices] == 0 {
				t.Error("no device state kept")
			}
			if len(m.dirty) != 0 || len(m.done) != 0 {
				t.Errorf("after Flush: %d dirty keys, %d records", len(m.dirty), len(m.done))
			}
		})
	}
}

// TestCapture_OriginateEcho07a: a Local pair originated to Echo-like
// dialplan, timed from the capture's chunks: the record agrees with the
// Cdr events, carries the caller ID set by the Originate, and its keys
// come and go.
func TestCapture_OriginateEcho07a(t *testing.T) {
	for _, ver := range []string{"22", "13"} {
		t.Run(ver, func(t *testing.T) {
			msgs := loadCapture(t, ver, "07a_originate_async_echo")
			m := New("pbx1")
			keys := map[string]bool{}
			var now time.Time
			m.SetClock(func() time.Time { return now })
			var recs []subjects.CallRecord
			sawChannel := false
			for _, rm := range msgs {
				if rm.m.Kind() != amiproto.KindEvent {
					continue
				}
				if rm.at < 0 {
					t.Fatal("07a has chunks: every message is timed")
				}
				now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(rm.at)
				m.Apply(rm.m)
				recs = append(recs, m.Flush(false, func(c Change) {
					keys[c.Key] = c.Value != nil
					if strings.HasPrefix(c.Key, "channels.") && c.Value != nil {
						sawChannel = true
						var v subjects.StateChannel
						if err := json.Unmarshal(c.Value, &v); err != nil || v.Uniqueid == "" || v.Linkedid == "" {
							t.Errorf("channel value %s: %v", c.Value, err)
						}
					}
				})...)
			}
			if !sawChannel {
				t.Error("no channel key written")
			}
			for k, live := range keys {
				if live && !strings.HasPrefix(k, "devices.") {
					t.Errorf("key %s still set after every channel hung up", k)
				}
			}
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1", len(recs))
			}
			checkRecords(t, msgs, recs)
			r := recs[0]
			if r.Caller.Number != "5551234" || r.Caller.Name != "AMI Test" || !strings.HasSuffix(r.Caller.Channel, ";1") {
				t.Errorf("caller %+v", r.Caller)
			}
			if len(r.Channels) != 2 || r.Disposition != subjects.DispositionAnswered || len(r.Cdr) == 0 {
				t.Errorf("record %+v", r)
			}
		})
	}
}

// TestCapture_BorrowedEvents: the bridge lends the model each event for
// the call of Apply only (amiproto's EventDelivery.Borrow), in memory the
// next event overwrites. The model must keep nothing of it uncopied: fed
// borrowed events, it writes the same keys and values, and the same
// records, as fed events of their own.
func TestCapture_BorrowedEvents(t *testing.T) {
	type capture struct{ ver, name string }
	var cases []capture
	for _, ver := range []string{"22", "13"} {
		// The burst, and every capture of calls whose channels carry
		// channelvars (ChanVariable, VarSet): the scenarios of the mix.
		cases = append(cases, capture{ver, "14a_burst_200_originates"}, capture{ver, "06b_setup_originate_long_channels"},
			capture{ver, "07a_originate_async_echo"}, capture{ver, "07b_originate_vars_userevent_getvar_setvar"})
		observers, err := filepath.Glob(filepath.Join(captures, "asterisk-"+ver, "19*_observer.recv.bin"))
		if err != nil || len(observers) == 0 {
			t.Fatalf("Asterisk %s: no 19*_observer capture (%v)", ver, err)
		}
		for _, o := range observers {
			cases = append(cases, capture{ver, strings.TrimSuffix(filepath.Base(o), ".recv.bin")})
		}
	}
	for _, c := range cases {
		t.Run(c.ver+"/"+c.name, func(t *testing.T) {
			msgs := loadCapture(t, c.ver, c.name)
			r := amiproto.NewReader(bytes.NewReader(captureData(t, c.ver, c.name)))
			if _, err := r.ReadBanner(); err != nil {
				t.Fatal(err)
			}
			owned, borrowed := New("pbx1"), New("pbx1")
			var now time.Time
			owned.SetClock(func() time.Time { return now })
			borrowed.SetClock(func() time.Time { return now })
			var wantOut, gotOut []string
			flush := func(m *Model, out *[]string) {
				from := len(*out)
				recs := m.Flush(false, func(ch Change) { *out = append(*out, ch.Key+"="+string(ch.Value)) })
				slices.Sort((*out)[from:]) // Flush's order is a map's
				for _, rec := range recs {
					b, err := json.Marshal(rec)
					if err != nil {
						t.Fatal(err)
					}
					*out = append(*out, "record "+string(b))
				}
			}
			n := 0
			for i, rm := range msgs {
				b, err := r.ReadBorrowed()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if rm.m.Kind() != amiproto.KindEvent {
					continue
				}
				now = captureTime(rm, now)
				owned.Apply(rm.m)
				borrowed.Apply(b)
				if n++; n%53 == 0 {
					flush(owned, &wantOut)
					flush(borrowed, &gotOut)
				}
			}
			flush(owned, &wantOut)
			flush(borrowed, &gotOut)
			if len(wantOut) == 0 {
				t.Fatal("the capture changed nothing")
			}
			if !slices.Equal(gotOut, wantOut) {
				for i := range min(len(gotOut), len(wantOut)) {
					if gotOut[i] != wantOut[i] {
						t.Fatalf("change %d fed borrowed events:\n%s\nfed their own:\n%s", i, gotOut[i], wantOut[i])
					}
				}
				t.Fatalf("%d changes fed borrowed events, %d fed their own", len(gotOut), len(wantOut))
			}
		})
	}
}

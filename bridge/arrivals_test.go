package bridge

import (
	"strconv"
	"testing"
	"time"
)

func TestArrivals_StampTakeAndTombstone(t *testing.T) {
	a := newArrivals(100, time.Minute)
	t0 := time.Unix(1000, 0)
	a.stamp("r1", t0)
	if got := a.take("r1", t0.Add(time.Second)); !got.Equal(t0) {
		t.Errorf("take r1 = %v, want its stamp %v", got, t0)
	}
	if got := a.take("r1", t0.Add(2*time.Second)); !got.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("second take r1 = %v, want now: a stamp is taken once", got)
	}
	// Taken before its stamp landed: now, and the late stamp is dropped.
	a.stamp("r1", t0.Add(3*time.Second))
	if len(a.at) != 0 {
		t.Errorf("the late stamp stayed: %v", a.at)
	}
	// A reply subject used twice keeps the older stamp.
	a.stamp("r2", t0)
	a.stamp("r2", t0.Add(time.Second))
	if got := a.take("r2", t0.Add(5*time.Second)); !got.Equal(t0) {
		t.Errorf("take r2 = %v, want the older stamp %v", got, t0)
	}
	// No reply subject: nothing kept, now returned.
	a.stamp("", t0)
	if got := a.take("", t0.Add(time.Second)); !got.Equal(t0.Add(time.Second)) || len(a.at) != 0 {
		t.Errorf("take without reply = %v, entries %d", got, len(a.at))
	}
}

func TestArrivals_Bounded(t *testing.T) {
	const max = 10
	a := newArrivals(max, time.Minute)
	t0 := time.Unix(1000, 0)
	for i := range 1000 {
		a.stamp("r"+strconv.Itoa(i), t0)
		if len(a.at) > max || len(a.order) > 2*max+1 {
			t.Fatalf("after %d stamps: %d entries, order %d", i+1, len(a.at), len(a.order))
		}
	}
	if got := a.take("r999", t0.Add(time.Second)); !got.Equal(t0) {
		t.Errorf("the newest stamp was evicted")
	}
	if got := a.take("r0", t0.Add(time.Second)); !got.Equal(t0.Add(time.Second)) {
		t.Errorf("the oldest stamp was kept past the bound")
	}
	// Past maxAge, entries go at the next stamp.
	b := newArrivals(max, time.Second)
	b.stamp("old", t0)
	b.stamp("new", t0.Add(2*time.Second))
	if _, ok := b.at["old"]; ok || len(b.at) != 1 {
		t.Errorf("an entry older than maxAge stayed: %v", b.at)
	}
}

// BenchmarkArrivals is the cost every request pays: a stamp on arrival and
// a take when its handler starts.
func BenchmarkArrivals(b *testing.B) {
	a := newArrivals(4096, time.Minute)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "_INBOX.abcdefghijklmnopqrstuv." + strconv.Itoa(i)
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k := keys[i%len(keys)]
		a.stamp(k, now)
		a.take(k, now)
	}
}

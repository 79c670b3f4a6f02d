package amiproto

import (
	"strconv"
	"testing"
)

// The set stays within two generations and never forgets one of the
// latest gaveUpGeneration IDs.
func TestGaveUpSet_BoundedKeepsRecent(t *testing.T) {
	var g gaveUpSet
	const total = 5*gaveUpGeneration + 17
	for i := range total {
		g.set(strconv.Itoa(i), i%2 == 0)
		if g.len() > 2*gaveUpGeneration {
			t.Fatalf("after %d IDs the set holds %d", i+1, g.len())
		}
	}
	for i := total - gaveUpGeneration; i < total; i++ {
		listing, ok := g.get(strconv.Itoa(i))
		if !ok || listing != (i%2 == 0) {
			t.Fatalf("recent ID %d: listing %v, held %v", i, listing, ok)
		}
	}
	if _, ok := g.get("0"); ok {
		t.Error("the oldest ID is still held")
	}
	g.del(strconv.Itoa(total - 1))
	if _, ok := g.get(strconv.Itoa(total - 1)); ok {
		t.Error("deleted ID still held")
	}
}

// lists counts the IDs held whose list started, through updates,
// deletions and generations dropped: while it is above 0 the client
// skips no event (mayskip), so a wrong count either loses list entries or
// turns skipping off for good.
func TestGaveUpSet_CountsLists(t *testing.T) {
	var g gaveUpSet
	count := func() int {
		n := 0
		for _, m := range []map[string]bool{g.cur, g.old} {
			for _, l := range m {
				if l {
					n++
				}
			}
		}
		return n
	}
	for i := range 3*gaveUpGeneration + 5 {
		id := strconv.Itoa(i)
		g.set(id, false)
		switch i % 4 {
		case 1:
			g.set(id, true) // its list started
		case 2:
			g.set(id, true)
			g.set(id, true) // counted once
		case 3:
			g.set(id, true)
			g.del(id) // the list's Complete came
		}
		if i > 10 && i%97 == 0 {
			g.set(strconv.Itoa(i-10), true) // an older ID, maybe in the old generation
		}
		if g.lists != count() {
			t.Fatalf("after ID %d: lists = %d, %d held", i, g.lists, count())
		}
	}
}

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

package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/ami-bridge/ami-bridge/amiproto"
)

// TestRelabel: each pass over the capture has Uniqueids and Linkedids of
// its own, and otherwise the capture's bytes.
func TestRelabel(t *testing.T) {
	b, err := loadBurst(filepath.Join(testRepo, capturePath))
	if err != nil {
		t.Fatal(err)
	}
	r := newRelabel(b)
	n := b.len()
	pass := func(k int) []byte {
		var out []byte
		r.span(k*n, n, func(p []byte) { out = append(out, p...) })
		return out
	}
	ids := func(raw []byte) map[string]bool {
		seen := map[string]bool{}
		rd := amiproto.NewReader(bytes.NewReader(raw))
		for {
			m, err := rd.ReadMessage()
			if err != nil {
				return seen
			}
			for _, k := range []string{"Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid", "UniqueID"} {
				if v := m.Get(k); v != "" {
					seen[v] = true
				}
			}
		}
	}
	first, second := pass(0), pass(1)
	if !bytes.Equal(first, b.buf[b.offs[0]:b.offs[n]]) {
		t.Fatal("pass 0 differs from the capture")
	}
	if len(second) != len(first) {
		t.Fatalf("pass 1 has %d bytes, pass 0 %d", len(second), len(first))
	}
	a, c := ids(first), ids(second)
	if len(a) == 0 || len(c) != len(a) {
		t.Fatalf("%d ids in pass 0, %d in pass 1", len(a), len(c))
	}
	for id := range c {
		if a[id] {
			t.Fatalf("pass 1 repeats id %s of pass 0", id)
		}
	}
	// Going back relabels back.
	if !bytes.Equal(pass(0), first) {
		t.Fatal("pass 0 again differs from the capture")
	}
}

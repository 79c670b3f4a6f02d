package main

import (
	"encoding/binary"
	"testing"
	"time"
)

// indexSpanner emits, for each span, one write naming its first event
// and its count.
type indexSpanner struct{}

func (indexSpanner) span(first, n int, emit func([]byte)) {
	emit(binary.AppendUvarint(binary.AppendUvarint(nil, uint64(first)), uint64(n)))
}

// The one pacer gives every PBX each of its events once, in order, never
// before its time (PBX i of n i/n of an interval after PBX 0), and at a
// PBX's real paces each event in its own write (unless the pacer was late:
// then what is due goes at once, as a late PBX writes it); at 12,000/s the
// events due in a tick go in one write.
func TestPaceAll(t *testing.T) {
	for _, tc := range []struct {
		pbxes, events int
		rate          float64
		perWrite      int // on time
	}{
		{50, 30, 300, 1},
		{20, 20, 1000, 1},
		{1, 600, 12000, 13}, // a tick's 12, or 13 by rounding
	} {
		type write struct {
			first, n int
			at       time.Duration
		}
		writes := make([][]write, tc.pbxes)
		emits := make([]func([]byte), tc.pbxes)
		var start time.Time
		for i := range emits {
			emits[i] = func(p []byte) {
				first, k := binary.Uvarint(p)
				n, _ := binary.Uvarint(p[k:])
				writes[i] = append(writes[i], write{int(first), int(n), time.Since(start)})
			}
		}
		start = time.Now()
		sent, secs, lag := paceAll(emits, indexSpanner{}, tc.rate, tc.events)
		if min := float64(tc.events-1) / tc.rate; secs < min {
			t.Errorf("%d×%g/s: %.3f s for %d events, less than %.3f s", tc.pbxes, tc.rate, secs, tc.events, min)
		}
		maxPerWrite := tc.perWrite + int(lag*tc.rate) // and what came due while late
		for i, ws := range writes {
			if sent[i] != tc.events {
				t.Fatalf("%d×%g/s: PBX %d: sent %d, want %d", tc.pbxes, tc.rate, i, sent[i], tc.events)
			}
			next := 0
			for _, w := range ws {
				if w.first != next || w.n < 1 || w.n > maxPerWrite {
					t.Fatalf("%d×%g/s: PBX %d: a write of events %d to %d after %d; at most %d per write", tc.pbxes, tc.rate, i, w.first, w.first+w.n-1, next-1, maxPerWrite)
				}
				last := w.first + w.n - 1 // the last in the write is the latest due
				due := time.Duration((float64(i)/float64(tc.pbxes) + float64(last)) / tc.rate * float64(time.Second))
				if w.at < due {
					t.Fatalf("%d×%g/s: PBX %d: event %d left at %v, before its time %v", tc.pbxes, tc.rate, i, last, w.at, due)
				}
				next += w.n
			}
			if next != tc.events {
				t.Fatalf("%d×%g/s: PBX %d: %d events written, want %d", tc.pbxes, tc.rate, i, next, tc.events)
			}
		}
		t.Logf("%d×%g/s: %d events each in %.3f s, lag at worst %.1f ms", tc.pbxes, tc.rate, tc.events, secs, lag*1e3)
	}
}

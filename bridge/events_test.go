package bridge

import (
	"testing"
	"time"
)

// Ami-Time from the once-a-second cache is what time.RFC3339Nano gives,
// trailing zeros and all, across second boundaries.
func TestTimeStamp_MatchesRFC3339Nano(t *testing.T) {
	var s timeStamp
	base := time.Date(2026, 12, 1, 23, 59, 58, 0, time.UTC).UnixNano()
	for _, d := range []int64{0, 1, 10, 120_000_000, 999_999_999, 1e9, 1e9 + 500, 2e9 + 123_456_789, 86_400e9 + 7} {
		at := base + d
		want := time.Unix(0, at).UTC().Format(time.RFC3339Nano)
		if got := string(s.append(nil, at)); got != want {
			t.Errorf("%d: %s, want %s", at, got, want)
		}
	}
}

// The core NATS publisher moves the ring's mark to the last event it
// published: nothing it published stays waiting (BufferEvents 0).
func TestPublisher_CoreAcknowledgesUpToTheLastPublished(t *testing.T) {
	const n = 20
	b, p := idlePBX(t, ServerConfig{}, Options{})
	for i := 1; i <= n; i++ {
		p.accept(userEvent("core", i))
	}
	done := make(chan struct{})
	go func() { // owned by the test: it ends once the closed ring is drained
		defer close(done)
		p.pub.loop()
	}()
	p.ring.close()
	<-done
	st := b.Stats()[0]
	if a := p.ring.acked(); a != n || st.BufferEvents != 0 || st.BufferBytes != 0 || st.EventsPublished != n {
		t.Fatalf("acknowledged up to %d, %d events (%d bytes) waiting, %d published; want %d, 0, 0, %d",
			a, st.BufferEvents, st.BufferBytes, st.EventsPublished, n, n)
	}
}

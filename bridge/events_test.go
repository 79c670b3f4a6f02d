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

package main

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// ackMetric is the daemon's histogram of JetStream publishes from send to
// ack (bridge.Stats.JSPublishLatency), as /metrics serves it.
const ackMetric = "jetstream_publish_duration_seconds_bucket"

// ackLatency is the send-to-ack latency over one trial, read from the
// daemon's histogram: each figure is the upper bound of the bucket it
// falls in, so "≤" that many seconds.
type ackLatency struct {
	N             float64
	P50, P99, Max float64 // seconds, bucket upper bounds; +Inf past the last
}

// scrapeAck reads the cumulative bucket counts of ackMetric, summed over
// the PBXes, by upper bound.
func scrapeAck(url string) (map[float64]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseAck(bufio.NewScanner(resp.Body))
}

// parseAck reads lines such as
// ami_bridge_jetstream_publish_duration_seconds_bucket{server="pbx1",le="0.001"} 42.
func parseAck(sc *bufio.Scanner) (map[float64]float64, error) {
	out := map[float64]float64{}
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, ackMetric+"{") {
			continue
		}
		_, after, ok := strings.Cut(line, `le="`)
		if !ok {
			continue
		}
		le, rest, ok := strings.Cut(after, `"`)
		if !ok {
			continue
		}
		bound, err1 := strconv.ParseFloat(le, 64) // "+Inf" parses
		_, val, _ := strings.Cut(rest, "} ")
		n, err2 := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad histogram line %q", line)
		}
		out[bound] += n
	}
	return out, sc.Err()
}

// ackDelta is the latency of the publishes counted between two scrapes.
func ackDelta(before, after map[float64]float64) *ackLatency {
	bounds := make([]float64, 0, len(after))
	for b := range after {
		bounds = append(bounds, b)
	}
	if len(bounds) == 0 {
		return nil
	}
	slices.Sort(bounds)
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	a := &ackLatency{N: total, P50: math.Inf(1), P99: math.Inf(1), Max: math.Inf(1)}
	if total <= 0 {
		a.P50, a.P99, a.Max = 0, 0, 0
		return a
	}
	set50, set99 := false, false
	for _, b := range bounds {
		n := after[b] - before[b]
		if !set50 && n >= 0.5*total {
			a.P50, set50 = b, true
		}
		if !set99 && n >= 0.99*total {
			a.P99, set99 = b, true
		}
		if n >= total {
			a.Max = b
			break
		}
	}
	return a
}

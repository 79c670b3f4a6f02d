package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/subjects"
)

type fakeBridge []bridge.Stats

func (f fakeBridge) Stats() []bridge.Stats { return f }

type fakeConn struct {
	status     nats.Status
	reconnects uint64
}

func (f fakeConn) Status() nats.Status { return f.status }
func (f fakeConn) Stats() nats.Statistics {
	return nats.Statistics{Reconnects: f.reconnects}
}

// bounds are the bridge's latency bounds as far as the tests below look.
var bounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01}

func hist(counts ...uint64) bridge.Histogram {
	h := bridge.Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds))}
	for i := range h.Counts {
		if i < len(counts) {
			h.Count = counts[i]
		}
		h.Counts[i] = h.Count
	}
	h.Sum = 0.5
	return h
}

// fullStats has every field set, JetStream included, so that every metric
// family appears.
func fullStats(now time.Time) fakeBridge {
	return fakeBridge{{
		Server: "pbx1", State: subjects.StateConnected, Up: true,
		EventsReceived: 110, EventsFiltered: 10, EventsPublished: 95, EventsDropped: 5, LastSeq: 100,
		LastEvent:    now.Add(-3 * time.Second),
		BufferEvents: 7, BufferCapacity: 1000, BufferBytes: 3500, BufferCapacityBytes: 1 << 20, Reconnects: 2, LoginFailures: 1,
		JetStream: true, JSRetries: 4, JSFailures: 3, JSPublishLatency: hist(1, 2, 9),
		HA: true, HAActive: true, Takeovers: 2, Gaps: 1,
		Actions:           []bridge.ActionCount{{Action: "Ping", Code: 200, Count: 6}, {Action: "other", Code: 403, Count: 1}},
		RequestsOverLimit: 8, RequestsExpired: 2, RepliesRefused: 2,
		ActionLatency: hist(0, 0, 0, 7),
		LiveState:     &bridge.StateStats{Entries: map[string]int{subjects.KindChannels: 1}, Added: map[string]uint64{}, Removed: map[string]uint64{}},
	}, {
		Server: "pbx2", State: subjects.StateAuthFailed, LoginFailures: 9, BufferCapacity: 1000,
	}}
}

func TestCollector_ExportsTheSnapshot(t *testing.T) {
	b := fullStats(time.Now())
	c := NewCollector(func() (Bridge, Conn) { return b, fakeConn{nats.RECONNECTING, 3} })
	want := `
# HELP ami_bridge_events_dropped_total Events lost after the filter: the buffer was full or NATS refused them. Each leaves a gap in Ami-Seq.
# TYPE ami_bridge_events_dropped_total counter
ami_bridge_events_dropped_total{server="pbx1"} 5
ami_bridge_events_dropped_total{server="pbx2"} 0
# HELP ami_bridge_actions_total Action requests answered, by action name (names outside a fixed list are "other") and reply code (200 for success).
# TYPE ami_bridge_actions_total counter
ami_bridge_actions_total{action="Ping",code="200",server="pbx1"} 6
ami_bridge_actions_total{action="other",code="403",server="pbx1"} 1
# HELP ami_bridge_action_replies_refused_total Action requests dropped unanswered because their reply subject is not an inbox (see nats.reply_prefixes).
# TYPE ami_bridge_action_replies_refused_total counter
ami_bridge_action_replies_refused_total{server="pbx1"} 2
ami_bridge_action_replies_refused_total{server="pbx2"} 0
# HELP ami_bridge_action_requests_dropped_total Action requests dropped, never sent to the PBX: over an action session's max_pending_requests (reason pending_limit, unanswered) or past their requester's deadline when a session was free (reason expired, a 504).
# TYPE ami_bridge_action_requests_dropped_total counter
ami_bridge_action_requests_dropped_total{reason="expired",server="pbx1"} 2
ami_bridge_action_requests_dropped_total{reason="pending_limit",server="pbx1"} 8
ami_bridge_action_requests_dropped_total{reason="expired",server="pbx2"} 0
ami_bridge_action_requests_dropped_total{reason="pending_limit",server="pbx2"} 0
# HELP ami_bridge_session_state 1 for the AMI session's current state, 0 for the others.
# TYPE ami_bridge_session_state gauge
ami_bridge_session_state{server="pbx1",state="auth_failed"} 0
ami_bridge_session_state{server="pbx1",state="connected"} 1
ami_bridge_session_state{server="pbx1",state="connecting"} 0
ami_bridge_session_state{server="pbx1",state="disconnected"} 0
ami_bridge_session_state{server="pbx1",state="stopped"} 0
ami_bridge_session_state{server="pbx2",state="auth_failed"} 1
ami_bridge_session_state{server="pbx2",state="connected"} 0
ami_bridge_session_state{server="pbx2",state="connecting"} 0
ami_bridge_session_state{server="pbx2",state="disconnected"} 0
ami_bridge_session_state{server="pbx2",state="stopped"} 0
# HELP ami_bridge_nats_reconnects_total Reconnections of the bridge's NATS connection.
# TYPE ami_bridge_nats_reconnects_total counter
ami_bridge_nats_reconnects_total 3
# HELP ami_bridge_buffer_bytes Bytes of AMI text of the events waiting in the buffer.
# TYPE ami_bridge_buffer_bytes gauge
ami_bridge_buffer_bytes{server="pbx1"} 3500
ami_bridge_buffer_bytes{server="pbx2"} 0
# HELP ami_bridge_jetstream_publish_retries_total JetStream publishes sent again, with the same Nats-Msg-Id, after a failure or a lost ack.
# TYPE ami_bridge_jetstream_publish_retries_total counter
ami_bridge_jetstream_publish_retries_total{server="pbx1"} 4
`
	names := []string{"ami_bridge_events_dropped_total", "ami_bridge_buffer_bytes", "ami_bridge_actions_total", "ami_bridge_action_replies_refused_total", "ami_bridge_action_requests_dropped_total", "ami_bridge_session_state", "ami_bridge_nats_reconnects_total", "ami_bridge_jetstream_publish_retries_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	got, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "ami_bridge_jetstream_publish_duration_seconds", "ami_bridge_seconds_since_last_event", "ami_bridge_nats_connection_state")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`ami_bridge_jetstream_publish_duration_seconds_bucket{server="pbx1",le="0.0001"} 1`,
		`ami_bridge_jetstream_publish_duration_seconds_bucket{server="pbx1",le="0.0005"} 9`,
		`ami_bridge_jetstream_publish_duration_seconds_bucket{server="pbx1",le="+Inf"} 9`,
		`ami_bridge_jetstream_publish_duration_seconds_count{server="pbx1"} 9`,
		`ami_bridge_nats_connection_state{state="reconnecting"} 1`,
		`ami_bridge_nats_connection_state{state="connected"} 0`,
		`ami_bridge_seconds_since_last_event{server="pbx1"} 3`,
	} {
		if !strings.Contains(string(got), line) {
			t.Errorf("no %s in\n%s", line, got)
		}
	}
	if strings.Contains(string(got), `jetstream_publish_duration_seconds_count{server="pbx2"}`) {
		t.Errorf("JetStream metrics for a PBX without JetStream:\n%s", got)
	}
}

func TestCollector_FollowsPrometheusConventions(t *testing.T) {
	b := fullStats(time.Now())
	c := NewCollector(func() (Bridge, Conn) { return b, fakeConn{status: nats.CONNECTED} })
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// Before the bridge exists, the collector exports nothing of its own and
// does not fail the scrape.
func TestCollector_BeforeAttach(t *testing.T) {
	c := NewCollector(func() (Bridge, Conn) { return nil, nil })
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("%d metrics before the bridge exists", n)
	}
	reg := NewRegistry(func() (Bridge, Conn) { return nil, nil })
	if _, err := reg.Gather(); err != nil {
		t.Error(err)
	}
}

// exportedNames returns the names a scrape of a full registry holds,
// histograms with their _bucket, _sum and _count series.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	b := fullStats(time.Now())
	reg := NewRegistry(func() (Bridge, Conn) { return b, fakeConn{status: nats.CONNECTED} })
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" || f.GetType().String() == "SUMMARY" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

var _ prometheus.Collector = (*Collector)(nil)

// TestCollector_State: the live state's counters, per kind where they
// have one, only for a PBX with state on.
func TestCollector_State(t *testing.T) {
	b := fakeBridge{{
		Server: "pbx1", State: subjects.StateConnected, Up: true,
		LiveState: &bridge.StateStats{
			Entries:         map[string]int{subjects.KindChannels: 4, subjects.KindCalls: 2},
			Reconciliations: 3,
			Added:           map[string]uint64{subjects.KindChannels: 5},
			Removed:         map[string]uint64{subjects.KindChannels: 1, subjects.KindBridges: 2},
			ClosedUnseen:    1, Records: 7, RecordsLost: 0, Writes: 40, WriteErrors: 2,
		},
	}, {Server: "pbx2", State: subjects.StateConnected}}
	c := NewCollector(func() (Bridge, Conn) { return b, fakeConn{status: nats.CONNECTED} })
	got, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "ami_bridge_state_entries", "ami_bridge_state_reconciled_total",
		"ami_bridge_state_reconciliations_total", "ami_bridge_call_records_total", "ami_bridge_calls_closed_unseen_total",
		"ami_bridge_state_writes_total", "ami_bridge_state_write_errors_total", "ami_bridge_call_records_lost_total")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`ami_bridge_state_entries{kind="channels",server="pbx1"} 4`,
		`ami_bridge_state_entries{kind="calls",server="pbx1"} 2`,
		`ami_bridge_state_entries{kind="queues",server="pbx1"} 0`,
		`ami_bridge_state_reconciled_total{change="added",kind="channels",server="pbx1"} 5`,
		`ami_bridge_state_reconciled_total{change="removed",kind="bridges",server="pbx1"} 2`,
		`ami_bridge_state_reconciliations_total{server="pbx1"} 3`,
		`ami_bridge_call_records_total{server="pbx1"} 7`,
		`ami_bridge_calls_closed_unseen_total{server="pbx1"} 1`,
		`ami_bridge_state_writes_total{server="pbx1"} 40`,
		`ami_bridge_state_write_errors_total{server="pbx1"} 2`,
		`ami_bridge_call_records_lost_total{server="pbx1"} 0`,
	} {
		if !strings.Contains(string(got), line+"\n") {
			t.Errorf("no %s in\n%s", line, got)
		}
	}
	if strings.Contains(string(got), `server="pbx2"`) {
		t.Errorf("state metrics for a PBX without state:\n%s", got)
	}
}

// Package metrics exports the bridge's per-PBX Stats and the state of its
// NATS connection as Prometheus metrics. Nothing is counted here: the
// collector reads snapshots at scrape time, so the event path never calls
// into Prometheus and /metrics shows the numbers the status subject shows.
package metrics

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ami-bridge/ami-bridge/bridge"
	"github.com/ami-bridge/ami-bridge/subjects"
)

// Bridge is what the collector reads of the bridge: *bridge.Bridge.
type Bridge interface {
	Stats() []bridge.Stats
}

// Conn is what the collector reads of the NATS connection: *nats.Conn.
type Conn interface {
	Status() nats.Status
	Stats() nats.Statistics
}

// Source returns the bridge and NATS connection to read, or nils while
// the process is still starting.
type Source func() (Bridge, Conn)

// SessionStates are the values of the state label of
// ami_bridge_session_state, one gauge each.
var SessionStates = []string{subjects.StateConnecting, subjects.StateConnected, subjects.StateDisconnected, subjects.StateAuthFailed, subjects.StateStopped}

// NATSStates are the values of the state label of
// ami_bridge_nats_connection_state.
var NATSStates = []nats.Status{nats.CONNECTING, nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED, nats.DRAINING_SUBS, nats.DRAINING_PUBS}

const (
	ns     = "ami_bridge"
	server = "server" // the label of every per-PBX metric
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

var (
	eventsReceived  = desc("events_received_total", "Events read from the PBX's AMI session, filtered or not.", server)
	eventsFiltered  = desc("events_filtered_total", "Events left out by the event filter; they take no Ami-Seq.", server)
	eventsPublished = desc("events_published_total", "Events handed to NATS (with JetStream: acknowledged).", server)
	eventsDropped   = desc("events_dropped_total", "Events lost after the filter: the buffer was full or NATS refused them. Each leaves a gap in Ami-Seq.", server)
	lastSeq         = desc("last_seq", "The Ami-Seq of the last event this process published (JetStream: acknowledged), as the status's last_seq; with HA in the PBX's numbering.", server)
	lastEventAge    = desc("seconds_since_last_event", "Seconds since the PBX's last event, or since the process started when none came yet.", server)
	bufferEvents    = desc("buffer_events", "Events waiting in the buffer for the publisher (with JetStream: for their ack).", server)
	bufferCapacity  = desc("buffer_capacity_events", "The event buffer's bound in events; past it events are dropped.", server)
	bufferBytes     = desc("buffer_bytes", "Bytes of AMI text of the events waiting in the buffer.", server)
	bufferCapBytes  = desc("buffer_capacity_bytes", "The event buffer's bound in bytes; past it events are dropped.", server)
	sessionState    = desc("session_state", "1 for the AMI session's current state, 0 for the others.", server, "state")
	reconnects      = desc("reconnects_total", "AMI sessions established after the first.", server)
	loginFailures   = desc("login_failures_total", "AMI logins the PBX refused.", server)
	actions         = desc("actions_total", "Action requests answered, by action name (names outside a fixed list are \"other\") and reply code (200 for success).", server, "action", "code")
	repliesRefused  = desc("action_replies_refused_total", "Action requests dropped unanswered because their reply subject is not an inbox (see nats.reply_prefixes).", server)
	requestsDropped = desc("action_requests_dropped_total", "Action requests dropped, never sent to the PBX: over an action session's max_pending_requests (reason pending_limit, unanswered) or past their requester's deadline when a session was free (reason expired, a 504).", server, "reason")
	actionDuration  = desc("action_duration_seconds", "Action requests from arrival to the first reply.", server)
	jsDuration      = desc("jetstream_publish_duration_seconds", "JetStream publishes from send to ack.", server)
	jsRetries       = desc("jetstream_publish_retries_total", "JetStream publishes sent again, with the same Nats-Msg-Id, after a failure or a lost ack.", server)
	jsFailures      = desc("jetstream_publish_failures_total", "Events JetStream had not acknowledged at the shutdown deadline.", server)
	haActive        = desc("ha_active", "With HA: 1 while this process is the PBX's active bridge, 0 while standby.", server)
	haTakeovers     = desc("ha_takeovers_total", "With HA: times this process became the PBX's active bridge.", server)
	haGaps          = desc("ha_gaps_total", "With HA: Ami-Seq ranges this process found lost at a takeover (the new active could not find the stream's last event in its buffer).", server)
	stateEntries    = desc("state_entries", "With state: live entries in the state bucket, by kind (channels, bridges, queues, devices, calls).", server, "kind")
	stateRecons     = desc("state_reconciliations_total", "With state: reconciliations with the PBX's lists, one after each login of the event session.", server)
	stateReconciled = desc("state_reconciled_total", "With state: entries the reconciliations added (found in the PBX's lists only) or removed (gone from them), by kind.", server, "kind", "change")
	stateWrites     = desc("state_writes_total", "With state: KV puts and deletes written to the state bucket.", server)
	stateErrors     = desc("state_write_errors_total", "With state: failed KV writes and call record publishes; each is retried.", server)
	callRecords     = desc("call_records_total", "With state: call records published.", server)
	callsUnseen     = desc("calls_closed_unseen_total", "With state: calls closed without their end seen (by a reconciliation or a takeover), published with end_seen false.", server)
	recordsLost     = desc("call_records_lost_total", "With state: finished call records dropped over the bound the writer holds while NATS is away.", server)
	natsState       = desc("nats_connection_state", "1 for the NATS connection's current state, 0 for the others.", "state")
	natsReconnects  = desc("nats_reconnects_total", "Reconnections of the bridge's NATS connection.")

	all = []*prometheus.Desc{
		eventsReceived, eventsFiltered, eventsPublished, eventsDropped, lastSeq, lastEventAge, bufferEvents, bufferCapacity, bufferBytes, bufferCapBytes,
		sessionState, reconnects, loginFailures, actions, repliesRefused, requestsDropped, actionDuration, jsDuration, jsRetries, jsFailures,
		haActive, haTakeovers, haGaps, natsState, natsReconnects,
		stateEntries, stateRecons, stateReconciled, stateWrites, stateErrors, callRecords, callsUnseen, recordsLost,
	}
)

// Collector is a prometheus.Collector of the bridge's metrics.
type Collector struct {
	src   Source
	start time.Time
}

// NewCollector returns a collector that reads src at every scrape.
func NewCollector(src Source) *Collector {
	return &Collector{src: src, start: time.Now()}
}

// Describe sends every metric the collector may export.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range all {
		ch <- d
	}
}

// Collect reads one snapshot and sends its metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	b, nc := c.src()
	if nc != nil {
		collectNATS(ch, nc)
	}
	if b == nil {
		return
	}
	now := time.Now()
	for _, st := range b.Stats() {
		c.collectServer(ch, st, now)
	}
}

func collectNATS(ch chan<- prometheus.Metric, nc Conn) {
	status := nc.Status()
	for _, s := range NATSStates {
		ch <- gauge(natsState, boolValue(s == status), strings.ToLower(s.String()))
	}
	ch <- prometheus.MustNewConstMetric(natsReconnects, prometheus.CounterValue, float64(nc.Stats().Reconnects))
}

func (c *Collector) collectServer(ch chan<- prometheus.Metric, st bridge.Stats, now time.Time) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{st.Server}, labels...)...)
	}
	counter(eventsReceived, st.EventsReceived)
	counter(eventsFiltered, st.EventsFiltered)
	counter(eventsPublished, st.EventsPublished)
	counter(eventsDropped, st.EventsDropped)
	counter(reconnects, st.Reconnects)
	counter(loginFailures, st.LoginFailures)
	counter(repliesRefused, st.RepliesRefused)
	for _, a := range st.Actions {
		counter(actions, a.Count, a.Action, strconv.Itoa(a.Code))
	}
	counter(requestsDropped, st.RequestsOverLimit, "pending_limit")
	counter(requestsDropped, st.RequestsExpired, "expired")
	ch <- gauge(lastSeq, float64(st.LastSeq), st.Server)
	last := st.LastEvent
	if last.IsZero() {
		last = c.start
	}
	ch <- gauge(lastEventAge, now.Sub(last).Seconds(), st.Server)
	ch <- gauge(bufferEvents, float64(st.BufferEvents), st.Server)
	ch <- gauge(bufferCapacity, float64(st.BufferCapacity), st.Server)
	ch <- gauge(bufferBytes, float64(st.BufferBytes), st.Server)
	ch <- gauge(bufferCapBytes, float64(st.BufferCapacityBytes), st.Server)
	for _, s := range SessionStates {
		ch <- gauge(sessionState, boolValue(s == st.State), st.Server, s)
	}
	ch <- histogram(actionDuration, st.ActionLatency, st.Server)
	if st.JetStream {
		counter(jsRetries, st.JSRetries)
		counter(jsFailures, st.JSFailures)
		ch <- histogram(jsDuration, st.JSPublishLatency, st.Server)
	}
	if ls := st.LiveState; ls != nil {
		for _, k := range stateKinds {
			ch <- gauge(stateEntries, float64(ls.Entries[k]), st.Server, k)
			counter(stateReconciled, ls.Added[k], k, "added")
			counter(stateReconciled, ls.Removed[k], k, "removed")
		}
		counter(stateRecons, ls.Reconciliations)
		counter(stateWrites, ls.Writes)
		counter(stateErrors, ls.WriteErrors)
		counter(callRecords, ls.Records)
		counter(callsUnseen, ls.ClosedUnseen)
		counter(recordsLost, ls.RecordsLost)
	}
	if st.HA {
		ch <- gauge(haActive, boolValue(st.HAActive), st.Server)
		counter(haTakeovers, st.Takeovers)
		counter(haGaps, st.Gaps)
	}
}

// stateKinds are the values of the kind label of the state metrics.
var stateKinds = []string{subjects.KindChannels, subjects.KindBridges, subjects.KindQueues, subjects.KindDevices, subjects.KindCalls}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func histogram(d *prometheus.Desc, h bridge.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b] = h.Counts[i]
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// NewRegistry returns a registry with the bridge's collector and the Go
// runtime and process collectors.
func NewRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

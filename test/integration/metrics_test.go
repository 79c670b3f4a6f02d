package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ami-bridge/ami-bridge/amiproto/amitest"
)

// withHTTP turns the bridge's HTTP listener on, on a free port, through
// the environment (the file keys stay the harness's).
func withHTTP(cfg bridgeConfig, env ...string) bridgeConfig {
	cfg.extraEnv = append(cfg.extraEnv, append([]string{"AMI_BRIDGE_HTTP__LISTEN=127.0.0.1:0"}, env...)...)
	return cfg
}

var metricsURL = regexp.MustCompile(`"metrics_url":"(http://[^"]+)/metrics"`)

// httpBase waits for the bridge to log its listener and returns its base
// URL.
func (b *bridgeProc) httpBase(t *testing.T) string {
	t.Helper()
	b.log.waitFor(t, `"metrics_url"`, readyTimeout, b.done)
	m := metricsURL.FindSubmatch(b.log.Bytes())
	if m == nil {
		t.Fatalf("no metrics URL in the log:\n%s", truncate(b.log.Bytes(), 4096))
	}
	return string(m[1])
}

// httpGet returns the status code and body of url, failing the test on
// any error and on a body that holds a secret of the world.
func (w *world) httpGet(url string) (int, string) {
	w.t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		w.t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatalf("GET %s: %v", url, err)
	}
	if s := w.leakedSecret(body); s != "" {
		w.t.Errorf("GET %s: the body holds the secret %q", url, s)
	}
	for k, vs := range resp.Header {
		if s := w.leakedSecret([]byte(k + ": " + strings.Join(vs, ","))); s != "" {
			w.t.Errorf("GET %s: a header holds the secret %q", url, s)
		}
	}
	return resp.StatusCode, string(body)
}

// scrape is one parsed /metrics.
type scrape map[string]*dto.MetricFamily

func (w *world) scrape(base string) scrape {
	w.t.Helper()
	code, body := w.httpGet(base + "/metrics")
	if code != http.StatusOK {
		w.t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		w.t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	return fams
}

// value returns the value of the series of name whose labels include
// labels ("k=v" pairs), 0 when there is none: a counter not yet
// incremented is absent.
func (s scrape) value(name string, labels ...string) float64 {
	f := s[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// TestMetrics_CountersMatchUnderLoad runs the call generator against the
// daemon and, at the same time, events the filter drops, events too large
// for NATS (dropped) and actions of every outcome, then checks that the
// counters scraped from /metrics moved by what amitest sent and the test
// received.
func TestMetrics_CountersMatchUnderLoad(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{maxPayload: 16 << 10})
	p := w.startPBX("load", amitest.Config{Profile: amitest.Asterisk22})
	sc := w.serverFor("load", p, viaEnv)
	sc.Events = &eventsConfig{Exclude: []string{"ItNoise"}}
	b := w.startBridge(withHTTP(w.config(sc)))
	base := b.httpBase(t)
	w.waitReady("load")

	// Everything before the first mark is published: the baseline.
	p.emit("ItMark", "Tag", "start")
	i0, _ := w.waitEvent(0, "ami.load.event.ItMark")
	before := w.scrape(base)
	server := "server=load"

	const calls, noise, large = 300, 40, 7
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gen := p.StartCalls(ctx, 150, calls)
	big := strings.Repeat("x", 20<<10) // one 20 KiB line: over the 16 KiB max payload once in JSON
	for i := range noise {
		p.emit("ItNoise", "N", fmt.Sprint(i))
		if i < large {
			p.emit("ItLarge", "Blob", big)
		}
	}
	actions := []struct {
		body   string
		code   int
		labels []string
	}{
		{`{"Action":"Ping"}`, 200, []string{"action=Ping", "code=200"}},
		{`{"Action":"CoreStatus"}`, 200, []string{"action=CoreStatus", "code=200"}},
		{`{"Action":"Events","EventMask":"off"}`, 403, []string{"action=Events", "code=403"}},
		{`{"Action":"NoSuchThing"}`, 422, []string{"action=other", "code=422"}},
		{`{"Action":`, 400, []string{"action=other", "code=400"}},
	}
	const rounds = 4
	for range rounds {
		for _, a := range actions {
			r := w.request("load", a.body)
			if a.code == 200 {
				wantSuccess(t, r)
			} else {
				wantCode(t, r, a.code)
			}
		}
	}
	if err := gen.Wait(); err != nil {
		t.Fatalf("call generator: %v", err)
	}
	_, genEvents, _ := gen.Count()
	p.emit("ItMark", "Tag", "end")
	iEnd, _ := w.events.waitFor(t, i0+1, eventTimeout, "the end mark", func(m *nats.Msg) bool {
		return m.Subject == "ami.load.event.ItMark"
	})
	received := 0
	for _, m := range w.events.snapshot()[i0+1 : iEnd+1] {
		if strings.HasPrefix(m.Subject, "ami.load.event.") {
			received++
		}
	}
	after := w.scrape(base)

	delta := func(name string) int64 {
		return int64(after.value(name, server) - before.value(name, server))
	}
	sent := genEvents + noise + large + 1 // the generator's, the test's, the end mark
	for _, c := range []struct {
		name string
		want int64
	}{
		{"ami_bridge_events_received_total", sent},
		{"ami_bridge_events_filtered_total", noise},
		{"ami_bridge_events_dropped_total", large},
		{"ami_bridge_events_published_total", genEvents + 1},
		{"ami_bridge_last_seq", genEvents + large + 1},
	} {
		if got := delta(c.name); got != c.want {
			t.Errorf("%s moved by %d, want %d", c.name, got, c.want)
		}
	}
	if got := delta("ami_bridge_events_published_total"); got != int64(received) {
		t.Errorf("published moved by %d, the subscriber received %d", got, received)
	}
	for _, a := range actions {
		labels := append([]string{server}, a.labels...)
		if got := after.value("ami_bridge_actions_total", labels...); got != rounds {
			t.Errorf("ami_bridge_actions_total%v = %v, want %d", a.labels, got, rounds)
		}
	}
	if got := after.value("ami_bridge_action_duration_seconds", server); got != rounds*float64(len(actions)) {
		t.Errorf("action latency count %v, want %d", got, rounds*len(actions))
	}
	for name, labels := range map[string][]string{
		"ami_bridge_session_state":          {server, "state=connected"},
		"ami_bridge_nats_connection_state":  {"state=connected"},
		"ami_bridge_buffer_capacity_events": {server},
	} {
		if after.value(name, labels...) == 0 {
			t.Errorf("%s%v is 0", name, labels)
		}
	}
	if after["go_goroutines"] == nil || after["process_resident_memory_bytes"] == nil {
		t.Errorf("no Go runtime or process metrics")
	}
	t.Logf("sent %d events (%d from %d calls), received %d, %d actions", sent, genEvents, calls, received, rounds*len(actions))
}

// operationsBlocks returns the blocks of docs/operations.md's "Endpoints
// and probes": the http config, the curl session, the Kubernetes probes
// and the Prometheus scrape job.
func operationsBlocks(t *testing.T) []string {
	t.Helper()
	blocks := docBlocks(t, docPage("operations.md"), "## Endpoints and probes")
	if len(blocks) < 4 {
		t.Fatal(`docs/operations.md: "## Endpoints and probes" needs the http config, the curl session, the probes and the scrape job`)
	}
	return blocks
}

// TestReadyz_FlipsWithAPBX stops a PBX and starts it again on the same
// port: /readyz of a bridge that needs every PBX goes 503 and back to 200,
// one that needs any stays 200, and /healthz stays 200 throughout. The
// first is configured with docs/operations.md's http block.
func TestReadyz_FlipsWithAPBX(t *testing.T) {
	t.Parallel()
	w := newWorld(t, natsOptions{})
	p1 := w.startPBX("r1", amitest.Config{Profile: amitest.Asterisk22})
	p2 := w.startPBX("r2", amitest.Config{Profile: amitest.Asterisk13})
	cfg := w.config(w.serverFor("r1", p1, viaEnv), w.serverFor("r2", p2, viaFile))
	// ready: all is docs/operations.md's http block, on a free port.
	docCfg := cfg
	docCfg.docYAML = replaceAll(t, operationsBlocks(t)[0], "127.0.0.1:7038", "127.0.0.1:0")
	all := w.startBridge(docCfg).httpBase(t)
	anyOne := w.startBridge(withHTTP(cfg, "AMI_BRIDGE_HTTP__READY=any")).httpBase(t)
	w.waitConnected("r1", "r2")

	waitReadyz := func(base string, code int, substr string) {
		t.Helper()
		deadline := time.Now().Add(readyTimeout)
		for {
			got, body := w.httpGet(base + "/readyz")
			if got == code && strings.Contains(body, substr) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s/readyz: %d %q, want %d with %q", base, got, body, code, substr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	healthy := func() {
		t.Helper()
		for _, base := range []string{all, anyOne} {
			if code, body := w.httpGet(base + "/healthz"); code != 200 {
				t.Errorf("%s/healthz: %d %q", base, code, body)
			}
		}
	}
	waitReadyz(all, 200, "ready\nnats connected\nr1 connected\nr2 connected\n")
	waitReadyz(anyOne, 200, "r2 connected")
	healthy()

	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}
	waitReadyz(all, 503, "not ready\nnats connected\nr1 connected\nr2 ")
	// The other daemon sees r2 go down in its own time: wait for it, and
	// it must stay ready meanwhile.
	for deadline := time.Now().Add(readyTimeout); ; time.Sleep(20 * time.Millisecond) {
		code, body := w.httpGet(anyOne + "/readyz")
		if code != 200 {
			t.Fatalf("ready any with r2 down: %d %q, want 200", code, body)
		}
		if !strings.Contains(body, "r2 connected") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready any still says r2 connected: %q", body)
		}
	}
	if s := w.scrape(all); s.value("ami_bridge_session_state", "server=r2", "state=connected") != 0 {
		t.Errorf("r2 down but its session_state connected is 1")
	}
	healthy()

	p2.start()
	waitReadyz(all, 200, "r2 connected")
	s := w.scrape(all)
	if s.value("ami_bridge_session_state", "server=r2", "state=connected") != 1 || s.value("ami_bridge_reconnects_total", "server=r2") != 1 {
		t.Errorf("after r2 came back: session_state %v, reconnects %v", s.value("ami_bridge_session_state", "server=r2", "state=connected"), s.value("ami_bridge_reconnects_total", "server=r2"))
	}
	healthy()
}

// checkEndpointsHoldNoSecret reads every endpoint of the listener at
// base, and a few paths that are none: no form of a secret of the world
// may appear (httpGet checks each body and header). /metrics must show
// every PBX, so that the check covers their labels.
func (w *world) checkEndpointsHoldNoSecret(base string, servers ...string) {
	w.t.Helper()
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/", "/metrics?debug=1", "/" + servers[0]} {
		code, body := w.httpGet(base + path)
		if path != "/metrics" {
			continue
		}
		if code != http.StatusOK {
			w.t.Errorf("/metrics: %d", code)
		}
		for _, s := range servers {
			if !strings.Contains(body, `server="`+s+`"`) {
				w.t.Errorf("/metrics does not show %s:\n%s", s, truncate([]byte(body), 2048))
			}
		}
	}
}

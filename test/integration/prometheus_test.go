package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The deploy files are checked against a real Prometheus here: it scrapes
// an HA pair of bridges, evaluates the alert rules, and runs every query
// of the Grafana dashboard. Debian's prometheus package provides the
// binary (.ci/run installs it). Without it the test skips, except under
// CI (CI set, as CI runners do and .ci/run does), where it fails.

const (
	deployDir = "../../deploy"
	// promTimeout bounds each wait on Prometheus: its start, two scrapes
	// of each target, one evaluation of the rules.
	promTimeout = 30 * time.Second
)

// dashboardVars are the values the queries get for Grafana's variables:
// every instance and server, and a rate window over several 1 s scrapes.
var dashboardVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$instance", ".*",
	"$server", ".*",
)

// labelValues is Grafana's variable query, not PromQL: its selector runs
// as a query whose series must carry the label.
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

func prometheusBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("no prometheus on PATH under CI (.ci/run installs Debian's package): %v", err)
	}
	t.Skipf("no prometheus on PATH (apt-get install prometheus); CI runs this test: %v", err)
	return ""
}

// promServer is a Prometheus process of the test.
type promServer struct {
	t    *testing.T
	base string // http://127.0.0.1:port
	log  bytes.Buffer
}

// startPrometheus starts Prometheus scraping targets (host:port) every
// second and loading the alert rules of deploy/; the test's cleanup stops
// it and waits for it.
func startPrometheus(t *testing.T, targets ...string) *promServer {
	t.Helper()
	bin := prometheusBinary(t)
	dir := t.TempDir()
	rules, err := filepath.Abs(filepath.Join(deployDir, "prometheus", "ami-bridge-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	checkDocsAlerts(t, rules)
	// The scrape job is docs/operations.md's, with the test's targets.
	job := replaceAll(t, operationsBlocks(t)[3], `"bridge-host:7038"`, strings.Join(quoted, ", "))
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
%s
`, rules, job)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := &promServer{t: t, base: "http://" + addr}
	cmd := exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = &p.log, &p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	// The process is owned by the test: the cleanup kills it and waits.
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("prometheus log:\n%s", truncate(p.log.Bytes(), 4096))
		}
	})
	return p
}

// api GETs /api/v1/<path> and decodes its data into out; a non-success
// answer is returned as an error with Prometheus's message.
func (p *promServer) api(path string, params url.Values, out any) error {
	u := p.base + "/api/v1/" + path
	if params != nil {
		u += "?" + params.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: HTTP %d: %v", path, resp.StatusCode, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.ErrorType, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

// until polls cond every 100 ms until it holds, failing the test after
// promTimeout with cond's last word.
func (p *promServer) until(what string, cond func() (bool, string)) {
	p.t.Helper()
	deadline := time.Now().Add(promTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("Prometheus: no %s after %v: %s", what, promTimeout, last)
		}
		<-tick.C
	}
}

// promSeries is one series of an instant query's vector.
type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (p *promServer) query(q string) ([]promSeries, error) {
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSeries `json:"result"`
	}
	if err := p.api("query", url.Values{"query": {q}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %q, want vector", data.ResultType)
	}
	return data.Result, nil
}

// dashboardQueries returns the PromQL of every panel target, by panel
// title, and the variables' definitions.
func dashboardQueries(t *testing.T) (panels map[string][]string, vars []string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir, "grafana", "ami-bridge.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	panels = map[string][]string{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			panels[p.Title] = append(panels[p.Title], tg.Expr)
		}
		if len(panels[p.Title]) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			vars = append(vars, v.Definition)
		}
	}
	if len(panels) == 0 || len(vars) == 0 {
		t.Fatalf("dashboard: %d panels, %d variables: is it parsed right?", len(panels), len(vars))
	}
	return panels, vars
}

// TestPrometheus_DashboardAndRules runs an HA pair of bridges with
// JetStream (so that every metric family of the dashboard exists), has a
// real Prometheus scrape both and evaluate the alert rules, then runs
// every dashboard query: each must succeed and return series, and the HA
// panel must show one active and one standby instance.
func TestPrometheus_DashboardAndRules(t *testing.T) {
	prometheusBinary(t) // skip before starting anything
	r := newHARig(t)
	r.cfg = withHTTP(r.cfg)
	a, b := r.startPair()
	var targets []string
	for _, br := range []*haBridge{a, b} {
		targets = append(targets, strings.TrimPrefix(br.httpBase(t), "http://"))
	}
	for i := range 10 {
		r.pbx.emit("ItProm", "Index", strconv.Itoa(i))
	}
	if rep := r.w.request("ha1", `{"Action":"Ping"}`); rep.Code != 0 {
		t.Fatalf("Ping: %+v", rep)
	}

	p := startPrometheus(t, targets...)
	p.until("healthy targets", func() (bool, string) {
		var data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := p.api("targets", nil, &data); err != nil {
			return false, err.Error()
		}
		up := 0
		for _, tg := range data.ActiveTargets {
			if tg.Health == "up" {
				up++
			}
		}
		return up == len(targets), fmt.Sprintf("%+v", data.ActiveTargets)
	})
	// rate() and increase() need two samples in their window.
	p.until("two scrapes of each target", func() (bool, string) {
		res, err := p.query(`count_over_time(up{job="ami-bridge"}[1m]) >= 2`)
		if err != nil {
			return false, err.Error()
		}
		return len(res) == len(targets), fmt.Sprintf("%+v", res)
	})
	p.until("evaluation of every alert rule", func() (bool, string) {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name           string    `json:"name"`
					Health         string    `json:"health"`
					LastError      string    `json:"lastError"`
					LastEvaluation time.Time `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := p.api("rules", nil, &data); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, g := range data.Groups {
			for _, rule := range g.Rules {
				if rule.Health == "err" {
					t.Fatalf("rule %s: %s", rule.Name, rule.LastError)
				}
				if rule.Health != "ok" || rule.LastEvaluation.IsZero() {
					return false, fmt.Sprintf("%s: %q", rule.Name, rule.Health)
				}
				n++
			}
		}
		return n > 0, fmt.Sprintf("%d rules", n)
	})

	panels, vars := dashboardQueries(t)
	for title, exprs := range panels {
		for _, e := range exprs {
			q := dashboardVars.Replace(e)
			if strings.Contains(q, "$") {
				t.Errorf("panel %q: a variable the test does not know in %q", title, q)
				continue
			}
			res, err := p.query(q)
			switch {
			case err != nil:
				t.Errorf("panel %q: %s: %v", title, q, err)
			case len(res) == 0:
				t.Errorf("panel %q: %s: no series", title, q)
			}
		}
	}
	for _, v := range vars {
		m := labelValues.FindStringSubmatch(dashboardVars.Replace(v))
		if m == nil {
			t.Errorf("variable %q: not label_values(selector, label)", v)
			continue
		}
		res, err := p.query(m[1])
		if err != nil || len(res) == 0 {
			t.Errorf("variable %q: %d series, %v", v, len(res), err)
		}
		for _, s := range res {
			if s.Metric[m[2]] == "" {
				t.Errorf("variable %q: a series without %s: %v", v, m[2], s.Metric)
			}
		}
	}

	// The HA panel: one active (1) and one standby (0) instance of ha1.
	res, err := p.query(dashboardVars.Replace(panels["HA: active bridge per PBX"][0]))
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, s := range res {
		roles[s.Metric["instance"]] = fmt.Sprint(s.Value[1])
	}
	if len(res) != 2 || roles[targets[0]] != "1" || roles[targets[1]] != "0" {
		t.Errorf("ha_active by instance: %v; want %s active (1), %s standby (0)", roles, targets[0], targets[1])
	}
}

// alertRule is what docs/operations.md shows of an alerting rule.
type alertRule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
	For   string `yaml:"for"`
}

// checkDocsAlerts compares the rules of docs/operations.md's "Alerts and
// dashboard" with those of the rules file Prometheus loads: the same
// alerts, expressions and durations.
func checkDocsAlerts(t *testing.T, rulesFile string) {
	t.Helper()
	blocks := docBlocks(t, docPage("operations.md"), "## Alerts and dashboard")
	if len(blocks) == 0 {
		t.Fatal(`docs/operations.md: no block in "## Alerts and dashboard"`)
	}
	var doc []alertRule
	if err := yaml.Unmarshal([]byte(blocks[0]), &doc); err != nil {
		t.Fatalf("docs/operations.md's rules: %v", err)
	}
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	var rules []alertRule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	norm := func(rs []alertRule) []alertRule {
		for i := range rs {
			rs[i].Expr = strings.TrimSpace(rs[i].Expr)
		}
		return rs
	}
	if d, f := norm(doc), norm(rules); !slices.Equal(d, f) {
		t.Errorf("docs/operations.md's rules differ from %s:\n%+v\n%+v", rulesFile, d, f)
	}
}

package metrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// deployDir holds the dashboard and the alert rules shipped with the
// bridge.
const deployDir = "../../../../deploy"

// metricName finds the names of this exporter in a PromQL expression.
var metricName = regexp.MustCompile(`\b(?:ami_bridge|go|process)_[a-zA-Z0-9_:]+`)

// checkNames fails the test for every metric of exprs that the exporter
// does not export, and when exprs name none at all.
func checkNames(t *testing.T, file string, exprs []string) {
	t.Helper()
	exported := exportedNames(t)
	seen := 0
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			seen++
			if !exported[name] {
				t.Errorf("%s: %s is not exported (in %q)", file, name, e)
			}
		}
	}
	if seen == 0 {
		t.Errorf("%s: no metric found: is the file parsed right?", file)
	}
}

// deployFiles returns the contents of the files of deployDir matching
// pattern, by name; none is an error.
func deployFiles(t *testing.T, pattern string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir, pattern))
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s under %s: %v", pattern, deployDir, err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = data
	}
	return out
}

func TestDeploy_DashboardMetricsAreExported(t *testing.T) {
	for f, data := range deployFiles(t, "grafana/*.json") {
		var dash any
		if err := json.Unmarshal(data, &dash); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var exprs []string
		collectStrings(dash, map[string]bool{"expr": true, "query": true, "definition": true}, &exprs)
		checkNames(t, f, exprs)
	}
}

// ruleTests is the suffix of promtool's rule unit-test files, which sit
// beside the rules they test.
const ruleTests = ".test.yml"

func TestDeploy_AlertRuleMetricsAreExported(t *testing.T) {
	for f, data := range deployFiles(t, "prometheus/*.yml") {
		if strings.HasSuffix(f, ruleTests) {
			continue
		}
		var rules struct {
			Groups []struct {
				Rules []struct {
					Alert string `yaml:"alert"`
					Expr  string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(data, &rules); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var exprs, alerts []string
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				exprs = append(exprs, r.Expr)
				alerts = append(alerts, r.Alert)
			}
		}
		checkNames(t, f, exprs)
		t.Logf("%s: alerts %q", f, alerts)
	}
}

// TestDeploy_RuleTestSeriesAreExported checks that the series the rules'
// unit tests feed (promtool test rules) are named as the exporter names
// them, so that a renamed metric cannot pass there and miss in production.
func TestDeploy_RuleTestSeriesAreExported(t *testing.T) {
	for f, data := range deployFiles(t, "prometheus/*"+ruleTests) {
		var tests struct {
			Tests []struct {
				InputSeries []struct {
					Series string `yaml:"series"`
				} `yaml:"input_series"`
			} `yaml:"tests"`
		}
		if err := yaml.Unmarshal(data, &tests); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var series []string
		for _, c := range tests.Tests {
			for _, s := range c.InputSeries {
				series = append(series, s.Series)
			}
		}
		checkNames(t, f, series)
	}
}

// collectStrings appends to out every string value under one of keys,
// anywhere in v.
func collectStrings(v any, keys map[string]bool, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && keys[k] {
				*out = append(*out, s)
			}
			collectStrings(x, keys, out)
		}
	case []any:
		for _, x := range v {
			collectStrings(x, keys, out)
		}
	}
}

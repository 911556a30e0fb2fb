package charts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// ruleFile is the alerts' one source; deploy/components/monitoring holds
// the same rules (TestChartMatchesKustomize keeps them equal).
const ruleFile = "fleetagent/files/prometheus-rules.yaml"

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func loadRules(t *testing.T) map[string]rule {
	t.Helper()
	b, err := os.ReadFile(ruleFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", ruleFile, err)
	}
	rules := map[string]rule{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if _, dup := rules[r.Alert]; dup || r.Alert == "" {
				t.Errorf("alert %q is empty or defined twice", r.Alert)
			}
			rules[r.Alert] = r
		}
	}
	return rules
}

var promParser = parser.NewParser(parser.Options{})

// metricNames returns the metric names an expression selects.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%q does not parse: %v", expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				t.Errorf("%q selects series without a metric name", expr)
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

// TestAlertsNameServedMetrics: every alert parses as PromQL and selects only
// metrics the agent's /metrics really serves; every alert has a severity,
// a summary and a description, and its annotations refer only to labels
// its expression keeps.
func TestAlertsNameServedMetrics(t *testing.T) {
	served := servedMetrics(t)
	rules := loadRules(t)
	for _, want := range []string{"FleetagentFleetBudgetExhausted", "FleetagentBreakerOpen", "FleetagentKillSwitchOn", "FleetagentStateStale", "FleetagentExportFailing", "FleetagentKubeletDown", "FleetagentKubeletScrapesFailing"} {
		if _, ok := rules[want]; !ok {
			t.Errorf("no alert %s", want)
		}
	}
	ref := regexp.MustCompile(`\$labels\.([a-z_]+)`)
	for name, r := range rules {
		for _, m := range metricNames(t, r.Expr) {
			if !served[m] {
				t.Errorf("alert %s selects %s, which the agent does not serve", name, m)
			}
		}
		if _, err := time.ParseDuration(r.For); err != nil {
			t.Errorf("alert %s: for %q: %v", name, r.For, err)
		}
		if !slices.Contains([]string{"info", "warning", "critical"}, r.Labels["severity"]) || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s: severity %q, summary %q, description %q: want all three", name, r.Labels["severity"], r.Annotations["summary"], r.Annotations["description"])
		}
		for _, a := range r.Annotations {
			for _, m := range ref.FindAllStringSubmatch(a, -1) {
				if !strings.Contains(r.Expr, m[1]) {
					t.Errorf("alert %s: an annotation uses $labels.%s, which its expression does not keep", name, m[1])
				}
			}
		}
	}
}

// TestDashboardNamesServedMetrics: every panel of the dashboard has a
// query, every query parses as PromQL and selects only metrics the
// agent's /metrics really serves.
func TestDashboardNamesServedMetrics(t *testing.T) {
	served := servedMetrics(t)
	b, err := os.ReadFile(filepath.Join("fleetagent", "files", "fleetagent-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q, %d panels", d.UID, len(d.Panels))
	}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, m := range metricNames(t, q.Expr) {
				used[m] = true
				if !served[m] {
					t.Errorf("panel %q queries %s, which the agent does not serve", p.Title, m)
				}
			}
		}
	}
	// The dashboard covers the whole self-metric surface.
	for m := range served {
		if strings.HasPrefix(m, "fleetagent_") && !used[m] {
			t.Errorf("the dashboard shows nothing of %s", m)
		}
	}
}

// alertCase is one rule unit test, as promtool's are written: input series
// in the PromQL test language's notation (one sample per minute), and the
// label sets of the alerts firing at a time.
type alertCase struct {
	name   string
	alert  string
	series string // "metric{labels} values" lines, values as in promqltest ("0+1x30", "1x30", "_")
	at     time.Duration
	firing []string // label sets of the firing alerts, as {a="b", ...}
}

// TestAlertRules evaluates each alert the way Prometheus' rule manager
// does: its expression at every evaluation (each minute) from the start,
// an alert firing once its series has been returned by every evaluation
// for at least the rule's "for". Each alert has a case that fires and one
// that must not.
func TestAlertRules(t *testing.T) {
	const pod = `namespace="fleetagent", pod="fleetagent-a"`
	const podB = `namespace="fleetagent", pod="fleetagent-b"`
	scope := `otel_scope_name="fleetagent", ` // the exporter's own labels
	cases := []alertCase{
		{name: "budget spent for 15m", alert: "FleetagentFleetBudgetExhausted", at: 40 * time.Minute, series: `
fleetagent_limiter_requests_total{` + scope + pod + `, verb="LIST", code="200"} 0+27x40
fleetagent_limiter_requests_total{` + scope + podB + `, verb="LIST", code="200"} 0+27x40
fleetagent_limiter_rate_per_second{` + scope + pod + `} 0.5x40
fleetagent_limiter_rate_per_second{` + scope + podB + `} 0.5x40`,
			firing: []string{`{}`}},
		{name: "steady state", alert: "FleetagentFleetBudgetExhausted", at: 40 * time.Minute, series: `
fleetagent_limiter_requests_total{` + scope + pod + `, verb="WATCH", code="200"} 0+0.3x40
fleetagent_limiter_rate_per_second{` + scope + pod + `} 0.01x40`},
		{name: "breaker never closes", alert: "FleetagentBreakerOpen", at: 30 * time.Minute, series: `
fleetagent_limiter_breaker_state_ratio{` + scope + pod + `} 0x5 2 1 2 1 2 1 2 1 2 1 2 1 2 2 2 2 2 2 2 2 2 2 2 2 2
fleetagent_limiter_breaker_state_ratio{` + scope + podB + `} 0x30`,
			firing: []string{`{namespace="fleetagent", pod="fleetagent-a"}`}},
		{name: "breaker closes in between", alert: "FleetagentBreakerOpen", at: 30 * time.Minute, series: `
fleetagent_limiter_breaker_state_ratio{` + scope + pod + `} 2 2 2 2 2 2 2 2 0 2 2 2 2 2 2 2 2 0 2 2 2 2 2 2 2 2 0 2 2 2 2`},
		{name: "a fifth of the fleet's breakers open", alert: "FleetagentBreakersOpenFleetWide", at: 20 * time.Minute, series: fleetBreakers(10, 2),
			firing: []string{`{}`}},
		{name: "one breaker in ten open", alert: "FleetagentBreakersOpenFleetWide", at: 20 * time.Minute, series: fleetBreakers(10, 1)},
		{name: "kill switch on", alert: "FleetagentKillSwitchOn", at: 10 * time.Minute, series: `
fleetagent_limiter_killswitch_active_ratio{` + scope + pod + `} 0 0 1x10`,
			firing: []string{`{namespace="fleetagent", pod="fleetagent-a"}`}},
		{name: "kill switch briefly on", alert: "FleetagentKillSwitchOn", at: 10 * time.Minute, series: `
fleetagent_limiter_killswitch_active_ratio{` + scope + pod + `} 0x6 1 1 1 0`},
		{name: "stale without the switch", alert: "FleetagentStateStale", at: 30 * time.Minute, series: `
fleetagent_agent_kube_state_stale_ratio{` + scope + pod + `} 1x30
fleetagent_limiter_killswitch_active_ratio{` + scope + pod + `} 0x30`,
			firing: []string{`{namespace="fleetagent", pod="fleetagent-a"}`}},
		{name: "stale because of the switch", alert: "FleetagentStateStale", at: 30 * time.Minute, series: `
fleetagent_agent_kube_state_stale_ratio{` + scope + pod + `} 1x30
fleetagent_limiter_killswitch_active_ratio{` + scope + pod + `} 1x30`},
		{name: "every export fails", alert: "FleetagentExportFailing", at: 30 * time.Minute, series: `
fleetagent_otlpexport_exports_total{` + scope + pod + `, result="success"} 0 1 2 3x30
fleetagent_otlpexport_exports_total{` + scope + pod + `, result="failure"} 0x3 0+2x27`,
			firing: []string{`{namespace="fleetagent", pod="fleetagent-a"}`}},
		{name: "some exports fail", alert: "FleetagentExportFailing", at: 30 * time.Minute, series: `
fleetagent_otlpexport_exports_total{` + scope + pod + `, result="success"} 0+1x30
fleetagent_otlpexport_exports_total{` + scope + pod + `, result="failure"} 0+1x30`},
		{name: "kubelet down", alert: "FleetagentKubeletDown", at: 20 * time.Minute, series: `
fleetagent_collector_kubelet_up_ratio{` + scope + pod + `, error_type="tls"} 0x20
fleetagent_collector_kubelet_up_ratio{` + scope + podB + `} 1x20`,
			firing: []string{`{error_type="tls", namespace="fleetagent", pod="fleetagent-a"}`}},
		{name: "kubelet back", alert: "FleetagentKubeletDown", at: 20 * time.Minute, series: `
fleetagent_collector_kubelet_up_ratio{` + scope + pod + `, error_type="timeout"} 0x15 _x5
fleetagent_collector_kubelet_up_ratio{` + scope + pod + `} _x15 1x5`},
		{name: "a third of the scrapes fail", alert: "FleetagentKubeletScrapesFailing", at: 40 * time.Minute, series: `
fleetagent_collector_kubelet_scrapes_total{` + scope + pod + `, result="success"} 0+4x40
fleetagent_collector_kubelet_scrapes_total{` + scope + pod + `, result="failure"} 0+2x40`,
			firing: []string{`{namespace="fleetagent", pod="fleetagent-a"}`}},
		{name: "a scrape fails now and then", alert: "FleetagentKubeletScrapesFailing", at: 40 * time.Minute, series: `
fleetagent_collector_kubelet_scrapes_total{` + scope + pod + `, result="success"} 0+2x40
fleetagent_collector_kubelet_scrapes_total{` + scope + pod + `, result="failure"} 0 0 1x38`},
	}
	rules := loadRules(t)
	tested := map[string][2]bool{}
	engine := newEngine()
	for _, c := range cases {
		t.Run(c.alert+"/"+c.name, func(t *testing.T) {
			r, ok := rules[c.alert]
			if !ok {
				t.Fatalf("no alert %s", c.alert)
			}
			got := evalAlert(t, engine, r, c.series, c.at)
			want := slices.Clone(c.firing)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("at %v: firing %v, want %v", c.at, got, want)
			}
			seen := tested[c.alert]
			seen[boolIndex(len(c.firing) > 0)] = true
			tested[c.alert] = seen
		})
	}
	for name := range rules {
		if seen := tested[name]; !seen[0] || !seen[1] {
			t.Errorf("alert %s: a case where it fires %v, one where it does not %v: want both", name, seen[1], seen[0])
		}
	}
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fleetBreakers is n agents' breaker states, open of them open for 20m.
func fleetBreakers(n, open int) string {
	var b strings.Builder
	for i := range n {
		v := "0x20"
		if i < open {
			v = "2x20"
		}
		fmt.Fprintf(&b, "fleetagent_limiter_breaker_state_ratio{namespace=\"fleetagent\", pod=\"fleetagent-%d\"} %s\n", i, v)
	}
	return b.String()
}

// evalAlert loads series (one sample a minute from 0) and evaluates r at
// every minute up to at, returning the sorted label sets of the alerts
// firing at at.
func evalAlert(t *testing.T, engine *promql.Engine, r rule, series string, at time.Duration) []string {
	t.Helper()
	hold, err := time.ParseDuration(r.For)
	if err != nil {
		t.Fatal(err)
	}
	st := loadSeries(t, series, time.Minute)
	start := time.Unix(0, 0).UTC()
	activeSince := map[string]time.Duration{}
	var firing []string
	for ts := time.Duration(0); ts <= at; ts += time.Minute {
		vec, err := instant(context.Background(), engine, st, r.Expr, start.Add(ts))
		if err != nil {
			t.Fatalf("%s at %v: %v", r.Alert, ts, err)
		}
		now := map[string]bool{}
		for _, s := range vec {
			k := s.Metric.String()
			now[k] = true
			if _, ok := activeSince[k]; !ok {
				activeSince[k] = ts
			}
		}
		for k := range activeSince {
			if !now[k] {
				delete(activeSince, k)
			}
		}
		if ts == at {
			for k, since := range activeSince {
				if ts-since >= hold {
					firing = append(firing, k)
				}
			}
		}
	}
	sort.Strings(firing)
	return firing
}

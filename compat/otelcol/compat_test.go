package otelcol_test

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// deviationHeading opens the section of collector/README.md whose table
// lists the deliberate deviations from the kubeletstats receiver.
const deviationHeading = "## Deviations from the Collector's kubeletstats receiver"

// The aspects compared for every metric both sides emit.
const (
	aspectUnit       = "unit"
	aspectInstrument = "instrument"
	aspectResource   = "resource attributes"
	aspectPoint      = "point attributes"
)

// none stands for an empty set of attribute keys in the table.
const none = "—"

// shape is what one side emits for one metric name: its units, its
// instruments, the union of the resource attribute keys of the
// resources that carry it and the union of its data points' attribute
// keys.
type shape struct {
	units, instruments, keys, pointKeys map[string]bool
}

// shapes summarises md by metric name.
func shapes(md pmetric.Metrics) map[string]*shape {
	out := map[string]*shape{}
	for _, rm := range md.ResourceMetrics().All() {
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				s := out[m.Name()]
				if s == nil {
					s = &shape{units: map[string]bool{}, instruments: map[string]bool{}, keys: map[string]bool{}, pointKeys: map[string]bool{}}
					out[m.Name()] = s
				}
				s.units[m.Unit()] = true
				s.instruments[instrument(m)] = true
				for k := range rm.Resource().Attributes().All() {
					s.keys[k] = true
				}
				for _, attrs := range pointAttributes(m) {
					for k := range attrs.All() {
						s.pointKeys[k] = true
					}
				}
			}
		}
	}
	return out
}

// pointAttributes returns the attributes of each of m's data points.
func pointAttributes(m pmetric.Metric) []pcommon.Map {
	var out []pcommon.Map
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		for _, dp := range m.Gauge().DataPoints().All() {
			out = append(out, dp.Attributes())
		}
	case pmetric.MetricTypeSum:
		for _, dp := range m.Sum().DataPoints().All() {
			out = append(out, dp.Attributes())
		}
	case pmetric.MetricTypeHistogram:
		for _, dp := range m.Histogram().DataPoints().All() {
			out = append(out, dp.Attributes())
		}
	case pmetric.MetricTypeExponentialHistogram:
		for _, dp := range m.ExponentialHistogram().DataPoints().All() {
			out = append(out, dp.Attributes())
		}
	case pmetric.MetricTypeSummary:
		for _, dp := range m.Summary().DataPoints().All() {
			out = append(out, dp.Attributes())
		}
	}
	return out
}

// instrument names a metric's data type as the table does: "gauge", or
// "sum" with its monotonicity and temporality, or the OTLP type.
func instrument(m pmetric.Metric) string {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return "gauge"
	case pmetric.MetricTypeSum:
		mono := "non-monotonic"
		if m.Sum().IsMonotonic() {
			mono = "monotonic"
		}
		return fmt.Sprintf("sum %s %s", mono, strings.ToLower(m.Sum().AggregationTemporality().String()))
	case pmetric.MetricTypeHistogram:
		return "histogram " + strings.ToLower(m.Histogram().AggregationTemporality().String())
	default:
		return strings.ToLower(m.Type().String())
	}
}

// deviation is one difference in one aspect of one metric: what
// fleetagent emits and what the Collector emits (for resource attributes:
// and point attributes: the keys only that side has).
type deviation struct {
	metric, aspect, fleetagent, collector string
}

func (d deviation) row() string {
	return fmt.Sprintf("| `%s` | %s | %s | %s | <reason> |", d.metric, d.aspect, cell(d.aspect, d.fleetagent), cell(d.aspect, d.collector))
}

func cell(aspect, v string) string {
	if aspect == aspectResource || aspect == aspectPoint {
		if v == none {
			return none
		}
		parts := strings.Split(v, ", ")
		for i, p := range parts {
			parts[i] = "`" + p + "`"
		}
		return strings.Join(parts, ", ")
	}
	return "`" + v + "`"
}

func joinSorted(set map[string]bool) string {
	var l []string
	for k := range set {
		l = append(l, k)
	}
	if len(l) == 0 {
		return none
	}
	sort.Strings(l)
	return strings.Join(l, ", ")
}

func minus(a, b map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		if !b[k] {
			out[k] = true
		}
	}
	return out
}

// compare returns the metric names both emit and every difference among
// them, sorted.
func compare(fa, col map[string]*shape) (common []string, devs []deviation) {
	for name := range fa {
		if col[name] != nil {
			common = append(common, name)
		}
	}
	sort.Strings(common)
	for _, name := range common {
		f, c := fa[name], col[name]
		if u, v := joinSorted(f.units), joinSorted(c.units); u != v {
			devs = append(devs, deviation{name, aspectUnit, u, v})
		}
		if u, v := joinSorted(f.instruments), joinSorted(c.instruments); u != v {
			devs = append(devs, deviation{name, aspectInstrument, u, v})
		}
		extra, missing := minus(f.keys, c.keys), minus(c.keys, f.keys)
		if len(extra) > 0 || len(missing) > 0 {
			devs = append(devs, deviation{name, aspectResource, joinSorted(extra), joinSorted(missing)})
		}
		extra, missing = minus(f.pointKeys, c.pointKeys), minus(c.pointKeys, f.pointKeys)
		if len(extra) > 0 || len(missing) > 0 {
			devs = append(devs, deviation{name, aspectPoint, joinSorted(extra), joinSorted(missing)})
		}
	}
	return common, devs
}

// listed is one row of the deviation table. metric is a path.Match
// pattern (k8s.pod.* covers every k8s.pod. metric); the first row whose
// pattern and aspect match a deviation is the one that must state it.
type listed struct {
	line                                       int
	metric, aspect, fleetagent, collector, why string
}

// readDeviations parses the table under deviationHeading in the README at
// path.
func readDeviations(p string) ([]listed, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		rows             []listed
		inSection, table bool
		header           bool
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case !inSection:
			inSection = line == deviationHeading
			continue
		case strings.HasPrefix(line, "## "):
			inSection = false
			continue
		case !strings.HasPrefix(line, "|"):
			if table {
				inSection = false // the table ended
			}
			continue
		}
		table = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if !header {
			want := []string{"metric", "aspect", "fleetagent", "Collector", "reason"}
			if !slices.Equal(cells, want) {
				return nil, fmt.Errorf("%s:%d: the deviation table's header must be | %s |, not %q", p, n, strings.Join(want, " | "), line)
			}
			header = true
			continue
		}
		if strings.Trim(strings.Join(cells, ""), "-: ") == "" {
			continue // the separator row
		}
		if len(cells) != 5 {
			return nil, fmt.Errorf("%s:%d: a deviation row has 5 cells (metric, aspect, fleetagent, Collector, reason), this one %d", p, n, len(cells))
		}
		r := listed{line: n, metric: strings.Trim(cells[0], "`"), aspect: cells[1],
			fleetagent: normalise(cells[1], cells[2]), collector: normalise(cells[1], cells[3]), why: cells[4]}
		if _, err := path.Match(r.metric, ""); err != nil {
			return nil, fmt.Errorf("%s:%d: metric %q is not a valid pattern: %v", p, n, r.metric, err)
		}
		if r.aspect != aspectUnit && r.aspect != aspectInstrument && r.aspect != aspectResource && r.aspect != aspectPoint {
			return nil, fmt.Errorf("%s:%d: aspect %q is none of %q, %q, %q, %q", p, n, r.aspect, aspectUnit, aspectInstrument, aspectResource, aspectPoint)
		}
		if r.why == "" {
			return nil, fmt.Errorf("%s:%d: the deviation of %s (%s) gives no reason", p, n, r.metric, r.aspect)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !header {
		return nil, fmt.Errorf("%s: no table under %q", p, deviationHeading)
	}
	return rows, nil
}

// normalise reads a value cell: backticks dropped; attribute keys as a
// sorted ", "-separated list.
func normalise(aspect, v string) string {
	if aspect != aspectResource && aspect != aspectPoint {
		return strings.Trim(v, "`")
	}
	if v == none || v == "" {
		return none
	}
	var keys []string
	for _, k := range strings.Split(v, ",") {
		keys = append(keys, strings.Trim(strings.TrimSpace(k), "`"))
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// check returns what is wrong between the emitted differences and the
// table: a difference no row states, a row that states it otherwise, and
// a row no difference needs.
func check(rows []listed, devs []deviation) []string {
	var problems []string
	used := make([]bool, len(rows))
	for _, d := range devs {
		i := slices.IndexFunc(rows, func(r listed) bool {
			ok, _ := path.Match(r.metric, d.metric)
			return ok && r.aspect == d.aspect
		})
		if i < 0 {
			problems = append(problems, fmt.Sprintf("%s differs in %s: fleetagent %s, the Collector %s; make it match or list it under %q in collector/README.md:\n%s",
				d.metric, d.aspect, d.fleetagent, d.collector, deviationHeading, d.row()))
			continue
		}
		used[i] = true
		if r := rows[i]; r.fleetagent != d.fleetagent || r.collector != d.collector {
			problems = append(problems, fmt.Sprintf("collector/README.md:%d lists %s (%s) as fleetagent %s, the Collector %s, but %s emits fleetagent %s, the Collector %s; correct the row:\n%s",
				r.line, r.metric, r.aspect, r.fleetagent, r.collector, d.metric, d.fleetagent, d.collector, d.row()))
		}
	}
	for i, r := range rows {
		if !used[i] {
			problems = append(problems, fmt.Sprintf("collector/README.md:%d lists a deviation of %s (%s) that no metric both emit has any more (or an earlier row covers it); remove or correct the row", r.line, r.metric, r.aspect))
		}
	}
	return problems
}

// TestKubeletstatsReceiverCompatibility runs the Collector's kubeletstats
// receiver (contrib, as a library) and the agent side by side against the
// same stand-in kubelet and the same pods, and compares every metric both
// emit: unit, instrument (gauge or sum, monotonic, temporality), the
// resource attribute keys of the resources carrying it and the attribute
// keys of its data points. Every difference
// must be the one stated by a row of the deviation table in
// collector/README.md, and every row must still state a difference that
// is emitted, so the document and the output cannot drift apart.
func TestKubeletstatsReceiverCompatibility(t *testing.T) {
	readme := filepath.Join(controlplane.ModuleRoot(), "collector", "README.md")
	rows, err := readDeviations(readme)
	if err != nil {
		t.Fatal(err)
	}
	c := capture(t)
	fa, col := shapes(c.fleetagent), shapes(c.collector)
	common, devs := compare(fa, col)
	var onlyFA, onlyCol []string
	for n := range fa {
		if col[n] == nil {
			onlyFA = append(onlyFA, n)
		}
	}
	for n := range col {
		if fa[n] == nil {
			onlyCol = append(onlyCol, n)
		}
	}
	sort.Strings(onlyFA)
	sort.Strings(onlyCol)
	t.Logf("both emit %d metrics: %s", len(common), strings.Join(common, " "))
	t.Logf("only fleetagent: %s", strings.Join(onlyFA, " "))
	t.Logf("only the Collector: %s", strings.Join(onlyCol, " "))
	if len(common) == 0 {
		t.Fatalf("the agent and the kubeletstats receiver emit no metric of the same name (agent: %d metrics, Collector: %d)", len(fa), len(col))
	}

	for _, problem := range check(rows, devs) {
		t.Error(problem)
	}
	t.Logf("%d metrics compared, %d differences, all listed: %v", len(common), len(devs), !t.Failed())
}

// TestDeviationCheck: the comparison and the table check catch a
// difference nobody listed, a row that states a difference otherwise than
// emitted, and a row that no longer applies, and accept a table that
// states exactly what differs.
func TestDeviationCheck(t *testing.T) {
	set := func(v ...string) map[string]bool {
		m := map[string]bool{}
		for _, x := range v {
			m[x] = true
		}
		return m
	}
	fa := map[string]*shape{
		"k8s.pod.memory.usage": {units: set("By"), instruments: set("sum non-monotonic cumulative"), keys: set("k8s.pod.uid", "k8s.node.name"), pointKeys: set()},
		"k8s.pod.cpu.usage":    {units: set("{cpu}"), instruments: set("gauge"), keys: set("k8s.pod.uid"), pointKeys: set()},
		"k8s.pod.network.io":   {units: set("By"), instruments: set("gauge"), keys: set("k8s.pod.uid"), pointKeys: set("network.io.direction")},
		"fleetagent.only":      {units: set("1"), instruments: set("gauge"), keys: set(), pointKeys: set()},
	}
	col := map[string]*shape{
		"k8s.pod.memory.usage": {units: set("By"), instruments: set("gauge"), keys: set("k8s.pod.uid"), pointKeys: set()},
		"k8s.pod.cpu.usage":    {units: set("{cpu}"), instruments: set("gauge"), keys: set("k8s.pod.uid"), pointKeys: set()},
		"k8s.pod.network.io":   {units: set("By"), instruments: set("gauge"), keys: set("k8s.pod.uid"), pointKeys: set("direction")},
	}
	common, devs := compare(fa, col)
	if !slices.Equal(common, []string{"k8s.pod.cpu.usage", "k8s.pod.memory.usage", "k8s.pod.network.io"}) {
		t.Fatalf("common = %v", common)
	}
	want := []deviation{
		{"k8s.pod.memory.usage", aspectInstrument, "sum non-monotonic cumulative", "gauge"},
		{"k8s.pod.memory.usage", aspectResource, "k8s.node.name", none},
		{"k8s.pod.network.io", aspectPoint, "network.io.direction", "direction"},
	}
	if !slices.Equal(devs, want) {
		t.Fatalf("deviations = %v, want %v", devs, want)
	}

	table := func(rows ...string) []listed {
		p := filepath.Join(t.TempDir(), "README.md")
		body := "# x\n\n" + deviationHeading + "\n\ntext\n\n| metric | aspect | fleetagent | Collector | reason |\n|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n\n## Next\n\n| a | b |\n"
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := readDeviations(p)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	instr := "| `*.memory.*` | instrument | `sum non-monotonic cumulative` | `gauge` | conventions |"
	res := "| `k8s.pod.*` | resource attributes | `k8s.node.name` | — | node on every resource |"
	pt := "| `*.network.*` | point attributes | `network.io.direction` | `direction` | conventions |"
	for _, c := range []struct {
		name  string
		rows  []string
		wants []string // substrings of the problems, in order
	}{
		{"exact", []string{instr, res, pt}, nil},
		{"unlisted", []string{instr, pt}, []string{"k8s.pod.memory.usage differs in resource attributes"}},
		{"stated otherwise", []string{instr, "| `k8s.pod.*` | resource attributes | `k8s.node.name`, `k8s.job.name` | — | r |", pt}, []string{"correct the row"}},
		{"stale", []string{instr, res, pt, "| `*.network.errors` | unit | `{error}` | `1` | r |"}, []string{"no metric both emit has any more"}},
	} {
		got := check(table(c.rows...), devs)
		if len(got) != len(c.wants) {
			t.Errorf("%s: problems %q, want %d", c.name, got, len(c.wants))
			continue
		}
		for i, w := range c.wants {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: problem %q does not say %q", c.name, got[i], w)
			}
		}
	}

	for _, bad := range []string{
		"| `x` | colour | `a` | `b` | r |",
		"| `x` | unit | `a` | `b` |  |",
		"| `[x` | unit | `a` | `b` | r |",
	} {
		p := filepath.Join(t.TempDir(), "README.md")
		body := deviationHeading + "\n\n| metric | aspect | fleetagent | Collector | reason |\n|---|---|---|---|---|\n" + bad + "\n"
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readDeviations(p); err == nil {
			t.Errorf("row %s was accepted", bad)
		}
	}
}

package collector

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	testingclock "k8s.io/utils/clock/testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

// loadState is the recorded pods and Node of testdata/ as the informers
// would hold them.
func loadState(t testing.TB) *fakestate.State { return fakestate.Fixture(t, "..") }

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
}

// testTime is the fixed clock of testConfig: the time of the fixtures'
// kubelet samples.
var testTime = time.Date(2026, 11, 28, 10, 41, 7, 0, time.UTC)

// testConfig uses the default workload attributes (WorkloadOf) and a fixed
// clock, so uptimes are stable.
var testConfig = Config{PodLabels: []string{"app", "team"}, Clock: testingclock.NewFakePassiveClock(testTime)}

// pipeline is a Runner on a real SDK MeterProvider with a manual reader.
type pipeline struct {
	reader *sdkmetric.ManualReader
	runner *Runner
}

func newPipeline(t testing.TB, cs []Collector, opts ...RunnerOption) *pipeline {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	r, err := NewRunner(mp.Meter("fleetagent/collector"), cs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterMetrics(mp.Meter("fleetagent/self")); err != nil {
		t.Fatal(err)
	}
	return &pipeline{reader: reader, runner: r}
}

func (p *pipeline) collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := p.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// productMetrics returns the metrics of the collectors' scope (not the
// fleetagent.* self-metrics).
func productMetrics(rm metricdata.ResourceMetrics) []metricdata.Metrics {
	var ms []metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name == "fleetagent/collector" {
			ms = append(ms, sm.Metrics...)
		}
	}
	return ms
}

// defaultGoldens is the expected output of Default's collectors: the three
// collector goldens together.
func defaultGoldens(t *testing.T) string {
	t.Helper()
	var want string
	for _, g := range []string{"kubelet.golden", "node.golden", "pod.golden"} {
		b, err := os.ReadFile(filepath.Join("testdata", g))
		if err != nil {
			t.Fatal(err)
		}
		want += string(b)
	}
	return want
}

// render prints the product metrics (not the fleetagent.* self-metrics) in
// a stable text form: one header line per metric, one line per series.
func render(rm metricdata.ResourceMetrics) string {
	var b strings.Builder
	ms := productMetrics(rm)
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	for _, m := range ms {
		kind, lines := series(m)
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "# %s %s %s\n", m.Name, m.Unit, kind)
		sort.Strings(lines)
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func series(m metricdata.Metrics) (string, []string) {
	var lines []string
	if !eachPoint(m, func(set *attribute.Set, v any) {
		lines = append(lines, fmt.Sprintf("%s{%s} %v", m.Name, attrString(*set), v))
	}) {
		return fmt.Sprintf("%T", m.Data), nil
	}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		return sumKind(d.IsMonotonic) + " int", lines
	case metricdata.Sum[float64]:
		return sumKind(d.IsMonotonic) + " float", lines
	case metricdata.Gauge[int64]:
		return "gauge int", lines
	}
	return "gauge float", lines
}

// eachPoint calls f with a pointer to the attribute set and with the value
// (int64 or float64) of each point of m, a gauge or a sum of either number
// type, the kinds the collectors make. It reports false for any other kind.
func eachPoint(m metricdata.Metrics, f func(set *attribute.Set, value any)) bool {
	switch d := m.Data.(type) {
	case metricdata.Gauge[int64]:
		visit(d.DataPoints, f)
	case metricdata.Gauge[float64]:
		visit(d.DataPoints, f)
	case metricdata.Sum[int64]:
		visit(d.DataPoints, f)
	case metricdata.Sum[float64]:
		visit(d.DataPoints, f)
	default:
		return false
	}
	return true
}

func visit[N int64 | float64](dps []metricdata.DataPoint[N], f func(*attribute.Set, any)) {
	for i := range dps {
		f(&dps[i].Attributes, dps[i].Value)
	}
}

func sumKind(mono bool) string {
	if mono {
		return "counter"
	}
	return "updowncounter"
}

func attrString(set attribute.Set) string {
	var parts []string
	for _, kv := range set.ToSlice() {
		parts = append(parts, fmt.Sprintf("%s=%q", kv.Key, kv.Value.Emit()))
	}
	return strings.Join(parts, ",")
}

// golden compares got with testdata/<name>, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./collector -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", path, diff(string(want), got))
	}
}

// diff lists lines only in want (-) or only in got (+).
func diff(want, got string) string {
	w, g := map[string]bool{}, map[string]bool{}
	for _, l := range strings.Split(want, "\n") {
		w[l] = true
	}
	for _, l := range strings.Split(got, "\n") {
		g[l] = true
	}
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

func newPipelineMeter(t testing.TB) metric.Meter {
	mp := sdkmetric.NewMeterProvider()
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mp.Meter("test")
}

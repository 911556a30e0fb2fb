package selfmetrics

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

var update = flag.Bool("update", false, "rewrite the README's self-metrics table from Table")

const begin, end = "<!-- selfmetrics:begin -->\n", "<!-- selfmetrics:end -->"

// TestTableMatchesDocs: the README's self-metrics table is Table, rendered.
func TestTableMatchesDocs(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q ... %q section", path, begin, end)
	}
	want := s[:i+len(begin)] + Markdown() + s[j:]
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if s != want {
		t.Errorf("the README's self-metrics table differs from selfmetrics.Table; run: go test ./internal/selfmetrics -update\ngot:\n%s\nwant:\n%s", s[i+len(begin):j], Markdown())
	}
}

// TestTableIsWellFormed: names are unique and in the fleetagent namespace,
// every row has a unit and a description.
func TestTableIsWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range Table {
		if seen[d.Name] {
			t.Errorf("%s listed twice", d.Name)
		}
		seen[d.Name] = true
		if !strings.HasPrefix(d.Name, "fleetagent.") || d.Unit == "" || d.Description == "" {
			t.Errorf("incomplete row %+v", d)
		}
	}
}

// TestSetRegistersFromTable: instruments get the table's unit, kind and
// description; a name outside the table or of the wrong number type is an
// error from Register, not a silent instrument.
func TestSetRegistersFromTable(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	m := mp.Meter("test")

	set := NewSet(m)
	runs := set.Int64("fleetagent.collector.runs")
	dur := set.Float64("fleetagent.collector.duration")
	if err := set.Register(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(runs, 3)
		o.ObserveFloat64(dur, 0.5)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			got[mt.Name] = mt
		}
	}
	r, d := got["fleetagent.collector.runs"], got["fleetagent.collector.duration"]
	if sum, ok := r.Data.(metricdata.Sum[int64]); !ok || !sum.IsMonotonic || r.Unit != "{run}" || sum.DataPoints[0].Value != 3 {
		t.Errorf("runs = %+v, want a monotonic int sum in {run} of 3", r)
	}
	if g, ok := d.Data.(metricdata.Gauge[float64]); !ok || d.Unit != "s" || g.DataPoints[0].Value != 0.5 {
		t.Errorf("duration = %+v, want a float gauge in s of 0.5", d)
	}
	if want, _ := Lookup("fleetagent.collector.runs"); r.Description != want.Description {
		t.Errorf("description %q, want the table's %q", r.Description, want.Description)
	}

	bad := NewSet(m)
	bad.Int64("fleetagent.no.such.metric")
	bad.Int64("fleetagent.collector.duration") // a float in the table
	err := bad.Register(func(context.Context, metric.Observer) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not in selfmetrics.Table") || !strings.Contains(err.Error(), "float=true") {
		t.Errorf("Register after bad names: %v", err)
	}
}

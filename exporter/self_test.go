package exporter

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestSelfMetricsTravelInTheProductRequest: with Config.Self, N intervals
// are N export requests over gRPC and HTTP/protobuf, each holding the
// product metrics on the node, pod and container resources and the agent's
// own metrics on one resource of their own with service.name,
// service.instance.id, service.version and telemetry.sdk.*; no request
// holds self-metrics alone, no self-metric lands on an entity resource, and
// a self reader (the agent's Prometheus exporter) sees the self-metrics and
// none of the product metrics.
func TestSelfMetricsTravelInTheProductRequest(t *testing.T) {
	const intervals = 5
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			side := sdkmetric.NewManualReader()
			e := setup(t, protocol, Config{Self: true, SelfReaders: []sdkmetric.Reader{side}, ServiceVersion: "v9"})
			self := e.prov.SelfMeter("github.com/fleetagent/fleetagent")
			if err := e.prov.RegisterMetrics(self); err != nil {
				t.Fatal(err)
			}
			ticks, err := self.Int64ObservableCounter("fleetagent.test.ticks")
			if err != nil {
				t.Fatal(err)
			}
			var n int64
			if _, err := self.RegisterCallback(func(_ context.Context, o metric.Observer) error {
				n++
				o.ObserveInt64(ticks, n)
				return nil
			}, ticks); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < intervals; i++ {
				if err := e.prov.ForceFlush(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			exports := e.recv.Exports()
			if len(exports) != intervals {
				t.Fatalf("%d export requests for %d intervals, want %d: the self-metrics must not be a second stream", len(exports), intervals, intervals)
			}
			for i, ex := range exports {
				var product, selfPoints int
				selfResources := map[string]bool{}
				for _, p := range ex.Points {
					switch p.Scope {
					case "github.com/fleetagent/fleetagent":
					case "github.com/fleetagent/fleetagent/collector":
						product++
						if _, ok := p.Resource["service.name"]; ok {
							t.Errorf("request %d: product metric %s on a resource with service.name: %v", i, p.Metric, p.Resource)
						}
						continue
					default:
						continue // setup's own registration on the product meter
					}
					selfPoints++
					selfResources[resourceKey(p.Resource)] = true
					for k, v := range map[string]string{"service.name": "fleetagent", "service.instance.id": "node-1",
						"service.version": "v9", "k8s.node.name": "node-1", "k8s.cluster.name": "test-cluster", "telemetry.sdk.language": "go"} {
						if p.Resource[k] != v {
							t.Errorf("request %d: self-metric %s resource %s = %q, want %q (%v)", i, p.Metric, k, p.Resource[k], v, p.Resource)
						}
					}
					for k := range p.Resource {
						if k != "k8s.node.name" && strings.HasPrefix(k, "k8s.") && k != "k8s.cluster.name" {
							t.Errorf("request %d: self-metric %s on an entity resource (%s)", i, p.Metric, k)
						}
					}
				}
				if product == 0 || selfPoints == 0 {
					t.Errorf("request %d holds %d product and %d self points; want both in every request", i, product, selfPoints)
				}
				if len(selfResources) != 1 {
					t.Errorf("request %d: self-metrics on %d resources, want 1", i, len(selfResources))
				}
				got := otlpreceiver.Find(ex.Points, "fleetagent.test.ticks", nil)
				if len(got) != 1 || got[0].Value != float64(i+1) {
					t.Errorf("request %d: fleetagent.test.ticks = %v, want one point of value %d (one self collection per interval)", i, got, i+1)
				}
			}
			var rm metricdata.ResourceMetrics
			if err := side.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					names = append(names, m.Name)
					if !strings.HasPrefix(m.Name, "fleetagent.") {
						t.Errorf("the self reader sees product metric %s", m.Name)
					}
				}
			}
			if !strings.Contains(fmt.Sprint(names), "fleetagent.otlpexport.exports") {
				t.Errorf("the self reader does not see fleetagent.otlpexport.exports: %v", names)
			}
		})
	}
}

// TestSelfNeedsEntityKeys: Self is refused without the regrouping that
// puts it on a resource of its own.
func TestSelfNeedsEntityKeys(t *testing.T) {
	err := Config{Self: true}.Validate()
	if err == nil || !strings.Contains(err.Error(), "EntityKeys") {
		t.Errorf("Validate = %v, want an error naming EntityKeys", err)
	}
}

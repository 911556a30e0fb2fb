package exporter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// BenchmarkCollectExport measures one collection and export of a node, as
// the agent does it each interval: the informer state and a kubelet summary
// of 110 (the kubelet's default maximum) and 250 pods of 3 containers, all
// collectors, the SDK, the regrouping into one resource per entity, and the
// gRPC export to a real OTLP receiver on loopback. It reports allocations,
// data points, resources, requests, the requests' protobuf size
// (request-bytes, uncompressed) and their size on the wire (wire-bytes:
// gzip-compressed as the exporter sends by default, with the gRPC frame
// header, as the receiver read them) per interval.
func BenchmarkCollectExport(b *testing.B) {
	for _, n := range []int{110, 250} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			recv := otlpreceiver.StartT(b, otlpreceiver.Options{})
			prov := intervalPipeline(b, n, recv.GRPCAddr())
			runIntervals(b, prov)
			// The last interval's requests (more than one when the export
			// goes out in parts).
			perInterval := recv.Stats().Accepted / b.N
			ex := recv.Exports()
			if perInterval < 1 || perInterval > len(ex) {
				b.Fatalf("%d requests in %d intervals", recv.Stats().Accepted, b.N)
			}
			var points, resources, size, wire int
			for _, e := range ex[len(ex)-perInterval:] {
				if e.Encoding != "gzip" {
					b.Fatalf("request arrived as %s, want the default gzip", e.Encoding)
				}
				points += len(e.Points)
				resources += e.Resources
				size += e.Bytes
				wire += e.WireBytes
			}
			b.ReportMetric(float64(points), "points/interval")
			b.ReportMetric(float64(resources), "resources/interval")
			b.ReportMetric(float64(size), "request-bytes/interval")
			b.ReportMetric(float64(wire), "wire-bytes/interval")
			b.ReportMetric(float64(recv.Stats().Accepted)/float64(b.N), "requests/interval")
		})
	}
}

// intervalPipeline builds what one interval of the agent runs for a node of
// n pods of 3 containers: a stand-in kubelet serving their summary, every
// collector over the informer view, and a Provider exporting over gRPC to
// otlpAddr. Flushing the Provider runs one interval.
func intervalPipeline(b *testing.B, n int, otlpAddr string) *Provider {
	b.Helper()
	pods := podsWithContainers(b, n, 3)
	k, err := fakekubelet.StartForPods("../collector/testdata/summary.json", "", podValues(pods))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(k.Close)
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+otlpAddr)
	// As the agent builds it: entity handles on the points.
	ents := collector.NewEntities()
	prov, err := New(context.Background(), Config{Protocol: ProtocolGRPC, NodeName: "node-1", Interval: time.Hour,
		EntityKeys: collector.IsResourceAttribute, SchemaURL: collector.SchemaURL,
		EntityHandles: EntityHandles{Key: collector.EntityHandleKey, Attributes: ents.Attributes}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = prov.Shutdown(context.Background()) })
	cs, err := collector.Default(collector.Config{PodLabels: []string{"app"},
		Kubelet: collector.KubeletConfig{Endpoint: k.URL(), MinInterval: -1}}, fakestate.New(pods, nil))
	if err != nil {
		b.Fatal(err)
	}
	runner, err := collector.NewRunner(prov.Meter("github.com/fleetagent/fleetagent/collector"), cs, collector.WithEntityHandles(ents))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = runner.Shutdown(context.Background()) })
	return prov
}

// runIntervals times b.N intervals of prov (one ForceFlush each), with
// their allocations reported; the timer is stopped when it returns.
func runIntervals(b *testing.B, prov *Provider) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := prov.ForceFlush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

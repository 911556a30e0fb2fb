package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// BenchmarkCollect measures one collection of all Default collectors for a
// node of 110 pods (the kubelet's default maximum) and of 250 pods (copies
// of the fixture pods) in the informer view and the kubelet summary,
// through the real OTel SDK. It reports allocations, data points per
// collection and the kubelet response size. BenchmarkCollectExport
// (package exporter) adds the export and the bytes on the wire.
func BenchmarkCollect(b *testing.B) {
	for _, pods := range []int{110, 250} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) { benchmarkCollect(b, pods) })
	}
}

func benchmarkCollect(b *testing.B, pods int) {
	state := loadState(b)
	var summary Summary
	readJSON(b, "testdata/summary.json", &summary)
	tmplPods, tmplStats := state.Pods(), summary.Pods
	summary.Pods = nil
	var podList []*corev1.Pod
	for i := 0; i < pods; i++ {
		p := tmplPods[i%len(tmplPods)].DeepCopy()
		p.Name = fmt.Sprintf("%s-%d", p.Name, i)
		p.UID = types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
		podList = append(podList, p)
		s := tmplStats[i%len(tmplStats)]
		s.PodRef.Name, s.PodRef.UID = p.Name, string(p.UID)
		summary.Pods = append(summary.Pods, s)
	}
	node, _ := state.Node()
	state = fakestate.New(podList, node)
	body, err := json.Marshal(summary)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	defer srv.Close()
	cfg := testConfig
	cfg.Kubelet = KubeletConfig{Endpoint: srv.URL, MinInterval: -1}
	cs, err := Default(cfg, state)
	if err != nil {
		b.Fatal(err)
	}
	p := newPipeline(b, cs)
	var rm metricdata.ResourceMetrics
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := p.reader.Collect(context.Background(), &rm); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	n := 0
	for _, m := range productMetrics(rm) {
		n += countPoints(m)
	}
	b.ReportMetric(float64(n), "points/op")
	b.ReportMetric(float64(len(body)), "summary-bytes")
}

package vscollector

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
)

func res(kv ...string) *resourcepb.Resource {
	r := &resourcepb.Resource{}
	for i := 0; i+1 < len(kv); i += 2 {
		r.Attributes = append(r.Attributes, &commonpb.KeyValue{Key: kv[i], Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: kv[i+1]}}})
	}
	return r
}

// gauge is a metric of n points; sum a cumulative sum of one.
func gauge(name string, n int) *metricpb.Metric {
	g := &metricpb.Gauge{}
	for i := range n {
		g.DataPoints = append(g.DataPoints, &metricpb.NumberDataPoint{TimeUnixNano: 1, Value: &metricpb.NumberDataPoint_AsInt{AsInt: int64(i + 1)}})
	}
	return &metricpb.Metric{Name: name, Unit: "By", Data: &metricpb.Metric_Gauge{Gauge: g}}
}

func sum(name string) *metricpb.Metric {
	return &metricpb.Metric{Name: name, Unit: "s", Data: &metricpb.Metric_Sum{Sum: &metricpb.Sum{IsMonotonic: true, AggregationTemporality: metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
		DataPoints: []*metricpb.NumberDataPoint{{StartTimeUnixNano: 1, TimeUnixNano: 2, Value: &metricpb.NumberDataPoint_AsDouble{AsDouble: 1.5}}}}}}
}

func rm(r *resourcepb.Resource, scope string, ms ...*metricpb.Metric) *metricpb.ResourceMetrics {
	return &metricpb.ResourceMetrics{Resource: r, ScopeMetrics: []*metricpb.ScopeMetrics{{Scope: &commonpb.InstrumentationScope{Name: scope}, Metrics: ms}}}
}

func request(rms ...*metricpb.ResourceMetrics) *colmetricpb.ExportMetricsServiceRequest {
	return &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: rms}
}

// TestEntity names a resource by its container, else its pod, else its
// node.
func TestEntity(t *testing.T) {
	for _, c := range []struct {
		r    *resourcepb.Resource
		want string
	}{
		{res("k8s.node.name", "n1", "k8s.pod.uid", "a", "k8s.container.name", "c", "container.id", "x"), "container/a/c"},
		{res("k8s.pod.uid", "a", "k8s.node.name", "n1", "k8s.volume.name", "v"), "pod/a"},
		{res("k8s.node.name", "n1", "service.name", "fleetagent"), "node/n1"},
		{res("k8s.container.name", "c"), ""},
		{nil, ""},
	} {
		if got := Entity(c.r); got != c.want {
			t.Errorf("Entity(%v) = %q, want %q", c.r, got, c.want)
		}
	}
}

// TestSameSeries keeps the metrics both agents send by name, each only on
// the entities both send it for, charges each agent its own resources as
// it laid them out, and leaves fleetagent's self-metrics out.
func TestSameSeries(t *testing.T) {
	faNode := res("k8s.node.name", "n1", "k8s.node.uid", "nu")
	faPodA := res("k8s.pod.uid", "a", "k8s.pod.name", "pa", "k8s.namespace.name", "ns", "k8s.node.name", "n1", "k8s.deployment.name", "d")
	faPodB := res("k8s.pod.uid", "b", "k8s.pod.name", "pb", "k8s.namespace.name", "ns", "k8s.node.name", "n1")
	faCont := res("k8s.pod.uid", "a", "k8s.container.name", "c", "k8s.node.name", "n1", "container.id", "cid")
	fa := []*colmetricpb.ExportMetricsServiceRequest{
		request(
			rm(faNode, "fleetagent/collector", sum("k8s.node.cpu.time"), gauge("k8s.node.only.fleetagent", 1)),
			// A self-metric with a name the Collector also sends: not shared.
			rm(faNode, SelfScope, sum("k8s.node.uptime")),
			// Two volumes of pod a on the pod's resource.
			rm(faPodA, "fleetagent/collector", gauge("k8s.pod.memory.working_set", 1), gauge("k8s.volume.available", 2)),
			// Pod b: the Collector does not send it.
			rm(faPodB, "fleetagent/collector", gauge("k8s.pod.memory.working_set", 1)),
			rm(faCont, "fleetagent/collector", sum("container.cpu.time"), gauge("container.memory.usage", 1)),
		),
		// A second request with nothing shared.
		request(rm(faNode, SelfScope, gauge("otelsdk.exporter.sent", 1))),
	}
	ocNode := res("k8s.node.name", "n1")
	ocPodA := res("k8s.pod.uid", "a", "k8s.pod.name", "pa", "k8s.namespace.name", "ns")
	ocContC := res("k8s.pod.uid", "a", "k8s.pod.name", "pa", "k8s.namespace.name", "ns", "k8s.container.name", "c")
	ocContD := res("k8s.pod.uid", "a", "k8s.pod.name", "pa", "k8s.namespace.name", "ns", "k8s.container.name", "d")
	ocVol := func(v string) *resourcepb.Resource {
		return res("k8s.pod.uid", "a", "k8s.pod.name", "pa", "k8s.namespace.name", "ns", "k8s.volume.name", v)
	}
	oc := []*colmetricpb.ExportMetricsServiceRequest{
		request(
			rm(ocNode, "kubeletstats", sum("k8s.node.cpu.time"), sum("k8s.node.uptime")),
			rm(ocPodA, "kubeletstats", gauge("k8s.pod.memory.working_set", 1)),
			rm(ocContC, "kubeletstats", sum("container.cpu.time")),
		),
		request(
			rm(ocVol("v1"), "kubeletstats", gauge("k8s.volume.available", 1)),
			rm(ocVol("v2"), "kubeletstats", gauge("k8s.volume.available", 1)),
			// container.memory.usage only for a container fleetagent
			// does not send it for: the name is in both, the series not.
			rm(ocContD, "kubeletstats", gauge("container.memory.usage", 1)),
		),
	}

	shared, faS, ocS := SameSeries(fa, oc)
	wantShared := []string{"container.cpu.time", "k8s.node.cpu.time", "k8s.pod.memory.working_set", "k8s.volume.available"}
	if !slices.Equal(shared, wantShared) {
		t.Fatalf("shared = %v, want %v", shared, wantShared)
	}

	faWant := request(
		rm(faNode, "fleetagent/collector", sum("k8s.node.cpu.time")),
		rm(faPodA, "fleetagent/collector", gauge("k8s.pod.memory.working_set", 1), gauge("k8s.volume.available", 2)),
		rm(faCont, "fleetagent/collector", sum("container.cpu.time")),
	)
	ocWant := []*colmetricpb.ExportMetricsServiceRequest{
		request(
			rm(ocNode, "kubeletstats", sum("k8s.node.cpu.time")),
			rm(ocPodA, "kubeletstats", gauge("k8s.pod.memory.working_set", 1)),
			rm(ocContC, "kubeletstats", sum("container.cpu.time")),
		),
		request(
			rm(ocVol("v1"), "kubeletstats", gauge("k8s.volume.available", 1)),
			rm(ocVol("v2"), "kubeletstats", gauge("k8s.volume.available", 1)),
		),
	}
	// The resources alone, each as a ResourceMetrics field would carry it.
	resBytes := func(rs ...*resourcepb.Resource) int64 {
		var n int64
		for _, r := range rs {
			n += int64(proto.Size(&metricpb.ResourceMetrics{Resource: r}))
		}
		return n
	}
	want := Series{Bytes: int64(proto.Size(faWant)), ResourceBytes: resBytes(faNode, faPodA, faCont), Points: 5, Requests: 1}
	if faS != want {
		t.Errorf("fleetagent: %+v, want %+v", faS, want)
	}
	want = Series{Bytes: int64(proto.Size(ocWant[0]) + proto.Size(ocWant[1])), ResourceBytes: resBytes(ocNode, ocPodA, ocContC, ocVol("v1"), ocVol("v2")), Points: 5, Requests: 2}
	if ocS != want {
		t.Errorf("collector: %+v, want %+v", ocS, want)
	}
	if got := faS.BytesPerPoint(); got != float64(faS.Bytes)/5 {
		t.Errorf("BytesPerPoint = %v, want %v", got, float64(faS.Bytes)/5)
	}

	// The filtered copy itself, and the input left as it was.
	keep := func(m, e string) bool {
		return (m == "k8s.node.cpu.time" && e == "node/n1") || (m == "container.cpu.time" && e == "container/a/c") ||
			(m != "k8s.node.cpu.time" && m != "container.cpu.time" && slices.Contains(wantShared, m) && e == "pod/a")
	}
	before := proto.Clone(fa[0])
	if got := Filter(fa[0], keep); !proto.Equal(got, faWant) {
		t.Errorf("Filter = %v\nwant %v", got, faWant)
	}
	if !proto.Equal(fa[0], before) {
		t.Error("Filter changed its input")
	}

	// Nothing in common: no shared metric, nothing charged.
	shared, faS, ocS = SameSeries(fa[1:], oc)
	if len(shared) != 0 || faS != (Series{}) || ocS != (Series{}) || faS.BytesPerPoint() != 0 {
		t.Errorf("nothing shared: %v %+v %+v", shared, faS, ocS)
	}
}

// TestReceiverRecord keeps the requests received between Record and Take,
// and none before or after.
func TestReceiverRecord(t *testing.T) {
	r, err := StartReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	conn, err := grpc.NewClient(r.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := colmetricpb.NewMetricsServiceClient(conn)
	send := func(name string) {
		t.Helper()
		if _, err := client.Export(context.Background(), request(rm(res("k8s.node.name", "n1"), "s", gauge(name, 2)))); err != nil {
			t.Fatal(err)
		}
	}
	send("before")
	r.Record()
	send("during.1")
	send("during.2")
	got := r.Take()
	send("after")
	var names []string
	for _, req := range got {
		names = append(names, req.GetResourceMetrics()[0].GetScopeMetrics()[0].GetMetrics()[0].GetName())
	}
	if !slices.Equal(names, []string{"during.1", "during.2"}) {
		t.Errorf("recorded %v, want during.1 and during.2", names)
	}
	if c := r.Counts(); c.Requests != 4 || c.Points != 8 {
		t.Errorf("counts %+v, want 4 requests of 8 points", c)
	}
	if len(r.Take()) != 0 {
		t.Error("Take after Take: want nothing")
	}
}

// TestSameSeriesRow reports bytes per point over the same series with the
// number of shared metrics in its name, breaks it down where fleetagent is
// above, and lists the shared metrics under the table.
func TestSameSeriesRow(t *testing.T) {
	var fa, oc Window
	fa.SetSame(Series{Bytes: 3000, ResourceBytes: 1200, Points: 20}, 4, 2)
	oc.SetSame(Series{Bytes: 2000, ResourceBytes: 400, Points: 20}, 4, 2)
	if fa.SameBytesPerPoint != 150 || fa.SameResBytesPerPt != 60 || fa.SamePointsPerMin != 10 || fa.SameMetrics != 4 {
		t.Errorf("SetSame = %+v", fa)
	}
	rows := Rows([]Window{fa}, []Window{oc})
	r := rows[len(rows)-1]
	if r.Name != "protobuf bytes per data point, same series (4 metrics)" || r.Fleetagent != 150 || r.Collector != 100 {
		t.Errorf("row %+v", r)
	}
	if !strings.Contains(r.Why, "60.0 B of fleetagent's bytes per point against 20.0 B of the Collector's") || !strings.Contains(r.Why, "90.0 B against 80.0 B") {
		t.Errorf("why %q", r.Why)
	}
	fa2 := fa
	fa2.SameMetrics = 5
	if r := Rows([]Window{fa, fa2}, []Window{oc, oc}); r[len(r)-1].Name != "protobuf bytes per data point, same series (4–5 metrics)" {
		t.Errorf("row name over differing windows: %q", r[len(r)-1].Name)
	}
	var b strings.Builder
	WriteMarkdown(&b, Setup{Windows: 1, SharedMetrics: []string{"a.b", "c.d"}}, rows)
	md := b.String()
	if !strings.Contains(md, "| protobuf bytes per data point, same series (4 metrics) (B) | 150 | 100 | 1.50 |") {
		t.Errorf("markdown lacks the row:\n%s", md)
	}
	if !strings.Contains(md, "protobuf bytes per data point, same series (4 metrics): resource attributes are 60.0 B") {
		t.Errorf("markdown lacks the breakdown under the table:\n%s", md)
	}
	// Below the Collector: no why, the breakdown still under the table.
	r = Rows([]Window{oc}, []Window{fa})[RowSameSeries]
	if r.Why != "" || !strings.Contains(r.Note, "resource attributes are 20.0 B of fleetagent's bytes per point against 60.0 B of the Collector's") {
		t.Errorf("below: why %q, note %q", r.Why, r.Note)
	}
	if !strings.Contains(md, "The 2 metrics, over all windows: `a.b`, `c.d`.") {
		t.Errorf("markdown lacks the shared metrics:\n%s", md)
	}
}

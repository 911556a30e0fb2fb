package exporter

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// encoderRounds are collections that change from one to the next the ways
// a kept message could carry something over: points come and go, a
// metric's number type, temporality, unit or attributes change, a metric
// gains exemplars (then the SDK converts it), a temporality is unknown (the
// SDK drops that metric and says so), scopes share a name, a scope has
// two metrics of one name, a scope comes twice, a gauge's start time is
// unset, attributes of every type (the SDK converts those the encoder
// does not take).
func encoderRounds() []metricdata.ResourceMetrics {
	res := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.37.0", attribute.String("k8s.node.name", "n1"))
	t0 := time.Unix(1700000000, 5)
	t1 := t0.Add(10 * time.Second)
	s1 := instrumentation.Scope{Name: "s", Version: "1", SchemaURL: "https://example.com/s", Attributes: attribute.NewSet(attribute.String("sa", "x"))}
	s2 := instrumentation.Scope{Name: "s", Version: "2"}
	ip := func(v int64, kvs ...attribute.KeyValue) metricdata.DataPoint[int64] {
		return metricdata.DataPoint[int64]{Attributes: attribute.NewSet(kvs...), StartTime: t0, Time: t1, Value: v}
	}
	fp := func(v float64, kvs ...attribute.KeyValue) metricdata.DataPoint[float64] {
		return metricdata.DataPoint[float64]{Attributes: attribute.NewSet(kvs...), StartTime: t0, Time: t1, Value: v}
	}
	pods := func(n int) []metricdata.DataPoint[int64] {
		var out []metricdata.DataPoint[int64]
		for i := range n {
			out = append(out, ip(int64(i), attribute.String("h", fmt.Sprint(i)), attribute.String("phase", "Running")))
		}
		return out
	}
	histogram := metricdata.Metrics{Name: "latency", Unit: "s", Data: metricdata.Histogram[float64]{
		Temporality: metricdata.CumulativeTemporality,
		DataPoints: []metricdata.HistogramDataPoint[float64]{{Attributes: attribute.NewSet(attribute.String("h", "1")),
			StartTime: t0, Time: t1, Count: 2, Sum: 3, Bounds: []float64{1, 2}, BucketCounts: []uint64{1, 1, 0}}},
	}}
	first := metricdata.ResourceMetrics{Resource: res, ScopeMetrics: []metricdata.ScopeMetrics{
		{Scope: s1, Metrics: []metricdata.Metrics{
			{Name: "restarts", Description: "d", Unit: "{restart}", Data: metricdata.Sum[int64]{
				Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
				DataPoints: []metricdata.DataPoint[int64]{
					ip(3, attribute.String("h", "1"), attribute.Int("i", 7), attribute.Bool("b", true)),
					ip(0, attribute.StringSlice("ss", []string{"a", "b"}), attribute.Float64("f", 1.5)),
					ip(9),
				}}},
			{Name: "io", Unit: "By", Data: metricdata.Sum[float64]{Temporality: metricdata.DeltaTemporality,
				DataPoints: []metricdata.DataPoint[float64]{fp(1.25, attribute.String("direction", "receive")), fp(-2, attribute.Int64Slice("is", []int64{1, 2}))}}},
			{Name: "phase", Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, DataPoints: pods(40)}},
			{Name: "mem", Unit: "By", Data: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{
				{Attributes: attribute.NewSet(attribute.String("h", "2")), Time: t1, Value: 5}}}},
			{Name: "mem", Unit: "KiBy", Data: metricdata.Gauge[float64]{DataPoints: []metricdata.DataPoint[float64]{fp(0.5, attribute.BoolSlice("bs", []bool{true}), attribute.Float64Slice("fs", []float64{0.5}))}}},
			histogram,
			// Attribute types the SDK converts (encoderType).
			{Name: "types", Data: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{
				ip(1, attribute.ByteSlice("by", []byte{1, 2})), ip(2, attribute.Slice("sl", attribute.IntValue(1))),
				ip(3, attribute.Map("mp", attribute.String("k", "v"))), ip(4, attribute.KeyValue{Key: "empty"}),
				ip(5, attribute.Float64Slice("nan", []float64{math.NaN()}))}}},
		}},
		{Scope: s2, Metrics: []metricdata.Metrics{
			{Name: "cpu", Unit: "s", Data: metricdata.Gauge[float64]{DataPoints: []metricdata.DataPoint[float64]{fp(2)}}},
		}},
		{Scope: instrumentation.Scope{Name: "odd", Attributes: attribute.NewSet(attribute.ByteSlice("b", []byte{3}))}, Metrics: []metricdata.Metrics{
			{Name: "cpu", Unit: "s", Data: metricdata.Gauge[float64]{DataPoints: []metricdata.DataPoint[float64]{fp(2)}}},
		}},
	}}
	withExemplar := fp(4, attribute.String("direction", "transmit"))
	withExemplar.Exemplars = []metricdata.Exemplar[float64]{{Time: t1, Value: 4, FilteredAttributes: []attribute.KeyValue{attribute.String("x", "y")}}}
	second := metricdata.ResourceMetrics{Resource: res, ScopeMetrics: []metricdata.ScopeMetrics{
		{Scope: s2, Metrics: []metricdata.Metrics{
			{Name: "cpu", Unit: "s", Data: metricdata.Sum[float64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
				DataPoints: []metricdata.DataPoint[float64]{fp(3), fp(4, attribute.String("cpu", "0"))}}},
		}},
		// One scope twice in a collection (a producer's and the
		// pipeline's), a metric name in both.
		{Scope: s2, Metrics: []metricdata.Metrics{
			{Name: "cpu", Unit: "s", Data: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{ip(8)}}},
		}},
		{Scope: s1, Metrics: []metricdata.Metrics{
			{Name: "restarts", Description: "d", Unit: "{restart}", Data: metricdata.Sum[int64]{
				Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
				DataPoints: []metricdata.DataPoint[int64]{ip(4)}}},
			{Name: "io", Unit: "By", Data: metricdata.Sum[float64]{Temporality: metricdata.DeltaTemporality,
				DataPoints: []metricdata.DataPoint[float64]{withExemplar}}},
			{Name: "phase", Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, DataPoints: pods(3)}},
			{Name: "mem", Unit: "By", Data: metricdata.Gauge[float64]{DataPoints: []metricdata.DataPoint[float64]{fp(6, attribute.String("h", "2"))}}},
			{Name: "mem", Unit: "KiBy", Data: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{ip(1)}}},
			{Name: "lost", Data: metricdata.Sum[int64]{DataPoints: []metricdata.DataPoint[int64]{ip(1)}}},
		}},
	}}
	return []metricdata.ResourceMetrics{first, second, first, second, first}
}

// TestEncoderAsTheSDKTransform: what the encoder builds, with what it
// leaves to the SDK exporter, is what the SDK exporter alone sends for the
// same collection, metric for metric and point for point, at every
// collection of encoderRounds, each after the last one's messages were
// kept and rewritten.
func TestEncoderAsTheSDKTransform(t *testing.T) {
	var mu sync.Mutex
	var last *colmetricpb.ExportMetricsServiceRequest
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{OnRequest: func(_ string, req *colmetricpb.ExportMetricsServiceRequest) {
		mu.Lock()
		last = proto.Clone(req).(*colmetricpb.ExportMetricsServiceRequest)
		mu.Unlock()
	}})
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
	ctx := context.Background()
	exp, err := otlpmetricgrpc.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exp.Shutdown(ctx) })
	// send exports rm with the SDK exporter alone and returns the request
	// it sent. An unknown temporality fails the export after sending the
	// rest.
	send := func(ctx context.Context, rm *metricdata.ResourceMetrics) *colmetricpb.ExportMetricsServiceRequest {
		t.Helper()
		mu.Lock()
		last = nil
		mu.Unlock()
		_ = exp.Export(ctx, rm)
		mu.Lock()
		defer mu.Unlock()
		if last == nil {
			t.Fatal("the SDK exporter sent nothing")
		}
		return last
	}
	var enc encoder
	for i, rm := range encoderRounds() {
		want := flatten(send(ctx, &rm))
		scopes, rest := enc.encode(&rm)
		got := flatten(merge(withEncoded(ctx, scopes), send(ctx, rest)))
		if !slices.Equal(got, want) {
			t.Fatalf("collection %d: the encoder and the SDK exporter sent\n%q\nthe SDK exporter alone\n%q", i, got, want)
		}
		if len(scopes) == 0 {
			t.Fatalf("collection %d: the encoder took nothing", i)
		}
	}
}

// flatten renders req as one sorted line per metric: its resource, its
// scope, and the metric with its points in a canonical order.
func flatten(req *colmetricpb.ExportMetricsServiceRequest) []string {
	det := proto.MarshalOptions{Deterministic: true}
	var out []string
	for _, rm := range req.GetResourceMetrics() {
		res, _ := det.Marshal(rm.GetResource())
		for _, sm := range rm.GetScopeMetrics() {
			sc, _ := det.Marshal(sm.GetScope())
			for _, m := range sm.GetMetrics() {
				m = proto.Clone(m).(*metricpb.Metric)
				sortPoints := func(dps []*metricpb.NumberDataPoint) {
					slices.SortFunc(dps, func(a, b *metricpb.NumberDataPoint) int {
						x, _ := det.Marshal(a)
						y, _ := det.Marshal(b)
						return slices.Compare(x, y)
					})
				}
				sortPoints(m.GetGauge().GetDataPoints())
				sortPoints(m.GetSum().GetDataPoints())
				mb, _ := det.Marshal(m)
				out = append(out, fmt.Sprintf("%x|%s|%x|%s|%x", res, rm.GetSchemaUrl(), sc, sm.GetSchemaUrl(), mb))
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestEncoderAllocatesNothingForAKnownCollection: once a collection's
// metrics, points and attributes have been encoded, encoding the next
// collection of the same series allocates nothing (what it leaves to the
// SDK is taken out: handing it over takes a slice).
func TestEncoderAllocatesNothingForAKnownCollection(t *testing.T) {
	rm := encoderRounds()[0]
	var sms []metricdata.ScopeMetrics
	for _, sm := range rm.ScopeMetrics {
		if !plainAttrs(sm.Scope.Attributes) {
			continue
		}
		sm.Metrics = slices.DeleteFunc(slices.Clone(sm.Metrics), func(m metricdata.Metrics) bool { _, ok := encodable(m.Data); return !ok })
		sms = append(sms, sm)
	}
	rm.ScopeMetrics = sms
	var enc encoder
	enc.encode(&rm)
	enc.encode(&rm)
	if n := testing.AllocsPerRun(20, func() { enc.encode(&rm) }); n != 0 {
		t.Fatalf("encoding a known collection allocated %v times; want 0", n)
	}
	if _, rest := enc.encode(&rm); len(rest.ScopeMetrics) != 0 {
		t.Fatalf("the encoder left %d scopes to the SDK; want none", len(rest.ScopeMetrics))
	}
}

// TestEncoderKeepsOnlyWhatIsInUse: what the encoder keeps follows the
// collections: attributes, metrics and scopes unused for two exports are
// let go, and a metric whose points fell under a quarter lets the others
// go; attributes it leaves to the SDK (a float slice holding NaN, which
// equals nothing) are never kept.
func TestEncoderKeepsOnlyWhatIsInUse(t *testing.T) {
	rounds := encoderRounds()
	first, second := rounds[0], rounds[1]
	var enc encoder
	enc.encode(&first)
	phase := func() *encMetric {
		for s, es := range enc.scopes {
			if s.Name == "s" && s.Version == "1" {
				return es.metrics[encMetricKey{name: "phase"}]
			}
		}
		t.Fatal("scope s/1 not kept")
		return nil
	}
	if n := len(phase().points); n != 40 {
		t.Fatalf("phase keeps %d points after 40; want 40", n)
	}
	for range 3 {
		enc.encode(&second)
	}
	if n := len(phase().points); n != 3 {
		t.Fatalf("phase keeps %d points after 3; want 3", n)
	}
	// second's attributes: direction, h, phase, cpu, and the three h
	// values of its pods.
	var keys []string
	for kv := range enc.kvs {
		keys = append(keys, string(kv.Key)+"="+kv.Value.Emit())
	}
	slices.Sort(keys)
	if want := []string{"cpu=0", "h=0", "h=1", "h=2", "phase=Running"}; !slices.Equal(keys, want) {
		t.Fatalf("kept attributes %q; want %q", keys, want)
	}
	for s := range enc.scopes {
		if s.Name == "odd" {
			t.Fatalf("scope %q kept two exports after its last", s.Name)
		}
	}
}

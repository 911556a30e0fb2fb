package exporter

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// encoder turns the sums and gauges of a collection into OTLP protobuf
// messages it keeps from one export to the next, with the fields the SDK's
// exporters' transform gives them (TestEncoderAsTheSDKTransform). The
// transform builds every data point, attribute and value anew at each
// export (the Go SDK has no reusable-data mode, as OpenTelemetry Java's
// exporters have): half of what an interval allocated
// (BenchmarkIntervalAllocs). Here a metric keeps its data points, their
// attribute slices and their values from one export to the next, and an
// attribute is converted once while it is in use.
//
// Everything else is left to the SDK exporter, which still builds the
// request's resource, converts what the encoder does not take (histograms,
// summaries, points with exemplars or with attributes of other types
// (encoderType), an unknown temporality) and sends the
// request with its configuration, compression, retries and partial-success
// handling: the encoded scopes reach the splitter with the export's context
// (withEncoded), which adds them to the SDK's request before regrouping it
// (merge). Nothing may hold the messages after the export returns: the next
// export rewrites them.
type encoder struct {
	mu     sync.Mutex
	gen    uint64
	scopes map[instrumentation.Scope]*encScope
	// kvs holds the attributes converted so far, each with the export
	// that last used it; one unused for two exports in a row is dropped.
	kvs map[attribute.KeyValue]*encKV

	out  []*metricpb.ScopeMetrics
	rest metricdata.ResourceMetrics
}

type encKV struct {
	kv  *commonpb.KeyValue
	gen uint64
}

// encScope is one scope's ScopeMetrics and its metrics; dups counts the
// metrics of each name encoded so far in this export.
type encScope struct {
	sm      *metricpb.ScopeMetrics
	metrics map[encMetricKey]*encMetric
	dups    map[string]int
	gen     uint64
}

// encMetricKey is a metric of a scope: its name and how many metrics of
// that name come before it in the scope.
type encMetricKey struct {
	name string
	dup  int
}

// encMetric is one metric's message and its data points: points[i] keeps
// its attribute slice in attrs[i], since the splitter replaces a point's
// Attributes when it moves the point. kind is what m was made for.
type encMetric struct {
	m      *metricpb.Metric
	kind   encKind
	points []*metricpb.NumberDataPoint
	attrs  [][]*commonpb.KeyValue
	gen    uint64
}

// encode returns the ScopeMetrics of rm's sums and gauges, and what is
// left for the SDK exporter: rm's resource and the scopes' other metrics.
// Both are valid until the next encode.
func (e *encoder) encode(rm *metricdata.ResourceMetrics) ([]*metricpb.ScopeMetrics, *metricdata.ResourceMetrics) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.scopes == nil {
		e.scopes = map[instrumentation.Scope]*encScope{}
		e.kvs = map[attribute.KeyValue]*encKV{}
	}
	e.gen++
	clear(e.out)
	e.out = e.out[:0]
	clear(e.rest.ScopeMetrics)
	e.rest = metricdata.ResourceMetrics{Resource: rm.Resource, ScopeMetrics: e.rest.ScopeMetrics[:0]}
	for i := range rm.ScopeMetrics {
		sm := &rm.ScopeMetrics[i]
		var es *encScope
		var left []metricdata.Metrics
		plainScope := plainAttrs(sm.Scope.Attributes)
		for j, m := range sm.Metrics {
			kind, ok := encodable(m.Data)
			if !plainScope || !ok {
				if left == nil {
					left = make([]metricdata.Metrics, 0, len(sm.Metrics)-j)
				}
				left = append(left, m)
				continue
			}
			if es == nil {
				es = e.scope(sm.Scope)
			}
			k := encMetricKey{name: m.Name, dup: es.dups[m.Name]}
			es.dups[m.Name]++
			es.sm.Metrics = append(es.sm.Metrics, e.metric(es, k, m, kind))
		}
		if left != nil {
			e.rest.ScopeMetrics = append(e.rest.ScopeMetrics, metricdata.ScopeMetrics{Scope: sm.Scope, Metrics: left})
		}
	}
	maps.DeleteFunc(e.scopes, func(_ instrumentation.Scope, es *encScope) bool {
		if es.gen+1 < e.gen {
			return true
		}
		maps.DeleteFunc(es.metrics, func(_ encMetricKey, em *encMetric) bool { return em.gen+1 < e.gen })
		return false
	})
	maps.DeleteFunc(e.kvs, func(_ attribute.KeyValue, c *encKV) bool { return c.gen+1 < e.gen })
	return e.out, &e.rest
}

// encodable reports whether the encoder takes the metric, and as what: a
// sum with a known temporality or a gauge, of either number type, whose
// points have no exemplars and only attributes of the types encoderType
// admits.
func encodable(data metricdata.Aggregation) (encKind, bool) {
	switch d := data.(type) {
	case metricdata.Gauge[int64]:
		return encKind{int64s: true}, plainPoints(d.DataPoints)
	case metricdata.Gauge[float64]:
		return encKind{}, plainPoints(d.DataPoints)
	case metricdata.Sum[int64]:
		return encKind{sum: true, int64s: true, monotonic: d.IsMonotonic, temporality: temporality(d.Temporality)},
			knownTemporality(d.Temporality) && plainPoints(d.DataPoints)
	case metricdata.Sum[float64]:
		return encKind{sum: true, monotonic: d.IsMonotonic, temporality: temporality(d.Temporality)},
			knownTemporality(d.Temporality) && plainPoints(d.DataPoints)
	}
	return encKind{}, false
}

// encoderType reports whether the encoder converts attributes of type t:
// booleans, integers, floats, strings and slices of booleans, integers and
// strings. The SDK converts the others (a float slice may hold a NaN, which
// no kept conversion could be found by).
func encoderType(t attribute.Type) bool {
	switch t {
	case attribute.BOOL, attribute.INT64, attribute.FLOAT64, attribute.STRING,
		attribute.BOOLSLICE, attribute.INT64SLICE, attribute.STRINGSLICE:
		return true
	}
	return false
}

func plainAttrs(set attribute.Set) bool {
	for it := set.Iter(); it.Next(); {
		if !encoderType(it.Attribute().Value.Type()) {
			return false
		}
	}
	return true
}

func knownTemporality(t metricdata.Temporality) bool {
	return t == metricdata.CumulativeTemporality || t == metricdata.DeltaTemporality
}

func plainPoints[N int64 | float64](dps []metricdata.DataPoint[N]) bool {
	for i := range dps {
		if len(dps[i].Exemplars) > 0 || !plainAttrs(dps[i].Attributes) {
			return false
		}
	}
	return true
}

// scope returns the scope's kept ScopeMetrics, emptied and added to the
// export's scopes at its first use in the export (a collection may hold
// one scope twice: its metrics then go out in one ScopeMetrics).
func (e *encoder) scope(s instrumentation.Scope) *encScope {
	es, ok := e.scopes[s]
	if !ok {
		es = &encScope{
			sm: &metricpb.ScopeMetrics{
				Scope:     &commonpb.InstrumentationScope{Name: s.Name, Version: s.Version, Attributes: e.attrs(nil, s.Attributes)},
				SchemaUrl: s.SchemaURL,
			},
			metrics: map[encMetricKey]*encMetric{},
			dups:    map[string]int{},
		}
		e.scopes[s] = es
	}
	if es.gen != e.gen {
		es.gen = e.gen
		clear(es.sm.Metrics)
		es.sm.Metrics = es.sm.Metrics[:0]
		clear(es.dups)
		e.out = append(e.out, es.sm)
	}
	return es
}

// encKind is what a kept Metric is made for: a gauge or a sum, the number
// type of its points' values, and a sum's temporality and monotonicity.
type encKind struct {
	sum, int64s, monotonic bool
	temporality            metricpb.AggregationTemporality
}

// metric returns m, of the given kind, as the kept Metric of key k in es,
// its points rewritten. A kept Metric carries m only if it has m's
// description, unit and kind.
func (e *encoder) metric(es *encScope, k encMetricKey, m metricdata.Metrics, kind encKind) *metricpb.Metric {
	em := es.metrics[k]
	if em == nil || em.kind != kind || em.m.GetDescription() != m.Description || em.m.GetUnit() != m.Unit {
		em = &encMetric{m: &metricpb.Metric{Name: m.Name, Description: m.Description, Unit: m.Unit}, kind: kind}
		if kind.sum {
			em.m.Data = &metricpb.Metric_Sum{Sum: &metricpb.Sum{AggregationTemporality: kind.temporality, IsMonotonic: kind.monotonic}}
		} else {
			em.m.Data = &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{}}
		}
		es.metrics[k] = em
	}
	em.gen = e.gen
	var n int
	switch d := m.Data.(type) {
	case metricdata.Gauge[int64]:
		n = encPoints(e, em, d.DataPoints)
	case metricdata.Gauge[float64]:
		n = encPoints(e, em, d.DataPoints)
	case metricdata.Sum[int64]:
		n = encPoints(e, em, d.DataPoints)
	case metricdata.Sum[float64]:
		n = encPoints(e, em, d.DataPoints)
	}
	// Points beyond n stay for a later export; a metric that shrank to
	// under a quarter of them lets the rest go.
	if n < len(em.points)/4 {
		clear(em.points[n:])
		clear(em.attrs[n:])
		em.points, em.attrs = em.points[:n:n], em.attrs[:n:n]
	}
	if kind.sum {
		em.m.GetSum().DataPoints = em.points[:n]
	} else {
		em.m.GetGauge().DataPoints = em.points[:n]
	}
	return em.m
}

func temporality(t metricdata.Temporality) metricpb.AggregationTemporality {
	if t == metricdata.DeltaTemporality {
		return metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	}
	return metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
}

// encPoints writes dps into em's kept points and returns how many.
func encPoints[N int64 | float64](e *encoder, em *encMetric, dps []metricdata.DataPoint[N]) int {
	for i := range dps {
		dp := &dps[i]
		if i == len(em.points) {
			p := &metricpb.NumberDataPoint{}
			switch any(dp.Value).(type) {
			case int64:
				p.Value = &metricpb.NumberDataPoint_AsInt{}
			case float64:
				p.Value = &metricpb.NumberDataPoint_AsDouble{}
			}
			em.points = append(em.points, p)
			em.attrs = append(em.attrs, nil)
		}
		p := em.points[i]
		switch v := any(dp.Value).(type) {
		case int64:
			p.Value.(*metricpb.NumberDataPoint_AsInt).AsInt = v
		case float64:
			p.Value.(*metricpb.NumberDataPoint_AsDouble).AsDouble = v
		}
		p.StartTimeUnixNano = unixNano(dp.StartTime)
		p.TimeUnixNano = unixNano(dp.Time)
		p.Exemplars, p.Flags = nil, 0
		em.attrs[i] = e.attrs(em.attrs[i][:0], dp.Attributes)
		p.Attributes = em.attrs[i]
		if len(p.Attributes) == 0 {
			p.Attributes = nil
		}
	}
	return len(dps)
}

// attrs appends set's attributes, converted, to dst.
func (e *encoder) attrs(dst []*commonpb.KeyValue, set attribute.Set) []*commonpb.KeyValue {
	for it := set.Iter(); it.Next(); {
		dst = append(dst, e.kv(it.Attribute()))
	}
	return dst
}

// kv returns the kept conversion of kv, as the SDK's transform converts it.
func (e *encoder) kv(kv attribute.KeyValue) *commonpb.KeyValue {
	c, ok := e.kvs[kv]
	if !ok {
		c = &encKV{kv: &commonpb.KeyValue{Key: string(kv.Key), Value: sdkValue(kv.Value)}}
		e.kvs[kv] = c
	}
	c.gen = e.gen
	return c.kv
}

// sdkValue converts v, of a type encoderType admits, as the SDK's
// exporters do: slices become arrays.
func sdkValue(v attribute.Value) *commonpb.AnyValue {
	arr := func(n int, at func(int) *commonpb.AnyValue) *commonpb.AnyValue {
		vals := make([]*commonpb.AnyValue, n)
		for i := range vals {
			vals[i] = at(i)
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vals}}}
	}
	switch v.Type() {
	case attribute.BOOLSLICE:
		s := v.AsBoolSlice()
		return arr(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.BoolValue(s[i])) })
	case attribute.INT64SLICE:
		s := v.AsInt64Slice()
		return arr(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.Int64Value(s[i])) })
	case attribute.STRINGSLICE:
		s := v.AsStringSlice()
		return arr(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.StringValue(s[i])) })
	}
	return anyValue(v)
}

// unixNano is t in Unix nanoseconds, 0 before 1970, as the SDK's
// transform writes times.
func unixNano(t time.Time) uint64 {
	return uint64(max(0, t.UnixNano()))
}

// encodingExporter encodes the sums and gauges of each export (encoder)
// and hands the rest to the SDK exporter, with the encoded scopes in the
// context for the splitter.
type encodingExporter struct {
	sdkmetric.Exporter
	enc encoder
}

func (x *encodingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	scopes, rest := x.enc.encode(rm)
	return x.Exporter.Export(withEncoded(ctx, scopes), rest)
}

type encodedKey struct{}

// encoded is what one export's context carries to the splitter: the scopes
// the encoder built and, on HTTP, the body split from them with the SDK's
// body it was split with. The split moves the encoded points, stripped of
// their entity attributes, into the request; an HTTP retry or redirect of
// the same export posts the same SDK body again and is sent the same split
// body (TestRetryThenResume has the retries). gRPC keeps its split for retries
// itself (splitter.last).
type encoded struct {
	scopes  []*metricpb.ScopeMetrics
	sdkBody []byte
	body    []byte
}

// withEncoded carries the scopes the encoder built to the splitter.
func withEncoded(ctx context.Context, scopes []*metricpb.ScopeMetrics) context.Context {
	if len(scopes) == 0 {
		return ctx
	}
	return context.WithValue(ctx, encodedKey{}, &encoded{scopes: scopes})
}

func encodedOf(ctx context.Context) *encoded {
	e, _ := ctx.Value(encodedKey{}).(*encoded)
	return e
}

// merge returns r with the scopes the encoder built for this export added
// to its resource (r is not changed), or r when there are none.
func merge(ctx context.Context, r *colmetricpb.ExportMetricsServiceRequest) *colmetricpb.ExportMetricsServiceRequest {
	var scopes []*metricpb.ScopeMetrics
	if e := encodedOf(ctx); e != nil {
		scopes = e.scopes
	}
	if len(scopes) == 0 {
		return r
	}
	// The SDK's exporters send one ResourceMetrics, the provider's; the
	// scopes go with the first.
	rms := slices.Clone(r.GetResourceMetrics())
	if len(rms) == 0 {
		rms = []*metricpb.ResourceMetrics{{}}
	}
	in := rms[0]
	sms := make([]*metricpb.ScopeMetrics, 0, len(scopes)+len(in.GetScopeMetrics()))
	sms = append(append(sms, scopes...), in.GetScopeMetrics()...)
	rms[0] = &metricpb.ResourceMetrics{Resource: in.GetResource(), SchemaUrl: in.GetSchemaUrl(), ScopeMetrics: sms}
	return &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: rms}
}

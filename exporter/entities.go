package exporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// splitter turns the one ResourceMetrics the SDK exporter puts into an
// export request into one ResourceMetrics per entity: every data point whose
// attributes include an entity handle (handles) or entity attributes
// (isEntity) moves, without them, under a Resource made of the provider's
// resource attributes plus the entity's attributes. Points with no entity
// attributes stay under the provider's resource. Scopes, metric names, units, descriptions, types, temporality
// and every point field are kept; only attributes move. The result is one
// request, however many entities; over gRPC, a request larger than
// maxGRPCBytes goes out as a few requests each under it, whole resources
// each.
type splitter struct {
	isEntity func(string) bool
	// isSelf, when set, names the scopes of the agent's own metrics
	// (Config.Self): they go, untouched, on the provider's resource with
	// its service.* attributes.
	isSelf func(scope string) bool
	// maxGRPCBytes bounds one gRPC request (0: maxGRPCRequest).
	maxGRPCBytes int
	// handles resolves entity handles (Config.EntityHandles); Key "" when
	// there are none.
	handles EntityHandles

	// cmu guards the handles' Resource attributes, kept as protobuf from
	// one request to the next (an id always stands for the same
	// attributes): building them anew for every entity of every request
	// was most of what the regrouping allocated. An id absent from two
	// requests in a row is dropped.
	cmu   sync.Mutex
	cgen  uint64
	cache map[string]*handleRes
	// groups keeps each entity's ResourceMetrics, with its Resource and a
	// Metric per metric name, from one request to the next (under cmu):
	// one entity has about one data point per metric, so building them
	// for every request was a copy of every metric per point, a sixth of
	// what an interval allocated (BenchmarkIntervalAllocs). A request's
	// points are taken out of them once it is encoded (release); a group
	// absent from two requests in a row is dropped. base is the provider
	// resource's attributes the groups were built with.
	groups map[string]*entityGroup
	base   []*commonpb.KeyValue
	// unresolved counts points whose handle the registry did not know
	// (Stats.UnresolvedHandles); log says so.
	unresolved atomic.Uint64
	log        *slog.Logger
	// posts counts the HTTP requests posted (Stats.SentRequests).
	posts *sent

	// The gRPC exporter hands the same request to every retry attempt;
	// its split, and which parts were accepted, are kept for them until
	// the request is sent whole, so a retry resends only what was not
	// accepted. mu also holds one split at a time from split to encoding
	// (its messages are reused by the next).
	mu    sync.Mutex
	last  *colmetricpb.ExportMetricsServiceRequest
	parts []*colmetricpb.ExportMetricsServiceRequest
	sent  []bool
	// partial sums the partial successes of the parts accepted so far:
	// each part's response replaces the last, and the exporter reads only
	// the final one.
	partial colmetricpb.ExportMetricsPartialSuccess
}

// maxGRPCRequest keeps each gRPC request under the 4 MiB a gRPC server
// (the Collector's OTLP receiver among them) accepts by default, with room
// for framing: at 250 pods of 10 containers one node's request is about
// 4.7 MB (TestNothingLostAt250Pods).
const maxGRPCRequest = 3 << 20

// exportMethod is the OTLP MetricsService Export method.
const exportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// unaryInterceptor splits the request the gRPC exporter sends.
func (s *splitter) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	r, ok := req.(*colmetricpb.ExportMetricsServiceRequest)
	if !ok || method != exportMethod {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != r {
		max := s.maxGRPCBytes
		if max <= 0 {
			max = maxGRPCRequest
		}
		s.last, s.parts = r, chunk(s.split(merge(ctx, r)), max)
		s.sent = make([]bool, len(s.parts))
		s.partial = colmetricpb.ExportMetricsPartialSuccess{}
	}
	resp, _ := reply.(*colmetricpb.ExportMetricsServiceResponse)
	for i, part := range s.parts {
		if s.sent[i] {
			continue
		}
		if err := invoker(ctx, method, part, reply, cc, opts...); err != nil {
			return err
		}
		s.sent[i] = true
		if ps := resp.GetPartialSuccess(); ps != nil {
			s.partial.RejectedDataPoints += ps.GetRejectedDataPoints()
			if m := ps.GetErrorMessage(); m != "" {
				s.partial.ErrorMessage = strings.TrimPrefix(s.partial.ErrorMessage+"; "+m, "; ")
			}
		}
	}
	if resp != nil && len(s.parts) > 1 {
		if p := &s.partial; p.RejectedDataPoints != 0 || p.ErrorMessage != "" {
			resp.PartialSuccess = &colmetricpb.ExportMetricsPartialSuccess{RejectedDataPoints: p.RejectedDataPoints, ErrorMessage: p.ErrorMessage}
		} else {
			resp.PartialSuccess = nil
		}
	}
	// Sent whole: nothing will retry it, and holding it until the next
	// interval would keep a whole request (about 5 MB of protobuf objects
	// at 110 pods) in the live heap between intervals.
	s.last, s.parts, s.sent = nil, nil, nil
	s.release()
	return nil
}

// chunk splits req into requests of whole ResourceMetrics, each at most max
// bytes unless one resource alone is larger.
func chunk(req *colmetricpb.ExportMetricsServiceRequest, max int) []*colmetricpb.ExportMetricsServiceRequest {
	if proto.Size(req) <= max {
		return []*colmetricpb.ExportMetricsServiceRequest{req}
	}
	var out []*colmetricpb.ExportMetricsServiceRequest
	cur, size := &colmetricpb.ExportMetricsServiceRequest{}, 0
	for _, rm := range req.GetResourceMetrics() {
		n := proto.Size(rm) + 8 // field tag and length
		if size+n > max && len(cur.ResourceMetrics) > 0 {
			out = append(out, cur)
			cur, size = &colmetricpb.ExportMetricsServiceRequest{}, 0
		}
		cur.ResourceMetrics = append(cur.ResourceMetrics, rm)
		size += n
	}
	return append(out, cur)
}

// roundTripper splits the request body the HTTP exporter posts (gzip
// compressed or not) and re-encodes it the same way.
type roundTripper struct {
	s    *splitter
	base http.RoundTripper
}

func (t roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.Body == nil || req.Body == http.NoBody {
		return t.base.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	gz := req.Header.Get("Content-Encoding") == "gzip"
	raw := body
	if gz {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("exporter: split request: %w", err)
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("exporter: split request: %w", err)
		}
	}
	out, err := t.splitBody(req.Context(), raw)
	if err != nil {
		return nil, err
	}
	if gz {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		if _, err := zw.Write(out); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		out = b.Bytes()
	}
	r2 := req.Clone(t.s.posts.posting(req.Context(), len(out)))
	r2.Body = io.NopCloser(bytes.NewReader(out))
	r2.ContentLength = int64(len(out))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(out)), nil }
	return t.base.RoundTrip(r2)
}

// splitBody returns the split of raw, the SDK's request body, with the
// export's encoded scopes (merge); a retry of the export is given the
// split it was given before (encoded).
func (t roundTripper) splitBody(ctx context.Context, raw []byte) ([]byte, error) {
	// split reuses the last split's messages: the next one waits until
	// this one is encoded.
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	enc := encodedOf(ctx)
	if enc != nil && enc.body != nil && bytes.Equal(enc.sdkBody, raw) {
		return enc.body, nil
	}
	var in colmetricpb.ExportMetricsServiceRequest
	if err := proto.Unmarshal(raw, &in); err != nil {
		return nil, fmt.Errorf("exporter: split request: %w", err)
	}
	out, err := proto.Marshal(t.s.split(merge(ctx, &in)))
	t.s.release()
	if err != nil {
		return nil, fmt.Errorf("exporter: split request: %w", err)
	}
	if enc != nil {
		enc.sdkBody, enc.body = raw, out
	}
	return out, nil
}

// split returns a new request made of in's data points, which move into it
// with their entity attributes removed: in must not be used afterwards (the
// gRPC interceptor keeps the result for the retries of the same request;
// the HTTP round tripper decoded in itself). Moving the points rather than
// copying them saves one allocation per point (BenchmarkIntervalAllocs).
// The result's ResourceMetrics and Metrics are the splitter's, reused by
// the next split: it is valid until then or until release.
func (s *splitter) split(in *colmetricpb.ExportMetricsServiceRequest) *colmetricpb.ExportMetricsServiceRequest {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	out := &colmetricpb.ExportMetricsServiceRequest{}
	for _, rm := range in.GetResourceMetrics() {
		out.ResourceMetrics = append(out.ResourceMetrics, s.splitResource(rm)...)
	}
	maps.DeleteFunc(s.cache, func(_ string, r *handleRes) bool { return r.gen+1 < s.cgen })
	maps.DeleteFunc(s.groups, func(_ string, g *entityGroup) bool { return g.gen+1 < s.cgen })
	s.cgen++
	return out
}

// release takes the data points of the last split's requests out of the
// groups kept for the next one, once they are encoded: kept, they would
// hold a whole interval's points in the live heap until the next.
func (s *splitter) release() {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	for _, g := range s.groups {
		for _, m := range g.metrics {
			m.release()
		}
	}
}

// handleRes is the entity attributes of one handle as protobuf.
type handleRes struct {
	kvs []*commonpb.KeyValue
	gen uint64
}

// resolve returns the entity attributes handle id stands for, or nil when
// the id is unknown (then the handle stays on the point: nothing is lost,
// and the attribute shows what went wrong).
func (s *splitter) resolve(id string) *handleRes {
	if r, ok := s.cache[id]; ok {
		r.gen = s.cgen
		return r
	}
	attrs, ok := s.handles.Attributes(id)
	if !ok {
		if n := s.unresolved.Add(1); (n == 1 || n%1000 == 0) && s.log != nil {
			s.log.Warn("entity handle not in the registry: its point goes out on the node's resource, with the handle as an attribute; something other than the export collects the product metrics",
				"handle", id, "points", n)
		}
		return nil
	}
	r := &handleRes{kvs: make([]*commonpb.KeyValue, len(attrs)), gen: s.cgen}
	for i, kv := range attrs {
		r.kvs[i] = &commonpb.KeyValue{Key: string(kv.Key), Value: anyValue(kv.Value)}
	}
	if s.cache == nil {
		s.cache = map[string]*handleRes{}
	}
	s.cache[id] = r
	return r
}

// anyValue converts an attribute value to OTLP. Entity attributes are
// strings (a set with a slice value gets no handle: appendKey refuses it);
// the other scalar types are converted as the SDK's exporters convert them.
func anyValue(v attribute.Value) *commonpb.AnyValue {
	switch v.Type() {
	case attribute.BOOL:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}}
	case attribute.INT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}}
	case attribute.FLOAT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}}
	case attribute.STRING:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.AsString()}}
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.Emit()}}
}

// entityGroup is one entity's ResourceMetrics, kept across requests.
type entityGroup struct {
	rm *metricpb.ResourceMetrics
	// gen is the request (splitter.cgen) that last used the group.
	gen uint64
	// scopes holds the group's ScopeMetrics by scopeIdentity, metrics
	// its Metrics by metricKey. A scope is not keyed by its name alone:
	// two scopes may share one (with other versions, attributes or schema
	// URLs). Nor by its place in the request: the SDK orders its scopes
	// afresh at every collection, and a group would keep a Metric for
	// each place a scope had taken.
	scopes  map[string]*groupScope
	metrics map[metricKey]*groupMetric
}

// metricKey is one metric of a request: its scope's identity, its name,
// and how many metrics of that name come before it in the scope (an
// instrument registered twice with different units or types gives two
// Metrics of one name).
type metricKey struct {
	scope string
	name  string
	dup   int
}

// scopeIdentity is everything that tells sm's scope from another: its
// name, version, attributes and schema URL.
func scopeIdentity(sm *metricpb.ScopeMetrics) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(sm.GetScope())
	return string(appendPart(appendPart(nil, string(b)), sm.GetSchemaUrl()))
}

// groupScope is one scope of an entity and the request that last used it.
type groupScope struct {
	sc  *metricpb.ScopeMetrics
	gen uint64
}

// groupMetric is one metric of an entity: its Metric with the data points
// of the current request, and the request that last used it.
type groupMetric struct {
	m   *metricpb.Metric
	gen uint64
}

// release clears the metric's data points, keeping their slice.
func (gm *groupMetric) release() {
	switch d := gm.m.GetData().(type) {
	case *metricpb.Metric_Gauge:
		d.Gauge.DataPoints = clearPoints(d.Gauge.DataPoints)
	case *metricpb.Metric_Sum:
		d.Sum.DataPoints = clearPoints(d.Sum.DataPoints)
	case *metricpb.Metric_Histogram:
		d.Histogram.DataPoints = clearPoints(d.Histogram.DataPoints)
	case *metricpb.Metric_ExponentialHistogram:
		d.ExponentialHistogram.DataPoints = clearPoints(d.ExponentialHistogram.DataPoints)
	case *metricpb.Metric_Summary:
		d.Summary.DataPoints = clearPoints(d.Summary.DataPoints)
	}
}

func clearPoints[P any](dps []P) []P {
	clear(dps)
	return dps[:0]
}

// sameShape reports whether kept, a metric built for an earlier request,
// can carry m's points: same description, unit, metadata, type,
// temporality and monotonicity.
func sameShape(kept, m *metricpb.Metric) bool {
	if kept.GetDescription() != m.GetDescription() || kept.GetUnit() != m.GetUnit() || len(kept.GetMetadata()) != 0 || len(m.GetMetadata()) != 0 {
		return false
	}
	switch d := m.GetData().(type) {
	case *metricpb.Metric_Gauge:
		return kept.GetGauge() != nil
	case *metricpb.Metric_Sum:
		k := kept.GetSum()
		return k != nil && k.GetAggregationTemporality() == d.Sum.GetAggregationTemporality() && k.GetIsMonotonic() == d.Sum.GetIsMonotonic()
	case *metricpb.Metric_Histogram:
		k := kept.GetHistogram()
		return k != nil && k.GetAggregationTemporality() == d.Histogram.GetAggregationTemporality()
	case *metricpb.Metric_ExponentialHistogram:
		k := kept.GetExponentialHistogram()
		return k != nil && k.GetAggregationTemporality() == d.ExponentialHistogram.GetAggregationTemporality()
	case *metricpb.Metric_Summary:
		return kept.GetSummary() != nil
	}
	return false
}

// emptyCopy returns m's name, description, unit, metadata, type,
// temporality and monotonicity, with no data point.
func emptyCopy(m *metricpb.Metric) *metricpb.Metric {
	c := &metricpb.Metric{Name: m.GetName(), Description: m.GetDescription(), Unit: m.GetUnit(), Metadata: m.GetMetadata()}
	switch d := m.GetData().(type) {
	case *metricpb.Metric_Gauge:
		c.Data = &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{}}
	case *metricpb.Metric_Sum:
		c.Data = &metricpb.Metric_Sum{Sum: &metricpb.Sum{AggregationTemporality: d.Sum.GetAggregationTemporality(), IsMonotonic: d.Sum.GetIsMonotonic()}}
	case *metricpb.Metric_Histogram:
		c.Data = &metricpb.Metric_Histogram{Histogram: &metricpb.Histogram{AggregationTemporality: d.Histogram.GetAggregationTemporality()}}
	case *metricpb.Metric_ExponentialHistogram:
		c.Data = &metricpb.Metric_ExponentialHistogram{ExponentialHistogram: &metricpb.ExponentialHistogram{AggregationTemporality: d.ExponentialHistogram.GetAggregationTemporality()}}
	case *metricpb.Metric_Summary:
		c.Data = &metricpb.Metric_Summary{Summary: &metricpb.Summary{}}
	}
	return c
}

// sameKVs reports whether a and b hold the same attributes in the same
// order.
func sameKVs(a, b []*commonpb.KeyValue) bool {
	return slices.EqualFunc(a, b, func(x, y *commonpb.KeyValue) bool { return proto.Equal(x, y) })
}

func (s *splitter) splitResource(rm *metricpb.ResourceMetrics) []*metricpb.ResourceMetrics {
	// The SDK merges OTEL_SERVICE_NAME and any service.* of
	// OTEL_RESOURCE_ATTRIBUTES into every provider's resource; they describe
	// the agent, not the node, pod or container.
	var base []*commonpb.KeyValue
	for _, kv := range rm.GetResource().GetAttributes() {
		if k := kv.GetKey(); !strings.HasPrefix(k, "service.") && !strings.HasPrefix(k, "telemetry.sdk.") {
			base = append(base, kv)
		}
	}
	if !sameKVs(base, s.base) || s.groups == nil {
		s.groups, s.base = map[string]*entityGroup{}, base
	}
	var order []*entityGroup
	// key is reused for every point; a lookup with string(key) does not
	// allocate, only a new group's key does. The schema URL is part of it;
	// every part is length-prefixed, a byte says whether a handle follows,
	// and a value that is not a string is its protobuf encoding, tagged
	// apart from strings.
	var key []byte
	group := func(h *handleRes, id string, entity []*commonpb.KeyValue) *entityGroup {
		key = appendPart(key[:0], rm.GetSchemaUrl())
		if h != nil {
			key = appendPart(append(key, 1), id)
		} else {
			key = append(key, 0)
		}
		for _, kv := range entity {
			key = appendPart(key, kv.GetKey())
			if v, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_StringValue); ok {
				key = appendPart(append(key, 's'), v.StringValue)
			} else {
				b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(kv.GetValue())
				key = appendPart(append(key, 'p'), string(b))
			}
		}
		g, ok := s.groups[string(key)]
		if !ok {
			var hkvs []*commonpb.KeyValue
			if h != nil {
				hkvs = h.kvs
			}
			attrs := make([]*commonpb.KeyValue, 0, len(base)+len(hkvs)+len(entity))
			attrs = append(attrs, base...)
			attrs = append(attrs, hkvs...)
			attrs = append(attrs, entity...)
			g = &entityGroup{
				rm: &metricpb.ResourceMetrics{
					Resource:  &resourcepb.Resource{Attributes: attrs},
					SchemaUrl: rm.GetSchemaUrl(),
				},
				gen:     s.cgen - 1,
				scopes:  map[string]*groupScope{},
				metrics: map[metricKey]*groupMetric{},
			}
			s.groups[string(key)] = g
		}
		if g.gen != s.cgen {
			// First use in this request: empty what the last one left.
			g.gen = s.cgen
			g.rm.ScopeMetrics = g.rm.ScopeMetrics[:0]
			order = append(order, g)
		}
		return g
	}
	metricOf := func(g *entityGroup, k metricKey, sm *metricpb.ScopeMetrics, m *metricpb.Metric) *metricpb.Metric {
		gm := g.metrics[k]
		if gm != nil && gm.gen == s.cgen {
			// k stands for this one metric of the request.
			return gm.m
		}
		if gm == nil || !sameShape(gm.m, m) {
			gm = &groupMetric{m: emptyCopy(m)}
			g.metrics[k] = gm
		}
		gm.release()
		gm.gen = s.cgen
		gs, ok := g.scopes[k.scope]
		if !ok {
			gs = &groupScope{sc: &metricpb.ScopeMetrics{}, gen: s.cgen - 1}
			g.scopes[k.scope] = gs
		}
		if gs.gen != s.cgen {
			gs.gen = s.cgen
			gs.sc.Scope, gs.sc.SchemaUrl, gs.sc.Metrics = sm.GetScope(), sm.GetSchemaUrl(), gs.sc.Metrics[:0]
			g.rm.ScopeMetrics = append(g.rm.ScopeMetrics, gs.sc)
		}
		gs.sc.Metrics = append(gs.sc.Metrics, gm.m)
		return gm.m
	}
	// partition returns the entity attributes (sorted by key), the
	// resolved entity handle and its id, and the rest. entity is a scratch
	// slice reused for every point (group copies what it keeps); rest is
	// attrs compacted in place: the point is moved, not copied, so its
	// attribute slice is the splitter's to reuse.
	var scratch []*commonpb.KeyValue
	partition := func(attrs []*commonpb.KeyValue) (entity []*commonpb.KeyValue, h *handleRes, id string, rest []*commonpb.KeyValue) {
		entity = scratch[:0]
		for _, kv := range attrs {
			switch k := kv.GetKey(); {
			case s.handles.Key != "" && k == s.handles.Key:
				id = kv.GetValue().GetStringValue()
				h = s.resolve(id)
			case s.isEntity(k):
				entity = append(entity, kv)
			}
		}
		scratch = entity
		n := 0
		for _, kv := range attrs {
			k := kv.GetKey()
			if (h != nil && k == s.handles.Key) || s.isEntity(k) {
				continue
			}
			attrs[n] = kv
			n++
		}
		clear(attrs[n:])
		if n > 0 {
			rest = attrs[:n]
		}
		slices.SortFunc(entity, func(a, b *commonpb.KeyValue) int { return strings.Compare(a.GetKey(), b.GetKey()) })
		return entity, h, id, rest
	}
	var self *metricpb.ResourceMetrics
	// names counts the metrics of each name in each scope so far.
	names := map[metricKey]int{}
	for _, sm := range rm.GetScopeMetrics() {
		if s.isSelf != nil && s.isSelf(sm.GetScope().GetName()) {
			if self == nil {
				self = &metricpb.ResourceMetrics{Resource: rm.GetResource(), SchemaUrl: rm.GetSchemaUrl()}
			}
			self.ScopeMetrics = append(self.ScopeMetrics, sm)
			continue
		}
		sk := scopeIdentity(sm)
		for _, m := range sm.GetMetrics() {
			k := metricKey{scope: sk, name: m.GetName()}
			n := names[k]
			names[k]++
			k.dup = n
			switch d := m.GetData().(type) {
			case *metricpb.Metric_Gauge:
				for _, dp := range d.Gauge.GetDataPoints() {
					entity, h, id, rest := partition(dp.GetAttributes())
					c := metricOf(group(h, id, entity), k, sm, m).GetGauge()
					c.DataPoints = append(c.DataPoints, movePoint(dp, rest))
				}
			case *metricpb.Metric_Sum:
				for _, dp := range d.Sum.GetDataPoints() {
					entity, h, id, rest := partition(dp.GetAttributes())
					c := metricOf(group(h, id, entity), k, sm, m).GetSum()
					c.DataPoints = append(c.DataPoints, movePoint(dp, rest))
				}
			case *metricpb.Metric_Histogram:
				for _, dp := range d.Histogram.GetDataPoints() {
					entity, h, id, rest := partition(dp.GetAttributes())
					c := metricOf(group(h, id, entity), k, sm, m).GetHistogram()
					dp.Attributes = rest
					c.DataPoints = append(c.DataPoints, dp)
				}
			case *metricpb.Metric_ExponentialHistogram:
				for _, dp := range d.ExponentialHistogram.GetDataPoints() {
					entity, h, id, rest := partition(dp.GetAttributes())
					c := metricOf(group(h, id, entity), k, sm, m).GetExponentialHistogram()
					dp.Attributes = rest
					c.DataPoints = append(c.DataPoints, dp)
				}
			case *metricpb.Metric_Summary:
				for _, dp := range d.Summary.GetDataPoints() {
					entity, h, id, rest := partition(dp.GetAttributes())
					c := metricOf(group(h, id, entity), k, sm, m).GetSummary()
					dp.Attributes = rest
					c.DataPoints = append(c.DataPoints, dp)
				}
			}
		}
	}
	out := make([]*metricpb.ResourceMetrics, 0, len(order)+1)
	for _, g := range order {
		out = append(out, g.rm)
	}
	if self != nil {
		out = append(out, self)
	}
	return out
}

// appendPart appends s to key with its length before it.
func appendPart(key []byte, s string) []byte {
	return append(binary.AppendUvarint(key, uint64(len(s))), s...)
}

func movePoint(dp *metricpb.NumberDataPoint, attrs []*commonpb.KeyValue) *metricpb.NumberDataPoint {
	dp.Attributes = attrs
	return dp
}

// httpClient is the client the HTTP exporter uses when requests are split:
// the exporter builds its TLS settings from the OTEL_EXPORTER_OTLP_* variables
// only for a client of its own, so the same variables are read here (the
// CA certificate and the client key pair; CheckEnv reports them when they
// do not load) and the export timeout is the client's, as it is the
// exporter's own client's.
func httpClient(s *splitter, getenv func(string) string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	env := func(k string) string {
		if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_METRICS_" + k)); v != "" {
			return v
		}
		return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + k))
	}
	var tcfg *tls.Config
	if ca := env("CERTIFICATE"); ca != "" {
		b, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("exporter: OTEL_EXPORTER_OTLP_CERTIFICATE %q: %w", ca, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("exporter: OTEL_EXPORTER_OTLP_CERTIFICATE %q holds no PEM certificate", ca)
		}
		tcfg = &tls.Config{RootCAs: pool}
	}
	if crt, key := env("CLIENT_CERTIFICATE"), env("CLIENT_KEY"); crt != "" && key != "" {
		pair, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			return nil, fmt.Errorf("exporter: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/KEY: %w", err)
		}
		if tcfg == nil {
			tcfg = &tls.Config{}
		}
		tcfg.Certificates = []tls.Certificate{pair}
	}
	if tcfg != nil {
		tcfg.MinVersion = tls.VersionTLS12
		tr.TLSClientConfig = tcfg
	}
	timeout := 10 * time.Second // the exporter's default
	if v := env("TIMEOUT"); v != "" {
		if ms, err := strconv.Atoi(v); err == nil && ms >= 0 {
			timeout = time.Duration(ms) * time.Millisecond
		}
	}
	return &http.Client{Transport: roundTripper{s: s, base: tr}, Timeout: timeout}, nil
}

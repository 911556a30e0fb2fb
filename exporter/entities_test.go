package exporter

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/testpki"
)

// resourceKey renders a resource's attributes as one sortable string.
func resourceKey(r map[string]string) string {
	kv := make([]string, 0, len(r))
	for k, v := range r {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// TestOneRequestOneResourcePerEntity: one collection is one export request
// over gRPC and HTTP/protobuf (gzip), holding one Resource for the node, one
// per pod and one per container of the kubelet summary and the informer
// state, each with the semantic-convention entity attributes; no data point
// carries an entity attribute; the agent's service.* attributes stay off
// these resources.
func TestOneRequestOneResourcePerEntity(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			t.Setenv("OTEL_SERVICE_NAME", "must-not-appear-on-pods")
			e := setup(t, protocol, Config{})
			if err := e.prov.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			exports := e.recv.Exports()
			if len(exports) != 1 {
				t.Fatalf("%d export requests for one collection, want 1", len(exports))
			}
			ex := exports[0]
			resources := map[string]map[string]string{}
			for _, p := range ex.Points {
				resources[resourceKey(p.Resource)] = p.Resource
				if p.SchemaURL != collector.SchemaURL {
					t.Errorf("%s resource schema URL %q, want %q", p.Metric, p.SchemaURL, collector.SchemaURL)
				}
				for k := range p.Attrs {
					if collector.IsResourceAttribute(k) || k == collector.EntityHandleKey {
						t.Errorf("%s point carries entity attribute %s", p.Metric, k)
					}
				}
			}
			if len(resources) != ex.Resources {
				t.Errorf("%d distinct resources among the points, %d ResourceMetrics in the request: one entity is split over several", len(resources), ex.Resources)
			}
			var nodes, pods, containers int
			podsByUID := map[string]int{}
			for _, r := range resources {
				for _, k := range []string{"service.name", "service.instance.id", "telemetry.sdk.language"} {
					if _, ok := r[k]; ok {
						t.Errorf("resource %v carries the agent's %s", r, k)
					}
				}
				if r["k8s.node.name"] != "node-1" || r["k8s.cluster.name"] != "test-cluster" {
					t.Errorf("resource %v lacks k8s.node.name=node-1 or k8s.cluster.name from OTEL_RESOURCE_ATTRIBUTES", r)
				}
				switch {
				case r["k8s.container.name"] != "":
					containers++
					if r["k8s.pod.uid"] == "" || r["k8s.pod.name"] == "" || r["k8s.namespace.name"] == "" {
						t.Errorf("container resource %v lacks its pod", r)
					}
				case r["k8s.pod.uid"] != "":
					pods++
					podsByUID[r["k8s.pod.uid"]]++
				default:
					nodes++
				}
			}
			// The fixture: 6 pods in the informer state (4 in the kubelet
			// summary), 7 containers with a spec and postgres-0's init
			// container and sidecar.
			if nodes != 1 || pods != 6 || containers != 9 {
				t.Errorf("resources: %d node, %d pod, %d container; want 1, 6, 9", nodes, pods, containers)
			}
			// A volume is a point attribute on its pod's resource.
			v := one(t, ex.Points, "k8s.pod.volume.usage", map[string]string{"k8s.volume.name": "data"})
			if v.Resource["k8s.pod.name"] != "postgres-0" || v.Resource["k8s.container.name"] != "" ||
				v.Attrs["k8s.persistentvolumeclaim.name"] != "data-postgres-0" || v.Attrs["k8s.volume.type"] != "persistentVolumeClaim" {
				t.Errorf("data volume point: resource %v, attributes %v; want postgres-0's resource and the volume on the point", v.Resource, v.Attrs)
			}
			for uid, n := range podsByUID {
				if n != 1 {
					t.Errorf("pod %s has %d resources", uid, n)
				}
			}
			nginx := map[string]string{"k8s.container.name": "nginx", "k8s.pod.name": "web-5d8f7c6b9-abcde"}
			for _, metric := range []string{"container.cpu.time", "k8s.container.ready", "k8s.container.restart.count"} {
				p := one(t, ex.Points, metric, nginx)
				for k, v := range map[string]string{
					"k8s.namespace.name": "shop", "k8s.pod.uid": "c3d4e5f6-0718-4293-a4b5-c6d7e8f90a1b",
					"k8s.deployment.name": "web", "k8s.replicaset.name": "web-5d8f7c6b9", "k8s.replicaset.uid": "r2",
					"k8s.pod.label.app": "web", "container.image.name": "nginx", "container.image.tag": "1.29",
					"container.id": "77f005ca6d45fd6e0e89fe1bb69da387a126d08ab5a58040d05f16c803c2fc6b",
				} {
					if p.Resource[k] != v {
						t.Errorf("%s nginx resource %s = %q, want %q", metric, k, p.Resource[k], v)
					}
				}
			}
			// kubelet and informer metrics of one pod share its resource.
			a := one(t, ex.Points, "k8s.pod.cpu.usage", map[string]string{"k8s.pod.name": "postgres-0"})
			b := one(t, ex.Points, "k8s.pod.status.phase", map[string]string{"k8s.pod.name": "postgres-0", "k8s.pod.status.phase": "Running"})
			if resourceKey(a.Resource) != resourceKey(b.Resource) {
				t.Errorf("postgres-0: kubelet resource %v, pod state resource %v", a.Resource, b.Resource)
			}
			if s := e.prov.Stats(); s.Exports != 1 {
				t.Errorf("exporter stats %+v, want 1 export", s)
			}
		})
	}
}

// TestAgentResourceUnsplit: a provider without EntityKeys exports one
// resource describing the agent.
func TestAgentResourceUnsplit(t *testing.T) {
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=c1")
	p, err := New(context.Background(), Config{Protocol: ProtocolGRPC, Interval: time.Hour, NodeName: "n1", ServiceVersion: "v9"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RegisterMetrics(p.Meter("self")); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ex := recv.Exports()
	if len(ex) != 1 || ex[0].Resources != 1 || len(ex[0].Points) == 0 {
		t.Fatalf("exports %+v, want one request with one resource", ex)
	}
	got := ex[0].Points[0].Resource
	for k, v := range map[string]string{"service.name": "fleetagent", "service.instance.id": "n1", "service.version": "v9",
		"k8s.node.name": "n1", "k8s.cluster.name": "c1", "telemetry.sdk.language": "go"} {
		if got[k] != v {
			t.Errorf("agent resource %s = %q, want %q (%v)", k, got[k], v, got)
		}
	}
}

// TestSplitHTTPOverTLS: the HTTP exporter's client, which the split replaces,
// still verifies the collector with OTEL_EXPORTER_OTLP_CERTIFICATE; without
// it the export fails on the unknown authority.
func TestSplitHTTPOverTLS(t *testing.T) {
	ca, err := testpki.NewCA("otlp-ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServingIP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{HTTPTLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, testpki.PEM(ca.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://"+recv.HTTPAddr())
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
	export := func() error {
		p, err := New(context.Background(), Config{Protocol: ProtocolHTTPProtobuf, Interval: time.Hour, NodeName: "n1",
			EntityKeys: collector.IsResourceAttribute, Retry: Retry{Disabled: true}})
		if err != nil {
			t.Fatal(err)
		}
		m := p.Meter("m")
		g, _ := m.Int64ObservableGauge("g")
		if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			o.ObserveInt64(g, 1, metric.WithAttributes(attribute.String("k8s.pod.uid", "u1")))
			o.ObserveInt64(g, 2, metric.WithAttributes(attribute.String("k8s.pod.uid", "u2")))
			return nil
		}, g); err != nil {
			t.Fatal(err)
		}
		defer p.Shutdown(context.Background())
		return p.ForceFlush(context.Background())
	}
	if err := export(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("export without the CA = %v, want a certificate error", err)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", caFile)
	if err := export(); err != nil {
		t.Fatalf("export with OTEL_EXPORTER_OTLP_CERTIFICATE: %v", err)
	}
	ex := recv.Exports()
	// ForceFlush, then the final export of Shutdown.
	if len(ex) != 2 || ex[0].Resources != 2 {
		t.Fatalf("exports %+v, want requests with two pod resources each", ex)
	}
}

// sixPodRequest is one request of six pods' points, 50 each, which a
// 1200-byte limit sends in several parts.
func sixPodRequest() *colmetricpb.ExportMetricsServiceRequest {
	req := &colmetricpb.ExportMetricsServiceRequest{}
	rm := &metricpb.ResourceMetrics{ScopeMetrics: []*metricpb.ScopeMetrics{{}}}
	for i := 0; i < 6; i++ {
		g := &metricpb.Gauge{}
		for j := 0; j < 50; j++ {
			g.DataPoints = append(g.DataPoints, &metricpb.NumberDataPoint{
				Attributes: []*commonpb.KeyValue{{Key: "k8s.pod.uid", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprintf("pod-%d", i)}}}},
				Value:      &metricpb.NumberDataPoint_AsInt{AsInt: int64(j)},
			})
		}
		rm.ScopeMetrics[0].Metrics = append(rm.ScopeMetrics[0].Metrics, &metricpb.Metric{Name: fmt.Sprintf("m%d", i), Data: &metricpb.Metric_Gauge{Gauge: g}})
	}
	req.ResourceMetrics = []*metricpb.ResourceMetrics{rm}
	return req
}

// TestGRPCPartsRetriedOnce: a request split into parts by size is retried
// from the first part not accepted; accepted parts are not sent again; once
// sent whole, the request is let go.
func TestGRPCPartsRetriedOnce(t *testing.T) {
	req := sixPodRequest()
	s := &splitter{isEntity: collector.IsResourceAttribute, maxGRPCBytes: 1200}
	var sent []int
	fail := 2
	invoker := func(_ context.Context, _ string, r, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		n := len(r.(*colmetricpb.ExportMetricsServiceRequest).GetResourceMetrics())
		if len(sent) == fail {
			fail = -1
			return errors.New("unavailable")
		}
		sent = append(sent, n)
		return nil
	}
	if err := s.unaryInterceptor(context.Background(), exportMethod, req, nil, nil, invoker); err == nil {
		t.Fatal("the failing part's error was not returned")
	}
	first, parts := len(sent), len(s.parts)
	if err := s.unaryInterceptor(context.Background(), exportMethod, req, nil, nil, invoker); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range sent {
		total += n
	}
	if parts < 3 || total != 6 || first != 2 || len(sent) != parts {
		t.Errorf("parts %d, sent %v (first attempt %d): want every pod resource sent exactly once", parts, sent, first)
	}
	// Sent whole, the request is no longer held for retries.
	if s.last != nil || s.parts != nil {
		t.Errorf("the splitter still holds the request after it was sent whole (%d parts)", len(s.parts))
	}
}

// TestGRPCPartsPartialSuccessSummed: when a request goes out in parts, the
// exporter reads one response; it carries the rejected points and messages
// of every part, across a retry, not only the last part's (which replaced
// the others').
func TestGRPCPartsPartialSuccessSummed(t *testing.T) {
	req := sixPodRequest()
	s := &splitter{isEntity: collector.IsResourceAttribute, maxGRPCBytes: 1200}
	calls, failed := 0, false
	// Part 0 has 3 points rejected, part 2 has 2; part 1 fails once.
	invoker := func(_ context.Context, _ string, _, reply any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		resp := reply.(*colmetricpb.ExportMetricsServiceResponse)
		resp.Reset() // as decoding a response does
		part := calls
		if failed {
			part--
		}
		calls++
		switch part {
		case 0:
			resp.PartialSuccess = &colmetricpb.ExportMetricsPartialSuccess{RejectedDataPoints: 3, ErrorMessage: "three too old"}
		case 1:
			if !failed {
				failed = true
				return errors.New("unavailable")
			}
		case 2:
			resp.PartialSuccess = &colmetricpb.ExportMetricsPartialSuccess{RejectedDataPoints: 2, ErrorMessage: "two too old"}
		}
		return nil
	}
	resp := &colmetricpb.ExportMetricsServiceResponse{}
	if err := s.unaryInterceptor(context.Background(), exportMethod, req, resp, nil, invoker); err == nil {
		t.Fatal("the failing part's error was not returned")
	}
	resp = &colmetricpb.ExportMetricsServiceResponse{}
	if err := s.unaryInterceptor(context.Background(), exportMethod, req, resp, nil, invoker); err != nil {
		t.Fatal(err)
	}
	if calls < 4 {
		t.Fatalf("%d calls: the request was not split into more than two parts", calls)
	}
	ps := resp.GetPartialSuccess()
	if ps.GetRejectedDataPoints() != 5 || ps.GetErrorMessage() != "three too old; two too old" {
		t.Errorf("the exporter read partial success %v; want 5 points rejected, with both parts' messages", ps)
	}
}

// TestEntityHandlesSameExport: the agent's points carry entity handles
// (collector.WithEntityHandles) and the splitter puts each handle's
// attributes on its Resource; the request that arrives holds the same
// resources, metrics and point attributes as one built from points that
// carry their entity attributes, over gRPC and HTTP/protobuf.
func TestEntityHandlesSameExport(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			e := setup(t, protocol, Config{}) // with handles, as the agent
			if err := e.prov.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			withHandles := e.recv.Last()

			plain, err := New(context.Background(), Config{Protocol: protocol, NodeName: "node-1", Interval: time.Hour,
				EntityKeys: collector.IsResourceAttribute, SchemaURL: collector.SchemaURL})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = plain.Shutdown(context.Background()) })
			cs, err := collector.Default(collector.Config{PodLabels: []string{"app"},
				Kubelet: collector.KubeletConfig{Endpoint: e.kubelet.URL(), MinInterval: -1}}, e.state)
			if err != nil {
				t.Fatal(err)
			}
			runner, err := collector.NewRunner(plain.Meter("github.com/fleetagent/fleetagent/collector"), cs)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = runner.Shutdown(context.Background()) })
			if err := plain.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			without := e.recv.Last()
			exs := e.recv.Exports()
			if len(exs) != 2 {
				t.Fatalf("%d requests, want 2", len(exs))
			}
			// The same number of resources and of product points (the
			// provider with handles also carries the exporter's own
			// metrics, registered by setup).
			product := func(pts []otlpreceiver.Point) int {
				n := 0
				for _, p := range pts {
					if p.Scope == "github.com/fleetagent/fleetagent/collector" {
						n++
					}
				}
				return n
			}
			if a, b := exs[0], exs[1]; a.Resources != b.Resources || product(a.Points) != product(b.Points) {
				t.Errorf("with handles %d resources, %d product points; without %d, %d",
					a.Resources, product(a.Points), b.Resources, product(b.Points))
			}

			series := func(pts []otlpreceiver.Point) map[string]bool {
				out := map[string]bool{}
				for _, p := range pts {
					if p.Scope != "github.com/fleetagent/fleetagent/collector" {
						continue
					}
					out[p.Metric+" "+p.Type+" "+p.Unit+" {"+resourceKey(p.Resource)+"} {"+resourceKey(p.Attrs)+"}"] = true
				}
				return out
			}
			a, b := series(withHandles), series(without)
			if len(a) < 100 {
				t.Fatalf("%d product series with handles; the fixture has more", len(a))
			}
			for k := range a {
				if !b[k] {
					t.Errorf("only with handles: %s", k)
				}
			}
			for k := range b {
				if !a[k] {
					t.Errorf("only without handles: %s", k)
				}
			}
		})
	}
}

// TestUnknownHandleStaysOnPoint: a handle the registry does not know (ids
// live one collection longer than their last use, so the export alone
// never meets one) is not dropped: the point keeps it as an attribute, on
// the node's resource, so the data arrives, the attribute shows what went
// wrong, Stats.UnresolvedHandles counts it and a warning is logged.
func TestUnknownHandleStaysOnPoint(t *testing.T) {
	known := []attribute.KeyValue{attribute.String("k8s.pod.uid", "u1"), attribute.String("k8s.pod.name", "p1")}
	var logged bytes.Buffer
	s := &splitter{isEntity: collector.IsResourceAttribute, log: slog.New(slog.NewTextHandler(&logged, nil)), handles: EntityHandles{Key: collector.EntityHandleKey,
		Attributes: func(id string) ([]attribute.KeyValue, bool) {
			if id == "1" {
				return known, true
			}
			return nil, false
		}}}
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	point := func(handle string) *metricpb.NumberDataPoint {
		return &metricpb.NumberDataPoint{Attributes: []*commonpb.KeyValue{str("network.io.direction", "receive"), str(collector.EntityHandleKey, handle)},
			Value: &metricpb.NumberDataPoint_AsInt{AsInt: 1}}
	}
	req := &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: []*metricpb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("k8s.node.name", "n1")}},
		ScopeMetrics: []*metricpb.ScopeMetrics{{Metrics: []*metricpb.Metric{{Name: "m",
			Data: &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{DataPoints: []*metricpb.NumberDataPoint{point("1"), point("9")}}}}}}},
	}}}
	out := s.split(req)
	if n := len(out.ResourceMetrics); n != 2 {
		t.Fatalf("%d resources, want the pod's and the node's", n)
	}
	res := func(rm *metricpb.ResourceMetrics) map[string]string { return kvMap(rm.GetResource().GetAttributes()) }
	pt := func(rm *metricpb.ResourceMetrics) map[string]string {
		return kvMap(rm.GetScopeMetrics()[0].GetMetrics()[0].GetGauge().GetDataPoints()[0].GetAttributes())
	}
	pod, node := out.ResourceMetrics[0], out.ResourceMetrics[1]
	if r := res(pod); r["k8s.pod.uid"] != "u1" || r["k8s.pod.name"] != "p1" || r["k8s.node.name"] != "n1" {
		t.Errorf("known handle: resource %v, want the node's and the pod's attributes", r)
	}
	if a := pt(pod); len(a) != 1 || a["network.io.direction"] != "receive" {
		t.Errorf("known handle: point attributes %v, want the direction alone", a)
	}
	if r := res(node); len(r) != 1 || r["k8s.node.name"] != "n1" {
		t.Errorf("unknown handle: resource %v, want the node's", r)
	}
	if a := pt(node); a[collector.EntityHandleKey] != "9" || a["network.io.direction"] != "receive" {
		t.Errorf("unknown handle: point attributes %v, want the handle kept beside the direction", a)
	}
	if n := s.unresolved.Load(); n != 1 {
		t.Errorf("unresolved handles counted %d, want 1", n)
	}
	if l := logged.String(); !strings.Contains(l, "entity handle not in the registry") || !strings.Contains(l, "handle=9") {
		t.Errorf("log %q: want one warning naming handle 9", l)
	}
}

func kvMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	return m
}

// TestReadersRefusedWithEntityHandles: a reader of the product provider
// would see handles and age the registry; the configuration is refused.
func TestReadersRefusedWithEntityHandles(t *testing.T) {
	c := Config{EntityKeys: collector.IsResourceAttribute, Readers: []sdkmetric.Reader{sdkmetric.NewManualReader()},
		EntityHandles: EntityHandles{Key: collector.EntityHandleKey, Attributes: collector.NewEntities().Attributes}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "Readers with EntityHandles") {
		t.Errorf("Validate = %v, want the Readers refused", err)
	}
	c.Readers = nil
	if err := c.Validate(); err != nil {
		t.Errorf("Validate without Readers = %v", err)
	}
}

// TestHandleCacheEviction: the regrouping keeps a handle's Resource
// attributes while requests use it and drops them once two requests in a
// row did not, so deleted pods do not accumulate.
func TestHandleCacheEviction(t *testing.T) {
	s := &splitter{isEntity: collector.IsResourceAttribute, handles: EntityHandles{Key: collector.EntityHandleKey,
		Attributes: func(id string) ([]attribute.KeyValue, bool) {
			return []attribute.KeyValue{attribute.String("k8s.pod.uid", "u"+id)}, true
		}}}
	req := func(id string) *colmetricpb.ExportMetricsServiceRequest {
		return &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: []*metricpb.ResourceMetrics{{
			ScopeMetrics: []*metricpb.ScopeMetrics{{Metrics: []*metricpb.Metric{{Name: "m",
				Data: &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{DataPoints: []*metricpb.NumberDataPoint{{
					Attributes: []*commonpb.KeyValue{{Key: collector.EntityHandleKey, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: id}}}}}}}}}}}},
		}}}
	}
	for _, step := range []struct {
		id   string
		want []string
	}{{"1", []string{"1"}}, {"1", []string{"1"}}, {"2", []string{"1", "2"}}, {"2", []string{"2"}}, {"1", []string{"1", "2"}}} {
		out := s.split(req(step.id))
		if r := kvMap(out.ResourceMetrics[0].GetResource().GetAttributes()); r["k8s.pod.uid"] != "u"+step.id {
			t.Fatalf("handle %s: resource %v", step.id, r)
		}
		var got []string
		for id := range s.cache {
			got = append(got, id)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(step.want, ",") {
			t.Errorf("after a request with handle %s the cache holds %v, want %v", step.id, got, step.want)
		}
	}
}

// TestSplitKeepsNothingOfTheLastRequest: the regrouping keeps each entity's
// ResourceMetrics and Metrics from one request to the next; every request's
// result is still exactly what a new splitter makes of it (no point,
// metric, scope or entity of an earlier request, a metric whose type
// changed rebuilt, a duplicate metric name kept apart), and once a request
// is encoded (release) the kept groups hold none of its points; a request
// never released (its export failed) leaves nothing in the next either.
func TestSplitKeepsNothingOfTheLastRequest(t *testing.T) {
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	point := func(v int64, attrs ...*commonpb.KeyValue) *metricpb.NumberDataPoint {
		return &metricpb.NumberDataPoint{Attributes: attrs, Value: &metricpb.NumberDataPoint_AsInt{AsInt: v}}
	}
	gauge := func(name string, dps ...*metricpb.NumberDataPoint) *metricpb.Metric {
		return &metricpb.Metric{Name: name, Unit: "By", Data: &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{DataPoints: dps}}}
	}
	sum := func(name string, dps ...*metricpb.NumberDataPoint) *metricpb.Metric {
		return &metricpb.Metric{Name: name, Unit: "s", Data: &metricpb.Metric_Sum{Sum: &metricpb.Sum{IsMonotonic: true,
			AggregationTemporality: metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, DataPoints: dps}}}
	}
	pod := func(uid string) *commonpb.KeyValue { return str("k8s.pod.uid", uid) }
	// Each request is built anew, as the SDK builds each export.
	requests := []func() *colmetricpb.ExportMetricsServiceRequest{
		func() *colmetricpb.ExportMetricsServiceRequest {
			return req(
				scope("a", gauge("m1", point(1, pod("p1")), point(2, pod("p2")), point(3)), sum("m2", point(4, pod("p1"), str("direction", "rx")), point(5, pod("p1"), str("direction", "tx")))),
				scope("b", gauge("m1", point(6, pod("p2")))))
		},
		// p2 and scope b gone, m2 now a gauge, m1 twice in one scope.
		func() *colmetricpb.ExportMetricsServiceRequest {
			return req(scope("a", gauge("m2", point(7, pod("p1"))), gauge("m1", point(8, pod("p1"))),
				&metricpb.Metric{Name: "m1", Unit: "1", Data: &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{DataPoints: []*metricpb.NumberDataPoint{point(9, pod("p1"))}}}}))
		},
		func() *colmetricpb.ExportMetricsServiceRequest {
			return req(scope("b", sum("m2", point(10, pod("p3")))), scope("a", gauge("m1", point(11, pod("p2")), point(12), point(13, pod("p1")))))
		},
		// The first again, after p1 and p2 were gone for a request.
		func() *colmetricpb.ExportMetricsServiceRequest {
			return req(
				scope("a", gauge("m1", point(1, pod("p1")), point(2, pod("p2")), point(3)), sum("m2", point(4, pod("p1"), str("direction", "rx")), point(5, pod("p1"), str("direction", "tx")))),
				scope("b", gauge("m1", point(6, pod("p2")))))
		},
	}
	kept := &splitter{isEntity: collector.IsResourceAttribute}
	for i, r := range requests {
		got := kept.split(r())
		want := (&splitter{isEntity: collector.IsResourceAttribute}).split(r())
		if !proto.Equal(got, want) {
			t.Errorf("request %d: split with the groups kept\n%v\nwant, as a new splitter splits it,\n%v", i, prototext.Format(got), prototext.Format(want))
		}
		if i%2 == 1 {
			// An export that failed is not released: the next split
			// must not carry its points either.
			continue
		}
		kept.release()
		for k, g := range kept.groups {
			for mk, gm := range g.metrics {
				if n := len(gm.m.GetGauge().GetDataPoints()) + len(gm.m.GetSum().GetDataPoints()); n != 0 {
					t.Errorf("request %d: after release, group %q metric %v still holds %d points", i, k, mk, n)
				}
			}
		}
	}
	if len(kept.groups) == 0 {
		t.Fatal("no group kept between requests")
	}
}

func req(scopes ...*metricpb.ScopeMetrics) *colmetricpb.ExportMetricsServiceRequest {
	return &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: []*metricpb.ResourceMetrics{{
		Resource:     &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "k8s.node.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "n"}}}}},
		ScopeMetrics: scopes,
	}}}
}

func scope(name string, ms ...*metricpb.Metric) *metricpb.ScopeMetrics {
	return &metricpb.ScopeMetrics{Scope: &commonpb.InstrumentationScope{Name: name}, Metrics: ms}
}

// TestSplitHTTPConcurrent: the HTTP exporter may post two requests at once
// (an export and a ForceFlush); each is split and encoded whole before the
// next split reuses the kept messages (run with -race).
func TestSplitHTTPConcurrent(t *testing.T) {
	s := &splitter{isEntity: collector.IsResourceAttribute}
	var mu sync.Mutex
	var bodies [][]byte
	rt := roundTripper{s: s, base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
	})}
	const posts = 40
	var wg sync.WaitGroup
	for i := range posts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dp := &metricpb.NumberDataPoint{Value: &metricpb.NumberDataPoint_AsInt{AsInt: int64(i)}, Attributes: []*commonpb.KeyValue{
				{Key: "k8s.pod.uid", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprint("p", i%3)}}}}}
			body, err := proto.Marshal(req(scope("a", &metricpb.Metric{Name: "m", Data: &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{DataPoints: []*metricpb.NumberDataPoint{dp}}}})))
			if err != nil {
				t.Error(err)
				return
			}
			r, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/v1/metrics", bytes.NewReader(body))
			resp, err := rt.RoundTrip(r)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, b := range bodies {
		var got colmetricpb.ExportMetricsServiceRequest
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		for _, rm := range got.GetResourceMetrics() {
			for _, dp := range rm.GetScopeMetrics()[0].GetMetrics()[0].GetGauge().GetDataPoints() {
				if seen[dp.GetAsInt()] {
					t.Errorf("point %d sent twice", dp.GetAsInt())
				}
				seen[dp.GetAsInt()] = true
			}
		}
	}
	if len(bodies) != posts || len(seen) != posts {
		t.Errorf("%d posts, %d distinct points sent; want %d each", len(bodies), len(seen), posts)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestSplitKeepsEveryPointsIdentity checks each split against the request
// itself, not against another split: every data point goes out exactly
// once, under the provider's resource plus its own entity attributes
// (whatever their type), in its own scope (name, version, attributes and
// schema URL) and its own metric (name, unit, type), with its other
// attributes; and no resource, scope or metric appears twice where one
// would do. The groups are kept across the requests, some released and
// some not, as after a failed export. It failed on three kept-group bugs: a
// metric name twice in one scope went out as one Metric per point, two
// scopes of one name merged, and an entity attribute that is not a string
// kept the Resource of its first value; and keyed by their place in the
// request instead, scopes that changed places left a Metric behind for each.
func TestSplitKeepsEveryPointsIdentity(t *testing.T) {
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	num := func(k string, v int64) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
	}
	point := func(v int64, attrs ...*commonpb.KeyValue) *metricpb.NumberDataPoint {
		return &metricpb.NumberDataPoint{Attributes: attrs, Value: &metricpb.NumberDataPoint_AsInt{AsInt: v}}
	}
	gauge := func(name, unit string, dps ...*metricpb.NumberDataPoint) *metricpb.Metric {
		return &metricpb.Metric{Name: name, Unit: unit, Data: &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{DataPoints: dps}}}
	}
	scoped := func(name, schema string, attrs []*commonpb.KeyValue, ms ...*metricpb.Metric) *metricpb.ScopeMetrics {
		return &metricpb.ScopeMetrics{Scope: &commonpb.InstrumentationScope{Name: name, Attributes: attrs}, SchemaUrl: schema, Metrics: ms}
	}
	pod := func(uid string) *commonpb.KeyValue { return str("k8s.pod.uid", uid) }
	requests := []func() *colmetricpb.ExportMetricsServiceRequest{
		func() *colmetricpb.ExportMetricsServiceRequest {
			return req(scope("a", gauge("m", "By", point(1, pod("p1"))), gauge("m", "1", point(2, pod("p1"), str("d", "rx")), point(3, pod("p1"), str("d", "tx")))),
				scoped("s", "", []*commonpb.KeyValue{str("tenant", "x")}, gauge("n", "1", point(4, pod("p1")))),
				scoped("s", "https://example.com/schema", []*commonpb.KeyValue{str("tenant", "y")}, gauge("n", "1", point(5, pod("p1")))),
				scope("e", gauge("g", "1", point(6, num("ent.n", 1)), point(7, num("ent.n", 3)))))
		},
		func() *colmetricpb.ExportMetricsServiceRequest {
			return req(scope("e", gauge("g", "1", point(8, num("ent.n", 2)))),
				scope("a", gauge("m", "By", point(9, pod("p1"))), gauge("m", "1", point(10, pod("p1"), str("d", "rx")), point(11, pod("p1"), str("d", "tx")))))
		},
		func() *colmetricpb.ExportMetricsServiceRequest {
			return req(scoped("s", "https://example.com/schema", []*commonpb.KeyValue{str("tenant", "y")}, gauge("n", "1", point(12, pod("p1")))),
				scope("e", gauge("g", "1", point(13, num("ent.n", 1)))),
				scoped("s", "", []*commonpb.KeyValue{str("tenant", "x")}, gauge("n", "1", point(14, pod("p1")))))
		},
	}
	isEntity := func(k string) bool { return collector.IsResourceAttribute(k) || k == "ent.n" }
	text := func(kvs []*commonpb.KeyValue) string {
		var parts []string
		for _, kv := range kvs {
			parts = append(parts, fmt.Sprintf("%s=%T:%s%d", kv.GetKey(), kv.GetValue().GetValue(), kv.GetValue().GetStringValue(), kv.GetValue().GetIntValue()))
		}
		sort.Strings(parts)
		return strings.Join(parts, ",")
	}
	// identity renders where a point belongs; the input's entity
	// attributes are moved to its resource, as the split moves them.
	identity := func(res []*commonpb.KeyValue, sm *metricpb.ScopeMetrics, m *metricpb.Metric, dp *metricpb.NumberDataPoint, split bool) string {
		res = slices.Clone(res)
		var rest []*commonpb.KeyValue
		for _, kv := range dp.GetAttributes() {
			if !split && isEntity(kv.GetKey()) {
				res = append(res, kv)
			} else {
				rest = append(rest, kv)
			}
		}
		sc := sm.GetScope()
		return fmt.Sprintf("resource[%s] scope[%s %s %s %s] metric[%s %s %T] point[%s] %d", text(res), sc.GetName(), sc.GetVersion(), text(sc.GetAttributes()),
			sm.GetSchemaUrl(), m.GetName(), m.GetUnit(), m.GetData(), text(rest), dp.GetAsInt())
	}
	points := func(r *colmetricpb.ExportMetricsServiceRequest, split bool) []string {
		var out []string
		for _, rm := range r.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					for _, dp := range m.GetGauge().GetDataPoints() {
						out = append(out, identity(rm.GetResource().GetAttributes(), sm, m, dp, split))
					}
				}
			}
		}
		sort.Strings(out)
		return out
	}
	s := &splitter{isEntity: isEntity}
	for round := 0; round < 2; round++ {
		for i, r := range requests {
			want := points(r(), false)
			got := s.split(r())
			if g := points(got, true); !slices.Equal(g, want) {
				t.Errorf("round %d request %d: points went out as\n%s\nwant\n%s", round, i, strings.Join(g, "\n"), strings.Join(want, "\n"))
			}
			resources := map[string]bool{}
			for _, rm := range got.GetResourceMetrics() {
				rk := text(rm.GetResource().GetAttributes())
				if resources[rk] {
					t.Errorf("round %d request %d: resource [%s] twice", round, i, rk)
				}
				resources[rk] = true
				scopes := map[string]bool{}
				for _, sm := range rm.GetScopeMetrics() {
					sc := sm.GetScope()
					sk := fmt.Sprintf("%s %s %s %s", sc.GetName(), sc.GetVersion(), text(sc.GetAttributes()), sm.GetSchemaUrl())
					if scopes[sk] {
						t.Errorf("round %d request %d: resource [%s] has scope %q twice", round, i, rk, sk)
					}
					scopes[sk] = true
					metrics := map[string]bool{}
					for _, m := range sm.GetMetrics() {
						mk := fmt.Sprintf("%s %s %T", m.GetName(), m.GetUnit(), m.GetData())
						if metrics[mk] {
							t.Errorf("round %d request %d: resource [%s] scope %q has metric %q twice", round, i, rk, sk, mk)
						}
						metrics[mk] = true
					}
				}
			}
			if i != 1 {
				s.release()
			}
		}
	}
	// The scopes come in another order in each request; an entity keeps
	// one Metric per metric whatever the order (p1 has four metrics).
	for k, g := range s.groups {
		if len(g.metrics) > 4 {
			t.Errorf("group %q keeps %d metrics; no entity has more than 4", k, len(g.metrics))
		}
	}
}

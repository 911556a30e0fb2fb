package vscollector

import (
	"sort"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
)

// The two agents do not send the same series: fleetagent sends metrics the
// Collector's kubeletstats receiver does not (and the other way round), so
// payload per minute or bytes per point over each one's whole export
// compare different things. SameSeries compares them over the series both
// send, defined here as:
//
//   - a metric is shared when both agents export a metric of that name
//     (fleetagent's self-metrics, scope SelfScope, are never shared): the
//     exact intersection of the names observed in both exports, with no
//     renaming between them;
//   - for each shared metric, only the entities that both export it for
//     count: the entity of a resource is its container (k8s.pod.uid and
//     k8s.container.name), else its pod (k8s.pod.uid), else its node
//     (k8s.node.name); see Entity. A metric no entity of which is in both
//     is not shared;
//   - within a kept (metric, entity) every data point counts as sent:
//     points are not matched one by one by their attributes (fleetagent's
//     network points carry network.interface.name where the Collector's
//     carry interface, and the Collector's volume metrics are on a
//     resource per volume, which is of its pod's entity here).
//
// Each agent is then charged proto.Size of a filtered copy of each request
// it sent holding only those metrics, on its own resources that carry them
// with their resource attributes as sent, divided by the data points in
// the copies.

// Entity is the node, pod or container a resource describes: "container/"
// pod uid "/" container name, "pod/" uid, "node/" name, or "" for a
// resource with none of those attributes.
func Entity(r *resourcepb.Resource) string {
	var uid, container, node string
	for _, kv := range r.GetAttributes() {
		switch kv.GetKey() {
		case "k8s.pod.uid":
			uid = kv.GetValue().GetStringValue()
		case "k8s.container.name":
			container = kv.GetValue().GetStringValue()
		case "k8s.node.name":
			node = kv.GetValue().GetStringValue()
		}
	}
	switch {
	case uid != "" && container != "":
		return "container/" + uid + "/" + container
	case uid != "":
		return "pod/" + uid
	case node != "":
		return "node/" + node
	}
	return ""
}

// Series is what one agent sent of the shared series.
type Series struct {
	// Bytes is the summed proto.Size of the filtered requests,
	// ResourceBytes the part of it in their Resource messages (with each
	// one's field tag and length).
	Bytes, ResourceBytes int64
	// Points are the data points in the filtered requests.
	Points int64
	// Requests are the requests that held any of them.
	Requests int
}

// BytesPerPoint is Bytes / Points, 0 without points.
func (s Series) BytesPerPoint() float64 {
	if s.Points == 0 {
		return 0
	}
	return float64(s.Bytes) / float64(s.Points)
}

// SameSeries finds the metrics fa's and oc's requests share (see the
// definition above) and what each agent sent of them. shared is sorted.
func SameSeries(fa, oc []*colmetricpb.ExportMetricsServiceRequest) (shared []string, faS, ocS Series) {
	faE, ocE := entities(fa), entities(oc)
	keep := map[string]map[string]bool{}
	for name, fe := range faE {
		oe, ok := ocE[name]
		if !ok {
			continue
		}
		both := map[string]bool{}
		for e := range fe {
			if oe[e] {
				both[e] = true
			}
		}
		if len(both) > 0 {
			keep[name] = both
			shared = append(shared, name)
		}
	}
	sort.Strings(shared)
	return shared, charge(fa, keep), charge(oc, keep)
}

// entities maps each metric name in reqs to the entities it is sent for.
func entities(reqs []*colmetricpb.ExportMetricsServiceRequest) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, req := range reqs {
		for _, rm := range req.GetResourceMetrics() {
			e := Entity(rm.GetResource())
			for _, sm := range rm.GetScopeMetrics() {
				if sm.GetScope().GetName() == SelfScope {
					continue
				}
				for _, m := range sm.GetMetrics() {
					if out[m.GetName()] == nil {
						out[m.GetName()] = map[string]bool{}
					}
					out[m.GetName()][e] = true
				}
			}
		}
	}
	return out
}

func charge(reqs []*colmetricpb.ExportMetricsServiceRequest, keep map[string]map[string]bool) Series {
	var s Series
	for _, req := range reqs {
		f := Filter(req, func(metric, entity string) bool { return keep[metric][entity] })
		if len(f.GetResourceMetrics()) == 0 {
			continue
		}
		s.Requests++
		s.Bytes += int64(proto.Size(f))
		for _, rm := range f.GetResourceMetrics() {
			if rm.GetResource() != nil {
				n := proto.Size(rm.GetResource())
				s.ResourceBytes += int64(protowire.SizeTag(1) + protowire.SizeBytes(n))
			}
			for _, sm := range rm.GetScopeMetrics() {
				s.Points += dataPoints(sm)
			}
		}
	}
	return s
}

// Filter is a copy of req holding only the metrics keep accepts, by name
// and the Entity of their resource, outside SelfScope; resources and
// scopes left with none are dropped. The copy shares the kept Resource,
// scope and Metric messages with req.
func Filter(req *colmetricpb.ExportMetricsServiceRequest, keep func(metric, entity string) bool) *colmetricpb.ExportMetricsServiceRequest {
	out := &colmetricpb.ExportMetricsServiceRequest{}
	for _, rm := range req.GetResourceMetrics() {
		e := Entity(rm.GetResource())
		var sms []*metricpb.ScopeMetrics
		for _, sm := range rm.GetScopeMetrics() {
			if sm.GetScope().GetName() == SelfScope {
				continue
			}
			var ms []*metricpb.Metric
			for _, m := range sm.GetMetrics() {
				if keep(m.GetName(), e) {
					ms = append(ms, m)
				}
			}
			if len(ms) > 0 {
				sms = append(sms, &metricpb.ScopeMetrics{Scope: sm.GetScope(), Metrics: ms, SchemaUrl: sm.GetSchemaUrl()})
			}
		}
		if len(sms) > 0 {
			out.ResourceMetrics = append(out.ResourceMetrics, &metricpb.ResourceMetrics{Resource: rm.GetResource(), ScopeMetrics: sms, SchemaUrl: rm.GetSchemaUrl()})
		}
	}
	return out
}

package collector

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
)

var podPhases = []corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown}

type podCollector struct {
	state KubeState
	attrs *podAttributer
}

// NewPodCollector reports pod phase and container status, requests and
// limits of the pods in state. Only current pods are observed, so the series
// of a deleted pod stop at the next collection.
func NewPodCollector(state KubeState, cfg Config) Collector {
	return &podCollector{state: state, attrs: newPodAttributer(cfg)}
}

func (c *podCollector) Name() string { return "pod" }

func (c *podCollector) Describe() []*Desc {
	return []*Desc{PodStatusPhase, ContainerRestartCount, ContainerReady,
		ContainerCPURequest, ContainerCPULimit, ContainerMemoryRequest, ContainerMemoryLimit}
}

func (c *podCollector) Collect(_ context.Context, r Recorder) error {
	if !c.state.HasSynced() {
		return ErrNoData
	}
	for _, pod := range c.state.Pods() {
		base := c.attrs.of(pod)
		for _, ph := range podPhases {
			v := 0.0
			if pod.Status.Phase == ph {
				v = 1
			}
			r.Record(PodStatusPhase, v, with(base, attribute.String("k8s.pod.status.phase", string(ph)))...)
		}
		statuses := map[string]corev1.ContainerStatus{}
		for _, st := range pod.Status.ContainerStatuses {
			statuses[st.Name] = st
		}
		for _, ctr := range pod.Spec.Containers {
			ca := with(base, containerAttrs(pod, ctr.Name)...)
			if st, ok := statuses[ctr.Name]; ok {
				r.Record(ContainerRestartCount, float64(st.RestartCount), ca...)
				r.Record(ContainerReady, b2f(st.Ready), ca...)
			}
			res := ctr.Resources
			if q, ok := res.Requests[corev1.ResourceCPU]; ok {
				r.Record(ContainerCPURequest, q.AsApproximateFloat64(), ca...)
			}
			if q, ok := res.Limits[corev1.ResourceCPU]; ok {
				r.Record(ContainerCPULimit, q.AsApproximateFloat64(), ca...)
			}
			if q, ok := res.Requests[corev1.ResourceMemory]; ok {
				r.Record(ContainerMemoryRequest, float64(q.Value()), ca...)
			}
			if q, ok := res.Limits[corev1.ResourceMemory]; ok {
				r.Record(ContainerMemoryLimit, float64(q.Value()), ca...)
			}
		}
	}
	return nil
}

// with returns base plus more in a new slice, so base can be shared.
func with(base []attribute.KeyValue, more ...attribute.KeyValue) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(base)+len(more))
	return append(append(out, base...), more...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

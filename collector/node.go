package collector

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
)

var conditionStatuses = []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown}

type nodeCollector struct{ state KubeState }

// NewNodeCollector reports the conditions, allocatable and capacity of the
// node in state.
func NewNodeCollector(state KubeState) Collector { return &nodeCollector{state: state} }

func (c *nodeCollector) Name() string { return "node" }

func (c *nodeCollector) Describe() []*Desc {
	return []*Desc{NodeConditionStatus, NodeCPUAllocatable, NodeMemoryAllocatable, NodePodAllocatable,
		NodeEphemeralStorageAllocatable, NodeCPUCapacity, NodeMemoryCapacity, NodePodCapacity}
}

func (c *nodeCollector) Collect(_ context.Context, r Recorder) error {
	if !c.state.HasSynced() {
		return ErrNoData
	}
	node, ok := c.state.Node()
	if !ok {
		return ErrNoData
	}
	for _, cond := range node.Status.Conditions {
		for _, s := range conditionStatuses {
			r.Record(NodeConditionStatus, b2f(cond.Status == s),
				attribute.String("k8s.node.condition.type", string(cond.Type)),
				attribute.String("k8s.node.condition.status", strings.ToLower(string(s))))
		}
	}
	recordResources(r, node.Status.Allocatable, NodeCPUAllocatable, NodeMemoryAllocatable, NodePodAllocatable)
	if q, ok := node.Status.Allocatable[corev1.ResourceEphemeralStorage]; ok {
		r.Record(NodeEphemeralStorageAllocatable, float64(q.Value()))
	}
	recordResources(r, node.Status.Capacity, NodeCPUCapacity, NodeMemoryCapacity, NodePodCapacity)
	return nil
}

func recordResources(r Recorder, rl corev1.ResourceList, cpu, mem, pods *Desc) {
	if q, ok := rl[corev1.ResourceCPU]; ok {
		r.Record(cpu, q.AsApproximateFloat64())
	}
	if q, ok := rl[corev1.ResourceMemory]; ok {
		r.Record(mem, float64(q.Value()))
	}
	if q, ok := rl[corev1.ResourcePods]; ok {
		r.Record(pods, float64(q.Value()))
	}
}

package collector

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
)

var conditionStatuses = []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown}

type nodeCollector struct{ state KubeState }

// NewNodeCollector reports the conditions, allocatable and capacity,
// schedulability, taints and versions of the node in state.
func NewNodeCollector(state KubeState) Collector { return &nodeCollector{state: state} }

func (c *nodeCollector) Name() string { return "node" }

func (c *nodeCollector) Describe() []*Desc {
	return []*Desc{NodeConditionStatus, NodeCPUAllocatable, NodeMemoryAllocatable, NodePodAllocatable,
		NodeEphemeralStorageAllocatable, NodeCPUCapacity, NodeMemoryCapacity, NodePodCapacity,
		NodeUnschedulable, NodeTaint, NodeInfo}
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
	r.Record(NodeUnschedulable, b2f(node.Spec.Unschedulable))
	// One series per taint: the node's own few, so bounded by what the
	// operator (or the node lifecycle controller) set.
	for _, t := range node.Spec.Taints {
		r.Record(NodeTaint, 1,
			attribute.String("k8s.node.taint.key", t.Key),
			attribute.String("k8s.node.taint.value", t.Value),
			attribute.String("k8s.node.taint.effect", string(t.Effect)))
	}
	r.Record(NodeInfo, 1, nodeInfoAttrs(node.Status.NodeInfo)...)
	return nil
}

// nodeInfoAttrs returns the versions of status.nodeInfo that are set:
// k8s.kubelet.version, container.runtime.name and container.runtime.version
// (from containerRuntimeVersion "containerd://2.4.2"), os.type,
// os.description (the OS image), os.version (the kernel) and host.arch.
func nodeInfoAttrs(ni corev1.NodeSystemInfo) []attribute.KeyValue {
	var kv []attribute.KeyValue
	add := func(k, v string) {
		if v != "" {
			kv = append(kv, attribute.String(k, v))
		}
	}
	add("k8s.kubelet.version", ni.KubeletVersion)
	name, version, ok := strings.Cut(ni.ContainerRuntimeVersion, "://")
	if !ok {
		name, version = "", ni.ContainerRuntimeVersion
	}
	add("container.runtime.name", name)
	add("container.runtime.version", version)
	add("os.type", ni.OperatingSystem)
	add("os.description", ni.OSImage)
	add("os.version", ni.KernelVersion)
	add("host.arch", ni.Architecture)
	return kv
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

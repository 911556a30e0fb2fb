package informer

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// lastAppliedAnnotation is kubectl apply's copy of the whole object; it can
// be larger than the rest of the pod.
const lastAppliedAnnotation = corev1.LastAppliedConfigAnnotation

// TransformPod strips a pod to what the collectors read, before it enters
// the cache, so a node's cache costs a fraction of the objects on the wire.
//
// Kept: object metadata except managedFields and the last-applied
// annotation (labels, annotations, owner references, uid, timestamps);
// spec.nodeName, priority, restartPolicy, and for every container and init
// container its name, image, resources and restartPolicy; every volume's
// name and the kind of its source (for k8s.volume.type), with a claim's
// name but none of the source's contents (projected sources, items,
// templates); the whole status except the podIPs duplicate of podIP.
//
// Dropped: volume contents, env, envFrom, command, args, ports, volume mounts,
// probes, lifecycle hooks, security contexts, affinity, tolerations,
// topology spread constraints, DNS and scheduling gates: nothing a
// telemetry collector reports. A collector that needs one of them must add
// it back here.
//
// It is a cache.TransformFunc: it mutates the freshly decoded object in
// place and passes through anything that is not a *corev1.Pod (such as
// cache.DeletedFinalStateUnknown).
func TransformPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	stripMeta(&pod.ObjectMeta)
	s := pod.Spec
	pod.Spec = corev1.PodSpec{
		NodeName:          s.NodeName,
		Priority:          s.Priority,
		PriorityClassName: s.PriorityClassName,
		RestartPolicy:     s.RestartPolicy,
		Containers:        stripContainers(s.Containers),
		InitContainers:    stripContainers(s.InitContainers),
		Resources:         s.Resources,
		Volumes:           stripVolumes(s.Volumes),
	}
	pod.Status.PodIPs = nil
	pod.Status.HostIPs = nil
	return pod, nil
}

func stripContainers(cs []corev1.Container) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{
			Name:          c.Name,
			Image:         c.Image,
			Resources:     c.Resources,
			RestartPolicy: c.RestartPolicy, // marks sidecar init containers
		}
	}
	return out
}

// stripVolumes keeps each volume's name and an empty source of the same
// kind: a claim keeps its claim name, every other source loses its
// contents (a projected service-account volume's sources, a ConfigMap's
// items, an ephemeral volume's claim template).
func stripVolumes(vs []corev1.Volume) []corev1.Volume {
	if len(vs) == 0 {
		return nil
	}
	out := make([]corev1.Volume, len(vs))
	for i, v := range vs {
		out[i].Name = v.Name
		src := &out[i].VolumeSource
		in := v.VolumeSource
		switch {
		case in.PersistentVolumeClaim != nil:
			src.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: in.PersistentVolumeClaim.ClaimName}
		case in.EmptyDir != nil:
			src.EmptyDir = &corev1.EmptyDirVolumeSource{}
		case in.ConfigMap != nil:
			src.ConfigMap = &corev1.ConfigMapVolumeSource{}
		case in.Secret != nil:
			src.Secret = &corev1.SecretVolumeSource{}
		case in.Projected != nil:
			src.Projected = &corev1.ProjectedVolumeSource{}
		case in.DownwardAPI != nil:
			src.DownwardAPI = &corev1.DownwardAPIVolumeSource{}
		case in.HostPath != nil:
			src.HostPath = &corev1.HostPathVolumeSource{}
		case in.Ephemeral != nil:
			src.Ephemeral = &corev1.EphemeralVolumeSource{}
		case in.CSI != nil:
			src.CSI = &corev1.CSIVolumeSource{Driver: in.CSI.Driver}
		case in.Image != nil:
			src.Image = &corev1.ImageVolumeSource{}
		default:
			// Rarer in-tree sources are small: kept as they are.
			*src = in
		}
	}
	return out
}

// TransformNode strips a Node to what the collectors read.
//
// Kept: metadata except managedFields and the last-applied annotation;
// spec.unschedulable and taints; status capacity, allocatable, conditions,
// addresses and nodeInfo. Dropped: status.images (often the largest part
// of a Node), volumesAttached, volumesInUse, config, daemonEndpoints,
// podCIDRs and providerID.
func TransformNode(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	stripMeta(&node.ObjectMeta)
	node.Spec = corev1.NodeSpec{Unschedulable: node.Spec.Unschedulable, Taints: node.Spec.Taints}
	st := node.Status
	node.Status = corev1.NodeStatus{
		Capacity:    st.Capacity,
		Allocatable: st.Allocatable,
		Conditions:  st.Conditions,
		Addresses:   st.Addresses,
		NodeInfo:    st.NodeInfo,
		Phase:       st.Phase,
	}
	return node, nil
}

func stripMeta(m *metav1.ObjectMeta) {
	m.ManagedFields = nil
	delete(m.Annotations, lastAppliedAnnotation)
	if len(m.Annotations) == 0 {
		m.Annotations = nil
	}
}

var (
	_ cache.TransformFunc = TransformPod
	_ cache.TransformFunc = TransformNode
)

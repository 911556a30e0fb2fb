package collector

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
)

// Entity attributes. Collectors record them on data points (the Runner, with
// WithEntityHandles, replaces them with one entity handle); the exporter
// (exporter.Config.EntityKeys = IsResourceAttribute, and EntityHandles)
// moves them onto one OTLP Resource per entity — node, pod, container — as the semantic
// conventions ask ("SHOULD be attached to a K8s resource") and as the
// Collector's kubeletstats receiver does. Every other attribute stays on the
// point, among them k8s.volume.name, k8s.volume.type and
// k8s.persistentvolumeclaim.name: the conventions define k8s.pod.volume.*
// on the pod's resource with the volume as point attributes.
var resourceKeys = map[string]bool{
	"k8s.node.name": true, "k8s.node.uid": true,
	"k8s.namespace.name": true,
	"k8s.pod.name":       true, "k8s.pod.uid": true,
	"k8s.deployment.name": true, "k8s.replicaset.name": true, "k8s.replicaset.uid": true,
	"k8s.statefulset.name": true, "k8s.statefulset.uid": true,
	"k8s.daemonset.name": true, "k8s.daemonset.uid": true,
	"k8s.job.name": true, "k8s.job.uid": true, "k8s.cronjob.name": true,
	"k8s.container.name": true, "container.id": true,
	"container.image.name": true, "container.image.tag": true,
}

// IsResourceAttribute reports whether key identifies an entity and belongs
// on its Resource rather than on a data point: the keys above and every
// k8s.pod.label.<key>.
func IsResourceAttribute(key string) bool {
	return resourceKeys[key] || strings.HasPrefix(key, "k8s.pod.label.")
}

// ownerUIDKeys maps a controller owner's kind to its uid attribute.
var ownerUIDKeys = map[string]string{
	"ReplicaSet":  "k8s.replicaset.uid",
	"StatefulSet": "k8s.statefulset.uid",
	"DaemonSet":   "k8s.daemonset.uid",
	"Job":         "k8s.job.uid",
}

// containerAttrs returns k8s.container.name, and container.id,
// container.image.name and container.image.tag when pod (which may be nil)
// says them: the id from the container's status (the runtime's id without
// its "containerd://" scheme), so a restarted container is a new series;
// the image from the spec.
func containerAttrs(pod *corev1.Pod, name string) []attribute.KeyValue {
	kv := []attribute.KeyValue{attribute.String("k8s.container.name", name)}
	if pod == nil {
		return kv
	}
	for _, sts := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for i := range sts {
			if sts[i].Name == name && sts[i].ContainerID != "" {
				id := sts[i].ContainerID
				if _, after, ok := strings.Cut(id, "://"); ok {
					id = after
				}
				kv = append(kv, attribute.String("container.id", id))
			}
		}
	}
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == name && cs[i].Image != "" {
				n, tag := splitImage(cs[i].Image)
				kv = append(kv, attribute.String("container.image.name", n))
				if tag != "" {
					kv = append(kv, attribute.String("container.image.tag", tag))
				}
				return kv
			}
		}
	}
	return kv
}

// splitImage splits "registry:5000/repo:tag@sha256:..." into its name
// ("registry:5000/repo") and tag ("tag"); an image with neither tag nor
// digest is "latest", as the runtime reads it.
func splitImage(image string) (name, tag string) {
	name, _, hasDigest := strings.Cut(image, "@")
	slash := strings.LastIndexByte(name, '/')
	if colon := strings.LastIndexByte(name, ':'); colon > slash {
		return name[:colon], name[colon+1:]
	}
	if hasDigest {
		return name, ""
	}
	return name, "latest"
}

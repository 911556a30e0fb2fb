package collector

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
)

var podPhases = []corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown}

// containerStates is the k8s.container.status.state enumeration of the
// semantic conventions; all three are reported for every container with a
// status, the current one 1.
var containerStates = []string{"running", "waiting", "terminated"}

// OtherReason is the value of k8s.container.status.reason and
// k8s.container.status.last_terminated_reason for a reason outside
// containerReasons (the semantic conventions' "_OTHER" for values outside a
// known set), so a runtime that writes free-form reasons cannot grow the
// series count.
const OtherReason = "_OTHER"

// containerReasons is the fixed set of container state reasons reported as
// they are: the nine of the semantic conventions v1.44
// (k8s.container.status.reason) and the other reasons the kubelet itself
// sets on a waiting or terminated container. Any other reason is reported
// as OtherReason.
var containerReasons = map[string]bool{
	// semantic conventions v1.44
	"ContainerCreating": true, "CrashLoopBackOff": true, "CreateContainerConfigError": true,
	"ErrImagePull": true, "ImagePullBackOff": true, "OOMKilled": true, "Completed": true,
	"Error": true, "ContainerCannotRun": true,
	// kubelet
	"PodInitializing": true, "ContainerStatusUnknown": true, "CreateContainerError": true,
	"InvalidImageName": true, "ErrImageNeverPull": true, "RunContainerError": true,
	"PreStartHookError": true, "PostStartHookError": true, "StartError": true,
	"DeadlineExceeded": true, "Evicted": true,
}

// ContainerReason maps a container state reason to the bounded set the
// collector reports: the reason itself when it is one of the known
// reasons, else OtherReason.
func ContainerReason(reason string) string {
	if containerReasons[reason] {
		return reason
	}
	return OtherReason
}

type podCollector struct {
	state KubeState
	attrs *podAttributer
	// sets keeps the series' attribute sets across collections, as the
	// kubelet collector's do.
	sets setCache
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
		ContainerStatusState, ContainerStatusReason, ContainerLastTerminatedReason,
		ContainerCPURequest, ContainerCPULimit, ContainerMemoryRequest, ContainerMemoryLimit,
		ContainerEphemeralStorageRequest, ContainerEphemeralStorageLimit}
}

func (c *podCollector) Collect(_ context.Context, r Recorder) error {
	if !c.state.HasSynced() {
		return ErrNoData
	}
	c.sets.mu.Lock()
	defer c.sets.mu.Unlock()
	defer c.sets.sweep()
	for _, pod := range c.state.Pods() {
		podEnt := &entity{c: &c.sets, key: setKey{namespace: pod.Namespace, name: pod.Name, uid: string(pod.UID)}, pod: pod}
		podEnt.attrs = func() []attribute.KeyValue { return c.attrs.of(pod) }
		for _, ph := range podPhases {
			v := 0.0
			if pod.Status.Phase == ph {
				v = 1
			}
			recordSet(r, PodStatusPhase, v, podEnt.set(attribute.String("k8s.pod.status.phase", string(ph))))
		}
		// Init containers (sidecars among them: restartPolicy Always) are
		// containers like the others: same metrics, their own container
		// resource named by k8s.container.name.
		for _, group := range []struct {
			spec     []corev1.Container
			statuses []corev1.ContainerStatus
		}{{pod.Spec.InitContainers, pod.Status.InitContainerStatuses}, {pod.Spec.Containers, pod.Status.ContainerStatuses}} {
			for i := range group.spec {
				ctr := &group.spec[i]
				ctrEnt := &entity{c: &c.sets, key: setKey{namespace: pod.Namespace, name: pod.Name, uid: string(pod.UID), container: ctr.Name}, pod: pod}
				ctrEnt.attrs = func() []attribute.KeyValue { return with(podEnt.kvs(), containerAttrs(pod, ctr.Name)...) }
				if st := statusOf(group.statuses, ctr.Name); st != nil {
					recordContainerStatus(r, st, ctrEnt)
				}
				recordRequirements(r, ctr.Resources, ctrEnt)
			}
		}
	}
	return nil
}

func statusOf(sts []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for i := range sts {
		if sts[i].Name == name {
			return &sts[i]
		}
	}
	return nil
}

// recordContainerStatus reports restarts, readiness, the state (all three,
// the current one 1), the current reason of a waiting or terminated
// container, and the reason of its last termination. Only the current
// reason is reported (value 1), not all known reasons at 0: at 250 pods of
// 10 containers the whole set would be over 50,000 series of one
// instrument, five times the exporter's cardinality limit. A container with
// no current reason (running) has no k8s.container.status.reason series.
func recordContainerStatus(r Recorder, st *corev1.ContainerStatus, e *entity) {
	recordSet(r, ContainerRestartCount, float64(st.RestartCount), e.set())
	recordSet(r, ContainerReady, b2f(st.Ready), e.set())
	state, reason := "", ""
	switch s := st.State; {
	case s.Running != nil:
		state = "running"
	case s.Waiting != nil:
		state, reason = "waiting", s.Waiting.Reason
	case s.Terminated != nil:
		state, reason = "terminated", s.Terminated.Reason
	}
	if state != "" {
		for _, s := range containerStates {
			recordSet(r, ContainerStatusState, b2f(s == state), e.set(attribute.String("k8s.container.status.state", s)))
		}
	}
	if reason != "" {
		recordSet(r, ContainerStatusReason, 1, e.set(attribute.String("k8s.container.status.reason", ContainerReason(reason))))
	}
	if t := st.LastTerminationState.Terminated; t != nil && t.Reason != "" {
		recordSet(r, ContainerLastTerminatedReason, 1,
			e.set(attribute.String("k8s.container.status.last_terminated_reason", ContainerReason(t.Reason))))
	}
}

func recordRequirements(r Recorder, res corev1.ResourceRequirements, e *entity) {
	for _, q := range []struct {
		d    *Desc
		list corev1.ResourceList
		name corev1.ResourceName
	}{
		{ContainerCPURequest, res.Requests, corev1.ResourceCPU}, {ContainerCPULimit, res.Limits, corev1.ResourceCPU},
		{ContainerMemoryRequest, res.Requests, corev1.ResourceMemory}, {ContainerMemoryLimit, res.Limits, corev1.ResourceMemory},
		{ContainerEphemeralStorageRequest, res.Requests, corev1.ResourceEphemeralStorage}, {ContainerEphemeralStorageLimit, res.Limits, corev1.ResourceEphemeralStorage},
	} {
		v, ok := q.list[q.name]
		if !ok {
			continue
		}
		f := float64(v.Value())
		if q.name == corev1.ResourceCPU {
			f = v.AsApproximateFloat64()
		}
		recordSet(r, q.d, f, e.set())
	}
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

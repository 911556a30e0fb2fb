package collector

import (
	"reflect"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	stats "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// recordUptime reports now - start in seconds, when the kubelet gave a
// start time.
func recordUptime(r Recorder, d *Desc, start metav1.Time, now time.Time, e *entity) {
	if start.IsZero() {
		return
	}
	recordSet(r, d, now.Sub(start.Time).Seconds(), e.set())
}

// requirementsOf returns the resources of the named container of pod (a
// regular or an init container): those the container status reports as
// applied (status.resources, which follows an in-place resize) when it has
// them, else the spec's.
func requirementsOf(pod *corev1.Pod, name string) (corev1.ResourceRequirements, bool) {
	if pod == nil {
		return corev1.ResourceRequirements{}, false
	}
	for _, sts := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		if st := statusOf(sts, name); st != nil && st.Resources != nil {
			return *st.Resources, true
		}
	}
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == name {
				return cs[i].Resources, true
			}
		}
	}
	return corev1.ResourceRequirements{}, false
}

// podTotals are a pod's CPU (cores) and memory (bytes) requests and limits
// summed over the containers that run for its whole life: the regular ones
// and the sidecars (init containers with restartPolicy Always). A total is
// 0 (and its utilization not reported) when any of those containers lacks
// it, as the Collector's kubeletstats receiver does: the pod then has no
// such bound.
type podTotals struct{ cpuReq, cpuLim, memReq, memLim float64 }

func totalsOf(pod *corev1.Pod) podTotals {
	if pod == nil {
		return podTotals{}
	}
	var names []string
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			names = append(names, c.Name)
		}
	}
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	var t podTotals
	all := podBounds{true, true, true, true} // while every container has the bound
	for _, n := range names {
		c := containerTotals(pod, n)
		t.cpuReq, all.cpuReq = t.cpuReq+c.cpuReq, all.cpuReq && c.cpuReq > 0
		t.cpuLim, all.cpuLim = t.cpuLim+c.cpuLim, all.cpuLim && c.cpuLim > 0
		t.memReq, all.memReq = t.memReq+c.memReq, all.memReq && c.memReq > 0
		t.memLim, all.memLim = t.memLim+c.memLim, all.memLim && c.memLim > 0
	}
	if len(names) == 0 {
		return podTotals{}
	}
	return podTotals{only(all.cpuReq, t.cpuReq), only(all.cpuLim, t.cpuLim), only(all.memReq, t.memReq), only(all.memLim, t.memLim)}
}

type podBounds struct{ cpuReq, cpuLim, memReq, memLim bool }

func only(ok bool, v float64) float64 {
	if ok {
		return v
	}
	return 0
}

// recordUtilization reports CPU usage (cores) and memory usage (bytes, the
// kubelet's usageBytes, as kubeletstats does) as a ratio of each non-zero
// bound.
func recordUtilization(r Recorder, cpu *CPUStats, mem *MemoryStats, t podTotals, cpuReq, cpuLim, memReq, memLim *Desc, e *entity) {
	if cpu != nil && cpu.UsageNanoCores != nil {
		used := float64(*cpu.UsageNanoCores) / 1e9
		ratio(r, cpuReq, used, t.cpuReq, e)
		ratio(r, cpuLim, used, t.cpuLim, e)
	}
	if mem != nil && mem.UsageBytes != nil {
		used := float64(*mem.UsageBytes)
		ratio(r, memReq, used, t.memReq, e)
		ratio(r, memLim, used, t.memLim, e)
	}
}

func ratio(r Recorder, d *Desc, used, bound float64, e *entity) {
	if bound > 0 {
		recordSet(r, d, used/bound, e.set())
	}
}

// containerTotals are the bounds of one container.
func containerTotals(pod *corev1.Pod, name string) podTotals {
	res, ok := requirementsOf(pod, name)
	if !ok {
		return podTotals{}
	}
	cpu := func(rl corev1.ResourceList) float64 {
		if q, ok := rl[corev1.ResourceCPU]; ok {
			return q.AsApproximateFloat64()
		}
		return 0
	}
	mem := func(rl corev1.ResourceList) float64 {
		if q, ok := rl[corev1.ResourceMemory]; ok {
			return float64(q.Value())
		}
		return 0
	}
	return podTotals{cpu(res.Requests), cpu(res.Limits), mem(res.Requests), mem(res.Limits)}
}

// recordVolumes reports each volume of the pod's summary with
// k8s.volume.name, k8s.volume.type (from the pod's spec.volumes; a volume
// the informer's pod does not name is persistentVolumeClaim when the
// kubelet gave a pvcRef, else has no type) and, for a volume backed by a
// claim, k8s.persistentvolumeclaim.name from the summary's pvcRef. These
// are point attributes on the pod's resource, as the semantic conventions
// define k8s.pod.volume.* (entity k8s.pod).
func recordVolumes(r Recorder, vols []stats.VolumeStats, pod *corev1.Pod, e *entity) {
	for i := range vols {
		v := &vols[i]
		// The volume's name and claim are the cache key; its type follows
		// from them and the pod object, which the cache compares.
		attrs := [3]attribute.KeyValue{attribute.String("k8s.volume.name", v.Name)}
		n, keyed := 1, 1
		if v.PVCRef != nil && v.PVCRef.Name != "" {
			attrs[n] = attribute.String("k8s.persistentvolumeclaim.name", v.PVCRef.Name)
			n, keyed = n+1, keyed+1
		}
		typ := volumeType(pod, v.Name)
		if typ == "" && v.PVCRef != nil {
			typ = "persistentVolumeClaim"
		}
		if typ != "" {
			attrs[n] = attribute.String("k8s.volume.type", typ)
			n++
		}
		set := e.setKeyed(keyed, attrs[:n]...)
		for _, p := range []struct {
			d *Desc
			v *uint64
		}{{PodVolumeUsage, v.UsedBytes}, {PodVolumeCapacity, v.CapacityBytes}, {PodVolumeAvailable, v.AvailableBytes},
			{PodVolumeInodeCount, v.Inodes}, {PodVolumeInodeUsed, v.InodesUsed}, {PodVolumeInodeFree, v.InodesFree}} {
			if p.v != nil {
				recordSet(r, p.d, float64(*p.v), set)
			}
		}
	}
}

// volumeSourceNames are the JSON names of corev1.VolumeSource's fields
// (emptyDir, configMap, persistentVolumeClaim, ...): the fixed set of
// k8s.volume.type values.
var volumeSourceNames = func() []string {
	t := reflect.TypeOf(corev1.VolumeSource{})
	out := make([]string, t.NumField())
	for i := range out {
		out[i], _, _ = strings.Cut(t.Field(i).Tag.Get("json"), ",")
	}
	return out
}()

// volumeType returns the k8s.volume.type of the pod's volume name: the
// JSON name of its source ("emptyDir", "persistentVolumeClaim", ...), or ""
// when pod does not name it.
func volumeType(pod *corev1.Pod, name string) string {
	if pod == nil {
		return ""
	}
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name != name {
			continue
		}
		v := reflect.ValueOf(&pod.Spec.Volumes[i].VolumeSource).Elem()
		for j := 0; j < v.NumField(); j++ {
			if f := v.Field(j); f.Kind() == reflect.Pointer && !f.IsNil() {
				return volumeSourceNames[j]
			}
		}
	}
	return ""
}

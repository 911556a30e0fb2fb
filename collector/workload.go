package collector

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Workload names the controllers a pod belongs to, derived from the pod
// alone: its controller owner reference and its labels. An empty field means
// the pod has no such owner, or the name cannot be derived without reading
// another object (which the agent never does: a ReplicaSet or Job informer on
// every node would cost the apiserver O(cluster) per node).
type Workload struct {
	Deployment  string
	ReplicaSet  string
	StatefulSet string
	DaemonSet   string
	Job         string
	CronJob     string
}

// WorkloadOf derives the pod's workload names from its controller owner
// reference:
//
//   - ReplicaSet owner: ReplicaSet is the owner's name; Deployment is that
//     name minus the "-<pod-template-hash>" suffix, and only when the pod
//     carries the pod-template-hash label and the owner's name ends with it
//     (a bare ReplicaSet has no Deployment).
//   - StatefulSet, DaemonSet, Job owners: the owner's name.
//   - Job owner whose name is "<cronjob>-<digits>": CronJob is the prefix.
//     The CronJob controller names its jobs after the scheduled time in
//     minutes since the epoch; a hand-made job named that way is
//     indistinguishable, which is the price of not watching Jobs.
//
// Only the owner reference with Controller=true counts; without one the
// first owner reference is used, as older controllers did not set it.
func WorkloadOf(pod *corev1.Pod) Workload {
	var w Workload
	if pod == nil {
		return w
	}
	owner := controllerOf(pod.OwnerReferences)
	if owner == nil {
		return w
	}
	switch owner.Kind {
	case "ReplicaSet":
		w.ReplicaSet = owner.Name
		if hash := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; hash != "" {
			if d, ok := strings.CutSuffix(owner.Name, "-"+hash); ok && d != "" {
				w.Deployment = d
			}
		}
	case "StatefulSet":
		w.StatefulSet = owner.Name
	case "DaemonSet":
		w.DaemonSet = owner.Name
	case "Job":
		w.Job = owner.Name
		w.CronJob = cronJobOf(owner.Name)
	}
	return w
}

func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	if len(refs) > 0 {
		return &refs[0]
	}
	return nil
}

// cronJobOf returns the CronJob name a job name was derived from, or "".
// The CronJob controller names a job "<cronjob>-<scheduled time in minutes
// since the epoch>": all digits, and 8 of them for any time between 1989
// and 2160, which keeps "web-1"-style job names from matching.
func cronJobOf(job string) string {
	i := strings.LastIndexByte(job, '-')
	if i <= 0 {
		return ""
	}
	suffix := job[i+1:]
	if len(suffix) < 8 {
		return ""
	}
	for _, c := range suffix {
		if c < '0' || c > '9' {
			return ""
		}
	}
	return job[:i]
}

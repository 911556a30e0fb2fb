package collector

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWorkloadOf(t *testing.T) {
	yes, no := true, false
	owner := func(kind, name string, controller *bool) metav1.OwnerReference {
		return metav1.OwnerReference{APIVersion: "apps/v1", Kind: kind, Name: name, Controller: controller}
	}
	tests := []struct {
		name   string
		labels map[string]string
		owners []metav1.OwnerReference
		want   Workload
	}{
		{name: "no owner", want: Workload{}},
		{name: "deployment", labels: map[string]string{"pod-template-hash": "7d4b9c8f6"},
			owners: []metav1.OwnerReference{owner("ReplicaSet", "web-7d4b9c8f6", &yes)},
			want:   Workload{Deployment: "web", ReplicaSet: "web-7d4b9c8f6"}},
		{name: "deployment name with dashes", labels: map[string]string{"pod-template-hash": "5b6c7d"},
			owners: []metav1.OwnerReference{owner("ReplicaSet", "my-api-v2-5b6c7d", &yes)},
			want:   Workload{Deployment: "my-api-v2", ReplicaSet: "my-api-v2-5b6c7d"}},
		{name: "bare replicaset, hash label absent",
			owners: []metav1.OwnerReference{owner("ReplicaSet", "cache-abc12", &yes)},
			want:   Workload{ReplicaSet: "cache-abc12"}},
		{name: "hash label does not match owner suffix", labels: map[string]string{"pod-template-hash": "zzz"},
			owners: []metav1.OwnerReference{owner("ReplicaSet", "cache-abc12", &yes)},
			want:   Workload{ReplicaSet: "cache-abc12"}},
		{name: "owner name equals hash", labels: map[string]string{"pod-template-hash": "abc"},
			owners: []metav1.OwnerReference{owner("ReplicaSet", "-abc", &yes)},
			want:   Workload{ReplicaSet: "-abc"}},
		{name: "statefulset", owners: []metav1.OwnerReference{owner("StatefulSet", "db-primary", &yes)},
			want: Workload{StatefulSet: "db-primary"}},
		{name: "daemonset", owners: []metav1.OwnerReference{owner("DaemonSet", "fleet-agent", &yes)},
			want: Workload{DaemonSet: "fleet-agent"}},
		{name: "plain job", owners: []metav1.OwnerReference{owner("Job", "migrate-1", &yes)},
			want: Workload{Job: "migrate-1"}},
		{name: "cronjob job", owners: []metav1.OwnerReference{owner("Job", "nightly-report-29412345", &yes)},
			want: Workload{Job: "nightly-report-29412345", CronJob: "nightly-report"}},
		{name: "job with short digit suffix is not a cronjob", owners: []metav1.OwnerReference{owner("Job", "backup-2024", &yes)},
			want: Workload{Job: "backup-2024"}},
		{name: "job with non-digit suffix", owners: []metav1.OwnerReference{owner("Job", "etl-2941234a", &yes)},
			want: Workload{Job: "etl-2941234a"}},
		{name: "job name is only digits", owners: []metav1.OwnerReference{owner("Job", "29412345", &yes)},
			want: Workload{Job: "29412345"}},
		{name: "controller owner wins over first", labels: map[string]string{"pod-template-hash": "h1"},
			owners: []metav1.OwnerReference{owner("ConfigMap", "x", &no), owner("ReplicaSet", "api-h1", &yes)},
			want:   Workload{Deployment: "api", ReplicaSet: "api-h1"}},
		{name: "no controller flag uses first owner", owners: []metav1.OwnerReference{owner("DaemonSet", "old-ds", nil)},
			want: Workload{DaemonSet: "old-ds"}},
		{name: "unknown owner kind", owners: []metav1.OwnerReference{owner("Node", "node-1", &yes)},
			want: Workload{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: tt.labels, OwnerReferences: tt.owners}}
			if got := WorkloadOf(pod); got != tt.want {
				t.Errorf("WorkloadOf = %+v, want %+v", got, tt.want)
			}
		})
	}
	if got := WorkloadOf(nil); got != (Workload{}) {
		t.Errorf("WorkloadOf(nil) = %+v, want zero", got)
	}
}

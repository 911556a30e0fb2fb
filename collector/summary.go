package collector

import stats "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

// The kubelet summary API (/stats/summary) is decoded with the kubelet's own
// types, k8s.io/kubelet/pkg/apis/stats/v1alpha1 (the same module version as
// the rest of k8s.io), so every field the kubelet sends — volumes, inodes,
// page faults, swap, PSI — is at hand. Unknown fields are ignored, and every
// pointer field may be absent (the kubelet omits what the runtime did not
// report). The aliases keep the names this package uses.
type (
	Summary        = stats.Summary
	NodeStats      = stats.NodeStats
	PodStats       = stats.PodStats
	PodReference   = stats.PodReference
	ContainerStats = stats.ContainerStats
	CPUStats       = stats.CPUStats
	MemoryStats    = stats.MemoryStats
	NetworkStats   = stats.NetworkStats
	InterfaceStats = stats.InterfaceStats
	FsStats        = stats.FsStats
	VolumeStats    = stats.VolumeStats
)

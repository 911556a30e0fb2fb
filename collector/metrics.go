package collector

// SchemaURL is the OpenTelemetry schema of the metric and attribute names
// below, set on every resource the agent exports.
const SchemaURL = "https://opentelemetry.io/schemas/1.44.0"

// The one table of every metric the collectors report: name, unit,
// instrument and description, following the OpenTelemetry semantic
// conventions v1.44.0 (model/k8s/metrics.yaml, model/container/metrics.yaml)
// where they define the metric. The README tables are generated from it
// (go test ./collector -update) and checked against it
// (TestReadmeMetricTable); TestMetricsTableIsComplete checks every
// collector describes only metrics of the table, and every metric of the
// table is described by its collector.
//
// Names the conventions do not define, on purpose (README "Metrics"):
// k8s.node.{cpu,memory,pod}.capacity follow the allocatable pattern; the
// pod utilizations and the container memory utilizations are the
// Collector's kubeletstats receiver's names; the metric
// k8s.container.status.last_terminated_reason is named after the
// conventions' attribute; k8s.node.unschedulable, k8s.node.taint and
// k8s.node.info are the agent's own.
var (
	// Pod and container state, from the informer view of this node's pods.
	PodStatusPhase = &Desc{Source: "pod", Name: "k8s.pod.status.phase", Unit: "{pod}", Kind: UpDownCounter,
		Description: "Whether the pod is in the phase named by k8s.pod.status.phase (1) or not (0); every phase is reported."}
	ContainerRestartCount = &Desc{Source: "pod", Name: "k8s.container.restart.count", Unit: "{restart}", Kind: UpDownCounter,
		Description: "Number of times the container has been restarted, from the pod status."}
	ContainerReady = &Desc{Source: "pod", Name: "k8s.container.ready", Unit: "{container}", Kind: UpDownCounter,
		Description: "Whether the container is ready according to its readiness probe (1 = ready, 0 = not ready)."}
	ContainerStatusState = &Desc{Source: "pod", Name: "k8s.container.status.state", Unit: "{container}", Kind: UpDownCounter,
		Description: "1 for the container's current state named by k8s.container.status.state, 0 for the other states (running, waiting, terminated)."}
	ContainerStatusReason = &Desc{Source: "pod", Name: "k8s.container.status.reason", Unit: "{container}", Kind: UpDownCounter,
		Description: "1 for the reason of a waiting or terminated container, named by k8s.container.status.reason (a fixed set; others are _OTHER); only the current reason is reported."}
	ContainerLastTerminatedReason = &Desc{Source: "pod", Name: "k8s.container.status.last_terminated_reason", Unit: "{container}", Kind: UpDownCounter,
		Description: "1 with k8s.container.status.last_terminated_reason set to why the container's previous instance terminated (same fixed set as the reason), when it has terminated before."}
	ContainerCPURequest = &Desc{Source: "pod", Name: "k8s.container.cpu.request.desired", Unit: "{cpu}", Kind: UpDownCounter, Float: true,
		Description: "CPU requested by the container spec, in cores."}
	ContainerCPULimit = &Desc{Source: "pod", Name: "k8s.container.cpu.limit.desired", Unit: "{cpu}", Kind: UpDownCounter, Float: true,
		Description: "CPU limit of the container spec, in cores."}
	ContainerMemoryRequest = &Desc{Source: "pod", Name: "k8s.container.memory.request.desired", Unit: "By", Kind: UpDownCounter,
		Description: "Memory requested by the container spec."}
	ContainerMemoryLimit = &Desc{Source: "pod", Name: "k8s.container.memory.limit.desired", Unit: "By", Kind: UpDownCounter,
		Description: "Memory limit of the container spec."}
	ContainerEphemeralStorageRequest = &Desc{Source: "pod", Name: "k8s.container.ephemeral_storage.request", Unit: "By", Kind: UpDownCounter,
		Description: "Ephemeral storage requested by the container spec."}
	ContainerEphemeralStorageLimit = &Desc{Source: "pod", Name: "k8s.container.ephemeral_storage.limit", Unit: "By", Kind: UpDownCounter,
		Description: "Ephemeral storage limit of the container spec."}

	// Node state, from the informer view of this node's Node.
	NodeConditionStatus = &Desc{Source: "node", Name: "k8s.node.condition.status", Unit: "{node}", Kind: UpDownCounter,
		Description: "1 for the node's current status of the condition named by k8s.node.condition.type, 0 for the other statuses (true, false, unknown)."}
	NodeCPUAllocatable = &Desc{Source: "node", Name: "k8s.node.cpu.allocatable", Unit: "{cpu}", Kind: UpDownCounter, Float: true,
		Description: "CPU cores allocatable to pods."}
	NodeMemoryAllocatable = &Desc{Source: "node", Name: "k8s.node.memory.allocatable", Unit: "By", Kind: UpDownCounter,
		Description: "Memory allocatable to pods."}
	NodePodAllocatable = &Desc{Source: "node", Name: "k8s.node.pod.allocatable", Unit: "{pod}", Kind: UpDownCounter,
		Description: "Number of pods the node can run."}
	NodeEphemeralStorageAllocatable = &Desc{Source: "node", Name: "k8s.node.ephemeral_storage.allocatable", Unit: "By", Kind: UpDownCounter,
		Description: "Ephemeral storage allocatable to pods."}
	NodeCPUCapacity = &Desc{Source: "node", Name: "k8s.node.cpu.capacity", Unit: "{cpu}", Kind: UpDownCounter, Float: true,
		Description: "CPU cores of the node."}
	NodeMemoryCapacity = &Desc{Source: "node", Name: "k8s.node.memory.capacity", Unit: "By", Kind: UpDownCounter,
		Description: "Memory of the node."}
	NodePodCapacity = &Desc{Source: "node", Name: "k8s.node.pod.capacity", Unit: "{pod}", Kind: UpDownCounter,
		Description: "Maximum number of pods of the node."}
	NodeUnschedulable = &Desc{Source: "node", Name: "k8s.node.unschedulable", Unit: "{node}", Kind: UpDownCounter,
		Description: "1 when the node is cordoned (spec.unschedulable), else 0."}
	NodeTaint = &Desc{Source: "node", Name: "k8s.node.taint", Unit: "{taint}", Kind: UpDownCounter,
		Description: "1 for each taint of the node, with k8s.node.taint.key, k8s.node.taint.value and k8s.node.taint.effect."}
	NodeInfo = &Desc{Source: "node", Name: "k8s.node.info", Unit: "1", Kind: Gauge,
		Description: "Always 1; its attributes carry the node's versions from status.nodeInfo: k8s.kubelet.version, container.runtime.name, container.runtime.version, os.type, os.description, os.version, host.arch."}

	// Usage, from the kubelet summary API.
	NodeCPUUsage = &Desc{Source: "kubelet", Name: "k8s.node.cpu.usage", Unit: "{cpu}", Kind: Gauge, Float: true,
		Description: "Node CPU usage in cores, averaged over the kubelet's sample window."}
	NodeCPUTime = &Desc{Source: "kubelet", Name: "k8s.node.cpu.time", Unit: "s", Kind: Counter, Float: true,
		Description: "Total CPU time consumed by the node."}
	NodeMemoryUsage = &Desc{Source: "kubelet", Name: "k8s.node.memory.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Node memory in use, including page cache."}
	NodeMemoryWorkingSet = &Desc{Source: "kubelet", Name: "k8s.node.memory.working_set", Unit: "By", Kind: UpDownCounter,
		Description: "Node memory working set (usage minus inactive file cache)."}
	NodeMemoryAvailable = &Desc{Source: "kubelet", Name: "k8s.node.memory.available", Unit: "By", Kind: UpDownCounter,
		Description: "Node memory available."}
	NodeMemoryRSS = &Desc{Source: "kubelet", Name: "k8s.node.memory.rss", Unit: "By", Kind: UpDownCounter,
		Description: "Node anonymous and swap cache memory."}
	NodeNetworkIO = &Desc{Source: "kubelet", Name: "k8s.node.network.io", Unit: "By", Kind: Counter,
		Description: "Node network bytes by interface and direction."}
	NodeNetworkErrors = &Desc{Source: "kubelet", Name: "k8s.node.network.errors", Unit: "{error}", Kind: Counter,
		Description: "Node network errors by interface and direction."}
	NodeFilesystemUsage = &Desc{Source: "kubelet", Name: "k8s.node.filesystem.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes used on the node's root filesystem."}
	NodeFilesystemCapacity = &Desc{Source: "kubelet", Name: "k8s.node.filesystem.capacity", Unit: "By", Kind: UpDownCounter,
		Description: "Capacity of the node's root filesystem."}
	NodeFilesystemAvailable = &Desc{Source: "kubelet", Name: "k8s.node.filesystem.available", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes available on the node's root filesystem."}

	NodeUptime = &Desc{Source: "kubelet", Name: "k8s.node.uptime", Unit: "s", Kind: Gauge, Float: true,
		Description: "Time since the node started, from the kubelet summary's node startTime."}
	NodePagingFaults = &Desc{Source: "kubelet", Name: "k8s.node.paging.faults", Unit: "{fault}", Kind: Counter,
		Description: "Node memory paging faults by system.paging.fault.type (minor, major)."}
	NodeFilesystemInodeCount = &Desc{Source: "kubelet", Name: "k8s.node.filesystem.inode.count", Unit: "{inode}", Kind: UpDownCounter,
		Description: "Total inodes of the node's root filesystem."}
	NodeFilesystemInodeFree = &Desc{Source: "kubelet", Name: "k8s.node.filesystem.inode.free", Unit: "{inode}", Kind: UpDownCounter,
		Description: "Free inodes of the node's root filesystem."}

	PodCPUUsage = &Desc{Source: "kubelet", Name: "k8s.pod.cpu.usage", Unit: "{cpu}", Kind: Gauge, Float: true,
		Description: "Pod CPU usage in cores."}
	PodCPUTime = &Desc{Source: "kubelet", Name: "k8s.pod.cpu.time", Unit: "s", Kind: Counter, Float: true,
		Description: "Total CPU time consumed by the pod."}
	PodMemoryUsage = &Desc{Source: "kubelet", Name: "k8s.pod.memory.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Pod memory in use, including page cache."}
	PodMemoryWorkingSet = &Desc{Source: "kubelet", Name: "k8s.pod.memory.working_set", Unit: "By", Kind: UpDownCounter,
		Description: "Pod memory working set."}
	PodMemoryAvailable = &Desc{Source: "kubelet", Name: "k8s.pod.memory.available", Unit: "By", Kind: UpDownCounter,
		Description: "Pod memory available before its limit."}
	PodMemoryRSS = &Desc{Source: "kubelet", Name: "k8s.pod.memory.rss", Unit: "By", Kind: UpDownCounter,
		Description: "Pod anonymous and swap cache memory."}
	PodNetworkIO = &Desc{Source: "kubelet", Name: "k8s.pod.network.io", Unit: "By", Kind: Counter,
		Description: "Pod network bytes by interface and direction."}
	PodNetworkErrors = &Desc{Source: "kubelet", Name: "k8s.pod.network.errors", Unit: "{error}", Kind: Counter,
		Description: "Pod network errors by interface and direction."}
	PodFilesystemUsage = &Desc{Source: "kubelet", Name: "k8s.pod.filesystem.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Pod ephemeral storage used (container rootfs, logs and emptyDir volumes)."}
	PodFilesystemCapacity = &Desc{Source: "kubelet", Name: "k8s.pod.filesystem.capacity", Unit: "By", Kind: UpDownCounter,
		Description: "Capacity of the filesystem holding the pod's ephemeral storage."}
	PodFilesystemAvailable = &Desc{Source: "kubelet", Name: "k8s.pod.filesystem.available", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes available on the filesystem holding the pod's ephemeral storage."}

	PodUptime = &Desc{Source: "kubelet", Name: "k8s.pod.uptime", Unit: "s", Kind: Gauge, Float: true,
		Description: "Time since the pod started, from the kubelet summary's pod startTime."}
	PodCPURequestUtilization = &Desc{Source: "kubelet", Name: "k8s.pod.cpu_request_utilization", Unit: "1", Kind: Gauge, Float: true,
		Description: "Pod CPU usage as a ratio of the sum of its containers' CPU requests (sidecars included); not reported when a container has no request."}
	PodCPULimitUtilization = &Desc{Source: "kubelet", Name: "k8s.pod.cpu_limit_utilization", Unit: "1", Kind: Gauge, Float: true,
		Description: "Pod CPU usage as a ratio of the sum of its containers' CPU limits (sidecars included); not reported when a container has no limit."}
	PodMemoryRequestUtilization = &Desc{Source: "kubelet", Name: "k8s.pod.memory_request_utilization", Unit: "1", Kind: Gauge, Float: true,
		Description: "Pod memory usage as a ratio of the sum of its containers' memory requests (sidecars included); not reported when a container has no request."}
	PodMemoryLimitUtilization = &Desc{Source: "kubelet", Name: "k8s.pod.memory_limit_utilization", Unit: "1", Kind: Gauge, Float: true,
		Description: "Pod memory usage as a ratio of the sum of its containers' memory limits (sidecars included); not reported when a container has no limit."}
	PodVolumeUsage = &Desc{Source: "kubelet", Name: "k8s.pod.volume.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes used on the pod volume named by k8s.volume.name."}
	PodVolumeCapacity = &Desc{Source: "kubelet", Name: "k8s.pod.volume.capacity", Unit: "By", Kind: UpDownCounter,
		Description: "Capacity of the filesystem of the pod volume named by k8s.volume.name."}
	PodVolumeAvailable = &Desc{Source: "kubelet", Name: "k8s.pod.volume.available", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes available on the filesystem of the pod volume named by k8s.volume.name."}
	PodVolumeInodeCount = &Desc{Source: "kubelet", Name: "k8s.pod.volume.inode.count", Unit: "{inode}", Kind: UpDownCounter,
		Description: "Total inodes of the filesystem of the pod volume named by k8s.volume.name."}
	PodVolumeInodeUsed = &Desc{Source: "kubelet", Name: "k8s.pod.volume.inode.used", Unit: "{inode}", Kind: UpDownCounter,
		Description: "Inodes used by the pod volume named by k8s.volume.name."}
	PodVolumeInodeFree = &Desc{Source: "kubelet", Name: "k8s.pod.volume.inode.free", Unit: "{inode}", Kind: UpDownCounter,
		Description: "Free inodes of the filesystem of the pod volume named by k8s.volume.name."}
	PodPagingFaults = &Desc{Source: "kubelet", Name: "k8s.pod.paging.faults", Unit: "{fault}", Kind: Counter,
		Description: "Pod memory paging faults by system.paging.fault.type (minor, major)."}

	ContainerCPUUsage = &Desc{Source: "kubelet", Name: "container.cpu.usage", Unit: "{cpu}", Kind: Gauge, Float: true,
		Description: "Container CPU usage in cores."}
	ContainerCPUTime = &Desc{Source: "kubelet", Name: "container.cpu.time", Unit: "s", Kind: Counter, Float: true,
		Description: "Total CPU time consumed by the container."}
	ContainerMemoryUsage = &Desc{Source: "kubelet", Name: "container.memory.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Container memory in use, including page cache."}
	ContainerMemoryWorkingSet = &Desc{Source: "kubelet", Name: "container.memory.working_set", Unit: "By", Kind: UpDownCounter,
		Description: "Container memory working set."}
	ContainerMemoryRSS = &Desc{Source: "kubelet", Name: "container.memory.rss", Unit: "By", Kind: UpDownCounter,
		Description: "Container anonymous and swap cache memory."}
	ContainerMemoryAvailable = &Desc{Source: "kubelet", Name: "container.memory.available", Unit: "By", Kind: UpDownCounter,
		Description: "Container memory available before its limit."}
	ContainerUptime = &Desc{Source: "kubelet", Name: "container.uptime", Unit: "s", Kind: Gauge, Float: true,
		Description: "Time since the container started, from the kubelet summary's container startTime."}
	ContainerCPURequestUtilization = &Desc{Source: "kubelet", Name: "k8s.container.cpu.request.utilization", Unit: "1", Kind: Gauge, Float: true,
		Description: "Container CPU usage as a ratio of its CPU request (the applied one of the container status, else the spec's); not reported without a request."}
	ContainerCPULimitUtilization = &Desc{Source: "kubelet", Name: "k8s.container.cpu.limit.utilization", Unit: "1", Kind: Gauge, Float: true,
		Description: "Container CPU usage as a ratio of its CPU limit (the applied one of the container status, else the spec's); not reported without a limit."}
	ContainerMemoryRequestUtilization = &Desc{Source: "kubelet", Name: "k8s.container.memory_request_utilization", Unit: "1", Kind: Gauge, Float: true,
		Description: "Container memory usage as a ratio of its memory request; not reported without a request."}
	ContainerMemoryLimitUtilization = &Desc{Source: "kubelet", Name: "k8s.container.memory_limit_utilization", Unit: "1", Kind: Gauge, Float: true,
		Description: "Container memory usage as a ratio of its memory limit; not reported without a limit."}
	ContainerPagingFaults = &Desc{Source: "kubelet", Name: "container.paging.faults", Unit: "{fault}", Kind: Counter,
		Description: "Container memory paging faults by system.paging.fault.type (minor, major)."}
	ContainerFilesystemUsage = &Desc{Source: "kubelet", Name: "container.filesystem.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes used by the container's writable layer."}
	ContainerFilesystemCapacity = &Desc{Source: "kubelet", Name: "container.filesystem.capacity", Unit: "By", Kind: UpDownCounter,
		Description: "Capacity of the filesystem holding the container's writable layer."}
	ContainerFilesystemAvailable = &Desc{Source: "kubelet", Name: "container.filesystem.available", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes available on the filesystem holding the container's writable layer."}
)

// Metrics lists every metric, in the order of the README table.
var Metrics = []*Desc{
	PodStatusPhase, ContainerRestartCount, ContainerReady,
	ContainerStatusState, ContainerStatusReason, ContainerLastTerminatedReason,
	ContainerCPURequest, ContainerCPULimit, ContainerMemoryRequest, ContainerMemoryLimit,
	ContainerEphemeralStorageRequest, ContainerEphemeralStorageLimit,
	NodeConditionStatus, NodeCPUAllocatable, NodeMemoryAllocatable, NodePodAllocatable,
	NodeEphemeralStorageAllocatable, NodeCPUCapacity, NodeMemoryCapacity, NodePodCapacity,
	NodeUnschedulable, NodeTaint, NodeInfo,
	NodeCPUUsage, NodeCPUTime, NodeMemoryUsage, NodeMemoryWorkingSet, NodeMemoryAvailable, NodeMemoryRSS,
	NodeNetworkIO, NodeNetworkErrors, NodeFilesystemUsage, NodeFilesystemCapacity, NodeFilesystemAvailable,
	NodePagingFaults, NodeFilesystemInodeCount, NodeFilesystemInodeFree, NodeUptime,
	PodCPUUsage, PodCPUTime, PodMemoryUsage, PodMemoryWorkingSet, PodMemoryAvailable, PodMemoryRSS,
	PodNetworkIO, PodNetworkErrors, PodFilesystemUsage, PodFilesystemCapacity, PodFilesystemAvailable, PodPagingFaults,
	PodUptime, PodCPURequestUtilization, PodCPULimitUtilization, PodMemoryRequestUtilization, PodMemoryLimitUtilization,
	PodVolumeUsage, PodVolumeCapacity, PodVolumeAvailable, PodVolumeInodeCount, PodVolumeInodeUsed, PodVolumeInodeFree,
	ContainerCPUUsage, ContainerCPUTime, ContainerMemoryUsage, ContainerMemoryWorkingSet, ContainerMemoryRSS,
	ContainerMemoryAvailable, ContainerPagingFaults,
	ContainerFilesystemUsage, ContainerFilesystemCapacity, ContainerFilesystemAvailable,
	ContainerUptime, ContainerCPURequestUtilization, ContainerCPULimitUtilization,
	ContainerMemoryRequestUtilization, ContainerMemoryLimitUtilization,
}

package collector

// Kubelet summary usage metrics (OpenTelemetry semantic conventions v1.43).
// CPU usage is a float gauge in cores because fractions of a core matter;
// container.memory.usage is a gauge like k8s.pod.memory.usage because memory
// goes down as well as up.
var (
	NodeCPUUsage = &Desc{Name: "k8s.node.cpu.usage", Unit: "{cpu}", Kind: Gauge, Float: true,
		Description: "Node CPU usage in cores, averaged over the kubelet's sample window."}
	NodeCPUTime = &Desc{Name: "k8s.node.cpu.time", Unit: "s", Kind: Counter, Float: true,
		Description: "Total CPU time consumed by the node."}
	NodeMemoryUsage = &Desc{Name: "k8s.node.memory.usage", Unit: "By", Kind: Gauge,
		Description: "Node memory in use, including page cache."}
	NodeMemoryWorkingSet = &Desc{Name: "k8s.node.memory.working_set", Unit: "By", Kind: UpDownCounter,
		Description: "Node memory working set (usage minus inactive file cache)."}
	NodeMemoryAvailable = &Desc{Name: "k8s.node.memory.available", Unit: "By", Kind: UpDownCounter,
		Description: "Node memory available."}
	NodeMemoryRSS = &Desc{Name: "k8s.node.memory.rss", Unit: "By", Kind: UpDownCounter,
		Description: "Node anonymous and swap cache memory."}
	NodeNetworkIO = &Desc{Name: "k8s.node.network.io", Unit: "By", Kind: Counter,
		Description: "Node network bytes by interface and direction."}
	NodeNetworkErrors = &Desc{Name: "k8s.node.network.errors", Unit: "{error}", Kind: Counter,
		Description: "Node network errors by interface and direction."}
	NodeFilesystemUsage = &Desc{Name: "k8s.node.filesystem.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes used on the node's root filesystem."}
	NodeFilesystemCapacity = &Desc{Name: "k8s.node.filesystem.capacity", Unit: "By", Kind: UpDownCounter,
		Description: "Capacity of the node's root filesystem."}
	NodeFilesystemAvailable = &Desc{Name: "k8s.node.filesystem.available", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes available on the node's root filesystem."}

	PodCPUUsage = &Desc{Name: "k8s.pod.cpu.usage", Unit: "{cpu}", Kind: Gauge, Float: true,
		Description: "Pod CPU usage in cores."}
	PodCPUTime = &Desc{Name: "k8s.pod.cpu.time", Unit: "s", Kind: Counter, Float: true,
		Description: "Total CPU time consumed by the pod."}
	PodMemoryUsage = &Desc{Name: "k8s.pod.memory.usage", Unit: "By", Kind: Gauge,
		Description: "Pod memory in use, including page cache."}
	PodMemoryWorkingSet = &Desc{Name: "k8s.pod.memory.working_set", Unit: "By", Kind: UpDownCounter,
		Description: "Pod memory working set."}
	PodMemoryAvailable = &Desc{Name: "k8s.pod.memory.available", Unit: "By", Kind: UpDownCounter,
		Description: "Pod memory available before its limit."}
	PodMemoryRSS = &Desc{Name: "k8s.pod.memory.rss", Unit: "By", Kind: UpDownCounter,
		Description: "Pod anonymous and swap cache memory."}
	PodNetworkIO = &Desc{Name: "k8s.pod.network.io", Unit: "By", Kind: Counter,
		Description: "Pod network bytes by interface and direction."}
	PodNetworkErrors = &Desc{Name: "k8s.pod.network.errors", Unit: "{error}", Kind: Counter,
		Description: "Pod network errors by interface and direction."}
	PodFilesystemUsage = &Desc{Name: "k8s.pod.filesystem.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Pod ephemeral storage used (container rootfs, logs and emptyDir volumes)."}
	PodFilesystemCapacity = &Desc{Name: "k8s.pod.filesystem.capacity", Unit: "By", Kind: UpDownCounter,
		Description: "Capacity of the filesystem holding the pod's ephemeral storage."}
	PodFilesystemAvailable = &Desc{Name: "k8s.pod.filesystem.available", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes available on the filesystem holding the pod's ephemeral storage."}

	ContainerCPUUsage = &Desc{Name: "container.cpu.usage", Unit: "{cpu}", Kind: Gauge, Float: true,
		Description: "Container CPU usage in cores."}
	ContainerCPUTime = &Desc{Name: "container.cpu.time", Unit: "s", Kind: Counter, Float: true,
		Description: "Total CPU time consumed by the container."}
	ContainerMemoryUsage = &Desc{Name: "container.memory.usage", Unit: "By", Kind: Gauge,
		Description: "Container memory in use, including page cache."}
	ContainerMemoryWorkingSet = &Desc{Name: "container.memory.working_set", Unit: "By", Kind: UpDownCounter,
		Description: "Container memory working set."}
	ContainerMemoryRSS = &Desc{Name: "container.memory.rss", Unit: "By", Kind: UpDownCounter,
		Description: "Container anonymous and swap cache memory."}
	ContainerFilesystemUsage = &Desc{Name: "container.filesystem.usage", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes used by the container's writable layer."}
	ContainerFilesystemCapacity = &Desc{Name: "container.filesystem.capacity", Unit: "By", Kind: UpDownCounter,
		Description: "Capacity of the filesystem holding the container's writable layer."}
	ContainerFilesystemAvailable = &Desc{Name: "container.filesystem.available", Unit: "By", Kind: UpDownCounter,
		Description: "Bytes available on the filesystem holding the container's writable layer."}
)

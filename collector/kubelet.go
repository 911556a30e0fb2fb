package collector

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

type kubeletCollector struct {
	client *KubeletClient
	state  KubeState // optional: adds workload and label attributes
	attrs  *podAttributer
	// fallback reads the kubelet's /pods for pods neither state nor
	// known has (Config.KubeletPodsFallback).
	fallback bool
	clock    clock.PassiveClock // for uptimes

	// known is the last pod object the informers held for each pod uid of
	// the last summary: while the state is stale (kill switch, apiserver
	// unreachable) a pod keeps the workload, label and container attributes
	// it had, so its series keep their identity through the incident. A pod's
	// owner and name never change during its life; its labels may, and
	// take effect once the state is fresh again.
	mu    sync.Mutex
	known map[string]*corev1.Pod
	// last and lastPods are the last good summary and its pods, whose
	// counters a failed scrape observes again.
	last     *Summary
	lastPods map[string]*corev1.Pod
}

// NewKubeletCollector reports node, pod and container usage from the kubelet
// summary API. state may be nil; when it is set, pods it knows get the same
// workload and label attributes as the pod collector. With
// cfg.KubeletPodsFallback, pods it does not know get them from the
// kubelet's /pods.
func NewKubeletCollector(client *KubeletClient, state KubeState, cfg Config) Collector {
	clk := cfg.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &kubeletCollector{client: client, state: state, attrs: newPodAttributer(cfg), clock: clk, fallback: cfg.KubeletPodsFallback}
}

func (c *kubeletCollector) Name() string { return "kubelet" }

func (c *kubeletCollector) Describe() []*Desc {
	return []*Desc{
		NodeCPUUsage, NodeCPUTime, NodeMemoryUsage, NodeMemoryWorkingSet, NodeMemoryAvailable, NodeMemoryRSS,
		NodeNetworkIO, NodeNetworkErrors, NodeFilesystemUsage, NodeFilesystemCapacity, NodeFilesystemAvailable,
		PodCPUUsage, PodCPUTime, PodMemoryUsage, PodMemoryWorkingSet, PodMemoryAvailable, PodMemoryRSS,
		PodNetworkIO, PodNetworkErrors, PodFilesystemUsage, PodFilesystemCapacity, PodFilesystemAvailable,
		NodePagingFaults, NodeFilesystemInodeCount, NodeFilesystemInodeFree, PodPagingFaults,
		ContainerMemoryAvailable, ContainerPagingFaults,
		NodeUptime, PodUptime, ContainerUptime,
		PodCPURequestUtilization, PodCPULimitUtilization, PodMemoryRequestUtilization, PodMemoryLimitUtilization,
		ContainerCPURequestUtilization, ContainerCPULimitUtilization, ContainerMemoryRequestUtilization, ContainerMemoryLimitUtilization,
		PodVolumeUsage, PodVolumeCapacity, PodVolumeAvailable, PodVolumeInodeCount, PodVolumeInodeUsed, PodVolumeInodeFree,
		ContainerCPUUsage, ContainerCPUTime, ContainerMemoryUsage, ContainerMemoryWorkingSet, ContainerMemoryRSS,
		ContainerFilesystemUsage, ContainerFilesystemCapacity, ContainerFilesystemAvailable,
	}
}

// RegisterMetrics registers the kubelet client's scrape self-metrics; the
// Runner calls it from its own RegisterMetrics.
func (c *kubeletCollector) RegisterMetrics(m metric.Meter) error { return c.client.RegisterMetrics(m) }

func (c *kubeletCollector) Collect(ctx context.Context, r Recorder) error {
	s, err := c.client.Summary(ctx)
	if err != nil {
		// The counters of the last good summary are observed again, so
		// their series do not vanish for the failed interval: under delta
		// temporality the SDK forgets a series' last value when a
		// collection lacks it, and the next good scrape would then export
		// the lifetime total as one interval's delta. Repeating a
		// cumulative total is true (nothing is known to have been added);
		// usage gauges are not repeated, they would claim a current value.
		c.mu.Lock()
		last, pods := c.last, c.lastPods
		c.mu.Unlock()
		if last != nil {
			c.record(countersOnly{r}, last, pods)
		}
		return err
	}
	pods := c.pods(ctx, s)
	c.mu.Lock()
	c.last, c.lastPods = s, pods
	c.mu.Unlock()
	c.record(r, s, pods)
	return nil
}

// countersOnly passes on the observations of Counter instruments only.
type countersOnly struct{ r Recorder }

func (f countersOnly) Record(d *Desc, v float64, attrs ...attribute.KeyValue) {
	if d.Kind == Counter {
		f.r.Record(d, v, attrs...)
	}
}

func (c *kubeletCollector) record(r Recorder, s *Summary, pods map[string]*corev1.Pod) {
	now := c.clock.Now()
	n := s.Node
	recordUptime(r, NodeUptime, n.StartTime, now, nil)
	recordCPU(r, n.CPU, NodeCPUUsage, NodeCPUTime, nil)
	recordMemory(r, n.Memory, NodeMemoryUsage, NodeMemoryWorkingSet, NodeMemoryAvailable, NodeMemoryRSS, nil)
	recordNetwork(r, n.Network, NodeNetworkIO, NodeNetworkErrors, nil)
	recordFs(r, n.Fs, NodeFilesystemUsage, NodeFilesystemCapacity, NodeFilesystemAvailable, nil)
	recordFaults(r, n.Memory, NodePagingFaults, nil)
	if n.Fs != nil {
		opt(r, NodeFilesystemInodeCount, n.Fs.Inodes, nil)
		opt(r, NodeFilesystemInodeFree, n.Fs.InodesFree, nil)
	}

	for i := range s.Pods {
		p := &s.Pods[i]
		base := []attribute.KeyValue{
			attribute.String("k8s.namespace.name", p.PodRef.Namespace),
			attribute.String("k8s.pod.name", p.PodRef.Name),
			attribute.String("k8s.pod.uid", p.PodRef.UID),
		}
		pod := pods[p.PodRef.UID]
		base = append(base, c.attrs.extra(pod)...)
		recordCPU(r, p.CPU, PodCPUUsage, PodCPUTime, base)
		recordMemory(r, p.Memory, PodMemoryUsage, PodMemoryWorkingSet, PodMemoryAvailable, PodMemoryRSS, base)
		recordFaults(r, p.Memory, PodPagingFaults, base)
		recordNetwork(r, p.Network, PodNetworkIO, PodNetworkErrors, base)
		recordFs(r, p.EphemeralStorage, PodFilesystemUsage, PodFilesystemCapacity, PodFilesystemAvailable, base)
		recordUptime(r, PodUptime, p.StartTime, now, base)
		recordUtilization(r, p.CPU, p.Memory, totalsOf(pod),
			PodCPURequestUtilization, PodCPULimitUtilization, PodMemoryRequestUtilization, PodMemoryLimitUtilization, base)
		recordVolumes(r, p.VolumeStats, pod, base)
		for j := range p.Containers {
			ct := &p.Containers[j]
			ca := with(base, containerAttrs(pod, ct.Name)...)
			recordCPU(r, ct.CPU, ContainerCPUUsage, ContainerCPUTime, ca)
			recordMemory(r, ct.Memory, ContainerMemoryUsage, ContainerMemoryWorkingSet, ContainerMemoryAvailable, ContainerMemoryRSS, ca)
			recordFaults(r, ct.Memory, ContainerPagingFaults, ca)
			recordFs(r, ct.Rootfs, ContainerFilesystemUsage, ContainerFilesystemCapacity, ContainerFilesystemAvailable, ca)
			recordUptime(r, ContainerUptime, ct.StartTime, now, ca)
			recordUtilization(r, ct.CPU, ct.Memory, containerTotals(pod, ct.Name),
				ContainerCPURequestUtilization, ContainerCPULimitUtilization, ContainerMemoryRequestUtilization, ContainerMemoryLimitUtilization, ca)
		}
	}
}

// pods returns the pod object for each pod uid of s: the state's when it
// is fresh (a static pod found by its mirror pod's
// kubernetes.io/config.mirror annotation, which holds the UID the kubelet
// reports), else the last one known, else, with the kubelet fallback on,
// the kubelet's own from /pods. So a pod that starts while the state is
// stale (kill switch, apiserver unreachable) is attributed as the
// informers will attribute it once fresh again, and its series do not
// change attributes across the outage. Uids no longer in the summary are
// forgotten.
func (c *kubeletCollector) pods(ctx context.Context, s *Summary) map[string]*corev1.Pod {
	if c.state == nil && !c.fallback {
		return nil
	}
	var fresh map[string]*corev1.Pod
	if c.state != nil && c.state.HasSynced() {
		all := c.state.Pods()
		fresh = make(map[string]*corev1.Pod, len(all))
		for _, p := range all {
			fresh[string(p.UID)] = p
			if m := p.Annotations[mirrorAnnotation]; m != "" {
				if _, ok := fresh[m]; !ok {
					fresh[m] = p
				}
			}
		}
	}
	c.mu.Lock()
	known := c.known
	c.mu.Unlock()
	next := make(map[string]*corev1.Pod, len(s.Pods))
	missing := false
	for i := range s.Pods {
		uid := s.Pods[i].PodRef.UID
		if p, ok := fresh[uid]; ok {
			next[uid] = p
		} else if p, ok := known[uid]; ok {
			// Stale state, or a synced cache that has not seen the pod
			// yet or has seen its deletion first: keep what was known.
			next[uid] = p
		} else {
			missing = true
		}
	}
	if missing && c.fallback {
		// A failed GET still returns the last list, if any: its pods are
		// the same pods.
		kp, _ := c.client.Pods(ctx)
		byUID := make(map[string]*corev1.Pod, len(kp))
		for _, p := range kp {
			byUID[string(p.UID)] = p
		}
		for i := range s.Pods {
			uid := s.Pods[i].PodRef.UID
			if _, ok := next[uid]; !ok {
				if p, ok := byUID[uid]; ok {
					next[uid] = p
				}
			}
		}
	}
	c.mu.Lock()
	c.known = next
	c.mu.Unlock()
	return next
}

// mirrorAnnotation is on the apiserver's mirror pod of a static pod; its
// value is the static pod's UID, the one the kubelet reports.
const mirrorAnnotation = "kubernetes.io/config.mirror"

func recordCPU(r Recorder, s *CPUStats, usage, cpuTime *Desc, attrs []attribute.KeyValue) {
	if s == nil {
		return
	}
	if s.UsageNanoCores != nil {
		r.Record(usage, float64(*s.UsageNanoCores)/1e9, attrs...)
	}
	if s.UsageCoreNanoSeconds != nil {
		r.Record(cpuTime, float64(*s.UsageCoreNanoSeconds)/1e9, attrs...)
	}
}

func recordMemory(r Recorder, s *MemoryStats, usage, ws, avail, rss *Desc, attrs []attribute.KeyValue) {
	if s == nil {
		return
	}
	opt(r, usage, s.UsageBytes, attrs)
	opt(r, ws, s.WorkingSetBytes, attrs)
	opt(r, avail, s.AvailableBytes, attrs)
	opt(r, rss, s.RSSBytes, attrs)
}

// recordFaults reports the kubelet's minor (pageFaults) and major page
// fault totals by system.paging.fault.type.
func recordFaults(r Recorder, s *MemoryStats, d *Desc, attrs []attribute.KeyValue) {
	if s == nil {
		return
	}
	opt(r, d, s.PageFaults, with(attrs, attribute.String("system.paging.fault.type", "minor")))
	opt(r, d, s.MajorPageFaults, with(attrs, attribute.String("system.paging.fault.type", "major")))
}

func recordFs(r Recorder, s *FsStats, used, capacity, avail *Desc, attrs []attribute.KeyValue) {
	if s == nil {
		return
	}
	opt(r, used, s.UsedBytes, attrs)
	opt(r, capacity, s.CapacityBytes, attrs)
	opt(r, avail, s.AvailableBytes, attrs)
}

// recordNetwork reports every interface; a summary without the interface
// list reports the default interface inlined in NetworkStats.
func recordNetwork(r Recorder, s *NetworkStats, io, errs *Desc, attrs []attribute.KeyValue) {
	if s == nil {
		return
	}
	ifaces := s.Interfaces
	if len(ifaces) == 0 && s.Name != "" {
		ifaces = []InterfaceStats{s.InterfaceStats}
	}
	for _, i := range ifaces {
		name := attribute.String("network.interface.name", i.Name)
		rx := attribute.String("network.io.direction", "receive")
		tx := attribute.String("network.io.direction", "transmit")
		opt(r, io, i.RxBytes, with(attrs, name, rx))
		opt(r, io, i.TxBytes, with(attrs, name, tx))
		opt(r, errs, i.RxErrors, with(attrs, name, rx))
		opt(r, errs, i.TxErrors, with(attrs, name, tx))
	}
}

func opt(r Recorder, d *Desc, v *uint64, attrs []attribute.KeyValue) {
	if d == nil || v == nil {
		return
	}
	r.Record(d, float64(*v), attrs...)
}

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
	// sets keeps the series' attribute sets across collections.
	sets setCache

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

func (f countersOnly) RecordSet(d *Desc, v float64, set attribute.Set) {
	if d.Kind == Counter {
		recordSet(f.r, d, v, set)
	}
}

func (c *kubeletCollector) record(r Recorder, s *Summary, pods map[string]*corev1.Pod) {
	c.sets.mu.Lock()
	defer c.sets.mu.Unlock()
	defer c.sets.sweep()
	now := c.clock.Now()
	n := s.Node
	node := &entity{c: &c.sets, attrs: func() []attribute.KeyValue { return nil }}
	recordUptime(r, NodeUptime, n.StartTime, now, node)
	recordCPU(r, n.CPU, NodeCPUUsage, NodeCPUTime, node)
	recordMemory(r, n.Memory, NodeMemoryUsage, NodeMemoryWorkingSet, NodeMemoryAvailable, NodeMemoryRSS, node)
	recordNetwork(r, n.Network, NodeNetworkIO, NodeNetworkErrors, node)
	recordFs(r, n.Fs, NodeFilesystemUsage, NodeFilesystemCapacity, NodeFilesystemAvailable, node)
	recordFaults(r, n.Memory, NodePagingFaults, node)
	if n.Fs != nil {
		optE(r, NodeFilesystemInodeCount, n.Fs.Inodes, node)
		optE(r, NodeFilesystemInodeFree, n.Fs.InodesFree, node)
	}

	for i := range s.Pods {
		p := &s.Pods[i]
		pod := pods[p.PodRef.UID]
		podEnt := &entity{c: &c.sets, key: setKey{namespace: p.PodRef.Namespace, name: p.PodRef.Name, uid: p.PodRef.UID}, pod: pod}
		podEnt.attrs = func() []attribute.KeyValue {
			base := []attribute.KeyValue{
				attribute.String("k8s.namespace.name", p.PodRef.Namespace),
				attribute.String("k8s.pod.name", p.PodRef.Name),
				attribute.String("k8s.pod.uid", p.PodRef.UID),
			}
			return append(base, c.attrs.extra(pod)...)
		}
		recordCPU(r, p.CPU, PodCPUUsage, PodCPUTime, podEnt)
		recordMemory(r, p.Memory, PodMemoryUsage, PodMemoryWorkingSet, PodMemoryAvailable, PodMemoryRSS, podEnt)
		recordFaults(r, p.Memory, PodPagingFaults, podEnt)
		recordNetwork(r, p.Network, PodNetworkIO, PodNetworkErrors, podEnt)
		recordFs(r, p.EphemeralStorage, PodFilesystemUsage, PodFilesystemCapacity, PodFilesystemAvailable, podEnt)
		recordUptime(r, PodUptime, p.StartTime, now, podEnt)
		recordUtilization(r, p.CPU, p.Memory, totalsOf(pod),
			PodCPURequestUtilization, PodCPULimitUtilization, PodMemoryRequestUtilization, PodMemoryLimitUtilization, podEnt)
		recordVolumes(r, p.VolumeStats, pod, podEnt)
		for j := range p.Containers {
			ct := &p.Containers[j]
			ctrEnt := &entity{c: &c.sets, key: setKey{namespace: p.PodRef.Namespace, name: p.PodRef.Name, uid: p.PodRef.UID, container: ct.Name}, pod: pod}
			ctrEnt.attrs = func() []attribute.KeyValue { return with(podEnt.kvs(), containerAttrs(pod, ct.Name)...) }
			recordCPU(r, ct.CPU, ContainerCPUUsage, ContainerCPUTime, ctrEnt)
			recordMemory(r, ct.Memory, ContainerMemoryUsage, ContainerMemoryWorkingSet, ContainerMemoryAvailable, ContainerMemoryRSS, ctrEnt)
			recordFaults(r, ct.Memory, ContainerPagingFaults, ctrEnt)
			recordFs(r, ct.Rootfs, ContainerFilesystemUsage, ContainerFilesystemCapacity, ContainerFilesystemAvailable, ctrEnt)
			recordUptime(r, ContainerUptime, ct.StartTime, now, ctrEnt)
			recordUtilization(r, ct.CPU, ct.Memory, containerTotals(pod, ct.Name),
				ContainerCPURequestUtilization, ContainerCPULimitUtilization, ContainerMemoryRequestUtilization, ContainerMemoryLimitUtilization, ctrEnt)
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

func recordCPU(r Recorder, s *CPUStats, usage, cpuTime *Desc, e *entity) {
	if s == nil {
		return
	}
	if s.UsageNanoCores != nil {
		recordSet(r, usage, float64(*s.UsageNanoCores)/1e9, e.set())
	}
	if s.UsageCoreNanoSeconds != nil {
		recordSet(r, cpuTime, float64(*s.UsageCoreNanoSeconds)/1e9, e.set())
	}
}

func recordMemory(r Recorder, s *MemoryStats, usage, ws, avail, rss *Desc, e *entity) {
	if s == nil {
		return
	}
	optE(r, usage, s.UsageBytes, e)
	optE(r, ws, s.WorkingSetBytes, e)
	optE(r, avail, s.AvailableBytes, e)
	optE(r, rss, s.RSSBytes, e)
}

var (
	faultMinor = attribute.String("system.paging.fault.type", "minor")
	faultMajor = attribute.String("system.paging.fault.type", "major")
	netRx      = attribute.String("network.io.direction", "receive")
	netTx      = attribute.String("network.io.direction", "transmit")
)

// recordFaults reports the kubelet's minor (pageFaults) and major page
// fault totals by system.paging.fault.type.
func recordFaults(r Recorder, s *MemoryStats, d *Desc, e *entity) {
	if s == nil {
		return
	}
	optSet(r, d, s.PageFaults, e, faultMinor)
	optSet(r, d, s.MajorPageFaults, e, faultMajor)
}

func recordFs(r Recorder, s *FsStats, used, capacity, avail *Desc, e *entity) {
	if s == nil {
		return
	}
	optE(r, used, s.UsedBytes, e)
	optE(r, capacity, s.CapacityBytes, e)
	optE(r, avail, s.AvailableBytes, e)
}

// recordNetwork reports every interface; a summary without the interface
// list reports the default interface inlined in NetworkStats.
func recordNetwork(r Recorder, s *NetworkStats, io, errs *Desc, e *entity) {
	if s == nil {
		return
	}
	ifaces := s.Interfaces
	if len(ifaces) == 0 && s.Name != "" {
		ifaces = []InterfaceStats{s.InterfaceStats}
	}
	for _, i := range ifaces {
		name := attribute.String("network.interface.name", i.Name)
		optSet(r, io, i.RxBytes, e, name, netRx)
		optSet(r, io, i.TxBytes, e, name, netTx)
		optSet(r, errs, i.RxErrors, e, name, netRx)
		optSet(r, errs, i.TxErrors, e, name, netTx)
	}
}

// optE records v, when present, with the entity's cached attribute set.
func optE(r Recorder, d *Desc, v *uint64, e *entity) {
	if d == nil || v == nil {
		return
	}
	recordSet(r, d, float64(*v), e.set())
}

// optSet records v, when present, with the entity's attributes and extra.
func optSet(r Recorder, d *Desc, v *uint64, e *entity, extra ...attribute.KeyValue) {
	if d == nil || v == nil {
		return
	}
	recordSet(r, d, float64(*v), e.set(extra...))
}

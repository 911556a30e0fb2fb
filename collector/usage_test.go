package collector

import (
	"math"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestUtilizationUptimeVolumes checks the kubelet collector's derived
// metrics against the fixtures they are computed from: container and pod
// utilization are the summary's usage over the pod spec's requests and
// limits; a pod with a container lacking a limit has no pod limit
// utilization; uptimes are the clock minus the summary's start times; and
// volume series carry k8s.volume.type from the pod spec and the PVC name
// from the summary's pvcRef.
func TestUtilizationUptimeVolumes(t *testing.T) {
	var s Summary
	readJSON(t, "testdata/summary.json", &s)
	srv := serveFile(t, "testdata/summary.json")
	c, _ := newTestKubeletCollector(t, KubeletConfig{Endpoint: srv.URL()}, loadState(t))
	rm := newPipeline(t, []Collector{c}).collect(t)

	stats := map[string]*PodStats{}
	for i := range s.Pods {
		stats[s.Pods[i].PodRef.Name] = &s.Pods[i]
	}
	web := stats["web-5d8f7c6b9-abcde"]
	var nginx *ContainerStats
	for i := range web.Containers {
		if web.Containers[i].Name == "nginx" {
			nginx = &web.Containers[i]
		}
	}
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	nm := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.container.name": "nginx"}
	cores := float64(*nginx.CPU.UsageNanoCores) / 1e9
	mem := float64(*nginx.Memory.UsageBytes)
	// nginx: requests cpu 250m memory 64Mi, limits cpu 1 memory 256Mi.
	near("nginx cpu limit utilization", one(t, rm, "k8s.container.cpu.limit.utilization", nm), cores/1)
	near("nginx cpu request utilization", one(t, rm, "k8s.container.cpu.request.utilization", nm), cores/0.25)
	near("nginx memory limit utilization", one(t, rm, "k8s.container.memory_limit_utilization", nm), mem/(256<<20))
	near("nginx memory request utilization", one(t, rm, "k8s.container.memory_request_utilization", nm), mem/(64<<20))

	// The web pod: nginx + log-shipper, limits cpu 1 + 200m, memory 256Mi + 128Mi.
	wm := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde"}
	near("web pod cpu limit utilization", one(t, rm, "k8s.pod.cpu_limit_utilization", wm), float64(*web.CPU.UsageNanoCores)/1e9/1.2)
	near("web pod memory limit utilization", one(t, rm, "k8s.pod.memory_limit_utilization", wm), float64(*web.Memory.UsageBytes)/(384<<20))
	// postgres-0 has a sidecar without limits: no pod limit utilization,
	// but a request utilization over postgres 500m + sidecar 50m.
	pm := map[string]string{"k8s.pod.name": "postgres-0"}
	if got := find(pointsOf(rm, "k8s.pod.cpu_limit_utilization"), pm); len(got) != 0 {
		t.Errorf("postgres-0 (a container without a limit) has pod cpu limit utilization %v", got)
	}
	near("postgres pod cpu request utilization", one(t, rm, "k8s.pod.cpu_request_utilization", pm), float64(*stats["postgres-0"].CPU.UsageNanoCores)/1e9/0.55)
	// kube-proxy has no requests or limits: no utilization at all.
	for _, name := range []string{"k8s.pod.cpu_request_utilization", "k8s.container.cpu.request.utilization", "k8s.container.memory_limit_utilization"} {
		if got := find(pointsOf(rm, name), map[string]string{"k8s.pod.name": "kube-proxy-9wz4k"}); len(got) != 0 {
			t.Errorf("%s for kube-proxy without requests or limits: %v", name, got)
		}
	}

	near("node uptime", one(t, rm, "k8s.node.uptime", nil), testTime.Sub(s.Node.StartTime.Time).Seconds())
	near("pod uptime", one(t, rm, "k8s.pod.uptime", wm), testTime.Sub(web.StartTime.Time).Seconds())
	near("container uptime", one(t, rm, "container.uptime", nm), testTime.Sub(nginx.StartTime.Time).Seconds())

	data := map[string]string{"k8s.pod.name": "postgres-0", "k8s.volume.name": "data"}
	for _, name := range []string{"k8s.pod.volume.usage", "k8s.pod.volume.capacity", "k8s.pod.volume.available",
		"k8s.pod.volume.inode.count", "k8s.pod.volume.inode.used", "k8s.pod.volume.inode.free"} {
		got := find(pointsOf(rm, name), data)
		if len(got) != 1 || got[0].attrs["k8s.persistentvolumeclaim.name"] != "data-postgres-0" || got[0].attrs["k8s.volume.type"] != "persistentVolumeClaim" {
			t.Errorf("%s%v = %v, want one point with the PVC name data-postgres-0 and type persistentVolumeClaim", name, data, got)
		}
	}
	var dv *VolumeStats
	for i := range stats["postgres-0"].VolumeStats {
		if stats["postgres-0"].VolumeStats[i].Name == "data" {
			dv = &stats["postgres-0"].VolumeStats[i]
		}
	}
	near("data volume usage", one(t, rm, "k8s.pod.volume.usage", data), float64(*dv.UsedBytes))
	near("data volume available", one(t, rm, "k8s.pod.volume.available", data), float64(*dv.AvailableBytes))
	if got := one(t, rm, "k8s.pod.volume.usage", map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.volume.name": "cache", "k8s.volume.type": "emptyDir"}); got <= 0 {
		t.Errorf("emptyDir cache usage = %v", got)
	}

	// Without the informer's pods there is no spec: no utilization, and a
	// volume's type is only known from its pvcRef.
	c2, _ := newTestKubeletCollector(t, KubeletConfig{Endpoint: srv.URL()}, nil)
	rm = newPipeline(t, []Collector{c2}).collect(t)
	if got := pointsOf(rm, "k8s.container.cpu.limit.utilization"); len(got) != 0 {
		t.Errorf("utilization without pod specs: %v", got)
	}
	if got := find(pointsOf(rm, "k8s.pod.volume.usage"), data); len(got) != 1 || got[0].attrs["k8s.volume.type"] != "persistentVolumeClaim" || got[0].attrs["k8s.persistentvolumeclaim.name"] != "data-postgres-0" {
		t.Errorf("data volume without the pod = %v, want type persistentVolumeClaim from pvcRef", got)
	}
	if got := find(pointsOf(rm, "k8s.pod.volume.usage"), map[string]string{"k8s.volume.name": "cache"}); len(got) != 1 || got[0].attrs["k8s.volume.type"] != "" {
		t.Errorf("cache volume without the pod = %v, want no type", got)
	}
}

// TestUtilizationFollowsAppliedResources: after an in-place resize the
// container status reports the resources applied to the container, and
// utilization is measured against those rather than the spec's.
func TestUtilizationFollowsAppliedResources(t *testing.T) {
	st := loadState(t)
	pods := st.Pods()
	for i, p := range pods {
		if p.Name != "web-5d8f7c6b9-abcde" {
			continue
		}
		p = p.DeepCopy()
		for j := range p.Status.ContainerStatuses {
			if p.Status.ContainerStatuses[j].Name == "nginx" {
				p.Status.ContainerStatuses[j].Resources = &corev1.ResourceRequirements{
					Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}}
			}
		}
		pods[i] = p
	}
	node, _ := st.Node()
	srv := serveFile(t, "testdata/summary.json")
	c, _ := newTestKubeletCollector(t, KubeletConfig{Endpoint: srv.URL()}, fakestate.New(pods, node))
	rm := newPipeline(t, []Collector{c}).collect(t)
	var s Summary
	readJSON(t, "testdata/summary.json", &s)
	var cores float64
	for _, p := range s.Pods {
		for _, ct := range p.Containers {
			if p.PodRef.Name == "web-5d8f7c6b9-abcde" && ct.Name == "nginx" {
				cores = float64(*ct.CPU.UsageNanoCores) / 1e9
			}
		}
	}
	nm := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.container.name": "nginx"}
	if got, want := one(t, rm, "k8s.container.cpu.limit.utilization", nm), cores/4; math.Abs(got-want) > 1e-12 {
		t.Errorf("cpu limit utilization after a resize to 4 cores = %v, want %v", got, want)
	}
	// The applied resources carry no request: no request utilization.
	if got := find(pointsOf(rm, "k8s.container.cpu.request.utilization"), nm); len(got) != 0 {
		t.Errorf("request utilization from the spec although the status reports the applied resources: %v", got)
	}
}
